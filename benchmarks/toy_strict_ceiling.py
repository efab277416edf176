"""How well the best picture the toy VQGAN can draw fares under the strict reader.

For held-out scenes, the latent that encodes the true render is as right as a search could ever make it. This
script decodes it (encode, quantize, decode: the VQGAN round trip) and reads the result with
``pixgen.toy.strict.strict_read``. It reports how often the reading is the scene exactly (objects' colour,
shape, size and cell, and the background), the shape each true shape is read as, split by size, and the
same for the clean renders themselves (which must read exactly). Generation cannot pass the strict reader
more often than its own decoder allows, so this is the ceiling of the strict column of ``pixgen eval``.

    python benchmarks/toy_strict_ceiling.py [--n 300] [--seed 12345] [--vqgan DIR] [--unquantized] [--out FILE.json]

``--unquantized`` also decodes the encoder's output as it is, skipping the codebook, to tell a codebook that
loses shapes from an encoder and decoder that do.

DIR holds a vqgan.yaml + vqgan.ckpt (default: the shipped toy VQGAN), e.g. a `pixgen toy train decoder` run.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

from pixgen.factory import TOY_DIR
from pixgen.output import to_pil
from pixgen.toy.strict import strict_read
from pixgen.toy.training import batch_images, load_toy_vqgan, reconstruct
from pixgen.toy.world import render, sample_scene


def _key(scene):
    return scene.background, sorted((o.colour, o.shape, o.size, o.col, o.row) for o in scene.objects)


def _summary(images, scenes) -> dict:
    reads = [strict_read(im) for im in images]
    confusion: collections.Counter = collections.Counter()
    for reading, scene in zip(reads, scenes):
        got = {(o.colour, o.col, o.row): o.shape for o in reading.scene.objects}
        for o in scene.objects:
            confusion[f"{o.size} {o.shape} -> {got.get((o.colour, o.col, o.row), 'missing')}"] += 1
    fits = [f for r in reads for f in r.fits]
    return {
        "exact": float(np.mean([_key(r.scene) == _key(s) for r, s in zip(reads, scenes)])),
        "shape_read_as": dict(sorted(confusion.items())),
        "fit_iou_percentiles_5_25_50": [round(float(v), 3) for v in np.percentile(fits, [5, 25, 50])] if fits else [],
        "speck_px_mean": float(np.mean([r.speck_px for r in reads])),
        "unclear_share_mean": float(np.mean([r.unclear_share for r in reads])),
    }


def _uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [0, 1] -> B arrays (H, W, 3) of uint8, as a saved PNG would hold them."""
    return [np.asarray(to_pil(image)) for image in images]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--vqgan", type=Path, default=TOY_DIR)
    ap.add_argument("--unquantized", action="store_true", help="also decode the encoder output without quantizing")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    scenes = [sample_scene(rng) for _ in range(args.n)]
    clean = [render(s) for s in scenes]
    vqgan = load_toy_vqgan(args.vqgan)
    x = batch_images(clean, torch.device("cpu"))
    decoded = torch.cat([reconstruct(vqgan, x[i:i + 64]) for i in range(0, len(x), 64)])
    report = {"n": args.n, "seed": args.seed, "vqgan": "checkpoints/toy" if args.vqgan == TOY_DIR else str(args.vqgan),
              "clean_renders": _summary(clean, scenes), "vqgan_round_trips": _summary(_uint8(decoded), scenes)}
    if args.unquantized:
        with torch.no_grad():
            raw = torch.cat([vqgan.decode(vqgan.encode(x[i:i + 64] * 2 - 1)) for i in range(0, len(x), 64)])
        report["unquantized_round_trips"] = _summary(_uint8(((raw + 1) / 2).clamp(0, 1)), scenes)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
