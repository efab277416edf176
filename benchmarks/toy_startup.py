"""Where one `pixgen generate --model toy` process spends its CPU before the search starts.

    python benchmarks/toy_startup.py --rounds 3 --out benchmarks/toy_startup.json

Each measurement is a fresh process, timed by the kernel (user + system CPU of the child, and its peak resident
memory, from ``os.wait4``), the kinds taking turns round by round so that drift on a shared machine falls on all
of them alike:

- ``python``: the interpreter alone;
- ``torch``: ``import torch``;
- ``torch + torch._dynamo``: what torch's compiler costs to import (torchvision imports it, and so does every
  torch optimizer's first ``step()``);
- ``pixgen.api``: pixgen's own imports (torch, kornia, omegaconf, PIL; open_clip is imported when a CLIP loads);
- ``open_clip``: open_clip with what it imports (torchvision, torch._dynamo, timm);
- ``generate, 1 step`` and ``generate, 100 steps``: ``pixgen generate "a red circle above a blue square" --model
  toy`` with ``--iterations 1`` and the preset's 100, one thread, writing into a temporary directory. Their
  difference is 99 steps of the search; the first is what a process pays before and around its first step.

``--before DIR`` adds the two ``generate`` kinds run from another checkout (``git worktree add DIR COMMIT``;
``python -m pixgen.cli`` imports the pixgen of the directory it runs in), in the same rounds, so that a change
to the start-up is measured side by side with what it replaced.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PROMPT = "a red circle above a blue square"


def kinds(out_dir: str) -> dict[str, list[str]]:
    """The commands, each run from this checkout."""
    py = [sys.executable, "-c"]
    generate = [sys.executable, "-m", "pixgen.cli", "generate", PROMPT, "--model", "toy", "--threads", "1", "-q",
                "--no-video", "-o", out_dir]
    return {
        "python": py + ["pass"],
        "torch": py + ["import torch"],
        "torch + torch._dynamo": py + ["import torch, torch._dynamo"],
        "pixgen.api": py + ["import pixgen.api"],
        "open_clip": py + ["import open_clip"],
        "generate, 1 step": generate + ["--iterations", "1"],
        "generate, 100 steps": generate,
    }


def cpu_of(command: list[str], cwd: str | None = None) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, peak resident MiB) of one run of ``command`` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024  # Linux gives ru_maxrss in KiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--before", help="another checkout whose generate kinds to time beside these")
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as out_dir:
        commands = {name: (cmd, None) for name, cmd in kinds(out_dir).items()}
        if args.before:
            commands.update({f"{name} (before)": (cmd, args.before) for name, cmd in kinds(out_dir).items()
                             if name.startswith("generate")})
        for r in range(args.rounds):
            order = list(commands)[r % len(commands):] + list(commands)[:r % len(commands)]
            for name in order:
                times.setdefault(name, []).append(cpu_of(*commands[name]))
    # only now, as it imports torch: a child's peak memory counts the parent's resident memory at the fork
    from pixgen.machine import machine_record

    result = {"machine": machine_record(),
              "prompt": PROMPT, "rounds": args.rounds, "before": args.before, "cpu_s": {}, "wall_s": {},
              "peak_rss_mib": {}}
    for name in commands:
        cpu = sorted(t[0] for t in times[name])
        wall = sorted(t[1] for t in times[name])
        result["cpu_s"][name] = {"median": round(cpu[len(cpu) // 2], 2), "min": round(cpu[0], 2),
                                 "max": round(cpu[-1], 2)}
        result["wall_s"][name] = round(wall[len(wall) // 2], 2)
        rss = sorted(t[2] for t in times[name])
        result["peak_rss_mib"][name] = round(rss[len(rss) // 2], 1)
        print(f"{name:33s} CPU {cpu[len(cpu) // 2]:6.2f} s (min {cpu[0]:.2f}, max {cpu[-1]:.2f}), "
              f"wall {wall[len(wall) // 2]:6.2f} s, peak {rss[len(rss) // 2]:7.1f} MiB", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
