"""Toy-world prompts said the way people say them, to measure what rewording them into the world's words is worth.

    python benchmarks/toy_synonym_prompts.py > prompts.txt          # 102 prompts (benchmarks/toy_synonym_prompts.txt)
    pixgen eval --model toy --prompts prompts.txt --seeds 2 --threads 1 --out ON
    pixgen eval --model toy --prompts prompts.txt --seeds 2 --threads 1 --out OFF --set toy_reword=false
    python benchmarks/toy_synonym_prompts.py --compare OFF ON          # passes and paired sign tests

The prompts are the grammar-style held-out sets of prompt seeds 96 and 97 (58 each) with common words swapped in
(big / tiny, violet / magenta / turquoise, plus for cross, "on top of" / "underneath", "at the top-left", and
relations written "the X is above the Y"); those that no swap changed are left out. Each still means what its
held-out prompt means (checked here).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

SWAPS = [(r"\blarge\b", "big"), (r"\bsmall\b", "tiny"), (r"\bpurple\b", "violet"), (r"\bpink\b", "magenta"),
         (r"\bcyan\b", "turquoise"), (r"\babove\b", "on top of"), (r"\b(below|under|beneath)\b", "underneath"),
         (r"\bin the (top|bottom|upper|lower) (left|right)( corner)?\b", r"at the \1-\2"),
         (r"\bcrosses\b", "pluses"), (r"\bcross\b", "plus")]


def prompts(seeds=(96, 97), n: int = 58) -> list[str]:
    from pixgen.toy.captions import parse_caption, reword_caption
    from pixgen.toy.evaluate import held_out

    out = []
    for seed in seeds:
        for item in held_out(n, seed=seed, style="grammar"):
            text = item.text
            for pattern, replacement in SWAPS:
                text = re.sub(pattern, replacement, text)
            if item.spec.kind == "relation":
                text = re.sub(r"^an? ", "the ", text)
                text = re.sub(r" (on top of|underneath|to the left of|to the right of|left of|right of|over) an? ",
                              r" is \1 the ", text)
            if text == item.text:
                continue
            reworded = reword_caption(text)
            assert reworded is not None and parse_caption(reworded) == item.spec, (item.text, text, reworded)
            out.append(text)
    return out


def _sign_test(a: int, b: int) -> float:
    n, k = a + b, min(a, b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def compare(off: Path, on: Path) -> dict:
    """Passes of each run and, image by image, how many pass in only one (rows matched by position: the prompt
    list may hold the same prompt twice, which ``pixgen toy compare`` refuses)."""
    rows_off = json.loads((off / "results.json").read_text())["rows"]
    rows_on = json.loads((on / "results.json").read_text())["rows"]
    if [(r["prompt"], r["seed"]) for r in rows_off] != [(r["prompt"], r["seed"]) for r in rows_on]:
        sys.exit("the two evals judged different prompts or seeds")
    result = {"images": len(rows_on)}
    for key, name in (("pass", "evaluator"), ("exact_pass", "nothing extra"), ("strict_pass", "strict")):
        only_on = sum(1 for a, b in zip(rows_off, rows_on) if b[key] and not a[key])
        only_off = sum(1 for a, b in zip(rows_off, rows_on) if a[key] and not b[key])
        result[name] = {"as_written": sum(bool(r[key]) for r in rows_off), "reworded": sum(bool(r[key]) for r in rows_on),
                        "only_reworded": only_on, "only_as_written": only_off, "p": float(f"{_sign_test(only_on, only_off):.2g}")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("AS_WRITTEN", "REWORDED"))
    args = parser.parse_args()
    if args.compare:
        print(json.dumps(compare(*args.compare), indent=1))
    else:
        print("\n".join(prompts()))


if __name__ == "__main__":
    main()
