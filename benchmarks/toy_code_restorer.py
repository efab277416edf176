"""A code restorer: does a prior that *chooses* codes, rather than averaging pixels, turn blobs into shapes?

The scene prior (``pixgen.toy.prior``) is trained with an L1 loss, and for a blob that could be any of several
shapes its answer is their average: a blob with cleaner edges. This script tries the discrete counterpart. A
small dilated convolutional network reads the toy VQGAN's code grid of a spoilt scene (``prior.corrupt``, plus
0-20% of cells swapped for other codes) and predicts, per cell, the code of the clean render (cross-entropy,
so it picks a mode). It is trained in the manner of MaskGIT: a random share of the clean codes is given as
context, so that at use it can commit the surest cells first and fill in the rest over a few passes.

At generation, after chosen steps, the search's code grid is replaced by the restorer's (``--k`` samples with
noised commit order, the one the prompt's CLIP loss scores best kept, Adam's state reset).

    python benchmarks/toy_code_restorer.py train --out FILE.pt [--steps 2000] [--seed 0] [--threads 2]
    python benchmarks/toy_code_restorer.py heldout --model FILE.pt
    python benchmarks/toy_code_restorer.py suite --model FILE.pt --out DIR [--at 100] [--k 4] [--seeds 0]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixgen.factory import TOY_DIR
from pixgen.ops import nearest_codes
from pixgen.toy.prior import corrupt
from pixgen.toy.training import batch_images, load_toy_vqgan, seed_everything
from pixgen.toy.world import render, sample_scene


class _Block(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, width)
        self.conv = nn.Conv2d(width, width, 3, 1, dilation, dilation=dilation)
        self.out = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.out(F.gelu(self.conv(F.gelu(self.norm(h)))))


class CodeRestorer(nn.Module):
    """(spoilt code vectors (B, D, h, w), known codes (B, h, w) with ``n_embed`` for unknown) -> logits
    (B, n_embed, h, w). The receptive field (47 cells) covers a whole 16x16 grid."""

    def __init__(self, n_embed: int = 512, embed_dim: int = 32, width: int = 96,
                 dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 1)):
        super().__init__()
        self.n_embed = n_embed
        self.inp = nn.Conv2d(embed_dim, width, 1)
        self.tok = nn.Embedding(n_embed + 1, width)
        self.blocks = nn.ModuleList([_Block(width, d) for d in dilations])
        self.norm = nn.GroupNorm(8, width)
        self.head = nn.Conv2d(width, n_embed, 1)

    def forward(self, spoilt: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        h = self.inp(spoilt) + self.tok(known).permute(0, 3, 1, 2)
        for block in self.blocks:
            h = block(h)
        return self.head(F.gelu(self.norm(h)))


def codes_of(vqgan, z: torch.Tensor) -> torch.Tensor:
    """Indices (B, h, w) of the nearest codes to latents (B, D, h, w), as the quantizer picks them."""
    return nearest_codes(z.movedim(1, -1), vqgan.codebook)


def embed_codes(vqgan, codes: torch.Tensor) -> torch.Tensor:
    return vqgan.codebook[codes].movedim(-1, 1)


def _gumbel(shape, gen: torch.Generator) -> torch.Tensor:
    return -torch.log(-torch.log(torch.rand(shape, generator=gen).clamp_min(1e-9)).clamp_min(1e-9))


@torch.no_grad()
def make_batch(vqgan, rng, gen, batch: int, scramble=(0.0, 0.2)):
    scenes = [sample_scene(rng) for _ in range(batch)]
    clean = batch_images([render(s) for s in scenes], "cpu")
    spoilt_img = corrupt(clean, [s.background for s in scenes], gen)
    codes = codes_of(vqgan, vqgan.encode(torch.cat([clean, spoilt_img]) * 2 - 1))
    target, spoilt = codes[:batch], codes[batch:].clone()
    share = torch.rand(batch, 1, 1, generator=gen) * (scramble[1] - scramble[0]) + scramble[0]
    swap = torch.rand(spoilt.shape, generator=gen) < share
    pool = spoilt.flatten()[torch.randint(spoilt.numel(), spoilt.shape, generator=gen)]
    return target, torch.where(swap, pool, spoilt)


def mask_known(target: torch.Tensor, gen: torch.Generator, n_embed: int):
    """Hide a cosine-scheduled random share of the clean codes; returns (known, masked)."""
    b, h, w = target.shape
    ratio = torch.cos(math.pi / 2 * torch.rand(b, 1, 1, generator=gen))
    masked = torch.rand(b, h, w, generator=gen) < ratio
    return torch.where(masked, torch.full_like(target, n_embed), target), masked


@torch.no_grad()
def restore(model: CodeRestorer, vqgan, spoilt: torch.Tensor, gen: torch.Generator, iters: int = 6,
            temperature: float = 1.0) -> torch.Tensor:
    """MaskGIT-style decoding: each pass commits the surest cells (their confidence noised by Gumbel noise
    times ``temperature``, fading over the passes) with their most likely code."""
    b, h, w = spoilt.shape
    n = h * w
    emb = embed_codes(vqgan, spoilt)
    known = torch.full_like(spoilt, model.n_embed)
    for t in range(iters):
        logits = model(emb, known).float()
        pick = logits.argmax(1)
        conf = torch.log_softmax(logits, 1).gather(1, pick[:, None])[:, 0]
        unknown = known == model.n_embed
        left = int(math.floor(math.cos(math.pi / 2 * (t + 1) / iters) * n))
        if temperature > 0:
            conf = conf + temperature * (1 - (t + 1) / iters) * _gumbel(conf.shape, gen)
        conf = torch.where(unknown, conf, torch.full_like(conf, float("inf")))
        cand = torch.where(unknown, pick, known)
        if left == 0:
            return cand
        thresh = conf.view(b, -1).sort(1).values[:, left - 1].view(b, 1, 1)
        known = torch.where(conf > thresh, cand, known)
    return known


def train(out: str, steps: int, seed: int = 0, batch: int = 32, lr: float = 2e-3, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    rng = seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    vqgan = load_toy_vqgan(TOY_DIR)
    model = CodeRestorer()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.time()
    with open(out + ".log.jsonl", "w") as log:
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr * min(1, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
            target, spoilt = make_batch(vqgan, rng, gen, batch)
            known, masked = mask_known(target, gen, model.n_embed)
            logits = model(embed_codes(vqgan, spoilt), known)
            ce = F.cross_entropy(logits, target, reduction="none")
            loss = (ce * masked).sum() / masked.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 25 == 0 or step == steps - 1:
                m = max(1, int(masked.sum()))
                rec = {"step": step, "loss": round(loss.item(), 4),
                       "acc": round(int(((logits.argmax(1) == target) & masked).sum()) / m, 4),
                       "spoilt_acc": round(int(((spoilt == target) & masked).sum()) / m, 4),
                       "s": round(time.time() - t0, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if (step + 1) % 250 == 0 or step == steps - 1:
                torch.save(model.state_dict(), out + ".tmp")
                os.replace(out + ".tmp", out)


def load(path: str) -> CodeRestorer:
    model = CodeRestorer()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def heldout(path: str, n: int = 100, seed: int = 4321, amplitude: float = 2.0) -> dict:
    """Strictly exact readings of held-out scenes decoded from their codes, restored or not: clean ones and
    ones bent into blobs (``warp_shapes`` at ``amplitude`` px RMS)."""
    from pixgen.output import to_pil
    from pixgen.toy.strict import strict_read
    from pixgen.toy.train_clip import warp_field, warp_shapes

    torch.set_num_threads(1)
    model, vqgan = load(path), load_toy_vqgan(TOY_DIR)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    clean = batch_images([render(s) for s in scenes], "cpu")
    bent = warp_shapes(clean, warp_field(n, 64, 64, gen) * amplitude)

    def key(s):
        return s.background, sorted((o.colour, o.shape, o.col, o.row) for o in s.objects)

    def exact(codes):
        images = ((vqgan.decode(embed_codes(vqgan, codes)) + 1) / 2).clamp(0, 1)
        return float(np.mean([key(strict_read(to_pil(im[None])).scene) == key(s) for im, s in zip(images, scenes)]))

    with torch.no_grad():
        cc, cb = (codes_of(vqgan, vqgan.encode(x * 2 - 1)) for x in (clean, bent))
        report = {"clean": exact(cc), "bent": exact(cb)}
        for name, codes in (("clean", cc), ("bent", cb)):
            out = restore(model, vqgan, codes, gen)
            report[f"{name}_restored"] = exact(out)
            report[f"{name}_restored_code_agreement"] = round(float((out == cc).float().mean()), 4)
    return report


def suite(path: str, out: str, at: list[int], k: int, seeds: list[int]) -> dict:
    """The eval suite with the search's codes replaced by the best of ``k`` restorations after steps ``at``."""
    from pixgen.engine import Engine
    from pixgen.toy.evaluate import run_suite

    torch.set_num_threads(1)
    model = load(path)
    plain = Engine.step
    stats: list[dict] = []

    @torch.no_grad()
    def project(engine: Engine, step: int) -> None:
        g = engine.generator
        codes = codes_of(g.vqgan, g.z)
        cands = restore(model, g.vqgan, codes.expand(k, -1, -1).contiguous(),
                        torch.Generator().manual_seed(1000 + step))
        targets = engine.active_targets(step)
        scores = []
        for c in cands:
            image = (g.vqgan.decode(embed_codes(g.vqgan, c[None])).add(1).div(2)).clamp(0, 1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(7 + step)  # the same crops for every candidate
                labels, terms = engine.losses(image, targets)
            scores.append(sum(float(v) for lab, v in zip(labels, terms) if lab not in ("tv", "prior", "init_weight")))
        best = min(range(k), key=scores.__getitem__)
        stats.append({"step": step + 1, "changed": round(float((cands[best] != codes[0]).float().mean()), 4)})
        g.z.copy_(embed_codes(g.vqgan, cands[best][None]))
        engine.optimizer.state.clear()

    def step(self, i):
        out = plain(self, i)
        if i + 1 in at:
            project(self, i)
        return out

    Engine.step = step
    try:
        rep = run_suite(seeds=seeds, out=out, progress=False, overwrite=True)
    finally:
        Engine.step = plain
    rows = rep["rows"]
    return {"at": at, "k": k, "seeds": seeds, "passes": sum(r["pass"] for r in rows),
            "strict": sum(r["strict_pass"] for r in rows), "of": len(rows),
            "codes_changed_mean": round(float(np.mean([s["changed"] for s in stats])), 4),
            "summary": {c: v["accuracy"] for c, v in rep["summary"].items()}, "timing": rep["timing"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    h = sub.add_parser("heldout")
    h.add_argument("--model", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--at", default="100")
    s.add_argument("--k", type=int, default=4)
    s.add_argument("--seeds", default="0")
    a = p.parse_args()
    if a.cmd == "train":
        train(a.out, a.steps, a.seed, threads=a.threads)
    elif a.cmd == "heldout":
        print(json.dumps(heldout(a.model)))
    else:
        print(json.dumps(suite(a.model, a.out, [int(x) for x in a.at.split(",")], a.k,
                               [int(x) for x in a.seeds.split(",")])))


if __name__ == "__main__":
    main()
