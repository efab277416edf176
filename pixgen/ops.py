"""Small differentiable operators with hand-chosen gradients, used by the generators and losses."""
from __future__ import annotations

import torch


class _ReplaceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_forward: torch.Tensor, x_backward: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.shape = x_backward.shape
        return x_forward.clone()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        return None, grad_out.sum_to_size(ctx.shape)


def replace_grad(x_forward: torch.Tensor, x_backward: torch.Tensor) -> torch.Tensor:
    """Value of ``x_forward``, gradient routed to ``x_backward`` (the straight-through estimator)."""
    return _ReplaceGrad.apply(x_forward, x_backward)


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        overshoot = x - x.clamp(ctx.lo, ctx.hi)
        # A descent step moves x by -grad; keep the gradient inside the range, and outside it only
        # where that step heads back towards the range.
        keep = (grad_out * overshoot) >= 0
        return grad_out * keep, None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp to [lo, hi]; outside the range the gradient passes only when it pushes back into range."""
    return _ClampWithGrad.apply(x, lo, hi)


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for each vector in ``x`` (..., D); codebook (K, D)."""
    flat = x.reshape(-1, x.shape[-1])
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)
    return d.argmin(1).reshape(x.shape[:-1])


def vector_quantize(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snap each vector of ``x`` (..., D) to its nearest code; the gradient passes straight through to x."""
    x_q = codebook[nearest_codes(x, codebook)]
    return replace_grad(x_q, x)


def flat_canvas(colours: list[list[int]] | list[tuple[int, int, int]], width: int, height: int,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Flat images (len(colours), 3, height, width) in [0, 1], one per 0-255 RGB colour."""
    rgb = torch.tensor([[float(v) for v in c] for c in colours], dtype=torch.float32, device=device)
    return rgb.div(255).view(-1, 3, 1, 1).expand(-1, 3, height, width)
