"""The VQGAN latent image: a latent on the codebook grid, quantized straight-through and decoded."""
from __future__ import annotations

import torch
from torch import nn

from pixgen.models.vqgan import VQGAN
from pixgen.ops import clamp_with_grad


class VQGANGenerator(nn.Module):
    """Holds the trainable latent ``z`` (1, embed_dim, H/f, W/f) in front of a frozen VQGAN.

    Args:
        vqgan: the decoder and codebook (kept frozen).
        width, height: image size in pixels; both must be multiples of ``vqgan.factor``.
        init: optional (1, 3, height, width) image in [0, 1] to encode as the starting latent; otherwise the
            latent starts from codes drawn uniformly at random with torch's global RNG.
        noise: standard deviation of Gaussian noise (torch's global RNG) added to the starting latent, in units of
            the codebook's per-channel standard deviation; 0 draws nothing.
    """

    def __init__(self, vqgan: VQGAN, width: int, height: int, init: torch.Tensor | None = None,
                 noise: float = 0.0):
        super().__init__()
        self.vqgan = vqgan.eval().requires_grad_(False)
        f = vqgan.factor
        if width % f or height % f:
            raise ValueError(f"image size {width}x{height} is not a multiple of the model's factor {f}")
        codebook = vqgan.codebook.detach()
        self.register_buffer("z_min", codebook.min(0).values.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("z_max", codebook.max(0).values.view(1, -1, 1, 1), persistent=False)
        if init is not None:
            with torch.no_grad():
                z = vqgan.encode(init.to(codebook.device) * 2 - 1)
        else:
            h, w = height // f, width // f
            idx = torch.randint(codebook.shape[0], (h * w,), device=codebook.device)
            z = codebook[idx].view(h, w, -1).permute(2, 0, 1).unsqueeze(0)
        if noise > 0:
            z = z + noise * codebook.std(0).view(1, -1, 1, 1) * torch.randn(z.shape, device=z.device)
        self.z = nn.Parameter(z.clone().contiguous())
        if noise > 0:
            self.project_()  # back inside the codebook's range, as after every step
        self.register_buffer("z_init", self.z.detach().clone(), persistent=False)

    def latent_parameters(self) -> list[nn.Parameter]:
        return [self.z]

    def forward(self) -> torch.Tensor:
        image = self.vqgan.decode(self.vqgan.quantize(self.z))
        return clamp_with_grad(image.add(1).div(2), 0.0, 1.0)

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the latent to the per-channel range of the codebook."""
        self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))
