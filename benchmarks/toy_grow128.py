"""Where a 128x128 toy picture loses its shapes (fifteenth session; toy_results.md, "Why 128x128 pictures pass
fewer strict checks").

The preset composes a 128x128 picture at 64x64 for 90 steps, then grows it (decode, scale up by nearest pixel,
encode at 128x128) and finishes with 10 steps there. This script runs a held-out prompt set through the coarse
stage once per prompt and branches from the grown latent, so every variant below starts from the same picture:

  preset       the preset's 10 finishing steps (the same image a straight `pixgen generate` makes)
  target       the 64x64 composition at step 90, scaled up by nearest pixel (what growing starts from)
  rt           the grown latent decoded with no step: the VQGAN round trip at 128x128 alone
  hold-W       the finishing steps with a term W x the mean squared difference from ``target``
  holdl1-W     the same with the mean absolute difference
  inv-W        the finishing steps with that term alone, no CLIP: the latent fitted to ``target``
  bil-rt, bil-preset     grown from a bilinear, not nearest, scale-up (no step; the finishing steps)
  snap-rt, snap-preset   grown from the composition snapped to the world's 11 colours first

Each picture is read by the evaluator and the strict reader (box-filtered to 64x64, as `pixgen eval` reads it).

    python benchmarks/toy_grow128.py OUT.json --prompt-seed 80 --variants preset,target,rt [--part 0 --parts 2]

Run parts side by side in separate processes and join their rows (``--join OUT.json PART.json ...``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pixgen.api import _build_config
from pixgen.factory import build_session, torch_threads
from pixgen.output import to_pil
from pixgen.toy.evaluate import held_out, held_out_source, verdicts
from pixgen.toy.evaluator import load_evaluator
from pixgen.toy.strict import strict_read
from toy_screens import nearest_world_colours  # the same snap as the screens' `snap` variant

SIZE = 128


def branch(session, variant: str, coarse: torch.Tensor, z0: torch.Tensor, rng: torch.Tensor) -> torch.Tensor:
    """The final picture of one variant, from the grown latent ``z0`` and the RNG state at growth."""
    engine, gen = session.engine, session.generator
    target = F.interpolate(coarse, size=(SIZE, SIZE), mode="nearest")
    if variant == "target":
        return target
    with torch.no_grad():
        gen.z.copy_(z0)
        if variant.startswith(("bil-", "snap-")):
            source = coarse if variant.startswith("bil-") else nearest_world_colours(coarse)
            mode = "bilinear" if variant.startswith("bil-") else "nearest"
            kw = {"align_corners": False} if mode == "bilinear" else {}
            gen.z.copy_(gen.vqgan.encode(F.interpolate(source, size=(SIZE, SIZE), mode=mode, **kw) * 2 - 1))
    if variant.endswith("rt"):
        with torch.no_grad():
            return gen()
    engine.optimizer.state.clear()
    torch.set_rng_state(rng)
    kind, _, weight = variant.partition("-")
    weight = float(weight) if kind in ("hold", "holdl1", "inv") else 0.0
    losses = engine.losses

    def held(image, targets, step=None):
        labels, terms = losses(image, targets, step)
        if step is None or not weight:
            return labels, terms
        diff = image - target
        term = weight * (diff.abs().mean() if kind == "holdl1" else diff.pow(2).mean())
        if kind == "inv":
            return ["hold"], term.view(1)
        return labels + ["hold"], torch.cat([terms, term.view(1)])

    engine.losses = held
    try:
        engine.run(engine.grow_step, [])
    finally:
        engine.losses = losses
    with torch.no_grad():
        return gen()


def run(prompt_seed: int, seed: int, variants: list[str], part: int, parts: int, images: Path | None) -> list[dict]:
    evaluator = load_evaluator()
    rows = []
    for i, item in enumerate(held_out(58, seed=prompt_seed)):
        if i % parts != part:
            continue
        c0 = time.process_time()
        # the finish it studies: 90 steps at 64x64, then grown (the toy preset's until it composed throughout), with
        # no sparsity term (the preset of the fifteenth session, whose runs the records hold)
        cfg = _build_config(item.prompt, "toy", {"size": [SIZE, SIZE], "seed": seed, "coarse.share": 0.9,
                                                 "sparsity.weight": 0.0}, None, None)
        pictures = {}
        with torch_threads(cfg.threads):
            session = build_session(cfg)
            engine, gen = session.engine, session.generator
            steps = iter(range(1, engine.total + 1))
            engine.run(0, [], should_stop=lambda: next(steps) >= engine.grow_step)  # the coarse stage only
            with torch.no_grad():
                coarse = gen()
            engine.grow_if_due(engine.grow_step)
            z0, rng = gen.z.detach().clone(), torch.get_rng_state()
            for v in variants:
                pictures[v] = to_pil(branch(session, v, coarse, z0, rng))
        readings = evaluator.read(list(pictures.values()))
        row = {"index": i, "category": item.category, "prompt": item.prompt, "seed": seed}
        for (v, picture), got in zip(pictures.items(), readings):
            strict = strict_read(picture)
            row[v] = {**verdicts(item, got, strict), "strict_objects": len(strict.scene.objects),
                      "strict_blobs": strict.blobs, "unclear": round(strict.unclear_share, 4),
                      "speck_px": strict.speck_px}
            if images is not None:
                picture.save(images / f"{prompt_seed}_{seed}_{i:02d}_{v}.png")
        row["cpu_s"] = round(time.process_time() - c0, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summary(rows: list[dict], variants: list[str]) -> dict:
    out = {}
    for v in variants:
        sel = [r[v] for r in rows]
        out[v] = {"images": len(sel), **{k: sum(r[k] for r in sel) for k in
                                         ("pass", "exact_pass", "strict_pass", "strict_objects", "strict_blobs")},
                  "unclear_mean": round(sum(r["unclear"] for r in sel) / len(sel), 4),
                  "speck_px_mean": round(sum(r["speck_px"] for r in sel) / len(sel), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--prompt-seed", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="preset,target,rt")
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--images", type=Path, help="also save every picture here")
    ap.add_argument("--join", nargs="+", type=Path, help="join these part files into OUT instead of running")
    args = ap.parse_args()
    if args.join:
        parts = [json.loads(p.read_text()) for p in args.join]
        rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: (r["seed"], r["index"]))
        variants, head = parts[0]["variants"], {k: v for k, v in parts[0].items() if k != "rows"}
        result = {**head, "summary": summary(rows, variants), "rows": rows}
    else:
        variants = args.variants.split(",")
        if args.images:
            args.images.mkdir(parents=True, exist_ok=True)
        rows = run(args.prompt_seed, args.seed, variants, args.part, args.parts, args.images)
        result = {"prompts": held_out_source(58, args.prompt_seed), "seed": args.seed, "size": SIZE,
                  "variants": variants, "torch": torch.__version__, "summary": summary(rows, variants), "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(result['rows'])} images; evaluator / nothing extra / strict, objects and blobs (strict reader)")
    for v, n in result["summary"].items():
        print(f"{v:>12}: {n['pass']:3d} / {n['exact_pass']:3d} / {n['strict_pass']:3d}   objects {n['strict_objects']:3d}"
              f" blobs {n['strict_blobs']:3d}  unclear {n['unclear_mean']:.3f}  speck px {n['speck_px_mean']:.1f}")


if __name__ == "__main__":
    main()
