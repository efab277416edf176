"""CPU per image of whole `pixgen generate` processes with the toy preset: one image per process against a batch
(`--prompts FILE --count N`) that imports torch and open_clip and loads the models once.

    python benchmarks/toy_batch_cpu.py --images 6 --out benchmarks/toy_batch_cpu.json

Runs the processes one after another (nothing else should run beside them) and reads each one's CPU time
(user + system, its threads and children included) from the kernel's rusage of finished children.
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

from pixgen.machine import machine_record

PROMPTS = ["a red circle above a blue square", "two yellow triangles", "a green cross on a black background"]


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str]) -> tuple[float, float, int]:
    """CPU seconds, wall seconds and the number of images one `pixgen generate` process made."""
    cpu0, wall0 = _child_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pixgen", "generate", *args, "--model", "toy", "-q"],
                          capture_output=True, text=True, check=True)
    images = sum(1 for line in done.stdout.splitlines() if line.endswith("image.png"))
    return _child_cpu() - cpu0, time.perf_counter() - wall0, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="images made each way (a multiple of 3)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    count = max(1, args.images // len(PROMPTS))
    with tempfile.TemporaryDirectory() as tmp:
        singles = []
        for k in range(count):
            for prompt in PROMPTS:
                singles.append(_run([prompt, "--seed", str(k), "-o", f"{tmp}/single"]))
        listing = Path(tmp) / "prompts.txt"
        listing.write_text("\n".join(PROMPTS) + "\n")
        batch = _run(["--prompts", str(listing), "--count", str(count), "-o", f"{tmp}/batch"])
    n = count * len(PROMPTS)
    single_cpu = [cpu for cpu, _, _ in singles]
    record = {
        "benchmark": "toy_batch_cpu", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_record(),
        "images": n,
        "one_per_process": {"cpu_s_per_image_mean": sum(single_cpu) / n, "cpu_s_min": min(single_cpu),
                            "cpu_s_max": max(single_cpu), "wall_s_per_image": sum(w for _, w, _ in singles) / n},
        "batch": {"images": batch[2], "cpu_s_per_image": batch[0] / batch[2], "cpu_s_total": batch[0],
                  "wall_s_per_image": batch[1] / batch[2]},
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
