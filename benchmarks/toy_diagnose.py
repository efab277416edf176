"""Where does generation fall short: the CLIP's judgement or the optimisation's search?

For one prompt per suite category (seed 0, the toy preset), compares the toy CLIP's similarity to the prompt of
(a) the generated image, (b) its random start, and (c) clean renders of scenes that satisfy the prompt. If the
clean renders score higher than the generated image, the CLIP would prefer the right picture and the search
(decoder + optimiser) did not reach it; if the generated image scores higher, the CLIP itself accepts a wrong
picture.

    python benchmarks/toy_diagnose.py [--clip checkpoints/toy/clip.pt] [--out benchmarks/toy_diagnose.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import pixgen
from pixgen.toy.captions import build_scene, holds
from pixgen.toy.evaluate import TOY_PRESET, suite
from pixgen.toy.train_clip import create_toy_clip, normalize, tokenize
from pixgen.toy.world import BACKGROUND_NAMES, render


def _clean_renders(spec, n, rng):
    refs = [spec.refs[0]] * (spec.count or 1) if spec.kind == "count" else list(spec.refs)
    out = []
    while len(out) < n:
        bg = spec.background or BACKGROUND_NAMES[int(rng.integers(3))]
        scene = build_scene(rng, refs, bg, 0.3)
        if scene is not None and holds(spec, scene):
            out.append(render(scene))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", default="checkpoints/toy/clip.pt")
    parser.add_argument("--out", default="benchmarks/toy_diagnose.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = create_toy_clip(args.clip).eval()
    size = model.visual.image_size[0]

    def score(images, text):
        x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1) for im in images])
        x = F.interpolate(x, size=size, mode="area")
        with torch.no_grad():
            img = F.normalize(model.encode_image(normalize(x, model)), dim=-1)
            txt = F.normalize(model.encode_text(tokenize([text])), dim=-1)
        return (img @ txt.T).flatten().tolist()

    rng = np.random.default_rng(0)
    rows, seen = [], set()
    for item in suite():
        if item.category in seen:
            continue
        seen.add(item.category)
        res = pixgen.generate(item.prompt, config=str(TOY_PRESET), model="toy", seed=0, write=False, progress=False,
                              clip=[f"pixgen-toy-clip:{args.clip}"])
        gen, start = score([res.image, res.initial_image], item.prompt)
        clean = score(_clean_renders(item.spec, 8, rng), item.prompt)
        rows.append({"category": item.category, "prompt": item.prompt, "generated": round(gen, 4),
                     "start": round(start, 4), "clean_mean": round(float(np.mean(clean)), 4),
                     "clean_min": round(float(np.min(clean)), 4)})
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
