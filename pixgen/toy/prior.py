"""The toy world's scene prior: a small restorer that maps a spoilt scene (bent into blobs, blurred, faded, noisy,
speckled, or through the VQGAN) back to the clean render it came from.

At generation time it is used as a regulariser in the manner of "regularisation by denoising": the image ``x``
is pulled towards ``D(x)``, the nearest clean scene the restorer sees in it (loss ``w * mean((x - sg(D(x)))^2)``,
so the gradient is ``x - D(x)`` and ``D`` itself is never differentiated). The CLIP decides *what* is drawn; the
prior only says that what is drawn should be flat-coloured objects with hard outlines, on a flat background.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pixgen.atomic import atomic_safetensors
from pixgen.cli_util import set_threads
from pixgen.toy.train_clip import fade_to_background, warp_field, warp_shapes
from pixgen.toy.training import (TrainLog, batch_images, check_finite, check_out_files, check_resume, cosine_decay,
                                 halt_requested, load_resume, load_toy_vqgan, log_and_save, lower_lr, mark_complete,
                                 pick_device, reconstruct, restore, seed_everything, stopped_at)
from pixgen.toy.world import CANVAS, render, sample_scene

__all__ = ["SceneRestorer", "corrupt", "heldout_error", "load_prior", "save_prior", "train_prior", "PRIOR_CONFIG"]

PRIOR_CONFIG = {"widths": [16, 32, 48, 64]}


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GELU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.GELU())


class SceneRestorer(nn.Module):
    """A four-level U-Net (64 -> 8 px) predicting the correction that takes a 64x64 scene to its clean render.

    Shape:
        - x: (B, 3, 64, 64) in [0, 1]; returns (B, 3, 64, 64), the restored scene (not clamped).
    """

    def __init__(self, widths: list[int] | tuple[int, ...] = (16, 32, 48, 64)):
        super().__init__()
        w = list(widths)
        self.widths = w
        self.down = nn.ModuleList([_block(3, w[0])] + [_block(w[i - 1], w[i], 2) for i in range(1, len(w))])
        self.up = nn.ModuleList([_block(w[i] + w[i - 1], w[i - 1]) for i in range(len(w) - 1, 0, -1)])
        self.head = nn.Conv2d(w[0], 3, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x * 2 - 1
        for block in self.down:
            h = block(h)
            skips.append(h)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1))
        return x + self.head(h)

    @torch.no_grad()
    def restore(self, image: torch.Tensor) -> torch.Tensor:
        """The clean scene the restorer sees in ``image`` (B, 3, H, W in [0, 1]), clamped to [0, 1].

        The world is drawn on a 64-pixel canvas, so an image of another size is read at the scale where its
        shorter side is 64 pixels (sides rounded to multiples of 8) and the correction is scaled back up.
        """
        h, w = image.shape[-2:]
        if (h, w) == (CANVAS, CANVAS):
            return self(image).clamp(0, 1)
        scale = CANVAS / min(h, w)
        size = (max(8, round(h * scale / 8) * 8), max(8, round(w * scale / 8) * 8))
        small = F.interpolate(image, size=size, mode="area")
        fix = self(small).clamp(0, 1) - small
        return (image + F.interpolate(fix, size=(h, w), mode="bilinear", align_corners=False)).clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (sigma (B,) in pixels; 0 leaves the image as it is), 7-tap separable."""
    taps = torch.arange(-3, 4, dtype=x.dtype, device=x.device)
    s = sigma.to(x).clamp_min(1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (taps[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 7)
    b, c, h, w = x.shape
    y = x.reshape(1, b * c, h, w)
    kx = k.repeat_interleave(c, 0).view(b * c, 1, 1, 7)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), kx, groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), kx.transpose(2, 3), groups=b * c)
    return y.view(b, c, h, w)


def corrupt(clean: torch.Tensor, backgrounds: list[str], gen: torch.Generator) -> torch.Tensor:
    """Spoil clean renders (B, 3, 64, 64 in [0, 1]) the ways a search from a flat canvas spoils a scene: bent
    outlines (blobs), blur, faded objects, colour casts, noise and small coloured specks. Each kind is applied
    to a random share of the batch, so a few images (about 2%) come through clean.

    Keeping a larger share clean on purpose (a tenth) made training settle on the identity: after 400 and 2500
    steps the restorer returned its input unchanged (benchmarks/toy_results.md, "A scene prior")."""
    b = clean.shape[0]
    if not b:
        return clean.clone()
    dev = clean.device

    def pick(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) < p).to(dev)

    x = clean
    amp = torch.rand(b, generator=gen) * 2.5 + 0.5
    field = warp_field(b, CANVAS, CANVAS, gen) * amp.view(-1, 1, 1, 1)
    x = torch.where(pick(0.6).view(-1, 1, 1, 1), warp_shapes(x, field), x)
    sigma = (torch.rand(b, generator=gen) * 1.7 + 0.3) * pick(0.5).float()
    x = torch.where((sigma > 0).view(-1, 1, 1, 1).to(dev), _gaussian_blur(x, sigma.to(dev)), x)
    x = torch.where(pick(0.35).view(-1, 1, 1, 1), fade_to_background(x, backgrounds, (0.2, 0.9), gen), x)
    # specks: 1-4 small squares of random colours, the debris a search leaves
    specks = pick(0.3)
    ys = torch.arange(CANVAS, device=dev).view(1, -1, 1)
    xs = torch.arange(CANVAS, device=dev).view(1, 1, -1)
    for _ in range(3):
        pos = torch.randint(0, CANVAS - 4, (b, 2), generator=gen)
        side = torch.randint(1, 5, (b,), generator=gen)
        colour = torch.rand(b, 3, generator=gen).to(dev)
        p0, p1, s = pos[:, 0].to(dev).view(-1, 1, 1), pos[:, 1].to(dev).view(-1, 1, 1), side.to(dev).view(-1, 1, 1)
        mask = (ys >= p0) & (ys < p0 + s) & (xs >= p1) & (xs < p1 + s) & specks.view(-1, 1, 1)
        x = torch.where(mask[:, None], colour.view(-1, 3, 1, 1), x)
    cast = (torch.rand(b, 3, 1, 1, generator=gen).to(dev) * 2 - 1) * 0.08 * pick(0.4).view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen).to(dev) * (torch.rand(b, 1, 1, 1, generator=gen).to(dev) * 0.1)
    noise = noise * pick(0.4).view(-1, 1, 1, 1)
    return (x + cast + noise).clamp(0, 1)


def save_prior(model: SceneRestorer, path: str | Path, meta: dict | None = None) -> Path:
    """Write the restorer as float16 safetensors with its widths (and ``meta``) in the header."""
    path = Path(path)
    tensors = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    info = {"widths": json.dumps(model.widths)}
    if meta:
        info["meta"] = json.dumps(meta)
    atomic_safetensors(tensors, path, metadata=info)
    return path


def load_prior(path: str | Path, device: torch.device | str = "cpu") -> SceneRestorer:
    """The restorer saved by :func:`save_prior`, frozen, in eval mode, float32."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        widths = json.loads(f.metadata()["widths"])
    model = SceneRestorer(widths)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def heldout_error(model: SceneRestorer, n: int = 128, seed: int = 12345, vqgan=None) -> dict:
    """Mean absolute error (0-1 units) to the clean render on ``n`` held-out scenes: spoilt and restored,
    spoilt and left alone, and clean and restored (which must stay near zero: the prior leaves right pictures
    alone)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    scenes = [sample_scene(rng) for _ in range(n)]
    clean = batch_images([render(s) for s in scenes], dev)
    spoilt = corrupt(clean, [s.background for s in scenes], gen)
    if vqgan is not None:
        spoilt = reconstruct(vqgan, spoilt)
    was = model.training
    model.eval()
    report = {"spoilt_mae": (spoilt - clean).abs().mean().item(),
              "restored_mae": (model.restore(spoilt) - clean).abs().mean().item(),
              "clean_restored_mae": (model.restore(clean) - clean).abs().mean().item()}
    model.train(was)
    return {k: round(v, 5) for k, v in report.items()}


def train_prior(
    out: str | Path = "checkpoints/toy", steps: int = 2500, seed: int = 0, batch: int = 32, lr: float = 2e-3,
    roundtrip: float = 0.3, resume: bool = False, device: str | None = None, threads: int | None = 1,
    log_every: int = 25, save_every: int = 250, progress: bool = True, stop: Callable[[], bool] | None = None,
) -> SceneRestorer:
    """Train (or resume) the scene prior on rendered scenes spoilt by :func:`corrupt`, a share ``roundtrip`` of
    them also passed through the toy VQGAN (``OUT/vqgan.ckpt``, when present) as generation's images are.
    Writes ``OUT/prior.safetensors`` and ``OUT/prior.log.jsonl``; ``OUT/state/prior_state.pt`` resumes (with the
    same seed, batch, lr, roundtrip and steps)."""
    set_threads(threads)
    dev = pick_device(device)
    out = Path(out)
    state_path = out / "state" / "prior_state.pt"
    check_out_files(out, state_path, out / "prior.log.jsonl", out / "prior.safetensors")
    settings = {"seed": seed, "batch": batch, "lr": lr, "roundtrip": roundtrip, "steps": steps}
    rng = seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SceneRestorer(PRIOR_CONFIG["widths"]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    state = load_resume(state_path, out, "prior") if resume else None
    if state is not None:
        check_resume(state, out, steps, settings)
    start = restore(state, model, opt, rng, gen, path=state_path) if state is not None else 0
    # before the log: a fresh run keeps the old log if this fails
    vqgan = load_toy_vqgan(out, dev) if roundtrip > 0 and (out / "vqgan.ckpt").exists() else None
    log = TrainLog(out / "prior.log.jsonl", resume=state is not None, start=start)
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="prior", disable=not progress)
    done = start
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr * cosine_decay(step, steps)
        scenes = [sample_scene(rng) for _ in range(batch)]
        clean = batch_images([render(s) for s in scenes], dev)
        x = corrupt(clean, [s.background for s in scenes], gen)
        through = (torch.rand(batch, generator=gen) < roundtrip).to(dev)
        if vqgan is not None and bool(through.any()):
            x[through] = reconstruct(vqgan, x[through])
        loss = (model(x) - clean).abs().mean()
        check_finite(step, steps, lower_lr(lr), losses=(loss,))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        halt = halt_requested(stop)
        if log_and_save(step, steps, loss, log=log, bar=bar, log_every=log_every, save_every=save_every,
                        state_path=state_path, model=model, opt=opt, rng=rng, gen=gen, halt=halt,
                        diverged_hint=lower_lr(lr), trainer="prior", settings=settings,
                        complete=False):  # complete: after the held-out report; the weights so far, as the others
            save_prior(model, out / "prior.safetensors", meta={"steps": step + 1, "seed": seed})
        done = step + 1
        if halt and step < steps - 1:
            raise stopped_at(step + 1, steps, out)
    if done < steps:  # stopped early: the state is saved, and --resume finishes the run
        return model
    model.eval()
    report = {"heldout": heldout_error(model), "steps": steps, "seed": seed}
    if vqgan is not None:
        report["heldout_through_vqgan"] = heldout_error(model, vqgan=vqgan)
    save_prior(model, out / "prior.safetensors", meta=report)
    log.write(steps, **report)
    mark_complete(state_path)
    return model
