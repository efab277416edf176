"""How the toy suite's pass count grows over a run's steps: every suite prompt is generated once per seed with the
toy preset (100 steps), its frames saved every 10 steps, and the frames at steps 40-100 judged like final images
(the evaluator and the strict reader).

A run cut at step k is exactly a k-step run whose CLIP schedule hands over at the same step, so the curve says
what shorter runs would pass, without running them.

    python benchmarks/toy_step_curve.py --seed 0 --work /tmp/curve --out /tmp/curve_0.json   # one seed a process
    python benchmarks/toy_step_curve.py --summarise /tmp/curve_*.json --out benchmarks/toy_step_curve.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

STEPS = [40, 50, 60, 70, 80, 90, 100]


def run(seed: int, work: Path) -> list[dict]:
    import torch
    from PIL import Image

    import pixgen
    from pixgen.toy.evaluate import judge, suite
    from pixgen.toy.evaluator import load_evaluator
    from pixgen.toy.strict import strict_pass, strict_read

    torch.set_num_threads(1)
    evaluator = load_evaluator()
    rows = []
    for i, item in enumerate(suite()):
        result = pixgen.generate(item.prompt, config="toy", model="toy", seed=seed, write=True,
                                 output_dir=str(work / str(seed)), run_name=f"{i:03d}", save_every=10,
                                 progress=False, echo=False)
        row = {"category": item.category, "prompt": item.prompt, "seed": seed}
        for step in STEPS:
            image = Image.open(result.run_dir / "frames" / f"{step:06d}.png").convert("RGB")
            scene, = evaluator.read([image])
            strict = strict_read(image)
            row[str(step)] = [bool(judge(item, scene)),
                              bool(strict_pass(item.spec, strict, holds_for=lambda s, item=item: judge(item, s)))]
        rows.append(row)
        print(i, item.prompt, {step: row[str(step)][0] for step in STEPS}, flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    categories = list(dict.fromkeys(r["category"] for r in rows))
    table = {}
    for cat in categories + ["overall"]:
        sel = [r for r in rows if cat == "overall" or r["category"] == cat]
        table[cat] = {"images": len(sel), **{step: sum(r[step][0] for r in sel) for step in map(str, STEPS)}}
    seeds = sorted({r["seed"] for r in rows})
    return {
        "passes_by_step": table,
        "strict_by_step": {step: sum(r[step][1] for r in rows) for step in map(str, STEPS)},
        "overall_by_seed": {seed: {step: sum(r[step][0] for r in rows if r["seed"] == seed)
                                   for step in map(str, STEPS)} for seed in seeds},
        "seeds": seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("outputs/toy_step_curve"), help="where the runs go")
    parser.add_argument("--summarise", nargs="+", type=Path, default=None,
                        help="per-seed JSON files from earlier runs: combine them instead of running")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.summarise:
        rows = [row for path in args.summarise for row in json.loads(path.read_text())]
        result = summarise(rows)
        result["rows"] = rows
    else:
        result = run(args.seed, args.work)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.summarise:
        for cat, counts in result["passes_by_step"].items():
            print(f"{cat:20s}", *(f"{counts[str(s)]:4d}" for s in STEPS))


if __name__ == "__main__":
    main()
