"""Does the search keep a right answer? Start generation from a clean render that satisfies the prompt.

For each suite prompt of the chosen categories and each seed, renders a scene that satisfies the prompt, starts
the toy preset's search from it (``init_image``), and asks the evaluator whether the picture still satisfies the
prompt after 1 step (the start, through the VQGAN) and after the full run. A CLIP whose best images are right
keeps the start right; a CLIP that prefers something else pulls the search away from it while the prompt loss
falls. So this separates "the CLIP prefers wrong pictures" from "the search cannot reach right ones", which the
eval suite alone cannot.

    python benchmarks/toy_stability.py [--clip PATH] [--seeds 0,1] [--tv-weight W] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pixgen
from pixgen.toy.captions import build_scene
from pixgen.toy.evaluate import describe, judge, suite
from pixgen.toy.evaluator import load_evaluator
from pixgen.toy.world import BACKGROUND_NAMES, render

CATEGORIES = ["single object", "position", "two objects", "colour attribution"]


def right_render(item, seed: int) -> np.ndarray:
    """A clean render (H, W, 3 uint8) of a scene that satisfies the suite item's prompt, fixed by ``seed``."""
    rng = np.random.default_rng(1000 + seed)
    scene = None
    while scene is None:
        bg = item.spec.background or BACKGROUND_NAMES[int(rng.integers(len(BACKGROUND_NAMES)))]
        scene = build_scene(rng, list(item.spec.refs), bg, 0.5)
    return render(scene)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", default=None, help="a toy clip.pt (default: the shipped one)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--iterations", type=int, default=None, help="default: the toy preset's")
    parser.add_argument("--tv-weight", type=float, default=None, help="default: the toy preset's")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    options = {"clip": [f"pixgen-toy-clip:{args.clip}"]} if args.clip else {}
    if args.iterations:
        options["iterations"] = args.iterations
    if args.tv_weight is not None:  # 0 shows whether the smoothness term, not the CLIP, moves the picture
        options["tv_weight"] = args.tv_weight
    evaluator = load_evaluator()
    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        start_png = Path(tmp) / "start.png"
        for item in (it for it in suite() if it.category in CATEGORIES):
            for seed in seeds:
                Image.fromarray(right_render(item, seed)).save(start_png)
                common = dict(model="toy", seed=seed, init_image=str(start_png), write=False, progress=False,
                              echo=False, **options)
                first = pixgen.generate(item.prompt, **{**common, "iterations": 1})
                last = pixgen.generate(item.prompt, **common)
                read_first, read_last = evaluator.read([first.image, last.image])
                rows.append({"category": item.category, "prompt": item.prompt, "seed": seed,
                             "start_pass": judge(item, read_first), "final_pass": judge(item, read_last),
                             "start_loss": round(first.losses[0]["loss"], 4),
                             "final_loss": round(last.losses[-1]["loss"], 4), "final_read": describe(read_last)})
    summary = {}
    for cat in CATEGORIES + ["overall"]:
        sel = [r for r in rows if cat == "overall" or r["category"] == cat]
        summary[cat] = {"n": len(sel), "start": float(np.mean([r["start_pass"] for r in sel])),
                        "final": float(np.mean([r["final_pass"] for r in sel])),
                        "loss_start": float(np.mean([r["start_loss"] for r in sel])),
                        "loss_final": float(np.mean([r["final_loss"] for r in sel]))}
    report = {"clip": args.clip or "shipped", "seeds": seeds, "options": options, "summary": summary, "rows": rows,
              "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
