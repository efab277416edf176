"""Shared fixtures: tiny, fast, offline run options."""
from __future__ import annotations

import os
import signal

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


@pytest.fixture
def generate_ctrl_c(monkeypatch):
    """``generate_ctrl_c(STEP, prompt, **options)``: ``pixgen.generate`` with a Ctrl-C (SIGINT) right after the
    search's 0-based step STEP; returns the stopped run's result."""
    import pixgen
    from pixgen import engine as engine_mod

    def run(stop_step: int, *args, **kwargs):
        real_step = engine_mod.Engine.step

        def step_then_ctrl_c(self, step):
            out = real_step(self, step)
            if step == stop_step:
                os.kill(os.getpid(), signal.SIGINT)
            return out

        monkeypatch.setattr(engine_mod.Engine, "step", step_then_ctrl_c)
        try:
            return pixgen.generate(*args, **kwargs)
        finally:
            monkeypatch.setattr(engine_mod.Engine, "step", real_step)

    return run
