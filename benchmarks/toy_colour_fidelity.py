"""How exact are the colours of toy pictures? Generated ones against what the toy VQGAN itself draws.

    python benchmarks/toy_colour_fidelity.py EVAL_OUT [EVAL_OUT ...] --out benchmarks/toy_colour_fidelity.json

For each eval's images (``pixgen eval --out EVAL_OUT``): every pixel within 60 RGB units (Euclidean, 0-255) of one of
the world's eight object colours, as the strict reader counts it, and its distance to that colour. For reference,
the same over 64 random world scenes after a round trip through the toy VQGAN (encode, quantise, decode), and, on
those, the distance of each true object pixel from its true colour. A checker with a tighter colour tolerance than
the strict reader's 60 would lose the pixels beyond it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

def _object_distances(pixels: np.ndarray, palette: np.ndarray, n_object: int, tol: float = 60.0) -> np.ndarray:
    """Distances to the nearest world colour of the pixels (M, 3) whose nearest is an object colour within tol."""
    dist = np.linalg.norm(pixels[:, None, :] - palette[None], axis=-1)
    nearest, label = dist.min(-1), dist.argmin(-1)
    return nearest[(label < n_object) & (nearest < tol)]


def _stats(d: np.ndarray) -> dict:
    return {"pixels": int(d.size), "median": round(float(np.median(d)), 1), "p90": round(float(np.percentile(d, 90)), 1),
            "share_within_20": round(float((d < 20).mean()), 3), "share_within_30": round(float((d < 30).mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", nargs="+", type=Path, help="pixgen eval --out directories")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from pixgen.factory import TOY_DIR
    from pixgen.toy.strict import PALETTE
    from pixgen.toy.training import load_toy_vqgan, reconstruct
    from pixgen.toy.world import COLOUR_NAMES, render, sample_scene

    n_object = len(COLOUR_NAMES)
    record: dict = {"benchmark": "toy_colour_fidelity", "evals": {}}
    for out in args.evals:
        rows = json.loads((out / "results.json").read_text())["rows"]
        d = np.concatenate([_object_distances(np.asarray(Image.open(out / r["image"]).convert("RGB"), np.float32)
                                              .reshape(-1, 3), PALETTE, n_object) for r in rows])
        record["evals"][str(out)] = {"images": len(rows), **_stats(d)}
    rng = np.random.default_rng(0)
    truth = np.stack([render(sample_scene(rng)) for _ in range(args.scenes)]).astype(np.float32)
    back = reconstruct(load_toy_vqgan(TOY_DIR), torch.from_numpy(truth).permute(0, 3, 1, 2) / 255)
    back = (back * 255).permute(0, 2, 3, 1).numpy().reshape(-1, 3)
    flat = truth.reshape(-1, 3)
    true_label = np.linalg.norm(flat[:, None] - PALETTE[None], axis=-1).argmin(-1)
    on_object = true_label < n_object
    record["round_trip"] = {"scenes": args.scenes, "read_like_the_evals": _stats(_object_distances(back, PALETTE, n_object)),
                            "true_object_pixels_off_their_colour": _stats(np.linalg.norm(back - flat, axis=-1)[on_object])}
    print(json.dumps(record, indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
