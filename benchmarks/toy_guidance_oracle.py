"""Which part of the toy pipeline fails to draw the right shapes: the decoder and optimiser, or the CLIP's image tower?

For each single-object, colour, two-object and colour-attribution prompt of the eval suite (seeds 0-1, 60 runs) a
clean render that satisfies the prompt is drawn (as in ``toy_stability.py``). Then the toy preset's search runs
from its usual flat start, with the same optimiser, learning rate, steps and TV term, guided by one of:

- ``text``: the prompt, as pixgen runs it;
- ``image``: the CLIP image embedding of that render, as an image prompt (no text): the tower's own summary of a
  right picture, so caption alignment plays no part;
- ``pixel``: the mean squared error to that render (no CLIP): what the decoder and optimiser can reach at all.

The evaluator judges each result against the prompt. If ``pixel`` passes where ``image`` fails, the image
tower's gradient, not the decoder, is what keeps the search from right shapes.

    python benchmarks/toy_guidance_oracle.py [--modes text,image,pixel] [--clip SPEC ...] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pixgen
from pixgen.api import _build_config
from pixgen.factory import build_session
from pixgen.losses import total_variation
from pixgen.toy.evaluate import describe, judge, suite
from pixgen.toy.evaluator import load_evaluator
from toy_stability import right_render  # the same right answers as the stability benchmark

CATEGORIES = ["single object", "colour", "two objects", "colour attribution"]
PIXEL_WEIGHT = 50.0  # MSE of a flat start against a render is about 0.02-0.05; this puts it near the CLIP loss


def pixel_search(prompt: str, seed: int, target: np.ndarray, options: dict) -> torch.Tensor:
    """The preset's run (its start, chosen by the prompt as usual, optimiser, steps and TV term) with MSE to
    ``target`` in place of the CLIP terms: the engine's own loop, only its losses swapped."""
    cfg = _build_config(prompt, None, {"model": "toy", "seed": seed, **options}, None)
    session = build_session(cfg)
    want = torch.from_numpy(target).permute(2, 0, 1)[None].float().div(255)

    def losses(image: torch.Tensor, _targets, step=None) -> tuple[list[str], torch.Tensor]:
        return ["pixel", "tv"], torch.stack([PIXEL_WEIGHT * (image - want).pow(2).mean(),
                                             cfg.tv_weight * total_variation(image)])

    session.engine.losses = losses
    session.engine.run(0, [], lambda: False)
    with torch.no_grad():
        return session.generator().detach()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="text,image,pixel")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--clip", action="append", default=None, help="CLIP spec(s) instead of the toy model's")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    modes, seeds = args.modes.split(","), [int(s) for s in args.seeds.split(",")]
    options = {"clip": args.clip} if args.clip else {}
    evaluator = load_evaluator()
    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "right.png"
        for item in (it for it in suite() if it.category in CATEGORIES):
            for seed in seeds:
                target = right_render(item, seed)
                Image.fromarray(target).save(png)
                for mode in modes:
                    c0 = time.process_time()
                    common = dict(model="toy", seed=seed, write=False, progress=False, echo=False, **options)
                    if mode == "text":
                        image = pixgen.generate(item.prompt, **common).image
                    elif mode == "image":
                        image = pixgen.generate("", image_prompts=[str(png)], **common).image
                    elif mode == "pixel":
                        image = pixel_search(item.prompt, seed, target, options)
                    else:
                        raise SystemExit(f"unknown mode {mode!r}; use text, image or pixel")
                    read = evaluator.read(image if torch.is_tensor(image) else [image])[0]
                    rows.append({"mode": mode, "category": item.category, "prompt": item.prompt, "seed": seed,
                                 "pass": bool(judge(item, read)), "read": describe(read),
                                 "cpu_s": round(time.process_time() - c0, 2)})
    summary = {}
    for mode in modes:
        sel = [r for r in rows if r["mode"] == mode]
        by_cat = Counter(r["category"] for r in sel if r["pass"])
        summary[mode] = {"passes": sum(r["pass"] for r in sel), "n": len(sel),
                         **{cat: by_cat[cat] for cat in CATEGORIES}}
    report = {"clip": args.clip or "toy model", "seeds": seeds, "summary": summary, "rows": rows,
              "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
