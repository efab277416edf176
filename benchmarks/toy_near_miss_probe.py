"""Does a toy image tower's caption rank the right picture above a near miss of it?

    python benchmarks/toy_near_miss_probe.py [--tower SPEC ...] --out result.json

The search holds the caption and moves the image, so what guides it is the caption preferring the right image to
images near it. For held-out prompts (``pixgen eval --held-out 58`` at prompt seeds 97-99: 174 prompts), one clean
scene that satisfies each is rendered, with its near misses: every kind of
:func:`pixgen.toy.train_clip.near_miss_variant` that applies (a named object in another shape, two named objects'
colours or places swapped, one fewer of a count), one stray object in a free cell
(:func:`~pixgen.toy.train_clip.stray_variant`), and for reference changes the towers already read well (a named
object in an unused colour, a lone placed object mirrored to the other side, another background). For each tower
it reports, per kind, in how many pairs the caption's cosine is higher for the right picture, and the mean gap.

Towers are CLIP specs as ``--clip`` takes them (``pixgen-toy-clip:clip.pt+tower.safetensors``); by default the
shipped early and late towers.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from pixgen.factory import toy_clip_specs
from pixgen.perceptor import load_perceptor
from pixgen.toy.captions import build_scene, holds
from pixgen.toy.evaluate import held_out
from pixgen.toy.train_clip import NEAR_MISS_KINDS, near_miss_variant, stray_variant
from pixgen.toy.world import BACKGROUND_NAMES, CANVAS, COLOUR_NAMES, Scene, render


def reference_changes(spec, scene, rng) -> dict[str, Scene]:
    """Changes that are not near misses of the training option, for comparison: what the towers read well."""
    out = {}
    objs = list(scene.objects)
    named = [i for i, o in enumerate(objs) if any(r.matches(o) for r in spec.refs)]
    if named:
        i = named[int(rng.integers(len(named)))]
        unused = [c for c in COLOUR_NAMES if c not in {o.colour for o in objs}]
        out["colour"] = Scene(scene.background, objs[:i] + [replace(objs[i], colour=unused[int(rng.integers(len(unused)))])]
                              + objs[i + 1:])
    ref = spec.refs[0]
    if len(objs) == 1 and (ref.col is not None or ref.row is not None):
        o = objs[0]
        moved = (replace(o, cx=CANVAS - o.cx, col=2 - o.col) if ref.col is not None and o.col != 1
                 else replace(o, cy=CANVAS - o.cy, row=2 - o.row))
        out["mirrored"] = Scene(scene.background, [moved])
    if spec.background is not None:
        others = [b for b in BACKGROUND_NAMES if b != scene.background]
        out["background"] = Scene(others[int(rng.integers(len(others)))], objs)
    return out


PROMPT_SEEDS = (97, 98, 99)


def pairs(prompt_seeds=PROMPT_SEEDS, seed: int = 5) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(prompt, kind, right render, near-miss render) for every applicable kind of each held-out prompt."""
    rng = np.random.default_rng(seed)
    rows = []
    for item in [it for s in prompt_seeds for it in held_out(58, seed=s)]:
        spec = item.spec
        refs = [spec.refs[0]] * (spec.count or 1) if spec.kind == "count" else list(spec.refs)
        for _ in range(50):
            scene = build_scene(rng, refs, spec.background or BACKGROUND_NAMES[int(rng.integers(3))], 0.3)
            if scene is not None and holds(spec, scene):
                break
        else:
            continue
        changed = {kind: near_miss_variant(scene, spec, rng, (kind,)) for kind in NEAR_MISS_KINDS}
        changed.update(reference_changes(spec, scene, rng))
        changed = {kind: v for kind, v in changed.items() if v is not None and not holds(spec, v)}
        changed["stray"] = stray_variant(scene, rng)  # the caption may still hold: it names less than is there
        for kind, variant in changed.items():
            if variant is not None:
                rows.append((item.prompt, kind, render(scene), render(variant)))
    return rows


def _images(arrays) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255).permute(0, 3, 1, 2)


def rank(tower, rows) -> dict[str, dict[str, float]]:
    perceptor = load_perceptor(tower)
    with torch.no_grad():
        text = F.normalize(perceptor.encode_text([r[0] for r in rows]), dim=-1)
        right = F.normalize(perceptor.encode_image(_images([r[2] for r in rows])).float(), dim=-1)
        wrong = F.normalize(perceptor.encode_image(_images([r[3] for r in rows])).float(), dim=-1)
    gap = ((right - wrong) * text).sum(-1).numpy()
    kinds = np.array([r[1] for r in rows])
    return {kind: {"right_above": int((gap[kinds == kind] > 0).sum()), "pairs": int((kinds == kind).sum()),
                   "mean_gap": round(float(gap[kinds == kind].mean()), 4)} for kind in dict.fromkeys(kinds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tower", action="append", help="a CLIP spec (repeat); default: the shipped towers")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    towers = args.tower or [f"{spec.model}:{spec.pretrained}" for spec in toy_clip_specs()]
    rows = pairs()
    result = {"prompt_seeds": list(PROMPT_SEEDS), "towers": {}}
    for tower in towers:
        result["towers"][tower] = rank(tower, rows)
        print(tower, json.dumps(result["towers"][tower]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
