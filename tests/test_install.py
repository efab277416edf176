"""A wheel (`pip install .`, not only `pip install -e .`) carries the presets and the toy world's weights."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_folders_are_the_checkouts_own_in_a_checkout():
    from pixgen import shipped

    assert shipped.in_checkout()
    assert shipped.PRESET_DIR == ROOT / "configs" and shipped.TOY_DIR == ROOT / "checkpoints" / "toy"


def test_a_wheel_installed_outside_the_checkout_generates_with_the_toy_models(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "_data", "state")
    for folder in ("pixgen", "configs", "checkpoints/toy"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "wheel"), str(src)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "wheel").glob("pixgen-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "pixgen/_data/"
    assert {data + "configs/toy.yaml", data + "configs/smoke.yaml", data + "checkpoints/toy/clip.pt",
            data + "checkpoints/toy/vqgan.ckpt", data + "checkpoints/toy/clip_early_visual.safetensors",
            data + "checkpoints/toy/evaluator.safetensors"} <= names
    assert not [n for n in names if n.endswith(".log.jsonl")]  # the training logs stay in the checkout
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel: unpacking it is installing it
    env = {**os.environ, "PYTHONPATH": str(site), "PIXGEN_HOME": str(tmp_path / "home")}
    where = subprocess.run([sys.executable, "-c", "import pixgen.shipped as s; print(s.in_checkout(), s.TOY_DIR)"],
                           check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout.split()
    assert where == ["False", str(site / "pixgen" / "_data" / "checkpoints" / "toy")]
    run = subprocess.run([sys.executable, "-m", "pixgen", "generate", "a red circle", "--model", "toy", "-i", "2",
                          "-o", str(tmp_path / "out"), "-q"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip().splitlines()[-1]).is_file()
