"""Would moving a prompt's target along the toy CLIP's modality gap make its towers prefer clean pictures?

    python benchmarks/toy_modality_gap.py EVAL_OUT [--out benchmarks/toy_modality_gap.json]

A CLIP's normalised image and text embeddings fill two separate cones, so a prompt's text embedding is not where
the pictures it describes sit. The gap of a tower is the mean normalised image embedding of 512 random world scenes
less the mean normalised text embedding of 512 random captions. For each shift ``a`` the target is
``normalize(text) + a * gap``, and for each tower the script counts, with that target:

- over the seed-0 images of a ``pixgen eval --out EVAL_OUT`` run: the prompts whose 8 clean renders score above the
  generated picture on average (the search's pictures beating right ones is the adversarial gap of
  toy_results.md, "What limits it now");
- over two held-out prompt sets (suite style, prompt seeds 98 and 99): the prompts whose 4 right renders beat 4
  renders with the first object's shape changed, and by how much the best flat start scores below the right renders.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from toy_diagnose import _clean_renders  # noqa: E402

SHIFTS = (0.0, 0.5, 1.0)


def _images(arrays) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255).permute(0, 3, 1, 2)


@torch.no_grad()
def main() -> dict:
    from pixgen.factory import toy_clip_specs
    from pixgen.perceptor import load_perceptor
    from pixgen.toy.captions import (
        PAIR_KIND_NAMES, parse_caption, reword_caption, sample_pair, sample_spec, spec_text,
    )
    from pixgen.toy.evaluate import held_out
    from pixgen.toy.world import SHAPES, render, sample_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_out", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--matched", action="store_true",
                        help="take the gap over matched pairs: each scene with a caption naming all it holds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    towers = [load_perceptor(spec) for spec in toy_clip_specs()]
    rng = np.random.default_rng(0)
    if args.matched:  # each scene with a caption true of it and naming all it holds, as in training
        pairs = [sample_pair(rng, PAIR_KIND_NAMES[i % len(PAIR_KIND_NAMES)]) for i in range(512)]
        captions = [spec_text(spec, rng) for _, spec in pairs]
        scenes = _images([render(scene) for scene, _ in pairs])
    else:
        captions = [spec_text(sample_spec(rng, PAIR_KIND_NAMES[i % len(PAIR_KIND_NAMES)]), rng) for i in range(512)]
        scenes = _images([render(sample_scene(rng)) for _ in range(512)])
    text_mean = F.normalize(towers[0].encode_text(captions), dim=-1).mean(0)
    gaps = [F.normalize(t.encode_image(scenes).float(), dim=-1).mean(0) - text_mean for t in towers]

    def target(text: str, k: int, a: float) -> torch.Tensor:
        return F.normalize(F.normalize(towers[0].encode_text([text]), dim=-1)[0] + a * gaps[k], dim=0)

    def embed(k: int, arrays) -> torch.Tensor:
        return F.normalize(towers[k].encode_image(_images(arrays)).float(), dim=-1)

    result = {"matched": args.matched, "towers": [t.name for t in towers], "shifts": list(SHIFTS),
              "gap_norm": [round(float(g.norm()), 3) for g in gaps], "clean_over_generated": {}, "right_over_wrong": {},
              "flat_below_right": {}}
    rows = [r for r in json.loads((args.eval_out / "results.json").read_text())["rows"] if r["seed"] == 0]
    wins = {(k, a): 0 for k in range(len(towers)) for a in SHIFTS}
    for row in rows:
        text = reword_caption(row["prompt"]) or row["prompt"]
        with Image.open(args.eval_out / row["image"]) as im:
            generated = np.asarray(im.convert("RGB").resize((64, 64), Image.BOX))
        clean = _clean_renders(parse_caption(text), 8, np.random.default_rng(1))
        for k in range(len(towers)):
            e = embed(k, [generated, *clean])
            for a in SHIFTS:
                s = e @ target(text, k, a)
                wins[k, a] += bool(s[1:].mean() > s[0])
    for k, name in enumerate(result["towers"]):
        result["clean_over_generated"][name] = {str(a): f"{wins[k, a]}/{len(rows)}" for a in SHIFTS}
    rng = np.random.default_rng(3)
    items = held_out(58, seed=98) + held_out(58, seed=99)
    flats = [np.full((64, 64, 3), c, np.uint8) for c in (128, 20, 240)]
    right_wins = {a: 0 for a in SHIFTS}
    flat_gap = {a: [] for a in SHIFTS}
    for item in items:
        right = _clean_renders(item.spec, 4, rng)
        ref = item.spec.refs[0]
        other = [s for s in SHAPES if s != ref.shape][int(rng.integers(len(SHAPES) - 1))]
        wrong = _clean_renders(replace(item.spec, refs=(replace(ref, shape=other), *item.spec.refs[1:])), 4, rng)
        e, ef = embed(0, right + wrong), embed(0, flats)
        for a in SHIFTS:
            t = target(item.prompt, 0, a)
            s = e @ t
            right_wins[a] += bool(s[:4].mean() > s[4:].mean())
            flat_gap[a].append(float((ef @ t).max() - s[:4].mean()))
    name = result["towers"][0]
    result["right_over_wrong"][name] = {str(a): f"{right_wins[a]}/{len(items)}" for a in SHIFTS}
    result["flat_below_right"][name] = {str(a): round(float(np.mean(flat_gap[a])), 3) for a in SHIFTS}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
