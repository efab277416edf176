"""Resident memory of toy CLIP training, with and without handing freed heap back to the OS.

    python benchmarks/toy_train_memory.py --steps 80 [--keep-heap]

Runs a short fine-tune of the shipped CLIP with 32 chains, VQGAN round trips and layout heads (the kind of run
that used to be killed for memory) in a scratch directory, and prints the process's resident size every 10
steps. ``--keep-heap`` turns off ``release_freed_memory`` to show the growth it prevents. Run the two side
by side, one thread each.

glibc's map threshold can be fixed from outside, ``MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/...``: every
buffer of 64 KB or more then gets its own memory map and goes back to the OS when freed. The summary line records
the variable. Measured 2026-12-03 (`toy_results.md`): it halves resident memory and costs 1.8x the time a step.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pixgen.toy.train_clip as tc
from pixgen.toy.training import TrainLog

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"


def rss_gb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--keep-heap", action="store_true", help="do not call malloc_trim (the old behaviour)")
    args = parser.parse_args()
    if args.keep_heap:
        tc.release_freed_memory = lambda: False
    samples = []
    start = time.time()
    write = TrainLog.write

    def logged(self, step, **metrics):
        samples.append({"step": step, "rss_gb": round(rss_gb(), 3), "wall_s": round(time.time() - start, 1)})
        print(json.dumps(samples[-1]), flush=True)
        write(self, step, **metrics)

    TrainLog.write = logged
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vqgan.ckpt", "vqgan.yaml"):
            shutil.copy(TOY / name, Path(tmp) / name)
        tc.train_clip(tmp, steps=args.steps, init=TOY / "clip.pt", chains=32, roundtrip_p=0.3, aux_layout=1.0,
                      threads=1, log_every=10, save_every=10**9, progress=False)
    print(json.dumps({"keep_heap": args.keep_heap, "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                      "steps": args.steps, "first_rss_gb": samples[0]["rss_gb"],
                      "last_rss_gb": samples[-1]["rss_gb"]}))


if __name__ == "__main__":
    main()
