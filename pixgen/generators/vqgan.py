"""The VQGAN latent image: a latent on the codebook grid, quantized straight-through and decoded."""
from __future__ import annotations

import torch
import torch.nn.functional as F
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
        grow_to: (width, height) of the run's output when the search starts at a smaller (coarse) size;
            :meth:`grow_` moves the latent there, and :meth:`render` shows coarse images at that size meanwhile.
    """

    def __init__(self, vqgan: VQGAN, width: int, height: int, init: torch.Tensor | None = None,
                 noise: float = 0.0, grow_to: tuple[int, int] | None = None):
        super().__init__()
        self.vqgan = vqgan.eval().requires_grad_(False)
        f = vqgan.factor
        for w, h in [(width, height)] + ([tuple(grow_to)] if grow_to else []):
            if w % f or h % f:
                raise ValueError(f"image size {w}x{h} is not a multiple of the model's factor {f}")
        self.out_size = (int(grow_to[0]), int(grow_to[1])) if grow_to else (width, height)
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
        return self._decode(self.z)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The image (1, 3, H, W) in [0, 1] that latent ``z`` decodes to (quantized), e.g. the start ``z_init``."""
        return self._decode(z)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        image = self.vqgan.decode(self.vqgan.quantize(z))
        return clamp_with_grad(image.add(1).div(2), 0.0, 1.0)

    @property
    def grown(self) -> bool:
        """Whether the latent is at the output size (always, for a run without a coarse stage)."""
        f = self.vqgan.factor
        return tuple(self.z.shape[-2:]) == (self.out_size[1] // f, self.out_size[0] // f)

    @torch.no_grad()
    def render(self) -> torch.Tensor:
        """The current image at the output size: a coarse one scaled up by nearest pixel, as :meth:`grow_` would."""
        image = self()
        return image if self.grown else self._scale_up(image)

    def _scale_up(self, image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image, size=(self.out_size[1], self.out_size[0]), mode="nearest")

    @torch.no_grad()
    def grow_(self) -> None:
        """Move a coarse latent to the output size: decode, scale up by nearest pixel, encode again (the starting
        latent too, for ``init_weight``). The parameter object stays, so an optimizer keeps it; clear its state."""
        if self.grown:
            return
        encode = lambda image: self.vqgan.encode(self._scale_up(image) * 2 - 1).contiguous()  # noqa: E731
        z_init = encode(self._decode(self.z_init))
        self.z.data = encode(self._decode(self.z))
        self.z_init = z_init

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the latent to the per-channel range of the codebook."""
        self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))
