"""Loss terms: spherical distance to prompt targets, and regularisers on the latent and image."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pixgen.ops import replace_grad


def spherical_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between the directions of x and y (last dim), as in VQGAN+CLIP.

    Equals ``2 * arcsin(|x̂ - ŷ| / 2)^2``: 0 for equal directions, pi^2/2 for opposite ones.
    """
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).clamp(max=1.0).arcsin().pow(2).mul(2)


def prompt_loss(embeds: torch.Tensor, target: torch.Tensor, weight: float, stop: float) -> torch.Tensor:
    """Weighted distance of cutout embeddings (N, D) to one target (D,), honouring ``stop``.

    A negative weight repels. Once a cutout's signed distance falls below ``stop`` its gradient is zeroed,
    while the reported value stays the true distance.
    """
    dists = spherical_dist(embeds, target.unsqueeze(0)) * (1.0 if weight >= 0 else -1.0)
    gated = replace_grad(dists, torch.clamp(dists, min=stop)) if stop != float("-inf") else dists
    return abs(weight) * gated.mean()


def latent_anchor_loss(z: torch.Tensor, z_init: torch.Tensor, weight: float) -> torch.Tensor:
    """Pull the latent towards its initial value (the init-image regulariser): weight * MSE / 2."""
    return F.mse_loss(z, z_init) * (weight / 2)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels; smooths the image when weighted in."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def prior_loss(image: torch.Tensor, restore) -> torch.Tensor:
    """Regularisation by denoising: half the mean squared distance from ``image`` to ``restore(image)``, with the
    restored image held fixed, so the gradient is ``(image - restore(image)) / N``: a pull towards the nearest
    picture the prior believes in, without differentiating the prior itself."""
    with torch.no_grad():
        target = restore(image.detach())
    return (image - target).pow(2).mean() / 2


def border_loss(image: torch.Tensor, start: torch.Tensor, width: int, weight: float) -> torch.Tensor:
    """``weight`` x the mean squared difference between the outer frame of ``image``, ``width`` pixels wide, and
    the same frame of ``start``: keeps the edges of the picture as the run started them."""
    mask = torch.ones_like(image[:1, :1])
    mask[..., width:-width, width:-width] = 0
    return weight * ((image - start) ** 2 * mask).sum() / (mask.sum() * image.shape[0] * image.shape[1])


def sparsity_loss(image: torch.Tensor, start: torch.Tensor, weight: float, cap: float | None = None
                  ) -> torch.Tensor:
    """``weight`` x the mean absolute difference between ``image`` and ``start`` over the whole picture: the same
    pull back to the start on every changed value, however large the change. With ``cap``, each value's difference
    counts up to ``cap`` only, so values changed by more than that feel no pull."""
    diff = (image - start).abs()
    if cap is not None:
        diff = diff.clamp(max=cap)
    return weight * diff.mean()


def palette_loss(image: torch.Tensor, colours: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight`` x the mean over pixels of the Euclidean distance from each pixel of ``image`` (N, 3, H, W) to the
    nearest row of ``colours`` (K, 3), both in the image's units: each pixel is pulled, at the same strength however
    near it is, straight towards its nearest palette colour."""
    diff = image.unsqueeze(1) - colours.to(image).view(1, -1, 3, 1, 1)  # (N, K, 3, H, W)
    dist = (diff.pow(2).sum(dim=2) + 1e-12).sqrt()  # (N, K, H, W); the epsilon keeps the gradient finite at 0
    return weight * dist.min(dim=1).values.mean()
