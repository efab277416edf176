"""Random cutouts of the image, resized for CLIP and augmented with kornia, all as batched tensor ops."""
from __future__ import annotations

import difflib

import kornia.augmentation as K
import torch
from torch import nn

from pixgen.errors import ConfigError


def _axis_weights(start: torch.Tensor, length: torch.Tensor, out: int, size: int) -> torch.Tensor:
    """(n, out, size): along one axis, the weights that average each output bin's bilinear samples.

    The samples are placed as torchvision's ``roi_align(aligned=True, sampling_ratio=-1)`` places them: pixel
    centres at integer coordinates, the box shifted by half a pixel, ``ceil(length / out)`` samples per bin,
    positions in [-1, 0] read the first pixel and those past ``size - 1`` the last, further out read zero.
    """
    grid = torch.ceil(length / out).clamp(min=1)  # samples per output bin, per box
    k = torch.arange(int(grid.max()), dtype=start.dtype, device=start.device)
    bins = torch.arange(out, dtype=start.dtype, device=start.device)
    step = (length / out)[:, None, None]
    pos = ((start - 0.5)[:, None, None] + bins[None, :, None] * step
           + (k[None, None, :] + 0.5) * step / grid[:, None, None])
    keep = (k[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().clamp(max=size - 1)
    frac = torch.where(low >= size - 1, torch.zeros_like(pos), pos - low)
    share = keep.to(start.dtype) / grid[:, None, None]
    weights = torch.zeros(start.shape[0], out, size, dtype=start.dtype, device=start.device)
    weights.scatter_add_(2, low.long(), (1 - frac) * share)
    weights.scatter_add_(2, (low + 1).clamp(max=size - 1).long(), frac * share)
    return weights


def crop_resize(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes`` (n, 5: ``[batch_index, x1, y1, x2, y2]`` in pixels) out of ``image`` (B, C, H, W) and resize
    each to ``size`` x ``size``: (n, C, size, size), differentiable in ``image``.

    The same numbers as ``torchvision.ops.roi_align(image, boxes, size, aligned=True, sampling_ratio=-1)``
    (bilinear samples averaged over each output pixel, so large boxes shrink without aliasing), computed as two
    small matrix products per box, ``Wy @ crop @ Wx^T``. Bilinear sampling separates into a row and a column
    weight. On the CPU, forward and backward together take about a quarter of roi_align's time, whose backward
    is a scalar loop (benchmarks/RESULTS.md, "Where a step's time goes").
    """
    _, _, height, width = image.shape
    boxes = boxes.detach().to(image.dtype)
    x1, y1, x2, y2 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    rows = _axis_weights(y1, y2 - y1, size, height)  # (n, size, H)
    cols = _axis_weights(x1, x2 - x1, size, width)  # (n, size, W)
    return rows[:, None] @ image[boxes[:, 0].long()] @ cols[:, None].transpose(-1, -2)


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
    shorter image side. Crops are bilinear-averaged (:func:`crop_resize`, roi_align's sampling), so large crops
    are downscaled without aliasing, and gradients flow back to the image.

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
        crops = crop_resize(image, self.boxes(h, w, image.device), self.cut_size)
        crops = self.augment(crops)
        if self.noise > 0:
            facs = torch.rand(self.n, 1, 1, 1, device=image.device) * self.noise
            crops = crops + facs * torch.randn_like(crops)
        return crops
