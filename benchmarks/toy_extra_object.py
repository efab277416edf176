"""How much does the toy CLIP mind an object the caption does not name?

    python benchmarks/toy_extra_object.py --clip checkpoints/toy/clip.pt --n 150 --out result.json

For ``n`` clean scenes (single object, two objects and relation captions, in turn) it scores the true caption
against the scene, then against the same scene with one small cross added in a free cell, once for each colour
the scene does not use (images and captions scored as in `toy_clip_probe.py`). It reports, per added colour,
the mean change in cosine similarity and the share of scenes where the extra cross raised the score. Negative
means the CLIP prefers the scene without the stray object.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from toy_clip_probe import _similarities as similarities  # same preprocessing as the caption probe

from pixgen.toy.captions import sample_pair, spec_text
from pixgen.toy.train_clip import create_toy_clip
from pixgen.toy.world import COLOUR_NAMES, Scene, place_object, render


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", default="checkpoints/toy/clip.pt")
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = create_toy_clip(args.clip).float().eval()
    rng = np.random.default_rng(args.seed)
    change: dict[str, list[float]] = {c: [] for c in COLOUR_NAMES}
    done = 0
    while done < args.n:
        scene, spec = sample_pair(rng, kind=("single", "two", "relation")[done % 3])
        used = {o.colour for o in scene.objects}
        free = [(c, r) for c in range(3) for r in range(3) if scene.cell(c, r) is None]
        if not free:
            continue
        col, row = free[int(rng.integers(len(free)))]
        images, added = [render(scene)], []
        for colour in COLOUR_NAMES:
            if colour in used:
                continue
            extra = place_object(np.random.default_rng(done), "cross", colour, "small", col, row, scene.objects)
            if extra is None:
                break
            images.append(render(Scene(scene.background, scene.objects + [extra])))
            added.append(colour)
        if len(added) < len(COLOUR_NAMES) - len(used):
            continue
        score = similarities(model, images, [spec_text(spec)]).squeeze(1)
        for colour, value in zip(added, score[1:]):
            change[colour].append(float(value - score[0]))
        done += 1
    result = {"clip": args.clip, "n": args.n, "by_added_colour": {
        c: {"mean_change": round(float(np.mean(v)), 4), "share_raised": round(float(np.mean(np.array(v) > 0)), 3),
            "scenes": len(v)} for c, v in change.items()}}
    every = [x for v in change.values() for x in v]
    result["all"] = {"mean_change": round(float(np.mean(every)), 4),
                     "share_raised": round(float(np.mean(np.array(every) > 0)), 3), "pairs": len(every)}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
