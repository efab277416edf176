"""Data: the table of named VQGAN checkpoints (vqgan.yaml) and their architecture YAMLs (configs/)."""
