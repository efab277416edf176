"""Our own VQGAN: encoder, decoder and quantizers whose parameter names match taming-transformers.

The module tree mirrors ``taming.models.vqgan.VQModel`` / ``GumbelVQ`` so that a Lightning checkpoint's
``state_dict`` (minus its ``loss.*`` entries) loads with ``strict=True``. Nothing here imports taming.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.ops import vector_quantize

__all__ = ["VQGANConfig", "VQGAN", "Encoder", "Decoder"]


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups and eps 1e-6, as in taming's ``Normalize``."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)


def _conv1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=1, padding=0)


class ResnetBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, swish, conv) x2 with a 1x1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = _conv3(cin, cout)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3(cout, cout)
        if cin != cout:
            self.nin_shortcut = _conv1(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 q/k/v/proj convolutions and a residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = _conv1(channels, channels)
        self.k = _conv1(channels, channels)
        self.v = _conv1(channels, channels)
        self.proj_out = _conv1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (t(n).flatten(2).transpose(1, 2) for t in (self.q, self.k, self.v))  # (b, hw, c)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after padding one pixel on the right and bottom."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass
class VQGANConfig:
    """Architecture of a VQGAN, in the vocabulary of taming's ``ddconfig`` plus the codebook."""

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    in_channels: int = 3
    resolution: int = 256
    z_channels: int = 256
    double_z: bool = False
    dropout: float = 0.0
    embed_dim: int = 256
    n_embed: int = 16384
    gumbel: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each axis."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_taming(cls, cfg: Mapping[str, Any]) -> "VQGANConfig":
        """Build from a taming YAML mapping (``{model: {target, params: {...}}}`` or its ``params``)."""
        model = cfg.get("model", cfg)
        target = str(model.get("target", ""))
        params = model.get("params", model)
        if "ddconfig" not in params:
            raise ValueError("the VQGAN config has no model.params.ddconfig section")
        dd = dict(params["ddconfig"])
        known = {k: dd.pop(k) for k in list(dd) if k in cls.__dataclass_fields__}
        for key in ("ch_mult", "attn_resolutions"):
            if key in known:
                known[key] = tuple(int(v) for v in known[key])
        if "embed_dim" not in params or "n_embed" not in params:
            raise ValueError("the VQGAN config needs model.params.embed_dim and model.params.n_embed")
        config = cls(
            **known,
            embed_dim=int(params["embed_dim"]),
            n_embed=int(params["n_embed"]),
            gumbel=target.endswith("GumbelVQ") or "kl_weight" in params,
            extra=dd,
        )
        # sizes that build no network fail later as a tensor or index error: say which value is wrong here
        sizes = {"ch": config.ch, "out_ch": config.out_ch, "num_res_blocks": config.num_res_blocks,
                 "in_channels": config.in_channels, "resolution": config.resolution,
                 "z_channels": config.z_channels, "embed_dim": config.embed_dim, "n_embed": config.n_embed}
        bad = [f"{k}: {v}" for k, v in sizes.items() if int(v) < 1]
        if not config.ch_mult or any(m < 1 for m in config.ch_mult):
            bad.append(f"ch_mult: {list(config.ch_mult)}")
        if bad:
            raise ValueError(f"{', '.join(bad)} (sizes must be 1 or more, ch_mult a non-empty list of them)")
        return config

    def to_taming(self) -> dict:
        """The taming YAML mapping for this architecture (with a loss that needs no download)."""
        dd = {k: v for k, v in asdict(self).items() if k not in ("embed_dim", "n_embed", "gumbel", "extra")}
        dd["ch_mult"] = list(self.ch_mult)
        dd["attn_resolutions"] = list(self.attn_resolutions)
        params: dict[str, Any] = {
            "embed_dim": self.embed_dim,
            "n_embed": self.n_embed,
            "ddconfig": dd,
            "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"},
        }
        target = "taming.models.vqgan.GumbelVQ" if self.gumbel else "taming.models.vqgan.VQModel"
        if self.gumbel:
            params["kl_weight"] = 1.0e-8
        return {"model": {"target": target, "params": params}}


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> features (B, z_channels[*2], H/f, W/f); taming's key layout."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.conv_in = _conv3(cfg.in_channels, ch)
        self.down = nn.ModuleList()
        res, block_in = cfg.resolution, ch
        for level, m in enumerate(mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, ch * m, cfg.dropout))
                block_in = ch * m
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != len(mult) - 1:
                stage.downsample = Downsample(block_in)
                res //= 2
            self.down.append(stage)
        self.mid = _middle(block_in, cfg.dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv3(block_in, cfg.z_channels * (2 if cfg.double_z else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = _run_stage(stage, h, "downsample")
        h = _run_middle(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f); taming's key layout."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        block_in = ch * mult[-1]
        res = cfg.resolution // cfg.factor
        self.conv_in = _conv3(cfg.z_channels, block_in)
        self.mid = _middle(block_in, cfg.dropout)
        stages: list[nn.Module] = []
        for level in reversed(range(len(mult))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, ch * mult[level], cfg.dropout))
                block_in = ch * mult[level]
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample(block_in)
                res *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv3(block_in, cfg.out_ch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for stage in reversed(self.up):
            h = _run_stage(stage, h, "upsample")
        return self.conv_out(F.silu(self.norm_out(h)))


def _run_stage(stage: nn.Module, h: torch.Tensor, resample: str) -> torch.Tensor:
    """Residual blocks (each followed by its attention block, where the stage has them), then resampling."""
    for i, block in enumerate(stage.block):
        h = block(h)
        if len(stage.attn):
            h = stage.attn[i](h)
    step = getattr(stage, resample, None)
    return step(h) if step is not None else h


def _middle(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class _QuantizerBase(nn.Module):
    """Calling a quantizer snaps (B, embed_dim, h, w) latents to their nearest codes, straight-through."""

    weight: torch.Tensor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # contiguous: moved back, the codes would be laid out channels-last, and the decoder would carry that
        # layout through its residual stream, where GroupNorm's backward meets contiguous gradients and takes a
        # slow path on the CPU (the toy decoder's forward and backward took 1.2x as long).
        return vector_quantize(z.movedim(1, -1), self.weight).movedim(-1, 1).contiguous()


def _embedding(n_embed: int, embed_dim: int, init) -> nn.Embedding:
    """An ``nn.Embedding`` whose weight ``init`` fills, except on the meta device, where loaders build models.

    ``nn.Embedding`` would draw its weight with ``normal_``, which on the meta device goes through torch's Python
    reference kernels: their first use costs about a second of imports (0.1-0.4 s of a command's start-up, as
    open_clip imports some of the same modules anyway).
    """
    with torch.no_grad():
        weight = torch.empty(n_embed, embed_dim)
        if not weight.is_meta:
            init(weight)
    return nn.Embedding(n_embed, embed_dim, _weight=weight)


class _Codebook(_QuantizerBase):
    """Plain VQ codebook: ``quantize.embedding.weight`` (n_embed, embed_dim)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = _embedding(n_embed, embed_dim, lambda w: w.uniform_(-1.0 / n_embed, 1.0 / n_embed))

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight


class _GumbelCodebook(_QuantizerBase):
    """Gumbel VQ codebook: ``quantize.proj`` (z_channels -> logits) and ``quantize.embed.weight``."""

    def __init__(self, z_channels: int, n_embed: int, embed_dim: int):
        super().__init__()
        self.proj = _conv1(z_channels, n_embed)
        self.embed = _embedding(n_embed, embed_dim, nn.init.normal_)

    @property
    def weight(self) -> torch.Tensor:
        return self.embed.weight


class VQGAN(nn.Module):
    """Encoder, codebook, 1x1 quant convolutions and decoder of a taming VQModel or GumbelVQ.

    Shape:
        - ``encode``: (B, 3, H, W) in [-1, 1] -> (B, embed_dim, H/f, W/f)
        - ``quantize``: (B, embed_dim, h, w) -> same shape, snapped to the nearest codes (straight-through)
        - ``decode``: (B, embed_dim, h, w) -> (B, 3, h*f, w*f) in about [-1, 1]
    """

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.gumbel:
            self.quantize: _QuantizerBase = _GumbelCodebook(cfg.z_channels, cfg.n_embed, cfg.embed_dim)
        else:
            self.quantize = _Codebook(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = _conv1(cfg.z_channels * (2 if cfg.double_z else 1), cfg.embed_dim)
        self.post_quant_conv = _conv1(cfg.embed_dim, cfg.z_channels)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, (n_embed, embed_dim)."""
        return self.quantize.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantize(self.encode(x)))
