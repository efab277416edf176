"""Random cutouts of the image, resized for CLIP and augmented with kornia, all as batched tensor ops."""
from __future__ import annotations

import difflib

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.ops import roi_align

from pixgen.errors import ConfigError


def _augmentation_names() -> list[str]:
    names = []
    for name in dir(K):
        obj = getattr(K, name)
        if isinstance(obj, type) and issubclass(obj, nn.Module) and name.startswith(("Random", "Color")):
            names.append(name)
    return sorted(names)


def build_augmentations(specs: list[dict]) -> nn.Module:
    """Turn ``[{"name": "RandomAffine", "kwargs": {...}}, ...]`` into one kornia AugmentationSequential."""
    modules = []
    for spec in specs:
        name, kwargs = spec["name"], dict(spec.get("kwargs") or {})
        cls = getattr(K, name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or name not in _augmentation_names():
            close = difflib.get_close_matches(name, _augmentation_names(), n=3)
            raise ConfigError(f"unknown augmentation {name!r}",
                              (f"did you mean {', '.join(close)}? " if close else "")
                              + "use a kornia.augmentation class name such as RandomAffine or ColorJitter")
        try:
            modules.append(cls(**kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad arguments for augmentation {name}: {exc}",
                              f"see the documentation of kornia.augmentation.{name}") from None
    if not modules:
        return nn.Identity()
    return K.AugmentationSequential(*modules, data_keys=["input"])


class MakeCutouts(nn.Module):
    """Sample ``n`` square crops whose side follows ``rand**cut_pow``, resized to ``cut_size``, then augment.

    A larger ``cut_pow`` favours small crops (detail); 1.0 is uniform between ``min(cut_size, side)`` and the
    shorter image side. Crops are bilinear-averaged (``roi_align`` with adaptive sampling), so large crops are
    downscaled without aliasing, and gradients flow back to the image.

    Shape:
        - Input: (1, 3, H, W)
        - Output: (n, 3, cut_size, cut_size)
    """

    def __init__(self, cut_size: int, n: int, cut_pow: float = 1.0, augments: list[dict] | None = None,
                 noise: float = 0.0):
        super().__init__()
        self.cut_size, self.n, self.cut_pow, self.noise = cut_size, n, cut_pow, noise
        self.augment = build_augmentations(augments or [])

    def boxes(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(n, 5) boxes ``[batch_index, x1, y1, x2, y2]`` in pixels, drawn from torch's global RNG."""
        max_size = min(height, width)
        min_size = min(max_size, self.cut_size)
        sizes = torch.rand(self.n, device=device).pow(self.cut_pow) * (max_size - min_size) + min_size
        x1 = torch.rand(self.n, device=device) * (width - sizes)
        y1 = torch.rand(self.n, device=device) * (height - sizes)
        zero = torch.zeros_like(sizes)
        return torch.stack([zero, x1, y1, x1 + sizes, y1 + sizes], dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _, _, h, w = image.shape
        crops = roi_align(image, self.boxes(h, w, image.device), output_size=self.cut_size,
                          spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        crops = self.augment(crops)
        if self.noise > 0:
            facs = torch.rand(self.n, 1, 1, 1, device=image.device) * self.noise
            crops = crops + facs * torch.randn_like(crops)
        return crops
