"""What one `pixgen generate --model toy` costs with one torch thread and with two, and whether the pictures agree.

Each run is a fresh `pixgen generate` process, as a user starts it, so its time includes Python's start, the
imports and the model loading. The thread counts alternate prompt by prompt, so that a noisy shared machine
affects both alike. CPU time is the child process's user + system time; "same picture" compares the two PNGs'
pixels for the same prompt and seed.

    python benchmarks/toy_generate_threads.py --out benchmarks/toy_generate_threads.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixgen.machine import machine_record

PROMPTS = ["a red circle above a blue square", "two red circles", "a green cross above a pink circle",
           "a yellow triangle on a black background", "a purple square on the left"]


def one_run(prompt: str, threads: int, out: Path) -> dict:
    """Time one generate process: wall seconds, CPU seconds (user + system) and its picture."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pixgen.cli", "generate", prompt, "--model", "toy", "--threads",
                    str(threads), "--seed", "3", "-o", str(out), "--name", f"t{threads}", "-q", "--no-video"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with Image.open(out / f"t{threads}" / "image.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "pixels": pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(PROMPTS):
            order = (1, 2) if i % 2 == 0 else (2, 1)
            runs = {t: one_run(prompt, t, Path(tmp) / f"p{i}") for t in order}
            differ = int((runs[1]["pixels"] != runs[2]["pixels"]).any(-1).sum())
            row = {"prompt": prompt, "pixels_that_differ": differ,
                   **{f"{k}_{t}_thread": v for t in (1, 2) for k, v in runs[t].items() if k != "pixels"}}
            rows.append(row)
            print(json.dumps(row), flush=True)

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 2)

    summary = {f"{k}_{t}_thread_mean": mean(f"{k}_{t}_thread") for t in (1, 2) for k in ("wall_s", "cpu_s")}
    summary["same_picture"] = sum(r["pixels_that_differ"] == 0 for r in rows)
    result = {
        "machine": machine_record(),
        "rows": rows, "summary": summary,
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
