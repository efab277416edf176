"""Resident memory over a long batch: does `pixgen.generate_many` (what `pixgen generate --prompts FILE --count N`
runs) hold on to anything from one image to the next?

    python benchmarks/toy_batch_memory.py --count 10 --iterations 20 --out benchmarks/toy_batch_memory.json

Makes COUNT images of each of four toy prompts in this process and reads the process's resident set size
(VmRSS, Linux) after each image. Short runs (ITERATIONS steps) are enough: what could pile up is per image (models,
sessions, run records), not per step.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pixgen.machine import machine_record

PROMPTS = ["a red circle", "two blue crosses", "a green square on the left", "a yellow triangle above a pink circle"]


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark reads Linux's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="images of each prompt")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import pixgen

    after_each: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        pixgen.generate_many(PROMPTS, count=args.count, model="toy", iterations=args.iterations, progress=False,
                             echo=False, output_dir=tmp, on_result=lambda _: after_each.append(_rss_mib()))
    n = len(after_each)
    record = {
        "benchmark": "toy_batch_memory", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_record(), "images": n, "iterations": args.iterations, "rss_mib_after_first": round(after_each[0], 1),
        "rss_mib_after_last": round(after_each[-1], 1),
        "rss_mib_after_each": [round(x, 1) for x in after_each],
        "growth_mib_first_to_last": round(after_each[-1] - after_each[0], 1),
        "growth_mib_second_half": round(after_each[-1] - after_each[n // 2], 1),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "rss_mib_after_each"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
