"""The scene prior: its loss term, its schedule inside a run, its loading errors, its training and resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pixgen
from pixgen.errors import ConfigError, ModelError
from pixgen.losses import prior_loss
from pixgen.toy.prior import SceneRestorer, corrupt, load_prior, save_prior, train_prior
from pixgen.toy.training import batch_images
from pixgen.toy.world import render, sample_scene


def _shifting_prior(shift: float, widths=(4, 4)) -> SceneRestorer:
    """A restorer whose every output is its input plus ``shift`` (before clamping)."""
    model = SceneRestorer(widths)
    with torch.no_grad():
        model.head.bias.fill_(shift)
    return model.eval()


def test_prior_loss_pulls_the_image_towards_the_restored_one_without_differentiating_the_prior():
    calls = []

    def restore(x):
        calls.append(x.requires_grad)
        return torch.full_like(x, 0.5)

    image = torch.rand(1, 3, 8, 8, requires_grad=True)
    loss = prior_loss(image, restore)
    loss.backward()
    assert calls == [False]  # the prior sees a detached image
    assert torch.allclose(image.grad, (image.detach() - 0.5) / image.numel())
    assert loss.item() == pytest.approx(((image.detach() - 0.5) ** 2).mean().item() / 2)


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (96, 128)])
def test_restore_keeps_the_size_and_applies_the_correction_at_any_size(size):
    model = _shifting_prior(0.1)
    image = torch.full((1, 3, *size), 0.3)
    out = model.restore(image)
    assert out.shape == image.shape
    assert torch.allclose(out, torch.full_like(out, 0.4), atol=1e-5)
    assert model.restore(torch.full((1, 3, *size), 0.95)).max() == 1.0  # clamped to the image range


def test_saved_prior_loads_with_its_widths_and_weights(tmp_path):
    model = _shifting_prior(0.25, widths=(4, 6, 8))
    path = save_prior(model, tmp_path / "p.safetensors", meta={"steps": 1})
    back = load_prior(path)
    assert back.widths == [4, 6, 8] and not any(p.requires_grad for p in back.parameters())
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(back(x), model(x), atol=1e-3)  # float16 on disk


def test_corrupt_spoils_nearly_every_scene_within_range_and_is_seeded():
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng) for _ in range(64)]
    clean = batch_images([render(s) for s in scenes], torch.device("cpu"))
    bgs = [s.background for s in scenes]
    a = corrupt(clean, bgs, torch.Generator().manual_seed(1))
    b = corrupt(clean, bgs, torch.Generator().manual_seed(1))
    c = corrupt(clean, bgs, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a - clean).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert int(changed.sum()) >= 56  # each kind of damage is drawn on its own; few scenes escape them all
    assert a.min() >= 0 and a.max() <= 1


def _tiny_run(tiny, prior_path, **prior):
    return pixgen.generate("a red circle", seed=0, **tiny, prior={"path": str(prior_path), **prior})


def test_a_run_uses_the_prior_only_in_its_step_range_and_records_its_file(tiny, tmp_path):
    path = save_prior(_shifting_prior(0.2), tmp_path / "shift.safetensors")
    res = _tiny_run(tiny, path, weight=5.0, steps=[0.5, 1.0])
    with_prior = [r["step"] for r in res.losses if "prior" in r["terms"]]
    assert with_prior == [4, 5, 6]  # steps 4-6 of 6 (0-based 3-5)
    assert "shift.safetensors" in res.weights
    off = _tiny_run(tiny | {"output_dir": str(tmp_path / "off")}, path, weight=0.0)
    assert not any("prior" in r["terms"] for r in off.losses) and "shift.safetensors" not in off.weights


class _Pixels(torch.nn.Module):
    """A generator whose image is its latent: the prior alone then decides where the image goes."""

    def __init__(self):
        super().__init__()
        self.z = torch.nn.Parameter(torch.full((1, 3, 8, 8), 0.2))

    def latent_parameters(self):
        return [self.z]

    def forward(self):
        return self.z

    def project_(self):
        pass


def test_the_prior_pulls_the_image_to_what_it_restores_and_only_in_its_steps():
    from pixgen.engine import Engine

    gen = _Pixels()
    target = torch.rand(1, 3, 8, 8)
    engine = Engine(gen, [], [], {}, torch.optim.SGD(gen.latent_parameters(), lr=1.0), total=40,
                    prior=lambda x: target, prior_weight=192.0, prior_steps=(0.5, 1.0))
    for step in range(20):  # outside the prior's range there is no term, so nothing moves
        labels, _ = engine.losses(gen(), [], step)
        assert labels == []
    before = (gen.z - target).abs().max().item()
    for step in range(20, 40):
        labels, terms = engine.step(step)
        assert labels == ["prior"]
    assert (gen.z - target).abs().max().item() < 0.01 * before  # gradient (x - target) / N times 192 = N / 2


@pytest.mark.parametrize("prior, says", [
    ({"path": None, "weight": 1.0}, "names no prior"),
    ({"path": "p.safetensors", "weight": -1.0}, "prior.weight"),
    ({"path": "p.safetensors", "weight": 1.0, "steps": [0.8, 0.2]}, "prior.steps"),
    ({"path": "p.safetensors", "weight": 1.0, "steps": [0.5]}, "prior.steps"),
])
def test_bad_prior_settings_are_refused_with_a_fix(tiny, prior, says):
    with pytest.raises(ConfigError, match=says):
        pixgen.generate("a red circle", **tiny, prior=prior)


def test_a_missing_or_foreign_prior_file_is_refused_with_a_fix(tiny, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        pixgen.generate("a red circle", **tiny, prior={"path": str(tmp_path / "nope.safetensors"), "weight": 1.0})
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="could not read the scene prior"):
        pixgen.generate("a red circle", **tiny, prior={"path": str(junk), "weight": 1.0})


def test_interrupted_and_resumed_prior_training_matches_a_straight_run(tmp_path, monkeypatch):
    import pixgen.toy.prior as tp

    kwargs = dict(steps=3, batch=4, threads=None, log_every=1, save_every=1, progress=False, roundtrip=0.0)
    train_prior(tmp_path / "straight", **kwargs)
    real_tqdm = tp.tqdm
    monkeypatch.setattr(tp, "tqdm", lambda it, **kw: real_tqdm(list(it)[:2], **kw))  # cut off after two steps
    train_prior(tmp_path / "stopped", **kwargs)
    monkeypatch.setattr(tp, "tqdm", real_tqdm)
    train_prior(tmp_path / "stopped", resume=True, **kwargs)
    a = load_prior(tmp_path / "straight" / "prior.safetensors").state_dict()
    b = load_prior(tmp_path / "stopped" / "prior.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "stopped" / "prior.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "heldout" in rows[-1]
