"""How well a toy CLIP reads faint objects: the true caption against one hard negative on clean renders faded
towards their background, at several contrasts (1.0 = the clean render).

A search from a flat canvas first draws its objects faintly. If the CLIP cannot tell a faint red circle from a
faint red square, the early steps have nothing to follow but colour. ``pixgen toy train clip --fade`` trains
for this; this probe measures it.

    python benchmarks/toy_fade_probe.py [--clip SPEC ...] [--n 40] [--out FILE.json]

SPEC is a clip.pt, or BASE+TOWER.safetensors (default: the shipped towers).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixgen.factory import TOY_CLIP_MODEL, TOY_DIR, TOY_LATE_TOWER
from pixgen.perceptor import load_perceptor
from pixgen.toy.captions import PAIR_KINDS, hard_negative, sample_pair, spec_text
from pixgen.toy.train_clip import normalize, tokenize
from pixgen.toy.world import BACKGROUNDS, render

CONTRASTS = (0.1, 0.25, 0.5, 1.0)


def _faded(scene, contrast: float) -> np.ndarray:
    img = render(scene).astype(np.float32)
    bg = np.array(BACKGROUNDS[scene.background], np.float32)
    return np.clip(bg + contrast * (img - bg), 0, 255).astype(np.uint8)


def probe(spec: str, n: int, seed: int = 5) -> dict:
    model = load_perceptor(f"{TOY_CLIP_MODEL}:{spec}").model  # BASE+TOWER handled as in generation
    rng = np.random.default_rng(seed)
    items = []
    for kind in PAIR_KINDS:
        for _ in range(n):
            scene, meaning = sample_pair(rng, kind=kind)
            neg = hard_negative(meaning, scene, rng)
            if neg is not None:
                items.append((scene, meaning, neg))
    with torch.no_grad():
        texts = F.normalize(model.encode_text(tokenize([t for _, m, (nm, _) in items
                                                        for t in (spec_text(m), spec_text(nm))])), dim=-1)
    texts = texts.view(len(items), 2, -1)
    out = {}
    for contrast in CONTRASTS:
        x = torch.from_numpy(np.stack([_faded(s, contrast) for s, _, _ in items]).astype(np.float32) / 255)
        x = F.interpolate(x.permute(0, 3, 1, 2), size=model.visual.image_size[0], mode="area")
        with torch.no_grad():
            img = F.normalize(model.encode_image(normalize(x, model)), dim=-1)
        sims = torch.einsum("nd,ntd->nt", img, texts)
        by_change = defaultdict(list)
        for (_, _, (_, change)), s in zip(items, sims):
            by_change[change].append(float(s[0] > s[1]))
        out[str(contrast)] = {"all": float((sims[:, 0] > sims[:, 1]).float().mean()),
                              "cosine_true": float(sims[:, 0].mean()),
                              **{k: float(np.mean(v)) for k, v in sorted(by_change.items())}}
    return {"pairs": len(items), "by_contrast": out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", nargs="*", default=None)
    parser.add_argument("--n", type=int, default=40, help="scenes per caption kind")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clip = str(TOY_DIR / "clip.pt")
    specs = args.clip or [clip, f"{clip}+{TOY_DIR / TOY_LATE_TOWER}"]
    report = {}
    for spec in specs:
        report[spec] = probe(spec, args.n)
        for contrast, row in report[spec]["by_contrast"].items():
            print(Path(spec.split("+")[-1]).name, contrast, " ".join(f"{k} {v:.2f}" for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
