"""Where on the canvas does the toy CLIP first push? A map of the prompt loss's pixel gradient at the start.

For the suite's single-object, colour and position prompts (seeds 0-1, the toy preset and its chosen flat start),
takes the gradient of the prompt loss with respect to the decoded start image, through the preset's cutouts,
over several cutout draws. Each gradient's per-pixel magnitude is divided by its mean, then averaged. The
result is pooled onto the world's 3x3 grid of cells (1.0 = an even share). A flat start has no content of its
own, so cells well above 1.0 are where objects tend to appear first, whatever the prompt asks; compare the
positions the evaluator reads in ``toy_eval_64/results.json``.

    python benchmarks/toy_gradient_map.py [--draws 5] [--out benchmarks/toy_gradient_map.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from pixgen.api import _build_config
from pixgen.factory import build_session
from pixgen.toy.evaluate import suite

CELLS = [f"{c}{r}" for r in "TMB" for c in "LCR"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=5, help="cutout draws per prompt and seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/toy_gradient_map.json")
    parser.add_argument("--eval", default="benchmarks/toy_eval_64/results.json",
                        help="eval results whose read positions are counted beside the map")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prompts = [it.prompt for it in suite() if it.category in ("single object", "colour", "position")]
    total = torch.zeros(64, 64)
    for prompt in prompts:
        for seed in range(args.seeds):
            session = build_session(_build_config(prompt, None, {"model": "toy", "seed": seed}, None))
            engine = session.engine
            engine.tv_weight = 0.0  # the prompt's pull only
            start = session.generator().detach()
            for _ in range(args.draws):
                image = start.clone().requires_grad_(True)
                _, terms = engine.losses(image, engine.targets)
                terms.sum().backward()
                magnitude = image.grad[0].norm(dim=0)
                total += magnitude / magnitude.mean()
    total /= total.mean()
    grid = F.adaptive_avg_pool2d(total[None, None], 3)[0, 0]
    fine = F.avg_pool2d(total[None, None], 8)[0, 0]
    cells = dict(zip(CELLS, (round(float(v), 3) for v in grid.flatten())))
    read = collections.Counter()
    if Path(args.eval).is_file():
        for row in json.loads(Path(args.eval).read_text())["rows"]:
            read.update(re.findall(r"@(\w\w)", row["read"]))
    result = {"prompts": len(prompts), "seeds": args.seeds, "draws": args.draws,
              "gradient_share_per_cell": cells, "gradient_map_8x8": [[round(float(v), 2) for v in r] for r in fine],
              "objects_read_per_cell": {c: read.get(c, 0) for c in CELLS}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("cell  gradient share  objects read in eval")
    for c in CELLS:
        print(f"{c}    {cells[c]:6.2f}          {read.get(c, 0)}")


if __name__ == "__main__":
    main()
