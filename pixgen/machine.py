"""The machine a recorded result was made on, one record for every result pixgen and its benchmarks write.

The same seed gives the same image on one machine but not on every other: another vector unit (``cpu_capability``,
e.g. AVX2 against AVX512) or another build of a package takes other kernels, whose rounding differs and grows over
the steps of a search (benchmarks/toy_results.md, "Same seed, another machine"). Timings, too, mean little without
the CPU that took them.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "open_clip_torch", "kornia", "numpy")  # whose kernels make the images


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's name, family and model, e.g. "AMD EPYC (family 25, model 1)", where /proc/cpuinfo says."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            break  # the end of the first processor's block
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if name and "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def cpu_count() -> int | None:
    """The cores this process may run on (its affinity, where the platform has one), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def package_versions() -> dict[str, str | None]:
    """The installed versions of :data:`PACKAGES` (None where one is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine_record() -> dict[str, Any]:
    """Platform, CPU (name, vector unit, usable cores), Python, torch and the image-making packages, and the GPU."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "packages": package_versions(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
