"""Shared fixtures: tiny, fast, offline run options."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # tests are small; one thread keeps timings stable on shared 2-core machines


@pytest.fixture
def tiny(tmp_path):
    """Options for a seconds-long run on the random-tiny smoke model, writing under tmp_path."""
    return {
        "model": "random-tiny",
        "size": [32, 32],
        "iterations": 6,
        "save_every": 3,
        "log_every": 2,
        "device": "cpu",
        "output_dir": str(tmp_path / "out"),
        "cutouts": {"n": 4},
        "progress": False,
    }


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep model caches of every test in a temporary directory of its own (not the checkout's)."""
    monkeypatch.setenv("PIXGEN_HOME", str(tmp_path_factory.mktemp("pixgen-home")))
