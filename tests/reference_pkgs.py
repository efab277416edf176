"""Reference packages for the format and parity tests, installed with ``--no-deps`` into ``.cache/`` for the test
run only (pixgen never imports them). One install per package, under a file lock: pytest-xdist may run the tests
that need one package on several workers at once."""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

CACHE = Path(__file__).resolve().parents[1] / ".cache"


def install(requirement: str, probe: str) -> Path:
    """The folder ``requirement`` (``name==version``) is installed in; ``probe``, a file inside it, says that an
    earlier install finished."""
    target = CACHE / requirement.replace("==", "-")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / probe).is_file():
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                                   "--upgrade", "--target", str(target), requirement],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not (target / probe).is_file():
                pytest.fail(f"could not install the reference {requirement}: {proc.stderr[-500:]}")
    return target


@contextlib.contextmanager
def on_path(folder: Path):
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def import_from(folder: Path, name: str):
    with on_path(folder):
        return importlib.import_module(name)
