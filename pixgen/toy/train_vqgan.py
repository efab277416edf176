"""Train the toy VQGAN (our taming-compatible encoder/decoder/codebook) on rendered toy scenes.

Reconstruction loss is L1 + MSE on pixels plus the usual codebook and commitment terms; codes unused for a
while are restarted on random encoder outputs. No adversarial or perceptual loss: the flat-colour world does
not need them and LPIPS would need a download. Most steps see random 32x32 crops (the network is
convolutional, so this is 4x cheaper per sample); the last fifth sees whole 64x64 canvases.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from pixgen.atomic import atomic_text, atomic_torch_save
from pixgen.cli_util import set_threads
from pixgen.errors import PixgenError
from pixgen.models.vqgan import VQGAN, VQGANConfig
from pixgen.toy.training import (TrainLog, batch_images, check_finite, check_out_files, check_resume, cosine_decay,
                                 halt_requested, load_resume, lower_lr, pick_device, release_freed_memory, restore,
                                 save_state, seed_everything, stopped_at)
from pixgen.toy.world import CANVAS, render, sample_scene

__all__ = ["TOY_VQGAN", "FACTORS", "toy_vqgan_config", "train_vqgan", "save_taming", "PatchCritic", "scramble_codes",
           "train_decoder_gan"]

TOY_VQGAN = VQGANConfig(
    ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), resolution=CANVAS,
    z_channels=64, embed_dim=32, n_embed=512, dropout=0.0,
)
BETA = 0.25  # commitment weight, as in taming
_CH_MULT = {2: (1, 2), 4: (1, 1, 2), 8: (1, 1, 2, 2)}  # latent cell size (pixels per side) -> ch_mult
FACTORS = tuple(sorted(_CH_MULT))  # the latent cell sizes toy_vqgan_config can build


def toy_vqgan_config(factor: int = 4, n_embed: int = 512) -> VQGANConfig:
    """The toy VQGAN's architecture with ``factor`` pixels per latent cell (2, 4 or 8) and ``n_embed`` codes.
    The shipped one is ``factor=4, n_embed=512`` (``TOY_VQGAN``)."""
    if factor not in _CH_MULT:
        raise ValueError(f"factor {factor} is not one of {list(FACTORS)}")
    if n_embed < 2:
        raise ValueError(f"n_embed {n_embed} must be at least 2")
    return dataclasses.replace(TOY_VQGAN, ch_mult=_CH_MULT[factor], n_embed=n_embed)


def _batch(rng: np.random.Generator, n: int, crop: int, device: torch.device) -> torch.Tensor:
    imgs = []
    for _ in range(n):
        img = render(sample_scene(rng))
        if crop < CANVAS:
            y, x = rng.integers(0, CANVAS - crop + 1, size=2)
            img = img[y:y + crop, x:x + crop]
        imgs.append(img)
    return batch_images(imgs, device) * 2 - 1


def _quantize(model: VQGAN, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(straight-through z_q, codebook+commitment loss, code indices) for encoder output z (B, D, h, w)."""
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])
    book = model.codebook
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.T + book.pow(2).sum(1)
    idx = d.argmin(1)
    zq = book[idx].reshape(z.shape[0], z.shape[2], z.shape[3], -1).movedim(-1, 1)
    loss = F.mse_loss(zq, z.detach()) + BETA * F.mse_loss(z, zq.detach())
    return z + (zq - z).detach(), loss, idx


def save_taming(model: VQGAN, out_dir: str | Path, step: int) -> tuple[Path, Path]:
    """Write ``vqgan.ckpt`` (Lightning-style) and ``vqgan.yaml`` (taming format) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, cfg = out / "vqgan.ckpt", out / "vqgan.yaml"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_torch_save({"state_dict": state, "global_step": int(step), "epoch": 0}, ckpt)
    atomic_text(cfg, yaml.safe_dump(model.config.to_taming(), sort_keys=False))
    return ckpt, cfg


def train_vqgan(
    out: str | Path = "checkpoints/toy", steps: int = 1400, seed: int = 0, batch: int = 32, lr: float = 1e-3,
    resume: bool = False, device: str | None = None, threads: int | None = 1, log_every: int = 25,
    save_every: int = 250, progress: bool = True, factor: int = 4, n_embed: int = 512,
    stop: Callable[[], bool] | None = None,
) -> VQGAN:
    """Train (or resume) the toy VQGAN; returns the model and writes checkpoint, YAML, state and log.

    ``factor`` (pixels per latent cell) and ``n_embed`` (codebook size) pick the architecture
    (``toy_vqgan_config``); a resumed run must use the ones it started with, and the same seed, batch, lr and
    steps (the schedule). When ``stop()`` turns true (Ctrl-C on the command line) it saves after the current step
    and raises :class:`pixgen.errors.Interrupted`.
    """
    cfg = toy_vqgan_config(factor, n_embed)
    set_threads(threads)
    dev = pick_device(device)
    out = Path(out)
    state_path = out / "state" / "vqgan_state.pt"
    check_out_files(out, state_path, out / "vqgan.log.jsonl", out / "vqgan.ckpt", out / "vqgan.yaml")
    settings = {"seed": seed, "batch": batch, "lr": lr, "steps": steps}
    rng = seed_everything(seed)
    model = VQGAN(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
    start = 0
    usage_state = None
    state = load_resume(state_path, out, "vqgan") if resume else None
    if state is not None:
        arch = state.get("arch", {"factor": 4, "n_embed": TOY_VQGAN.n_embed})
        if arch != {"factor": factor, "n_embed": n_embed}:
            raise ValueError(f"the run in {out} was started with factor {arch['factor']} and n_embed "
                             f"{arch['n_embed']}; resume it with those, or train into a new directory")
        check_resume(state, out, steps, settings)
        start = restore(state, model, opt, rng, path=state_path)
        usage_state = state.get("usage")
    log = TrainLog(out / "vqgan.log.jsonl", resume=state is not None, start=start)
    usage = torch.zeros(cfg.n_embed, device=dev) if usage_state is None else usage_state.to(dev)
    diverged = lower_lr(lr, flag=None)  # the command has no --lr
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="vqgan", disable=not progress)
    for step in bar:
        full = step >= int(0.8 * steps)
        x = _batch(rng, max(1, batch // 4) if full else batch, CANVAS if full else 32, dev)
        for g in opt.param_groups:
            g["lr"] = lr * cosine_decay(step, steps, 0.1)
        z = model.encode(x)
        zq, q_loss, idx = _quantize(model, z)
        rec = model.decode(zq)
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        loss = l1 + mse + q_loss
        check_finite(step, steps, diverged, losses=(loss,))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage.mul_(0.99).index_add_(0, idx, torch.ones_like(idx, dtype=usage.dtype))
        if step % 100 == 99 and step < int(0.9 * steps):  # restart dead codes on encoder outputs
            dead = (usage < 1e-3).nonzero().flatten()
            if len(dead):
                flat = z.detach().movedim(1, -1).reshape(-1, z.shape[1])
                pick = torch.randint(len(flat), (len(dead),), device=dev)
                with torch.no_grad():
                    model.codebook[dead] = flat[pick] + 1e-3 * torch.randn_like(flat[pick])
                usage[dead] = 1.0
        halt = halt_requested(stop)
        if step % log_every == 0 or step == steps - 1 or halt:
            psnr = float(10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10)))
            used = int((usage > 1e-3).sum())
            log.write(step, loss=loss.item(), l1=l1.item(), q=q_loss.item(), psnr=psnr, codes_used=used)
            bar.set_postfix(l1=f"{l1.item():.4f}", psnr=f"{psnr:.1f}", codes=used)
        if (step + 1) % save_every == 0 or step == steps - 1 or halt:
            check_finite(step, steps, diverged, weights=(model,))
            save_taming(model, out, step + 1)  # before the state: a state at the last step means a finished run
            save_state(state_path, model=model.state_dict(), opt=opt.state_dict(), rng=rng.bit_generator.state,
                       torch_rng=torch.get_rng_state(), step=step + 1, usage=usage.cpu(),
                       arch={"factor": factor, "n_embed": n_embed}, trainer="vqgan", settings=settings)
        if halt and step < steps - 1:
            raise stopped_at(step + 1, steps, out)
    save_taming(model, out, steps)
    return model


class PatchCritic(torch.nn.Module):
    """A small PatchGAN critic: one score per overlapping patch (about 34 px across) of a (B, 3, H, W) image
    in [-1, 1]. Spectral norm on every layer keeps the hinge game stable without tuning."""

    def __init__(self, ch: int = 32):
        super().__init__()
        sn = torch.nn.utils.parametrizations.spectral_norm
        self.net = torch.nn.Sequential(
            sn(torch.nn.Conv2d(3, ch, 4, 2, 1)), torch.nn.LeakyReLU(0.2),
            sn(torch.nn.Conv2d(ch, 2 * ch, 4, 2, 1)), torch.nn.LeakyReLU(0.2),
            sn(torch.nn.Conv2d(2 * ch, 2 * ch, 3, 1, 1)), torch.nn.LeakyReLU(0.2),
            sn(torch.nn.Conv2d(2 * ch, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def scramble_codes(idx: torch.Tensor, share: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Code grids (B, h, w) with a share of cells (drawn per grid from ``share``) replaced by codes taken from
    random cells of the whole batch: code arrangements no real scene encodes to, like the ones a search visits."""
    b = idx.shape[0]
    lo, hi = share
    p = (lo + (hi - lo) * torch.rand(b, 1, 1, generator=gen)).to(idx.device)
    swap = torch.rand(idx.shape, generator=gen).to(idx.device) < p
    pool = idx.flatten()
    donors = pool[torch.randint(len(pool), idx.shape, generator=gen).to(idx.device)]
    return torch.where(swap, donors, idx)


def _shape_words(config: dict) -> str:
    """A VQGAN's shape (``dataclasses.asdict`` of its config) in the words of ``pixgen toy train vqgan``."""
    return f"--factor {2 ** (len(config['ch_mult']) - 1)} --n-embed {config['n_embed']}"


def train_decoder_gan(
    init: str | Path, out: str | Path, steps: int = 600, seed: int = 0, batch: int = 16, lr: float = 2e-4,
    gan_weight: float = 0.5, scramble: tuple[float, float] = (0.05, 0.3), critic_warmup: int = 100,
    critic_lr: float | None = None,
    resume: bool = False,
    device: str | None = None, threads: int | None = 1, log_every: int = 25, save_every: int = 100,
    progress: bool = True, stop: Callable[[], bool] | None = None,
) -> VQGAN:
    """Fine-tune the toy VQGAN's decoder (and post-quant conv) against a patch critic; the encoder and codebook
    stay as they are, so every latent keeps its meaning for the CLIP and the search.

    Each step encodes a batch of whole canvases, decodes their code grids (reconstructions, held to the scenes by
    L1 + MSE) and the same grids with a share of cells swapped (``scramble_codes``: arrangements no scene
    encodes to, as a search visits). The critic learns to tell real renders from both (hinge loss); the decoder
    learns to make both look real, weighted by ``gan_weight`` times taming's adaptive weight (the ratio of
    the reconstruction and adversarial gradient norms at the decoder's last layer). The aim is a decoder whose
    every output has the world's flat colours and hard edges, so that the search cannot settle on soft blobs.
    For the first ``critic_warmup`` steps only the critic learns, so that the decoder's first adversarial
    gradients come from a critic that already tells renders from decodes. ``critic_lr`` (default ``lr``) lets the
    critic learn faster than the decoder (two time-scale updates).
    Writes ``vqgan.ckpt``/``vqgan.yaml`` (taming format), ``state/vqgan_gan_state.pt`` and ``vqgan_gan.log.jsonl``.
    A resumed run must start from a VQGAN of the same shape, with the same seed, batch and losses; it may be
    given more ``steps`` (no schedule runs over them).
    """
    from pixgen.checkpoints import load_vqgan

    set_threads(threads)
    dev = pick_device(device)
    out = Path(out)
    state_path = out / "state" / "vqgan_gan_state.pt"
    check_out_files(out, state_path, out / "vqgan_gan.log.jsonl", out / "vqgan.ckpt", out / "vqgan.yaml")
    rng = seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    init = Path(init)
    model = load_vqgan(init / "vqgan.yaml", init / "vqgan.ckpt", device=dev, cache=False)
    model.train()
    model.requires_grad_(False)
    trained = list(model.decoder.parameters()) + list(model.post_quant_conv.parameters())
    for p in trained:
        p.requires_grad_(True)
    critic = PatchCritic().to(dev)
    opt = torch.optim.Adam(trained, lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr if critic_lr is None else critic_lr, betas=(0.5, 0.9))
    shape = dataclasses.asdict(model.config)
    settings = {"seed": seed, "batch": batch, "lr": lr, "gan_weight": gan_weight, "scramble": tuple(scramble),
                "critic_warmup": critic_warmup, "critic_lr": lr if critic_lr is None else critic_lr, "shape": shape}
    state = load_resume(state_path, out, "decoder") if resume else None
    start = 0
    if state is not None:
        was = state.get("settings", {}).get("shape", shape)
        if was != shape:
            raise PixgenError(f"--init {init} holds a VQGAN of another shape ({_shape_words(shape)}) than the one "
                              f"the run in {out} fine-tunes ({_shape_words(was)})",
                              f"resume with the --init it was started from ({state.get('init')}), or train into a "
                              "new --out")
        check_resume(state, out, steps, settings)
        start = restore(state, model, opt, rng, gen, path=state_path)
        critic.load_state_dict(state["critic"])
        opt_d.load_state_dict(state["opt_d"])
    log = TrainLog(out / "vqgan_gan.log.jsonl", resume=state is not None, start=start)
    last = model.decoder.conv_out.weight
    diverged = lower_lr(lr) if critic_lr is None else \
        f"train again with a lower --lr than {lr:g} or --critic-lr than {critic_lr:g}"  # each feeds the other
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="decoder", disable=not progress)
    for step in bar:
        x = _batch(rng, batch, CANVAS, dev)
        with torch.no_grad():
            z = model.encode(x)
            _, _, idx = _quantize(model, z)
            idx = idx.view(z.shape[0], z.shape[2], z.shape[3])  # one code per latent cell
            mixed = scramble_codes(idx, scramble, gen)
            book = model.codebook
            zq = book[idx].movedim(-1, 1)
            zq_mixed = book[mixed].movedim(-1, 1)
        warm = step < critic_warmup
        with torch.set_grad_enabled(not warm):
            rec = model.decode(zq)
            fake = model.decode(zq_mixed)
        # critic: real renders against reconstructions and scrambled decodes (hinge)
        d_loss = (F.relu(1 - critic(x)).mean()
                  + 0.5 * F.relu(1 + critic(rec.detach())).mean() + 0.5 * F.relu(1 + critic(fake.detach())).mean())
        check_finite(step, steps, diverged, losses=(d_loss,))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        metrics = {"d_loss": d_loss.item()}
        if not warm:  # decoder: reconstruct the scenes, and make both kinds of output pass the critic
            l1 = (rec - x).abs().mean()
            mse = F.mse_loss(rec, x)
            rec_loss = l1 + mse
            g_loss = -(critic(rec).mean() + critic(fake).mean()) / 2
            g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
            g_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
            adaptive = (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0, 1e4).detach()
            loss = rec_loss + gan_weight * adaptive * g_loss
            check_finite(step, steps, diverged, losses=(loss,))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            metrics.update(l1=l1.item(), g_loss=g_loss.item(), adaptive=adaptive.item())
        if step % 10 == 0:
            release_freed_memory()
        halt = halt_requested(stop)
        if step % log_every == 0 or step == steps - 1 or halt:
            with torch.no_grad():
                mse = F.mse_loss(rec, x)
            metrics["psnr"] = float(10 * torch.log10(4.0 / mse.clamp_min(1e-10)))
            log.write(step, **metrics)
            bar.set_postfix(psnr=f"{metrics['psnr']:.1f}", d=f"{d_loss.item():.2f}")
        if (step + 1) % save_every == 0 or step == steps - 1 or halt:
            check_finite(step, steps, diverged, weights=(model, critic))
            save_taming(model, out, step + 1)  # before the state: a state at the last step means a finished run
            save_state(state_path, model=model.state_dict(), opt=opt.state_dict(), rng=rng.bit_generator.state,
                       gen=gen.get_state(), step=step + 1, critic=critic.state_dict(), opt_d=opt_d.state_dict(),
                       trainer="decoder", settings=settings, init=str(init))
        if halt and step < steps - 1:
            raise stopped_at(step + 1, steps, out)
    save_taming(model, out, steps)
    return model


if __name__ == "__main__":  # python -m pixgen.toy.train_vqgan [steps]
    import sys

    train_vqgan(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 1500, resume="--resume" in sys.argv)
