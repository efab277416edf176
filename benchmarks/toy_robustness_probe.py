"""How far does an invisible change move a toy CLIP's reading? Top-1 caption accuracy on worst-case views.

Renders a batch of training-style scenes (96, fixed seed), takes one augmented view of each at the CLIP's input
size, and moves each view within an L2 ball of radius r (per image, pixel values in [0, 1]) to lower its own
caption's score (``perturb_l2``, 3 steps). Reports how often each view still picks a true caption among the
batch's. At 48x48x3 a radius of 1.0 is a root-mean-square change of 0.012 per value (about 3/255).

    python benchmarks/toy_robustness_probe.py CLIP.pt[+TOWER.safetensors] [...] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixgen.factory import TOY_CLIP_MODEL
from pixgen.perceptor import load_perceptor
from pixgen.toy import train_clip as tc

RADII = (0.0, 0.25, 0.5, 1.0)


def probe(path: str, scenes, images, texts, specs) -> dict:
    perceptor = load_perceptor(f"{TOY_CLIP_MODEL}:{path}")  # BASE+TOWER as in generation
    model = perceptor.model.float().eval()
    views = tc.augment(tc.batch_images(images, "cpu"), perceptor.input_size, torch.Generator().manual_seed(1))
    with torch.no_grad():
        txt = F.normalize(tc.encode_text_fast(model, tc.tokenize(texts)), dim=-1)
    truth = tc.truth_matrix(list(scenes), specs)

    def embed(im: torch.Tensor) -> torch.Tensor:
        return model.encode_image(tc.normalize(im, model))

    out = {}
    for radius in RADII:
        moved = tc.perturb_l2(embed, views, txt[:len(scenes)], radius, 3)
        with torch.no_grad():
            top = (F.normalize(embed(moved), dim=-1) @ txt.T).argmax(1)
        out[str(radius)] = round(truth[torch.arange(len(scenes)), top].float().mean().item(), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenes, images, texts, specs, _ = tc.make_batch(np.random.default_rng(7), 96, 0)
    report = {"scenes": len(scenes), "steps": 3, "top1_by_l2_radius": {}}
    for path in args.clips:
        report["top1_by_l2_radius"][path] = probe(path, scenes, images, texts, specs)
        print(path, report["top1_by_l2_radius"][path], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
