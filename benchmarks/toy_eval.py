"""Run the toy evaluation suite and record the results in benchmarks/ (JSON, Markdown table, contact sheet).

    python benchmarks/toy_eval.py [--seeds 3] [--iterations N] [--size 64]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixgen.toy.evaluate import run_suite, table

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--name", default=None, help="result name (default toy_eval_<size>)")
    args = parser.parse_args()
    name = args.name or f"toy_eval_{args.size}"
    out = HERE / name
    report = run_suite(seeds=list(range(args.seeds)), iterations=args.iterations, size=(args.size, args.size), out=out,
                        overwrite=True)  # the script re-makes its recorded results
    (HERE / f"{name}.json").write_text(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2) + "\n")
    print(table(report["summary"]))
    print(json.dumps(report["timing"], indent=2))


if __name__ == "__main__":
    main()
