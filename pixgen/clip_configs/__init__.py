"""open_clip model configs shipped with pixgen (random-tiny smoke model, toy world)."""
