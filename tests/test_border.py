"""The border term: the picture's outer frame is held to the run's start, so objects are drawn inside the canvas."""
from pathlib import Path

import numpy as np
import pytest
import torch

import pixgen
from pixgen.errors import ConfigError
from pixgen.losses import border_loss

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"


def test_border_loss_counts_the_frame_only():
    start = torch.full((1, 3, 8, 8), 0.5)
    inside = start.clone()
    inside[..., 2:6, 2:6] = 1.0  # a change inside a 2-pixel frame
    assert border_loss(inside, start, 2, 10.0).item() == 0.0
    edge = start.clone()
    edge[..., 0, :] = 1.0  # the top row, 8 of the frame's 48 pixels, off by 0.5 in every channel
    assert border_loss(edge, start, 2, 10.0).item() == pytest.approx(10.0 * 0.25 * 8 / 48)
    assert border_loss(edge, start, 1, 10.0).item() == pytest.approx(10.0 * 0.25 * 8 / 28)  # a thinner frame


@pytest.mark.parametrize("border, says", [
    ({"weight": -1.0}, "border.weight"),
    ({"weight": float("inf")}, "border.weight"),
    ({"weight": 1.0, "width": 0}, "border.width"),
    ({"weight": 1.0, "width": 16}, "a 32x32 image is too small for the border term"),
])
def test_bad_border_settings_are_refused_with_a_fix(tiny, border, says):
    with pytest.raises(ConfigError, match=says):
        pixgen.generate("a red circle", **tiny, border=border)


def _frame_error(result, width=3):
    image = np.asarray(result.image, dtype=float)
    start = np.asarray(result.initial_image, dtype=float)
    frame = np.ones(image.shape[:2], bool)
    frame[width:-width, width:-width] = False
    return float(((image - start) ** 2)[frame].mean()), float(((image - start) ** 2)[~frame].mean())


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
def test_a_border_run_keeps_its_frame_near_the_start_and_logs_the_term():
    # the toy model: its 4-pixel latent cells let a 3-pixel frame be held apart from the inside
    options = {"model": "toy", "iterations": 20, "write": False, "progress": False, "echo": False}
    free = pixgen.generate("a red circle on the left", seed=2, **options, border={"weight": 0.0})  # off (the preset holds 5)
    held = pixgen.generate("a red circle on the left", seed=2, **options, border={"weight": 20.0, "width": 3})
    assert "border" in held.losses[-1]["terms"] and "border" not in free.losses[-1]["terms"]
    free_frame, free_inside = _frame_error(free)
    held_frame, held_inside = _frame_error(held)
    assert free_frame > 0  # without the term the search paints up to the edges
    assert held_frame < 0.25 * free_frame
    assert held_inside > 0.5 * free_inside  # the inside still changes


@pytest.mark.parametrize("term, setting", [("border", {"weight": 20.0, "width": 2}),
                                           ("sparsity", {"weight": 2.0})])  # both terms read the run's start
def test_a_run_held_to_its_start_resumes_to_the_same_picture(tiny, term, setting):
    options = tiny | {"optim": {"lr": 0.5}, "init_color": [128, 128, 128], term: setting}
    straight = pixgen.generate("a red circle", seed=3, **options | {"output_dir": tiny["output_dir"] + "a"})
    first = pixgen.generate("a red circle", seed=3, **options | {"output_dir": tiny["output_dir"] + "b",
                                                                 "iterations": 3})
    resumed = pixgen.resume(first.run_dir, iterations=6, progress=False)
    assert term in resumed.losses[-1]["terms"]
    assert np.array_equal(np.asarray(straight.image), np.asarray(resumed.image))
