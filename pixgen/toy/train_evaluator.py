"""Train the evaluator (a per-cell scene reader) on rendered toy scenes, then measure it on held-out ones.

Training images are clean renders, renders with light noise / blur / colour shifts, and (when the toy
VQGAN is available) its reconstructions of renders, so the reader copes with the decoder's rendering
style. A few empty scenes teach it to report "no object" instead of guessing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pixgen.atomic import atomic_text
from pixgen.cli_util import set_threads
from pixgen.toy.evaluator import Evaluator, save_evaluator, scene_targets
from pixgen.toy.training import (TrainLog, batch_images, check_finite, check_out_files, check_resume, cosine_decay,
                                 halt_requested, load_resume, load_toy_vqgan, log_and_save, lower_lr, mark_complete,
                                 pick_device, reconstruct, restore, seed_everything, stopped_at)
from pixgen.toy.world import Scene, render, sample_scene

__all__ = ["train_evaluator", "heldout_accuracy"]


def _scene(rng: np.random.Generator) -> Scene:
    return sample_scene(rng, n_objects=0 if rng.random() < 0.04 else None)


def _targets(scenes: list[Scene], device: torch.device) -> list[torch.Tensor]:
    cols = list(zip(*(scene_targets(s) for s in scenes)))
    return [torch.as_tensor(np.stack(c) if i < 3 else np.array(c), device=device) for i, c in enumerate(cols)]


def _corrupt(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    dev = x.device
    blur = (torch.rand(b, 1, 1, 1, generator=gen) < 0.25).float().to(dev)
    x = blur * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) + (1 - blur) * x
    shift = (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1).to(dev) * 0.04
    shift = shift * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5).float().to(dev)
    sigma = torch.rand(b, 1, 1, 1, generator=gen).to(dev) * 0.06 * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5).float().to(dev)
    return (x + shift + sigma * torch.randn(x.shape, generator=gen).to(dev)).clamp(0, 1)


def _loss(out: dict, t: list[torch.Tensor]) -> torch.Tensor:
    colour, shape, size, bg = t
    return (F.cross_entropy(out["colour"].flatten(0, 1), colour.flatten())
            + F.cross_entropy(out["shape"].flatten(0, 1), shape.flatten(), ignore_index=-100)
            + 0.5 * F.cross_entropy(out["size"].flatten(0, 1), size.flatten(), ignore_index=-100)
            + F.cross_entropy(out["background"], bg))


@torch.no_grad()
def heldout_accuracy(model: Evaluator, n: int = 1000, seed: int = 12345, vqgan=None) -> dict:
    """Accuracy on ``n`` fresh scenes (a seed never used in training): per cell, per attribute, per scene."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    x = batch_images([render(s) for s in scenes], torch.device("cpu"))
    if vqgan is not None:
        x = torch.cat([reconstruct(vqgan, x[i:i + 100]) for i in range(0, n, 100)])
    model.eval()
    got = []
    for i in range(0, n, 200):
        got += model.read(x[i:i + 200])
    occ = colour = shape = size = total_obj = cells = exact = bg = 0
    for s, g in zip(scenes, got):
        bg += s.background == g.background
        ok_scene = s.background == g.background
        for col in range(3):
            for row in range(3):
                a, b = s.cell(col, row), g.cell(col, row)
                cells += 1
                occ += (a is None) == (b is None)
                if a is not None:
                    total_obj += 1
                    if b is not None:
                        colour += a.colour == b.colour
                        shape += a.shape == b.shape
                        size += a.size == b.size
                    ok_scene &= b is not None and (a.colour, a.shape, a.size) == (b.colour, b.shape, b.size)
                else:
                    ok_scene &= b is None
        exact += ok_scene
    return {
        "scenes": n, "objects": total_obj, "background": bg / n, "occupancy": occ / cells,
        "colour": colour / total_obj, "shape": shape / total_obj, "size": size / total_obj,
        "scene_exact": exact / n,
    }


def train_evaluator(
    out: str | Path = "checkpoints/toy", steps: int = 600, seed: int = 0, batch: int = 32, lr: float = 2e-3,
    resume: bool = False, device: str | None = None, threads: int | None = 1, recon_pool: int = 768,
    log_every: int = 25, save_every: int = 250, progress: bool = True, stop: Callable[[], bool] | None = None,
) -> Evaluator:
    """Train (or resume) the evaluator; writes ``evaluator.safetensors``/``.json`` and its log. A resumed run must
    have the same seed, batch, lr and steps (the schedule)."""
    set_threads(threads)
    dev = pick_device(device)
    out = Path(out)
    state_path = out / "state" / "evaluator_state.pt"
    check_out_files(out, state_path, out / "evaluator.log.jsonl", out / "evaluator.safetensors",
                    out / "evaluator.json", out / "evaluator_heldout.json")
    settings = {"seed": seed, "batch": batch, "lr": lr, "steps": steps, "recon_pool": recon_pool}
    rng = seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Evaluator().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    state = load_resume(state_path, out, "evaluator") if resume else None
    start = 0
    if state is not None:
        check_resume(state, out, steps, settings, {"recon_pool": "recon_pool"})
        start = restore(state, model, opt, rng, gen, path=state_path)
    # before the log: a fresh run keeps the old log if this fails
    vqgan = load_toy_vqgan(out) if (out / "vqgan.ckpt").exists() else None
    log = TrainLog(out / "evaluator.log.jsonl", resume=state is not None, start=start)
    pool_x, pool_scenes = None, []
    if vqgan is not None and recon_pool:
        pool_rng = np.random.default_rng(seed + 1)
        pool_scenes = [_scene(pool_rng) for _ in range(recon_pool)]
        xs = batch_images([render(s) for s in pool_scenes], torch.device("cpu"))
        pool_x = torch.cat([reconstruct(vqgan, xs[i:i + 128]) for i in range(0, len(xs), 128)]).to(dev)
    model.train()
    diverged = lower_lr(lr, flag=None)  # the command has no --lr
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="evaluator", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr * cosine_decay(step, steps)
        n_pool = batch // 4 if pool_x is not None else 0
        scenes = [_scene(rng) for _ in range(batch - n_pool)]
        x = batch_images([render(s) for s in scenes], dev)
        if n_pool:
            idx = torch.randint(len(pool_x), (n_pool,), generator=gen)
            x = torch.cat([x, pool_x[idx.to(dev)]])
            scenes = scenes + [pool_scenes[int(i)] for i in idx]
        x = _corrupt(x, gen)
        out_ = model(x)
        loss = _loss(out_, _targets(scenes, dev))
        check_finite(step, steps, diverged, losses=(loss,))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        halt = halt_requested(stop)
        if log_and_save(step, steps, loss, log=log, bar=bar, log_every=log_every, save_every=save_every,
                        state_path=state_path, model=model, opt=opt, rng=rng, gen=gen, halt=halt,
                        diverged_hint=diverged, trainer="evaluator", settings=settings,
                        complete=False):  # complete: the held-out report
            save_evaluator(model, out / "evaluator.safetensors")
        if halt and step < steps - 1:
            raise stopped_at(step + 1, steps, out)
    model.eval()
    report = {"clean": heldout_accuracy(model.cpu())}
    if vqgan is not None:
        report["vqgan_reconstructions"] = heldout_accuracy(model, vqgan=vqgan)
    save_evaluator(model, out / "evaluator.safetensors", meta={"heldout": report, "steps": steps, "seed": seed})
    log.write(steps, heldout=report)
    atomic_text(out / "evaluator_heldout.json", json.dumps(report, indent=2) + "\n")
    mark_complete(state_path)
    return model


if __name__ == "__main__":  # python -m pixgen.toy.train_evaluator [steps] [--resume]
    import sys

    train_evaluator(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 600, resume="--resume" in sys.argv)
