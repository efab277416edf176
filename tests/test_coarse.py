"""A coarse stage: compose at a smaller size, then grow to the output size and go on."""
import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

import pixgen
from pixgen import engine as engine_mod
from pixgen.config import coarse_size
from pixgen.errors import ConfigError
from pixgen.generators import vqgan as generator_mod
from pixgen.output import to_pil


@pytest.mark.parametrize("size, coarse, factor, expected", [
    ([128, 128], [64, 64], 4, (64, 64)),
    ([256, 256], [64, 64], 16, (64, 64)),
    ([128, 64], [64, 64], 4, (64, 32)),      # the aspect is kept: the longer side decides
    ([96, 192], [64, 64], 4, (32, 64)),
    ([64, 64], [64, 64], 4, None),           # already fits: no coarse stage
    ([48, 48], [64, 64], 4, None),
    ([80, 64], [76, 64], 16, None),          # scaled down, it rounds back to the same size
    ([68, 64], [64, 64], 4, (64, 60)),
    ([128, 128], None, 4, None),
])
def test_coarse_size_fits_within_and_keeps_the_aspect(size, coarse, factor, expected):
    assert coarse_size(size, coarse, factor) == expected


@pytest.mark.parametrize("key, value, match", [
    ("coarse.share", 1.5, "coarse.share"),
    ("coarse.share", 0.0, "coarse.share"),
    ("coarse.size", [0, 64], "coarse.size"),
    ("coarse.size", [64], "coarse.size"),
])
def test_bad_coarse_settings_are_refused_with_the_fix(tiny, key, value, match):
    with pytest.raises(ConfigError, match=match):
        pixgen.generate("a castle", **{**tiny, key: value})


def _coarse(tiny, **more):
    return {**tiny, "coarse": {"size": [16, 16], "share": 0.5}, **more}


def test_a_coarse_run_is_a_small_run_then_grows_to_the_output_size(tiny, monkeypatch):
    shapes, before = [], []
    real_step, real_grow = engine_mod.Engine.step, generator_mod.VQGANGenerator.grow_

    def step(self, i):
        shapes.append(tuple(self.generator.z.shape[-2:]))
        return real_step(self, i)

    def grow(self):
        with torch.no_grad():
            before.append(self().detach())
        real_grow(self)

    monkeypatch.setattr(engine_mod.Engine, "step", step)
    monkeypatch.setattr(generator_mod.VQGANGenerator, "grow_", grow)
    r = pixgen.generate("a castle", seed=3, video=True, **_coarse(tiny))
    assert shapes == [(4, 4)] * 3 + [(8, 8)] * 3  # 16 px then 32 px at the model's factor 4
    assert any("composing at 16x16 for 3 of 6 steps" in m for m in r.messages)
    assert r.image.size == (32, 32)
    # every frame and the video are at the output size, also those of the coarse stage
    assert all(Image.open(f).size == (32, 32) for f in (r.run_dir / "frames").glob("*.png"))
    assert (r.run_dir / "frames" / "000000.png").is_file()
    reader = imageio.get_reader(r.run_dir / "progress.mp4", format="FFMPEG")
    try:
        assert reader.count_frames() == 3  # steps 0, 3, 6: the first two from the coarse stage
        assert all(frame.shape == (32, 32, 3) for frame in reader)
    finally:
        reader.close()
    # the coarse stage is exactly a run at the coarse size, stopped at the growth step
    monkeypatch.setattr(engine_mod.Engine, "step", real_step)
    small = pixgen.generate("a castle", seed=3, **{**tiny, "size": [16, 16], "iterations": 3, "output_dir":
                                                    str(r.run_dir.parent / "small")})
    assert np.array_equal(np.asarray(to_pil(before[0])), np.asarray(small.image))
    # after growing, the search starts from the coarse picture scaled up, not from anything new
    grown = np.asarray(Image.open(r.run_dir / "frames" / "000003.png"), dtype=np.float32)
    scaled = np.asarray(small.image.resize((32, 32), Image.NEAREST), dtype=np.float32)
    other = np.asarray(pixgen.generate("a castle", seed=4, **{**tiny, "size": [32, 32], "iterations": 3,
                                                               "write": False}).image, dtype=np.float32)
    assert np.abs(grown - scaled).mean() < np.abs(other - scaled).mean() / 2


def test_share_1_composes_throughout_and_only_scales_the_picture_up(tiny, monkeypatch):
    grew = []
    monkeypatch.setattr(generator_mod.VQGANGenerator, "grow_", lambda self: grew.append(1))
    r = pixgen.generate("a castle", seed=3, **_coarse(tiny, coarse={"size": [16, 16], "share": 1.0}))
    assert not grew
    assert any("composing at 16x16 for all 6 steps, scaled up to 32x32" in m for m in r.messages)
    assert r.image.size == (32, 32)
    assert all(Image.open(f).size == (32, 32) for f in (r.run_dir / "frames").glob("*.png"))
    # the picture is exactly the same run at the coarse size, scaled up by nearest pixel
    small = pixgen.generate("a castle", seed=3, **{**tiny, "size": [16, 16], "write": False})
    assert np.array_equal(np.asarray(r.image), np.asarray(small.image.resize((32, 32), Image.NEAREST)))


def test_share_1_composes_at_the_coarse_size_in_a_one_step_run_too(tiny):
    # with nothing to grow into there is no step to leave after it: one step composes at the coarse size as 100 do
    r = pixgen.generate("a castle", seed=3, **_coarse(tiny, coarse={"size": [16, 16], "share": 1.0}, iterations=1))
    assert any("composing at 16x16 for its one step" in m for m in r.messages) and r.image.size == (32, 32)
    small = pixgen.generate("a castle", seed=3, **{**tiny, "size": [16, 16], "iterations": 1, "write": False})
    assert np.array_equal(np.asarray(r.image), np.asarray(small.image.resize((32, 32), Image.NEAREST)))


def test_no_coarse_stage_when_the_output_fits_it(tiny, monkeypatch):
    grew = []
    monkeypatch.setattr(generator_mod.VQGANGenerator, "grow_", lambda self: grew.append(1))
    r = pixgen.generate("a castle", **{**tiny, "coarse": {"size": [32, 32]}})
    assert not grew and not any("composing" in m for m in r.messages)


@pytest.mark.parametrize("stop_after, share", [(1, 0.5), (4, 0.5), (4, 1.0)])  # before and after the growth; none
def test_a_coarse_run_stopped_and_resumed_matches_a_straight_one(tiny, tmp_path, generate_ctrl_c, stop_after, share):
    coarse = {"size": [16, 16], "share": share}
    straight = pixgen.generate("a castle", seed=2, **_coarse(tiny, coarse=coarse,
                                                             output_dir=str(tmp_path / "straight")))
    stopped = generate_ctrl_c(stop_after, "a castle", seed=2, **_coarse(tiny, coarse=coarse))
    assert stopped.interrupted
    assert stopped.image.size == (32, 32)  # the last image is kept at the output size, even a coarse one
    assert Image.open(stopped.run_dir / "image.png").size == (32, 32)
    resumed = pixgen.resume(stopped.run_dir, progress=False)
    steps = [json.loads(line)["step"] for line in (stopped.run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert (resumed.run_dir / "image.png").read_bytes() == (straight.run_dir / "image.png").read_bytes()
