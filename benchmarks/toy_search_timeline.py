"""What the search draws, and when: read every few steps of a toy-preset run with the evaluator.

Runs the suite's single-object, colour, two-object and colour-attribution prompts (seeds 0-1, 60 runs) with the
toy preset and reads the picture after steps 1-3 and every 5th step. Reports per step:

- objects and "strays" (objects in a colour the prompt does not name) per image;
- runs where every named colour is present, and where every named colour comes in its named shape;
- at the end, how often an object in a named colour has that colour's named shape (chance: 1 in 4).

    python benchmarks/toy_search_timeline.py [--seeds 0,1] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from pixgen.api import _build_config
from pixgen.factory import build_session
from pixgen.toy.evaluate import judge, suite
from pixgen.toy.evaluator import load_evaluator

CATEGORIES = ["single object", "colour", "two objects", "colour attribution"]


class Reader:
    """An engine callback that keeps the evaluator's objects (colour, shape, column, row, size) at chosen steps."""

    def __init__(self, evaluator):
        self.evaluator, self.reads = evaluator, {}

    def on_step(self, state) -> None:
        if state.step % 5 == 0 or state.step <= 3:
            scene = self.evaluator.read(state.image())[0]
            self.reads[str(state.step)] = [(o.colour, o.shape, o.col, o.row, o.size) for o in scene.objects]

    def on_log(self, state) -> None:
        pass

    def on_end(self, state, reason) -> None:
        pass


def summarise(rows: list[dict]) -> dict:
    steps = sorted({int(k) for r in rows for k in r["reads"]})
    per_step = {}
    for s in steps:
        objects = strays = colours = shapes = 0
        for r in rows:
            objs, named = r["reads"][str(s)], dict(r["named"])
            objects += len(objs)
            strays += sum(o[0] not in named for o in objs)
            colours += all(any(o[0] == c for o in objs) for c in named)
            shapes += all(any(o[0] == c and o[1] == h for o in objs) for c, h in named.items())
        per_step[s] = {"objects_per_image": round(objects / len(rows), 2), "strays_per_image": round(strays / len(rows), 2),
                       "named_colours_present": colours, "named_colours_in_named_shapes": shapes}
    shape_hits = Counter()
    for r in rows:
        named = dict(r["named"])
        for o in r["reads"][str(steps[-1])]:
            if o[0] in named:
                shape_hits[o[1] == named[o[0]]] += 1
    return {"runs": len(rows), "passes": sum(r["pass"] for r in rows), "per_step": per_step,
            "objects_in_a_named_colour": shape_hits[True] + shape_hits[False],
            "of_which_in_its_named_shape": shape_hits[True]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluator = load_evaluator()
    rows = []
    for item in (it for it in suite() if it.category in CATEGORIES):
        if len({r.colour for r in item.spec.refs}) != len(item.spec.refs):
            continue  # each named colour must name one shape for the shape count to mean anything
        for seed in (int(s) for s in args.seeds.split(",")):
            session = build_session(_build_config(item.prompt, None, {"model": "toy", "seed": seed}, None))
            reader = Reader(evaluator)
            session.engine.run(0, [reader], lambda: False)
            with torch.no_grad():
                final = evaluator.read(session.generator().detach())[0]
            rows.append({"prompt": item.prompt, "seed": seed, "named": [(r.colour, r.shape) for r in item.spec.refs],
                         "pass": bool(judge(item, final)), "reads": reader.reads})
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
