"""The palette term: every pixel is pulled towards the nearest of a list of colours, so in-between shades and soft
rims are decided one way or the other."""
from pathlib import Path

import numpy as np
import pytest
import torch

import pixgen
from pixgen.errors import ConfigError
from pixgen.losses import palette_loss

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"
RED_GRAY = torch.tensor([[220, 30, 30], [128, 128, 128]], dtype=torch.float32) / 255


def test_palette_loss_is_the_mean_distance_to_the_nearest_colour():
    image = RED_GRAY[1].view(1, 3, 1, 1).repeat(1, 1, 2, 2)  # four gray pixels: all on the palette
    assert palette_loss(image, RED_GRAY, 2.0).item() == pytest.approx(0.0, abs=1e-5)
    image[0, :, 0, 0] = RED_GRAY[0] + torch.tensor([0.0, 0.0, 0.1])  # one pixel 0.1 off red, its nearest
    image[0, :, 1, 1] = RED_GRAY[1] + torch.tensor([0.3, 0.4, 0.0])  # and one 0.5 off gray, its nearest
    assert palette_loss(image, RED_GRAY, 2.0).item() == pytest.approx(2.0 * 0.6 / 4, abs=1e-5)


def test_each_pixel_is_pulled_towards_its_own_nearest_colour():
    near_red = RED_GRAY[0] * 0.8 + RED_GRAY[1] * 0.2
    near_gray = RED_GRAY[0] * 0.2 + RED_GRAY[1] * 0.8
    image = torch.stack([near_red, near_gray], dim=1).view(1, 3, 1, 2).requires_grad_(True)
    palette_loss(image, RED_GRAY, 1.0).backward()
    step = -image.grad[0, :, 0]  # (3, 2): the direction a descent step moves each pixel
    to_red, to_gray = RED_GRAY[0] - near_red, RED_GRAY[1] - near_gray
    assert torch.cosine_similarity(step[:, 0], to_red, dim=0) > 0.999
    assert torch.cosine_similarity(step[:, 1], to_gray, dim=0) > 0.999
    # the pull is as strong near a colour as far from it (a distance, not its square)
    assert step[:, 0].norm().item() == pytest.approx(step[:, 1].norm().item(), rel=1e-4)


@pytest.mark.parametrize("setting, message", [
    ({"weight": 1.0}, "palette.colours is not"),
    ({"weight": -1.0, "colours": [[1, 2, 3]]}, "palette.weight"),
    ({"weight": float("nan"), "colours": [[1, 2, 3]]}, "palette.weight"),
    ({"weight": 1.0, "colours": [[1, 2]]}, "three whole numbers"),
    ({"weight": 1.0, "colours": [[1, 2, 300]]}, "three whole numbers"),
    ({"weight": 1.0, "colours": []}, "empty list"),
])
def test_bad_palette_settings_are_refused_with_a_fix(tiny, setting, message):
    with pytest.raises(ConfigError, match=message) as err:
        pixgen.generate("a red circle", **tiny, palette=setting)
    assert "palette" in err.value.hint


def test_a_palette_of_one_colour_draws_the_picture_towards_it(tiny):
    # the random decoder can hardly leave its noise, so the pull shows only a little here; the toy test shows more
    options = tiny | {"write": False, "log_every": 1, "optim": {"lr": 0.3}, "iterations": 20}
    free = pixgen.generate("a red circle", seed=2, **options)
    held = pixgen.generate("a red circle", seed=2, **options, palette={"weight": 50.0, "colours": [40, 200, 90]})
    assert "palette" in held.losses[-1]["terms"] and "palette" not in free.losses[-1]["terms"]

    def off(result):  # mean distance of the picture's pixels from the one palette colour
        return float(np.linalg.norm(np.asarray(result.image, float) - [40, 200, 90], axis=-1).mean())

    assert off(held) < off(free) - 2


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
def test_with_the_worlds_palette_fewer_toy_pixels_sit_between_its_colours():
    from pixgen.toy.strict import PALETTE

    colours = PALETTE.astype(int).tolist()
    options = {"model": "toy", "iterations": 30, "write": False, "progress": False, "echo": False}
    free = pixgen.generate("a yellow circle above a purple square", seed=0, **options)
    held = pixgen.generate("a yellow circle above a purple square", seed=0, **options,
                           palette={"weight": 3.0, "colours": colours})

    def off(result):  # mean distance of each pixel from its nearest world colour
        x = np.asarray(result.image, float).reshape(-1, 1, 3)
        return float(np.linalg.norm(x - PALETTE[None], axis=-1).min(-1).mean())

    assert off(held) < off(free)


def test_the_toy_palette_preset_holds_the_worlds_colours_and_runs():
    from omegaconf import OmegaConf

    from pixgen.config import resolve_preset
    from pixgen.toy.strict import PALETTE

    preset = OmegaConf.load(resolve_preset("toy-palette")).palette
    assert preset.weight > 0
    assert sorted(map(tuple, OmegaConf.to_container(preset.colours))) == sorted(map(tuple, PALETTE.astype(int).tolist()))
    if not (TOY / "vqgan.ckpt").exists():
        pytest.skip("toy weights not present")
    res = pixgen.generate("a red circle", model="toy", config="toy-palette", iterations=2, write=False, progress=False,
                          echo=False)
    assert {"palette", "sparsity", "border"} <= set(res.losses[-1]["terms"])  # over the toy preset, not instead of it
