"""Image parameterisations: modules whose ``forward()`` returns the current image (1, 3, H, W) in [0, 1]."""
from pixgen.generators.vqgan import VQGANGenerator

__all__ = ["VQGANGenerator"]
