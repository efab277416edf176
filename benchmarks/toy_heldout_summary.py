"""Per-category tables of the shipped toy model over every held-out set it was judged on at 64x64.

Reads the rows kept in the ``toy_heldout_*.json`` records (one run per prompt seed, the shipped pair of its time:
stage 13 or, since the twentieth session, stage 14 early tower, stage 11 late tower, 64x64, image seeds 0-1) and prints the tables of section "Where it stands" in
``toy_results.md``: evaluator, nothing extra, strict reader and the unoptimised start, per category. One table
for the preset with the stage-14 early tower (since the twentieth session of 2026-12-07), one for stage 13 with the
sparsity term (the sixteenth session of 2026-12-06 to the nineteenth), one for the border term alone
(the preset from the twelfth session to the fifteenth), one for the learning rate 0.035 without the border term
(from the eighth session of 2026-12-05), one for 0.05 before that.

    python benchmarks/toy_heldout_summary.py
"""
from __future__ import annotations

import json
from pathlib import Path

from pixgen.toy.evaluate import CATEGORIES as SUITE_CATEGORIES

HERE = Path(__file__).parent
# (record, path of keys to its runs, run names): each run is the shipped pair on one held-out prompt seed
RUNS_LR_0035 = [
    ("toy_heldout_screens.json", ["runs"], ["ps25 F: lr 0.035", "ps27 lr 0.035", "ps28 lr 0.035", "ps29 lr 0.035"]),
    ("toy_heldout_ninth.json", ["runs"], ["ps30 shipped", "ps31 shipped", "ps32 shipped"]),
    ("toy_heldout_tenth.json", ["runs"], [f"ps{s} shipped" for s in range(33, 40)]),
    ("toy_heldout_eleventh.json", ["runs"], [f"ps{s} shipped" for s in range(40, 46)]),
    ("toy_heldout_twelfth.json", ["runs"], [f"ps{s} shipped" for s in (*range(46, 50), *range(51, 55))]),
]
RUNS_LR_005 = [
    ("toy_heldout_stage13.json", ["runs"],
     ["ps16 stage 13 early (radius-2.5 run step 600, retrained), stage 11 late",
      "ps17 stage 13 early (radius-2.5 run step 600, retrained), stage 11 late"]),
    ("toy_heldout_late_robust02.json", ["runs"],
     ["ps19 shipped (stage 13 early, stage 11 late)", "ps20 shipped (stage 13 early, stage 11 late)"]),
    ("toy_heldout_late_clutter_handover.json", [],
     ["shipped (stage 13 early, stage 11 late, handover at 60%), prompt seed 21", "shipped, prompt seed 22"]),
    ("toy_heldout_coarse48.json", ["runs"], ["shipped"]),
    ("toy_heldout_screens.json", ["runs"], ["ps27 shipped (lr 0.05)", "ps28 shipped (lr 0.05)"]),
]
# the preset from the twelfth session to the fifteenth (2026-12-06): the same pair with the border term
# (border.weight 5), judged as the border-3-5 arm beside the shipped pair on the first sets
RUNS_BORDER = [
    ("toy_heldout_eleventh.json", ["runs"], [f"ps{s} border-3-5" for s in range(43, 46)]),
    ("toy_heldout_twelfth.json", ["runs"], [f"ps{s} border-3-5" for s in (*range(46, 50), *range(51, 55))]),
    ("toy_heldout_thirteenth.json", ["runs"], [f"ps{s} shipped" for s in range(63, 69)]),
    ("toy_heldout_fourteenth.json", ["runs"], [f"ps{s} shipped" for s in range(71, 77)]),
    ("toy_heldout_fifteenth.json", ["runs"], [f"ps{s} shipped" for s in range(82, 84)]),
    ("toy_heldout_sixteenth.json", ["runs"], [f"ps{s} shipped" for s in range(84, 86)]),
]
# the preset since the sixteenth session (2026-12-06): the border term and the sparsity term at weight 3 (until then
# the option --config toy-sparse), judged beside the preset of the time on each of these sets (63-64 as the
# thirteenth session's screen patch, 65-68 and 84-85 through the config key; the same images), and as the preset
# itself on 86-95
RUNS_SPARSE = [
    ("toy_heldout_thirteenth.json", ["runs"],
     ["ps63 area-3", "ps64 area-3", *(f"ps{s} sparsity-3" for s in range(65, 69))]),
    ("toy_heldout_sixteenth.json", ["runs"],
     [*(f"ps{s} sparsity-3" for s in range(84, 86)), *(f"ps{s} shipped" for s in range(86, 88))]),
    ("toy_heldout_seventeenth.json", ["runs"], [f"ps{s} shipped" for s in range(88, 92)]),
    ("toy_heldout_eighteenth.json", ["runs"], [f"ps{s} shipped" for s in range(92, 96)]),
    ("toy_heldout_nineteenth.json", ["runs"], ["ps98 shipped"]),
    ("toy_heldout_twentieth.json", ["runs"], [f"ps{s} shipped" for s in range(100, 104)]),
]
# the preset since the twentieth session (2026-12-07): the same terms with stage 14 as the early tower (stage 13
# trained to rank a scene above the same scene with one object too many), judged beside the stage-13 preset on
# the first five of these sets (prompt seed 98 as the screen, 100-103 as the two confirmations); 104-117 are the
# preset's own runs
RUNS_STAGE14 = [
    ("toy_heldout_nineteenth.json", ["runs"], ["ps98 stray-early"]),
    ("toy_heldout_twentieth.json", ["runs"], [*(f"ps{s} stray-early" for s in range(100, 104)), "ps104 stage14"]),
    ("toy_heldout_twentyfirst.json", ["runs"], [f"ps{s} shipped" for s in range(105, 108)]),
    ("toy_heldout_twentysecond.json", ["runs"], [f"ps{s} shipped" for s in range(108, 112)]),
    ("toy_heldout_twentythird.json", ["runs"], ["ps112 shipped", "ps113 shipped", "ps114 shipped"]),
    ("toy_heldout_twentyfourth.json", ["runs"], ["ps115 shipped", "ps116 shipped", "ps117 shipped"]),
]
CATEGORIES = [*SUITE_CATEGORIES, "overall"]  # held-out sets of the suite's forms have no extra categories
TARGETS = {"single object": 0.95, "colour": 0.95, "position": 0.85, "background": 0.95, "two objects": 0.85,
           "relation": 0.70, "counting": 0.70, "colour attribution": 0.75}
COLUMNS = [("pass", "evaluator"), ("exact_pass", "nothing extra"), ("strict_pass", "strict reader"),
           ("baseline_pass", "no optimisation")]


def shipped_rows(groups) -> list[list[dict]]:
    """The rows of every run named in ``groups``, one list per held-out set."""
    sets = []
    for name, keys, runs in groups:
        record = json.loads((HERE / name).read_text())
        for key in keys:
            record = record[key]
        sets.extend(record[run]["rows"] for run in runs)
    return sets


def table(sets: list[list[dict]]) -> str:
    """The per-category table; each column counts only the rows that carry it (older records lack some), and a
    note under the table says how many images each such column covers."""
    images = {c: 0 for c in CATEGORIES}
    hits = {c: [0] * len(COLUMNS) for c in CATEGORIES}
    seen = {c: [0] * len(COLUMNS) for c in CATEGORIES}
    for rows in sets:
        for row in rows:
            for c in (row["category"], "overall"):
                images[c] += 1
                for i, (key, _) in enumerate(COLUMNS):
                    if key in row:
                        seen[c][i] += 1
                        hits[c][i] += bool(row[key])
    lines = ["| category | images | " + " | ".join(label for _, label in COLUMNS) + " | target |",
             "|---|---:|" + "---:|" * len(COLUMNS) + "---:|"]
    for c in CATEGORIES:
        target = f"{TARGETS[c]:.2f}" if c in TARGETS else ""
        cells = [f"{h / n:.3f}" if n else "" for h, n in zip(hits[c], seen[c])]
        lines.append(f"| {c} | {images[c]} | " + " | ".join(cells) + f" | {target} |")
    partial = [f"{label}: {seen['overall'][i]} of the {images['overall']} images"
               for i, (_, label) in enumerate(COLUMNS) if seen["overall"][i] < images["overall"]]
    if partial:
        lines.append("\nColumns read from fewer images (older records lack them): " + "; ".join(partial) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    for name, groups in (("the preset: stage 14 early tower (since the twentieth session)", RUNS_STAGE14),
                         ("stage 13 early tower, border and sparsity terms (the sixteenth session to the nineteenth)",
                          RUNS_SPARSE),
                         ("the border term alone (the preset from the twelfth session to the fifteenth)", RUNS_BORDER),
                         ("lr 0.035, no border term", RUNS_LR_0035), ("lr 0.05", RUNS_LR_005)):
        sets = shipped_rows(groups)
        print(f"{name}: {len(sets)} held-out sets, {sum(map(len, sets))} images\n")
        print(table(sets), end="\n\n")
