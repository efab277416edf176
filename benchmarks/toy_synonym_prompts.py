"""Toy-world prompts said the way people say them, to measure what rewording them into the world's words is worth.

    python benchmarks/toy_synonym_prompts.py > prompts.txt          # 102 prompts (benchmarks/toy_synonym_prompts.txt)
    pixgen eval --model toy --prompts prompts.txt --seeds 2 --threads 1 --out ON
    pixgen eval --model toy --prompts prompts.txt --seeds 2 --threads 1 --out OFF --set toy_reword=false
    pixgen toy compare OFF ON                                          # passes and paired sign tests

The prompts are the grammar-style held-out sets of prompt seeds 96 and 97 (58 each) with common words swapped in
(big / tiny, violet / magenta / turquoise, plus for cross, "on top of" / "underneath", "at the top-left", and
relations written "the X is above the Y"); those that no swap changed are left out. Each still means what its
held-out prompt means (checked here).
"""
from __future__ import annotations

import argparse
import re

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


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("\n".join(prompts()))


if __name__ == "__main__":
    main()
