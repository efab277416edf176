"""Oracle: what if the search started from a clean scene that the CLIP itself chose for the prompt?

The toy preset starts from the flat background that the prompt scores best (``init_color`` candidates). This
script swaps those candidates for K random rendered world scenes (one pool per seed, shared by every prompt), so
the CLIP picks, by the same scoring, the scene closest to the prompt, and the usual search runs from it. It
asks whether a learned scene sampler in front of the search (in the manner of sampling and reranking with the
CLIP) would help: if the CLIP's choice is close and the search only has to recolour or move it, the result
should pass the evaluator, and the strict reader too, more often than from a flat start.

It is an oracle, not a feature: the pool comes from the world's renderer, which no real model has.

    python benchmarks/toy_scene_start.py --out DIR [--k 64] [--seeds 0] [--iterations N] [--set KEY=JSON ...]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import pixgen.api as api
import pixgen.factory as factory
from pixgen.toy.evaluate import run_suite
from pixgen.toy.world import CANVAS, render, sample_scene


def install_pool(k: int, pool_seed: int = 5000) -> None:
    """Make the flat-start candidates index into a pool of ``k`` rendered scenes (drawn per run seed)."""
    pools: dict[int, torch.Tensor] = {}
    current = {"seed": 0}

    def pool(seed: int) -> torch.Tensor:
        if seed not in pools:
            rng = np.random.default_rng(pool_seed + seed)
            arr = np.stack([render(sample_scene(rng)) for _ in range(k)]).astype(np.float32) / 255.0
            pools[seed] = torch.from_numpy(arr).permute(0, 3, 1, 2)
        return pools[seed]

    def scene_canvas(colours, width, height):  # replaces factory.flat_canvas: "colour" i is pool scene i
        i = colours[0][0] + 256 * colours[0][1]
        x = pool(current["seed"])[i:i + 1]
        if (height, width) != (CANVAS, CANVAS):
            x = torch.nn.functional.interpolate(x, size=(height, width), mode="nearest")
        return x

    build = factory.build_session

    def build_session(cfg, **kw):
        current["seed"] = int(cfg.seed)
        return build(cfg, **kw)

    factory.flat_canvas = scene_canvas
    factory.build_session = api.build_session = build_session


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--seeds", default="0")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="a config override, e.g. "
                   'clip=\'["pixgen-toy-clip:checkpoints/toy/clip.pt"]\' for one tower throughout')
    a = p.parse_args()
    torch.set_num_threads(1)
    install_pool(a.k)
    over: dict = {"init_color": [[i % 256, i // 256, 0] for i in range(a.k)]}
    if a.iterations:
        over["save_every"] = a.iterations
    for item in a.set:
        key, value = item.split("=", 1)
        over[key] = json.loads(value)
    rep = run_suite(seeds=[int(s) for s in a.seeds.split(",")], out=a.out, progress=False,
                    iterations=a.iterations, overwrite=True, **over)
    rows = rep["rows"]
    print(json.dumps({"k": a.k, "seeds": a.seeds, "iterations": a.iterations, "set": a.set,
                      "passes": sum(r["pass"] for r in rows), "strict": sum(r["strict_pass"] for r in rows),
                      "of": len(rows), "timing": rep["timing"]}))
    for cat, v in rep["summary"].items():
        print(f"{cat:20s} {v['accuracy']:.2f} strict {v['strict']:.2f} n {v['n']}")


if __name__ == "__main__":
    main()
