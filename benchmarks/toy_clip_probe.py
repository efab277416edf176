"""Probe the toy CLIP on clean rendered scenes: how often the true caption beats a hard negative, per kind of
change (colour, shape, position, relation, count, swapped colours, ...) and per caption kind; and how often
a caption prefers its whole scene to the same scene with a named object pushed half over the edge ("cut_image");
and, per kind of change, the mean cosine between the true caption's text embedding and the negative's
("text_cosine": near 1.0 means the text tower barely tells the two captions apart). The mixed sample holds
few position and relation negatives, so "spatial" adds 200 scenes each whose caption names a place (a
single object) or a relation, each against the same caption with the place or relation flipped.

    python benchmarks/toy_clip_probe.py [--n 600] [--clip checkpoints/toy/clip.pt]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from pixgen.toy.captions import PAIR_KINDS, hard_negative, sample_pair, spec_text
from pixgen.toy.train_clip import create_toy_clip, cut_variant, normalize, tokenize
from pixgen.toy.world import render


def _pairs(rng: np.random.Generator, n: int):
    """``n`` (kind, scene, caption meaning) triples, an equal share of each caption kind."""
    for kind in PAIR_KINDS:
        for _ in range(n // len(PAIR_KINDS)):
            yield (kind, *sample_pair(rng, kind=kind))


def _text_embeds(model, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenize(texts)), dim=-1)


def _image_embeds(model, images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images).astype(np.float32) / 255).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=model.visual.image_size[0], mode="area")
    with torch.no_grad():
        return F.normalize(model.encode_image(normalize(x, model)), dim=-1)


def _similarities(model, images: list[np.ndarray], texts: list[str]) -> torch.Tensor:
    """(images, texts) cosine similarities of rendered uint8 images and captions."""
    return _image_embeds(model, images) @ _text_embeds(model, texts).T


def probe(clip_path: str, n: int = 600, seed: int = 777) -> dict:
    model = create_toy_clip(clip_path).eval()
    rng = np.random.default_rng(seed)
    by_change, by_kind, text_cosine = defaultdict(list), defaultdict(list), defaultdict(list)
    for kind, scene, spec in _pairs(rng, n):
        neg = hard_negative(spec, scene, rng)
        if neg is None:
            continue
        t = _text_embeds(model, [spec_text(spec), spec_text(neg[0])])  # encoded once: similarities and cosine
        s = (_image_embeds(model, [render(scene)]) @ t.T)[0]
        text_cosine[neg[1]].append(float(t[0] @ t[1]))
        win = float(s[0] > s[1])
        by_change[neg[1]].append(win)
        by_kind[kind].append(win)
    cut_rng = np.random.default_rng(seed + 1)  # its own stream: the numbers above stay comparable
    for _, scene, spec in _pairs(cut_rng, n):
        variant = cut_variant(scene, spec, cut_rng)
        if variant is not None:
            s = _similarities(model, [render(scene), render(variant)], [spec_text(spec)])[:, 0]
            by_change["cut_image"].append(float(s[0] > s[1]))
    spatial = {}
    for kind in ("position", "relation"):
        spatial_rng = np.random.default_rng(seed + 2)
        wins = []
        while len(wins) < 200:
            scene, spec = sample_pair(spatial_rng, weights={kind: 1.0})
            for _ in range(6):
                neg = hard_negative(spec, scene, spatial_rng)
                if neg is not None and neg[1] == kind:
                    s = _similarities(model, [render(scene)], [spec_text(spec), spec_text(neg[0])])[0]
                    wins.append(float(s[0] > s[1]))
                    break
        spatial[kind] = (round(float(np.mean(wins)), 3), len(wins))
    return {"spatial": spatial, "by_change": {k: (round(float(np.mean(v)), 3), len(v)) for k, v in sorted(by_change.items())},
            "by_kind": {k: (round(float(np.mean(v)), 3), len(v)) for k, v in by_kind.items()},
            "text_cosine": {k: round(float(np.mean(v)), 4) for k, v in sorted(text_cosine.items())}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--clip", default="checkpoints/toy/clip.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(probe(args.clip, args.n), indent=1))
