"""Data: taming-format architecture YAMLs, one per registry entry."""
