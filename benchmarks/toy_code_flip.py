"""Experiment: a discrete search over the VQGAN's codes in place of Adam on the continuous latent.

The toy search draws blobs: its continuous latent drifts across code boundaries cell by cell, following the image
tower's gradient, and shapes bend (benchmarks/toy_results.md, "Which part fails to draw shapes"). This asks
whether a search that may only *swap whole codes* keeps shapes better. Each step takes the prompt's gradient at
the quantised latent, g (one vector per cell), estimates to first order what swapping a cell's code c for code k
would change, g . (e_k - e_c), and makes the m swaps with the largest estimated gain (at most one per cell). The
number of swaps falls linearly from ``--swaps`` START to END over the run; ``--beta`` smooths g over steps.
Everything else (start colour choice, towers, crops, TV, 100 steps) is the toy preset's.

    python benchmarks/toy_code_flip.py --out DIR [--prompt-seed 3] [--seeds 0] [--n 16] [--swaps 6,1] [--beta 0]

It runs the held-out prompts twice, as shipped and with the code search, and writes DIR/toy_code_flip.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import pixgen.api as api
import pixgen.factory as factory
from pixgen.toy.evaluate import held_out, held_out_source, run_suite


class CodeSwap(torch.optim.Optimizer):
    """Swaps whole codes of a latent that always holds codebook vectors (see the module docstring)."""

    def __init__(self, params, codebook: torch.Tensor, total: int, swaps: tuple[float, float], beta: float):
        super().__init__(params, {})
        self.codebook = codebook.detach()
        self.total, self.swaps, self.beta = total, swaps, beta
        self.t = 0
        self.smoothed: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        (z,) = self.param_groups[0]["params"]
        channels, h, w = z.shape[1:]
        g = z.grad[0].permute(1, 2, 0).reshape(-1, channels)
        if self.beta:
            self.smoothed = g if self.smoothed is None else self.beta * self.smoothed + (1 - self.beta) * g
            g = self.smoothed
        cells = z[0].permute(1, 2, 0).reshape(-1, channels).clone()
        gain = g @ self.codebook.T - (g * cells).sum(-1, keepdim=True)  # (cells, codes): first-order loss change
        best, code = gain.min(1)
        frac = self.t / max(1, self.total - 1)
        m = int(round(self.swaps[0] + (self.swaps[1] - self.swaps[0]) * frac))
        chosen = best.argsort()[:m]
        chosen = chosen[best[chosen] < 0]
        cells[chosen] = self.codebook[code[chosen]]
        z.copy_(cells.view(h, w, channels).permute(2, 0, 1).unsqueeze(0))
        self.t += 1


def install(swaps: tuple[float, float], beta: float):
    """Make every session built from now on search over codes; returns a function that undoes it."""
    original = factory.build_session

    def build(cfg, *, state=None):
        session = original(cfg, state=state)
        gen = session.generator
        with torch.no_grad():
            gen.z.copy_(gen.vqgan.quantize(gen.z))  # the start, snapped to its codes
        session.engine.optimizer = CodeSwap(gen.latent_parameters(), gen.vqgan.codebook, int(cfg.iterations),
                                            swaps, beta)
        return session

    factory.build_session = api.build_session = build

    def undo():
        factory.build_session = api.build_session = original
    return undo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt-seed", type=int, default=3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n", type=int, default=16, help="the first N held-out prompts")
    ap.add_argument("--swaps", default="6,1", help="START,END swaps per step")
    ap.add_argument("--beta", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    swaps = tuple(float(v) for v in args.swaps.split(","))
    items = held_out(58, args.prompt_seed, "suite")[: args.n]
    source = f"{held_out_source(58, args.prompt_seed, 'suite')}, the first {len(items)}"
    out = Path(args.out)
    record = {"prompt_seed": args.prompt_seed, "seeds": seeds, "n": len(items), "swaps": swaps, "beta": args.beta}
    for name in ("shipped", "code swaps"):
        undo = install(swaps, args.beta) if name != "shipped" else (lambda: None)
        try:
            result = run_suite(seeds=seeds, out=out / name.replace(" ", "_"), items=items, source=source,
                               progress=False, overwrite=True)
        finally:
            undo()
        record[name] = {"summary": result["summary"],
                        "rows": [{k: r[k] for k in ("prompt", "seed", "pass", "strict_pass", "read", "strict_read")}
                                 for r in result["rows"]]}
        print(name, json.dumps(result["summary"]["overall"]))
    (out / "toy_code_flip.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
