"""Compare generation settings for the toy preset on a small slice of the eval suite.

    python benchmarks/toy_tune.py '{"optim.lr": 0.1}' '{"optim.lr": 0.2, "tv_weight": 1.0}' --per-category 2

Each JSON argument is a set of config overrides; prints one line per setting (accuracy per category,
baseline, CPU seconds per image).
"""
from __future__ import annotations

import argparse
import json

import torch

from pixgen.toy.evaluate import CATEGORIES, run_suite


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings", nargs="+")
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    short = {c: c.split()[0][:5] for c in CATEGORIES}
    for text in args.settings:
        overrides = json.loads(text)
        report = run_suite(seeds=list(range(args.seeds)), size=(args.size, args.size), out=None,
                           max_per_category=args.per_category, progress=False, **overrides)
        s = report["summary"]
        cells = " ".join(f"{short[c]}={s[c]['accuracy']:.2f}" for c in CATEGORIES if c in s)
        print(f"{text}: overall={s['overall']['accuracy']:.3f} (base {s['overall']['baseline']:.3f}) {cells} "
              f"cpu/img={report['timing']['cpu_s_per_image_mean']:.2f}s", flush=True)


if __name__ == "__main__":
    main()
