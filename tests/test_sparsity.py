"""The sparsity term: every pixel is pulled back to the run's start by an L1 term, so only what the prompt holds up
stays changed."""
from pathlib import Path

import numpy as np
import pytest
import torch

import pixgen
from pixgen.errors import ConfigError
from pixgen.losses import sparsity_loss

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"


def test_sparsity_loss_is_the_mean_absolute_change():
    start = torch.full((1, 3, 4, 4), 0.5)
    assert sparsity_loss(start.clone(), start, 3.0).item() == 0.0
    changed = start.clone()
    changed[0, 0, 0, 0] = 1.0  # one value of 48 off by 0.5
    changed[0, 1, 1, 1] = 0.0  # and one off by 0.5 the other way: L1 counts both alike
    assert sparsity_loss(changed, start, 3.0).item() == pytest.approx(3.0 * 1.0 / 48)
    small = start.clone()
    small[0, 0, 0, :2] = 0.75  # two changes half as large cost as much as one full one (squared: half as much)
    assert sparsity_loss(small, start, 3.0).item() == pytest.approx(3.0 * 0.5 / 48)


def test_a_capped_change_counts_up_to_the_cap_and_is_not_pulled_past_it():
    start = torch.full((1, 3, 4, 4), 0.5)
    image = start.clone()
    image[0, 0, 0, 0] = 1.0  # a drawn value, off by 0.5: counts as the cap, 0.1
    image[0, 1, 1, 1] = 0.45  # a faint one, off by 0.05: counts in full
    assert sparsity_loss(image, start, 3.0, cap=0.1).item() == pytest.approx(3.0 * 0.15 / 48)
    image.requires_grad_(True)
    sparsity_loss(image, start, 3.0, cap=0.1).backward()
    assert image.grad[0, 0, 0, 0] == 0  # the drawn value feels no pull
    assert image.grad[0, 1, 1, 1] < 0  # the faint one is pulled back up towards the start
    assert sparsity_loss(image, start, 3.0).item() > sparsity_loss(image, start, 3.0, cap=0.1).item()


@pytest.mark.parametrize("setting, message", [({"steps": [0.6, 0.6]}, "sparsity.steps"),
                                              ({"steps": [0.5]}, "sparsity.steps"),
                                              ({"cap": 0.0}, "sparsity.cap"),
                                              ({"cap": float("nan")}, "sparsity.cap")])
def test_bad_sparsity_steps_or_cap_are_refused_with_a_fix(tiny, setting, message):
    with pytest.raises(ConfigError, match=message) as err:
        pixgen.generate("a red circle", **tiny, sparsity={"weight": 1.0, **setting})
    assert "--set sparsity." in err.value.hint


def test_the_term_acts_only_in_its_share_of_the_run(tiny):
    res = pixgen.generate("a red circle", seed=1, **tiny | {"log_every": 1, "write": False},
                          sparsity={"weight": 2.0, "steps": [0.5, 1.0]})
    on = [("sparsity" in r["terms"]) for r in res.losses]
    assert len(on) == 6 and on == [False] * 3 + [True] * 3  # steps 4-6 of 6


@pytest.mark.parametrize("weight", [-1.0, float("inf"), float("nan")])
def test_bad_sparsity_weight_is_refused_with_a_fix(tiny, weight):
    with pytest.raises(ConfigError, match="sparsity.weight"):
        pixgen.generate("a red circle", **tiny, sparsity={"weight": weight})


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
def test_a_sparse_run_changes_less_of_the_picture_and_logs_the_term():
    options = {"model": "toy", "iterations": 20, "write": False, "progress": False, "echo": False}
    free = pixgen.generate("a red circle and a blue square", seed=1, **options, sparsity={"weight": 0.0})
    held = pixgen.generate("a red circle and a blue square", seed=1, **options, sparsity={"weight": 3.0})
    assert "sparsity" in held.losses[-1]["terms"] and "sparsity" not in free.losses[-1]["terms"]

    def changed(result):  # share of pixels visibly off the start
        diff = np.abs(np.asarray(result.image, float) - np.asarray(result.initial_image, float)).max(-1)
        return float((diff > 32).mean())

    assert changed(free) > 0.02  # the search draws something without the term
    assert 0 < changed(held) < 0.8 * changed(free)  # and less with it, but not nothing


def test_the_toy_preset_pulls_towards_its_start_and_a_zero_weight_gives_the_preset_before_it():
    from omegaconf import OmegaConf

    from pixgen.config import resolve_preset

    weight = OmegaConf.load(resolve_preset("toy")).sparsity.weight
    assert weight > 0 and OmegaConf.load(resolve_preset("toy-sparse")).sparsity.weight == weight  # old commands
    if not (TOY / "vqgan.ckpt").exists():
        pytest.skip("toy weights not present")
    options = dict(model="toy", iterations=2, write=False, progress=False, echo=False)
    res = pixgen.generate("a red circle", **options)
    assert {"sparsity", "border"} <= set(res.losses[-1]["terms"]) and res.config.sparsity.weight == weight
    before = pixgen.generate("a red circle", **options, overrides=["sparsity.weight=0"])
    assert "sparsity" not in before.losses[-1]["terms"] and "border" in before.losses[-1]["terms"]


def test_a_run_stopped_before_its_sparsity_starts_resumes_to_the_same_picture(tiny, tmp_path, generate_ctrl_c):
    options = tiny | {"optim": {"lr": 0.5}, "init_color": [128, 128, 128],
                      "sparsity": {"weight": 2.0, "steps": [0.5, 1.0], "cap": 0.02}}
    straight = pixgen.generate("a red circle", seed=3, **options | {"output_dir": str(tmp_path / "straight")})
    stopped = generate_ctrl_c(1, "a red circle", seed=3, **options)  # after the 2nd of 6 steps; the term starts at the 4th
    assert stopped.interrupted
    resumed = pixgen.resume(stopped.run_dir, progress=False)
    assert "sparsity" in resumed.losses[-1]["terms"]
    assert (resumed.run_dir / "image.png").read_bytes() == (straight.run_dir / "image.png").read_bytes()
