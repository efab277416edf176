"""`pixgen toy train clip` does not write over the weights it starts from, nor over the shipped toy CLIP."""
from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from pixgen import shipped
from pixgen.cli import app


@pytest.mark.parametrize("how", ["own-init", "shipped-default"])
def test_a_fresh_clip_run_does_not_write_over_its_init_or_the_shipped_clip(tmp_path, monkeypatch, how):
    # a stand-in for the checkout, so that a regression cannot spoil the real shipped weights
    ship = tmp_path / "checkout" / "checkpoints" / "toy"
    ship.mkdir(parents=True)
    shutil.copy(shipped.TOY_DIR / "clip.pt", ship / "clip.pt")
    monkeypatch.setattr(shipped, "TOY_DIR", ship)
    monkeypatch.chdir(tmp_path / "checkout")
    if how == "own-init":
        mine = tmp_path / "mine"
        mine.mkdir()
        shutil.copy(ship / "clip.pt", mine / "clip.pt")
        args, kept, says = ["--out", str(mine), "--init", str(mine / "clip.pt")], mine / "clip.pt", "holds the --init"
    else:  # no --out: it defaults to checkpoints/toy, here the shipped folder
        args, kept, says = [], ship / "clip.pt", "shipped toy CLIP's folder"
    before = kept.read_bytes()
    result = CliRunner().invoke(app, ["toy", "train", "clip", *args, "--steps", "1", "--batch", "2"])
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "--out" in result.stderr
    assert kept.read_bytes() == before
