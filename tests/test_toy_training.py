"""CLIP training with adversarial chains: the chains really optimise against the CLIP, restart, and resume."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"
needs = pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists() or not (TOY / "clip.pt").exists(),
                           reason="toy weights not present")


def _clip():
    from pixgen.toy.train_clip import create_toy_clip

    return create_toy_clip(str(TOY / "clip.pt")).eval()


def _similarity(model, chains):
    from pixgen.toy.train_clip import encode_text_fast, normalize, tokenize

    with torch.no_grad():
        img = F.normalize(model.encode_image(normalize(F.interpolate(chains.images, size=48, mode="area"), model)), dim=-1)
        txt = F.normalize(encode_text_fast(model, tokenize(chains.texts)), dim=-1)
    return (img * txt).sum(-1)


@needs
def test_chains_climb_the_clip_score_of_their_captions_and_restart_after_their_life():
    from pixgen.toy.adversarial import AdversarialChains
    from pixgen.toy.training import load_toy_vqgan
    from pixgen.toy.train_clip import augment, encode_text_fast, normalize, tokenize

    torch.manual_seed(0)
    model = _clip()
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    chains = AdversarialChains(load_toy_vqgan(TOY), 3, rng, gen, life=(1000, 1000))
    chains.age.zero_()
    texts = list(chains.texts)
    with torch.no_grad():
        text = encode_text_fast(model, tokenize(chains.texts))

    def step():
        return chains.step(text, lambda im: model.encode_image(normalize(im, model)),
                           lambda im: augment(im, 48, gen), rng, gen)

    step()
    before = _similarity(model, chains)
    for _ in range(12):
        step()
    after = _similarity(model, chains)
    assert (after > before + 0.05).all(), (before, after)  # every chain moved towards its own caption
    assert chains.texts == texts and (chains.age == 13).all()
    assert not any(p.grad is not None for p in model.parameters())  # the CLIP itself is not touched

    chains.life[1] = 13
    z_kept = chains.z[0].clone()
    step()
    assert chains.age[1] == 1 and chains.age[0] == 14  # chain 1 restarted from fresh codes, the others went on
    assert not torch.equal(chains.z[0], z_kept)
    assert chains.texts[1] != texts[1] and chains.texts[0] == texts[0]  # a new caption for the new run
    assert chains.images.shape == (3, 3, 64, 64)


@needs
def test_chains_score_each_image_on_as_many_crops_as_asked():
    from pixgen.toy.adversarial import AdversarialChains
    from pixgen.toy.training import load_toy_vqgan

    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    chains = AdversarialChains(load_toy_vqgan(TOY), 2, rng, gen, cutouts=3)
    seen = []

    def encode(crops):
        seen.append(crops.shape[0])
        return crops.mean((2, 3))  # a stand-in embedding that depends on the pixels

    calls = []
    chains.step(torch.ones(2, 3), encode, lambda im: calls.append(1) or im[..., 4:52, 4:52], rng, gen)
    assert len(calls) == 3 and seen == [6]  # three crops of each of the two chains, encoded in one batch


@needs
def test_flat_chain_starts_draw_from_the_given_colours():
    from pixgen.toy.adversarial import AdversarialChains
    from pixgen.toy.training import load_toy_vqgan

    vqgan = load_toy_vqgan(TOY)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    colours = [(20, 20, 20), (240, 240, 240)]
    chains = AdversarialChains(vqgan, 12, rng, gen, flat_p=1.0, flat_rgb=colours)
    with torch.no_grad():
        flats = [vqgan.encode(torch.tensor(c).div(255).view(1, 3, 1, 1).expand(1, 3, 64, 64) * 2 - 1)[0]
                 for c in colours]
    starts = [next(k for k, f in enumerate(flats) if torch.allclose(z, f, atol=1e-4)) for z in chains.z]
    assert set(starts) == {0, 1}  # every chain starts flat, and both colours are used


def test_cut_variant_pushes_a_named_object_partly_off_the_canvas():
    from pixgen.toy.captions import sample_pair
    from pixgen.toy.train_clip import cut_variant
    from pixgen.toy.world import CANVAS, shape_mask

    rng = np.random.default_rng(5)
    for _ in range(40):
        scene, spec = sample_pair(rng)
        variant = cut_variant(scene, spec, rng, cut=(0.3, 0.6))
        moved = [(a, b) for a, b in zip(scene.objects, variant.objects) if a != b]
        assert len(moved) == 1 and variant.background == scene.background
        before, after = moved[0]
        assert any(r.matches(before) for r in spec.refs)  # the object moved is one the caption names
        x0, y0, x1, y1 = after.box()
        over = max(-x0, -y0, x1 - CANVAS, y1 - CANVAS)  # how far the box reaches past the canvas edge
        assert 0.3 * after.px - 1e-6 <= over <= 0.6 * after.px + 1e-6
        # drawn on a larger canvas, part of the shape's pixels fall outside the real 64x64 one
        pad = 40
        mask = shape_mask(after.shape, after.cx + pad, after.cy + pad, after.px, CANVAS + 2 * pad)
        assert mask[pad:pad + CANVAS, pad:pad + CANVAS].sum() < 0.95 * mask.sum()



def test_stray_variant_adds_one_object_in_a_free_cell_clear_of_the_others():
    from dataclasses import replace

    from pixgen.toy.captions import sample_pair
    from pixgen.toy.train_clip import stray_variant
    from pixgen.toy.world import Scene, overlaps

    rng = np.random.default_rng(6)
    for _ in range(60):
        scene, spec = sample_pair(rng)
        variant = stray_variant(scene, rng)
        assert variant.background == scene.background and variant.objects[:-1] == scene.objects
        extra = variant.objects[-1]
        assert (extra.col, extra.row) not in {(o.col, o.row) for o in scene.objects}
        assert not any(overlaps(extra, o) for o in scene.objects)
    one = scene.objects[0]
    crowded = Scene(scene.background, [replace(one, col=c, row=r) for r in range(3) for c in range(3)])
    assert stray_variant(crowded, rng) is None  # every cell taken: no room for a stray


@needs
def test_train_clip_with_chains_logs_them_and_resumes_their_state(tmp_path):
    from pixgen.errors import Interrupted
    from pixgen.toy.train_clip import train_clip
    from pixgen.toy.training import load_state

    for name in ("vqgan.ckpt", "vqgan.yaml"):
        shutil.copy(TOY / name, tmp_path / name)
    kwargs = dict(batch=6, negatives=1, junk=2, chains=3, roundtrip_p=0.5, init=TOY / "clip.pt", threads=None,
                  log_every=1, save_every=2, progress=False, lr=1e-4, warmup=1, chain_cutouts=2, cut_p=1.0)
    with pytest.raises(Interrupted):
        train_clip(tmp_path, steps=3, stop=_stop_after(2), **kwargs)
    state = load_state(tmp_path / "state" / "clip_finetune_state.pt")
    assert state["step"] == 2 and (state["chains"]["age"] >= 0).all()
    ages, texts = state["chains"]["age"].clone(), list(state["chains"]["texts"])
    records = [json.loads(line) for line in (tmp_path / "clip_finetune.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1]
    assert all(0.0 <= r["chain_acc"] <= 1.0 and "chain_gap" in r for r in records)
    assert all(0.0 <= r["cut_acc"] <= 1.0 for r in records)  # every scene also came with a cut variant

    train_clip(tmp_path, steps=3, resume=True, **kwargs)
    state = load_state(tmp_path / "state" / "clip_finetune_state.pt")
    records = [json.loads(line) for line in (tmp_path / "clip_finetune.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    # the chains went on from where they were: one step older, or restarted with a new caption
    new_ages, new_texts = state["chains"]["age"], state["chains"]["texts"]
    for i in range(3):
        assert new_ages[i] == ages[i] + 1 or (new_ages[i] == 1 and new_texts[i] != texts[i])


def test_clip_training_refuses_chains_without_a_vqgan(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--chains", "4", "--steps", "1"])
    assert result.exit_code == 2
    assert "vqgan" in result.output and "pixgen toy train vqgan" in result.output and "--vqgan" in result.output
    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--chains", "4", "--steps", "1",
                                      "--vqgan", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is not a directory" in result.output
    assert not (tmp_path / "state").exists()


def _truncated_vqgan(directory):
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY / "vqgan.yaml", directory)
    (directory / "vqgan.ckpt").write_bytes((TOY / "vqgan.ckpt").read_bytes()[:20000])
    return directory


@needs
def test_clip_training_refuses_an_unusable_vqgan_before_training(tmp_path):
    """The junk images' VQGAN was passed over without a word when it could not be read: the run trained without
    them. A trained VQGAN's fix is to train it again, not to download it."""
    from typer.testing import CliRunner

    from pixgen.cli import app

    bad = _truncated_vqgan(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    for vqgan, says in ((bad, "cannot read checkpoint"), (tmp_path / "empty", "holds no toy VQGAN")):
        result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path / "o"), "--steps", "1",
                                          "--batch", "2", "--vqgan", str(vqgan)])
        assert result.exit_code == 2 and says in result.output, result.output
        assert "--vqgan checkpoints/toy" in result.output and "download" not in result.output
        assert not (tmp_path / "o").exists()


@needs
@pytest.mark.parametrize("model", ["evaluator", "prior"])
def test_a_corrupt_vqgan_in_out_is_to_be_trained_again_not_downloaded(tmp_path, model):
    from typer.testing import CliRunner

    from pixgen.cli import app

    out = _truncated_vqgan(tmp_path / "o")
    earlier = out / f"{model}.log.jsonl"
    earlier.write_text('{"step": 0, "loss": 1.0}\n')  # an earlier run's log, which a refused run must not clear
    result = CliRunner().invoke(app, ["toy", "train", model, "--out", str(out), "--steps", "1", "--batch", "2"])
    assert result.exit_code == 2 and "cannot read checkpoint" in result.output, result.output
    assert f"pixgen toy train vqgan --out {out}" in result.output and "checkpoints/toy" in result.output
    assert "download" not in result.output
    assert earlier.read_text() == '{"step": 0, "loss": 1.0}\n'


@needs
def test_junk_pool_keeps_its_images_when_its_vqgan_turns_unreadable_during_training(tmp_path):
    import os

    from pixgen.errors import PixgenError
    from pixgen.toy.train_clip import JunkPool

    shutil.copy(TOY / "vqgan.yaml", tmp_path)
    shutil.copy(TOY / "vqgan.ckpt", tmp_path)
    pool = JunkPool(tmp_path, size=4)
    pool.refresh()
    images = pool.images
    assert images is not None and len(images) == 4
    _truncated_vqgan(tmp_path)
    os.utime(tmp_path / "vqgan.ckpt", (1, 1))  # changed since the pool was made
    pool.refresh()  # a training running on it goes on
    assert pool.images is images
    with pytest.raises(PixgenError, match="cannot read checkpoint"):
        JunkPool(tmp_path, size=4).refresh()  # before training: said at once


@needs
def test_clip_training_says_what_is_wrong_with_an_init_that_exists(tmp_path):
    """Both once said "not found": a folder given for its clip.pt, and a file after '+' that is no image tower."""
    from typer.testing import CliRunner

    from pixgen.cli import app

    (tmp_path / "run").mkdir()
    shutil.copy(TOY / "clip.pt", tmp_path / "run")
    for init, says, hint in (
            (tmp_path / "run", "is a folder, not a weights file", f"--init {tmp_path / 'run' / 'clip.pt'}"),
            (f"{TOY / 'clip.pt'}+{TOY / 'vqgan.ckpt'}", f"{TOY / 'vqgan.ckpt'} is not an image tower file",
             "must be an image tower .safetensors file written by `pixgen toy image-tower`")):
        result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path / "o"), "--init", str(init),
                                          "--steps", "1"])
        assert result.exit_code == 2 and says in result.output and hint in result.output, result.output
        assert "not found" not in result.output
    assert not (tmp_path / "o").exists()


@needs
def test_clip_training_reads_the_vqgan_from_another_directory(tmp_path):
    from pixgen.toy.train_clip import train_clip

    train_clip(tmp_path, steps=1, batch=4, negatives=1, junk=2, chains=2, roundtrip_p=0.5, init=TOY / "clip.pt",
               threads=None, progress=False, vqgan=TOY)
    assert not (tmp_path / "vqgan.ckpt").exists()  # nothing copied: the chains ran through TOY's VQGAN
    records = [json.loads(line) for line in (tmp_path / "clip_finetune.log.jsonl").read_text().splitlines()]
    assert records and "chain_acc" in records[-1]


@pytest.mark.parametrize("model", ["vqgan", "clip", "evaluator"])
def test_toy_training_refuses_a_thread_count_below_one_like_generate(tmp_path, model):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "train", model, "--out", str(tmp_path), "--threads", "0", "--steps", "1"])
    assert result.exit_code == 2
    assert "--threads 0 is not a thread count" in result.output
    assert not (tmp_path / "state").exists()  # refused before any training started


@pytest.mark.parametrize("model", ["vqgan", "decoder", "clip", "evaluator", "prior"])
@pytest.mark.parametrize("flag", ["--steps", "--batch"])
def test_toy_training_refuses_no_steps_or_an_empty_batch(tmp_path, model, flag):
    from typer.testing import CliRunner

    from pixgen.cli import app

    extra = ["--init", str(tmp_path)] if model == "decoder" else []
    result = CliRunner().invoke(app, ["toy", "train", model, "--out", str(tmp_path / "o"), *extra, flag, "0"])
    assert result.exit_code == 2 and "greater than or equal to 1" in result.output
    assert not (tmp_path / "o").exists()  # nothing written: a 0-step run once saved untrained weights


@pytest.mark.parametrize("model", ["vqgan", "decoder", "clip", "evaluator", "prior"])
def test_toy_training_refuses_a_negative_seed(tmp_path, model):
    from typer.testing import CliRunner

    from pixgen.cli import app

    extra = ["--init", str(tmp_path)] if model == "decoder" else []
    result = CliRunner().invoke(app, ["toy", "train", model, "--out", str(tmp_path / "o"), *extra, "--seed", "-1"])
    assert result.exit_code == 2 and "greater than or equal to" in result.output  # not numpy's traceback
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model, args, says", [
    ("clip", ["--lr", "-1"], "--lr -1 is not a learning rate"),
    ("clip", ["--lr", "0"], "--lr 0 is not a learning rate"),
    ("clip", ["--lr", "nan"], "--lr nan is not a finite number"),
    ("clip", ["--hard-weight", "inf"], "--hard-weight inf is not a finite number"),
    ("clip", ["--hard-weight", "-1"], "'--hard-weight'"),
    ("clip", ["--chain-weight", "-2"], "'--chain-weight'"),
    ("clip", ["--negatives", "-1"], "'--negatives'"),
    ("clip", ["--warmup", "-5"], "'--warmup'"),  # a negative warm-up made the learning rate negative
    ("clip", ["--chains", "-1", "--vqgan", str(TOY)], "'--chains'"),
    ("decoder", ["--lr", "-1"], "--lr -1 is not a learning rate"),
    ("decoder", ["--critic-lr", "0"], "--critic-lr 0 is not a learning rate"),
    ("decoder", ["--gan-weight", "inf"], "--gan-weight inf is not a finite number"),
    ("prior", ["--lr", "0"], "--lr 0 is not a learning rate"),
    ("prior", ["--lr", "inf"], "--lr inf is not a finite number"),
    ("decoder", ["--critic-warmup", "5"], "leaves none of the 1 steps to the decoder"),  # only the critic learns
])
def test_toy_training_refuses_bad_numbers_before_training(tmp_path, model, args, says):
    from typer.testing import CliRunner

    from pixgen.cli import app

    extra = ["--init", str(TOY)] if model == "decoder" else []
    result = CliRunner().invoke(app, ["toy", "train", model, "--out", str(tmp_path / "o"), *extra, *args,
                                      "--steps", "1", "--batch", "2"])
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_clip_training_without_warmup_starts_at_the_full_learning_rate(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--steps", "1", "--batch", "2",
                                      "--negatives", "0", "--warmup", "0", "--lr", "1e-4"])
    assert result.exit_code == 0, result.output  # was a ZeroDivisionError
    row = json.loads((tmp_path / "clip.log.jsonl").read_text().splitlines()[0])
    assert row["step"] == 0 and row["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("model", ["vqgan", "clip", "evaluator"])
def test_toy_training_says_when_out_cannot_be_created(tmp_path, model):
    from typer.testing import CliRunner

    from pixgen.cli import app

    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["toy", "train", model, "--out", str(tmp_path / "file" / "o"), "--steps", "1"])
    assert result.exit_code == 2 and "cannot create --out" in result.output


def test_vqgan_training_takes_a_batch_smaller_than_four(tmp_path):
    from pixgen.toy.train_vqgan import train_vqgan

    train_vqgan(tmp_path, steps=1, batch=2, progress=False)  # the last fifth's whole canvases: batch // 4 was 0
    assert (tmp_path / "vqgan.ckpt").is_file()


@needs
@pytest.mark.parametrize("aux_layout,aux_relation,fade,robust,warp,align,align_clutter,align_latent",
                         [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False), (1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, False),
                          (0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.0, True)])
def test_interrupted_and_resumed_clip_training_matches_a_straight_run(tmp_path, monkeypatch, aux_layout, aux_relation,
                                                                      fade, robust, warp, align, align_clutter,
                                                                      align_latent):
    import pixgen.toy.train_clip as tc

    def setup(d):
        d.mkdir()
        for name in ("vqgan.ckpt", "vqgan.yaml"):
            shutil.copy(TOY / name, d / name)
        return d

    kwargs = dict(steps=3, batch=5, negatives=1, junk=2, chains=2, roundtrip_p=0.5, init=TOY / "clip.pt",
                  threads=None, log_every=1, save_every=1, progress=False, lr=1e-4, warmup=1, aux_layout=aux_layout,
                  aux_relation=aux_relation, fade=fade, robust=robust, warp=warp, align=align,
                  align_clutter=align_clutter, align_latent=align_latent)
    straight = setup(tmp_path / "straight")
    tc.train_clip(straight, **kwargs)

    stopped = setup(tmp_path / "stopped")
    real_tqdm = tc.tqdm

    def first_two(iterable, **kw):  # the run is cut off after two steps, as by Ctrl-C after a save
        return real_tqdm(list(iterable)[:2], **kw)

    monkeypatch.setattr(tc, "tqdm", first_two)
    tc.train_clip(stopped, **kwargs)
    monkeypatch.setattr(tc, "tqdm", real_tqdm)
    tc.train_clip(stopped, resume=True, **kwargs)

    a = torch.load(straight / "clip.pt", weights_only=True)
    b = torch.load(stopped / "clip.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    one = [json.loads(x)["loss"] for x in (straight / "clip_finetune.log.jsonl").read_text().splitlines()]
    two = [json.loads(x)["loss"] for x in (stopped / "clip_finetune.log.jsonl").read_text().splitlines()]
    assert one == two and len(one) == 3
    if aux_layout:  # the training-only heads are kept in the state (so the resume above matched), not in clip.pt
        state = torch.load(stopped / "state" / "clip_finetune_state.pt", weights_only=False)
        assert "layout_heads" in state and "relation_head" in state
        assert not any(k.startswith(("image.", "text.", "head.")) for k in a)
        rows = [json.loads(x) for x in (stopped / "clip_finetune.log.jsonl").read_text().splitlines()]
        assert all("aux_image" in r and "aux_relation" in r for r in rows)


def test_fade_keeps_the_background_and_a_drawn_share_of_each_objects_contrast():
    from pixgen.toy.train_clip import fade_to_background
    from pixgen.toy.world import BACKGROUNDS, Obj, Scene, render

    scenes = [Scene(bg, [Obj("circle", "red", "large", 1, 1, 32.0, 32.0, 24.0)]) for bg in ("white", "black")]
    x = torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1).float() / 255 for s in scenes])
    faded = fade_to_background(x, [s.background for s in scenes], (0.2, 0.4), torch.Generator().manual_seed(0))
    for img, out, scene in zip(x, faded, scenes):
        bg = torch.tensor(BACKGROUNDS[scene.background]).float().view(3, 1, 1) / 255
        assert torch.allclose(out[:, 0, 0], bg[:, 0, 0])  # the corner is background: unchanged
        keep = (out[:, 32, 32] - bg[:, 0, 0]) / (img[:, 32, 32] - bg[:, 0, 0])  # the circle's centre
        assert 0.2 <= keep.mean() <= 0.4 and torch.allclose(keep, keep.mean().expand(3), atol=1e-5)
        assert torch.allclose(out, bg + keep[0] * (img - bg), atol=1e-6)


@needs
def test_clip_training_with_fade_scores_faded_copies_of_the_batch_scenes(tmp_path, monkeypatch):
    import pixgen.toy.train_clip as tc
    from pixgen.toy.world import BACKGROUNDS

    seen = []
    real_augment, real_batch = tc.augment, tc.make_batch
    batches = []
    monkeypatch.setattr(tc, "augment", lambda x, size, g: (seen.append(x.detach().clone()), real_augment(x, size, g))[1])
    monkeypatch.setattr(tc, "make_batch", lambda *a, **k: (batches.append(real_batch(*a, **k)), batches[-1])[1])
    tc.train_clip(tmp_path, steps=1, batch=6, negatives=1, junk=0, fade=1.0, init=TOY / "clip.pt", threads=None,
                  progress=False, lr=1e-4, warmup=1, save_every=1, log_every=1)
    scenes, images = batches[0][0], batches[0][1]
    x = seen[0]
    assert len(x) == 2 * len(scenes)  # every scene, then every scene faded
    for i, scene in enumerate(scenes):
        clean = torch.from_numpy(images[i]).permute(2, 0, 1).float() / 255
        bg = torch.tensor(BACKGROUNDS[scene.background]).float().view(3, 1, 1) / 255
        moved = (clean - bg).abs() > 0.1
        keep = ((x[len(scenes) + i] - bg)[moved] / (clean - bg)[moved])
        assert 0.08 - 1e-4 <= keep.min() and keep.max() <= 0.6 + 1e-4 and keep.std() < 1e-3
    row = json.loads((tmp_path / "clip_finetune.log.jsonl").read_text().splitlines()[0])
    assert 0.0 <= row["fade_rank_acc"] <= 1.0 and 0.0 <= row["fade_hard_neg_acc"] <= 1.0


def test_warped_scenes_keep_their_exact_colours_and_flat_background_but_lose_their_shapes():
    from pixgen.toy.train_clip import warp_field, warp_shapes
    from pixgen.toy.world import COLOURS, Obj, Scene, render

    scene = Scene("gray", [Obj("square", "red", "large", 1, 1, 32.0, 32.0, 24.0),
                           Obj("cross", "blue", "small", 0, 0, 10.0, 10.0, 12.0)])
    x = torch.from_numpy(render(scene)).permute(2, 0, 1)[None].float() / 255
    field = warp_field(1, 64, 64, torch.Generator().manual_seed(3))
    assert field.shape == (1, 2, 64, 64) and abs(field.pow(2).mean().sqrt().item() - 1.0) < 1e-4
    assert torch.equal(warp_shapes(x, field * 0), x)  # no displacement, no change
    mild, strong = warp_shapes(x, field * 1.5), warp_shapes(x, field * 3.0)
    palette = {tuple(v) for v in (x[0].flatten(1).T * 255).round().int().tolist()}
    for bent in (mild, strong):
        assert {tuple(v) for v in (bent[0].flatten(1).T * 255).round().int().tolist()} <= palette  # no new colours
        assert torch.equal(bent[0, :, 63, 63], x[0, :, 63, 63])  # far from the objects: still background
    red = torch.tensor(COLOURS["red"]).float().view(3, 1, 1) / 255
    masks = [(im[0] - red).abs().sum(0) < 1e-3 for im in (x, mild, strong)]
    changed = [(masks[0] ^ m).sum().item() for m in masks[1:]]
    assert 0 < changed[0] < changed[1]  # bent twice as far along the same field: further from the square
    assert abs(masks[1].sum().item() - masks[0].sum().item()) < 0.5 * masks[0].sum().item()  # still a red object


@needs
def test_clip_training_with_warp_ranks_each_scene_above_its_mild_and_strong_blob(tmp_path, monkeypatch):
    import pixgen.toy.train_clip as tc

    seen, batches, warps = [], [], []
    real_augment, real_batch, real_warp = tc.augment, tc.make_batch, tc.warp_shapes
    monkeypatch.setattr(tc, "augment", lambda x, size, g: (seen.append(x.detach().clone()), real_augment(x, size, g))[1])
    monkeypatch.setattr(tc, "make_batch", lambda *a, **k: (batches.append(real_batch(*a, **k)), batches[-1])[1])
    monkeypatch.setattr(tc, "warp_shapes", lambda x, f: (warps.append(f.clone()), real_warp(x, f))[1])
    tc.train_clip(tmp_path, steps=1, batch=6, negatives=1, junk=0, warp=1.0, warp_amplitude=(1.0, 2.0),
                  init=TOY / "clip.pt", threads=None, progress=False, lr=1e-4, warmup=1, save_every=1, log_every=1)
    scenes, images = batches[0][0], batches[0][1]
    n, x = len(scenes), seen[0]
    assert len(x) == 3 * n  # every scene, then a mild and a strong blob of each
    mild_field, strong_field = warps
    assert torch.allclose(strong_field, 2 * mild_field)  # the same field, twice as far
    rms = mild_field.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.all((rms >= 1.0 - 1e-4) & (rms <= 2.0 + 1e-4))
    for i in range(n):
        clean = torch.from_numpy(images[i]).permute(2, 0, 1).float() / 255
        assert torch.equal(x[n + i], real_warp(clean[None], mild_field[i:i + 1])[0])
        assert torch.equal(x[2 * n + i], real_warp(clean[None], strong_field[i:i + 1])[0])
    row = json.loads((tmp_path / "clip_finetune.log.jsonl").read_text().splitlines()[0])
    assert 0.0 <= row["warp_acc"] <= 1.0


def test_alignment_pairs_fade_bend_or_both_and_keep_the_background():
    from pixgen.toy.train_clip import alignment_pairs
    from pixgen.toy.world import BACKGROUNDS, Obj, Scene, render

    scene = Scene("black", [Obj("square", "red", "large", 1, 1, 32.0, 32.0, 24.0)])
    clean = torch.from_numpy(render(scene)).permute(2, 0, 1).float().div(255).expand(60, 3, 64, 64).contiguous()
    out = alignment_pairs(clean, ["black"] * 60, (0.1, 0.5), torch.Generator().manual_seed(0))
    again = alignment_pairs(clean, ["black"] * 60, (0.1, 0.5), torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == clean.shape
    bg = torch.tensor(BACKGROUNDS["black"]).float().view(3, 1, 1) / 255
    assert torch.allclose(out[:, :, 0, 0], bg.view(1, 3).expand(60, 3))  # the corner stays background in every kind
    red = torch.tensor([220, 30, 30]).float().view(3, 1, 1) / 255
    full_red = ((out - red).abs().sum(1) < 1e-3).flatten(1).sum(1)  # pixels still at full contrast
    square = ((clean[0] - red).abs().sum(0) < 1e-3).sum()
    faded = full_red == 0
    bent = (full_red > 0) & ~torch.all((out == clean).flatten(1), dim=1)
    assert faded.sum() >= 10 and bent.sum() >= 10  # all three kinds come up; bent-only ones keep full red
    assert torch.all(full_red[bent] < square + 200)
    assert not torch.any(torch.all((out == clean).flatten(1), dim=1))  # none is left unspoilt


@needs
def test_decoder_transpose_gives_the_latent_gradient_a_search_gets():
    from pixgen.generators.vqgan import VQGANGenerator
    from pixgen.toy.train_clip import decoder_transpose, gradient_alignment
    from pixgen.toy.training import load_toy_vqgan, reconstruct
    from pixgen.toy.world import Obj, Scene, render

    vq = load_toy_vqgan(TOY)
    scene = Scene("gray", [Obj("cross", "green", "large", 1, 1, 30.0, 34.0, 24.0)])
    x = torch.from_numpy(render(scene)).permute(2, 0, 1).float().div(255)[None]
    picture, transpose = decoder_transpose(vq, x)
    assert torch.allclose(picture, reconstruct(vq, x), atol=1e-5)  # the picture is the VQGAN round trip
    inside = (picture > 0.01) & (picture < 0.99)  # where generation's clamp passes every gradient
    g = torch.randn(picture.shape, generator=torch.Generator().manual_seed(0)) * inside
    search = VQGANGenerator(vq, 64, 64, init=x)  # a search started from the same picture
    (expected,) = torch.autograd.grad(search(), search.z, grad_outputs=g)
    assert torch.allclose(transpose(g), expected, atol=1e-5)
    w = torch.ones(()).requires_grad_(True)
    transpose(g * w, create_graph=True).pow(2).sum().backward()  # trainable: the loss reaches what made g
    assert w.grad is not None and w.grad > 0

    # alignment in the latent: a pixel direction the decoder cannot draw (a one-pixel checkerboard) hardly moves
    # it, so it counts for little there, while in pixels it halves the cosine
    right = x
    wrong, transpose = decoder_transpose(vq, x)  # afresh: the backward above used up the first one's graph
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float().expand(1, 3, 64, 64) - 0.5
    way = right - wrong
    noisy = way + checker * way.norm() / checker.norm()

    def fixed(direction):  # an "embedding" whose caption gradient at ``wrong`` is a positive multiple of ``direction``
        return lambda v: torch.stack([(v * direction).sum(), torch.ones(())]).view(1, 2)

    target = torch.tensor([[1.0, 0.0]])
    plain = gradient_alignment(fixed(noisy), wrong, right, target, lambda v: v, create_graph=False)
    latent = gradient_alignment(fixed(noisy), wrong, right, target, lambda v: v, create_graph=False,
                                through=transpose)
    assert 0.6 < plain.item() < 0.8 and latent.item() > plain.item() + 0.1


def test_alignment_mix_weighs_the_spoilt_kinds():
    from pixgen.toy.train_clip import alignment_pairs
    from pixgen.toy.world import Obj, Scene, render

    scene = Scene("black", [Obj("square", "red", "large", 1, 1, 32.0, 32.0, 24.0)])
    clean = torch.from_numpy(render(scene)).permute(2, 0, 1).float().div(255).expand(40, 3, 64, 64).contiguous()
    red = torch.tensor([220, 30, 30]).float().view(3, 1, 1) / 255

    def kinds(mix):
        out = alignment_pairs(clean, ["black"] * 40, (0.1, 0.5), torch.Generator().manual_seed(0), mix=mix)
        full_red = ((out - red).abs().sum(1) < 1e-3).flatten(1).sum(1)  # a bent-only picture keeps full red
        bg = clean[:, :, :1, :1]
        support = lambda im: (im - bg).abs().amax(1) > 0.01  # noqa: E731  (pixels off the background)
        bent_mask = (support(out) != support(clean)).flatten(1).any(1)  # the outline moved; fading keeps it
        return (full_red > 0) & bent_mask, (full_red == 0) & ~bent_mask, (full_red == 0) & bent_mask

    bent, faded, both = kinds((0.0, 1.0, 0.0))
    assert bent.all()
    bent, faded, both = kinds((1.0, 0.0, 0.0))
    assert faded.all()
    bent, faded, both = kinds((0.0, 0.0, 1.0))
    assert both.all()
    bent, faded, both = kinds((1.0, 6.0, 1.0))
    assert bent.sum() >= 25 and (faded | both).sum() >= 1


def test_alignment_mix_and_latent_options_are_checked(tmp_path):
    import pytest
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.errors import PixgenError
    from pixgen.toy.cli import parse_align_mix

    assert parse_align_mix("bent=3") == (1.0, 3.0, 1.0)
    assert parse_align_mix("faded=0, both=2") == (0.0, 1.0, 2.0)
    for bad, says in (("blob=1", "unknown kind 'blob'"), ("bent=many", "no numeric weight"), ("bent=-2", ">= 0"),
                      ("faded=0,bent=0,both=0", "every kind has weight 0")):
        with pytest.raises(PixgenError, match=says):
            parse_align_mix(bad)
    for flags in (["--align-mix", "bent=3"], ["--align-latent"]):
        result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), *flags, "--steps", "1"])
        assert result.exit_code == 2 and "--align is 0" in result.output and flags[0] in result.output
    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--align", "0.5",
                                      "--align-latent", "--steps", "1"])
    assert result.exit_code == 2 and "vqgan.yaml" in result.output and "does not exist" in result.output
    assert "--vqgan" in result.output
    assert not (tmp_path / "state").exists()


def test_alignment_clutter_pastes_strays_on_the_background_only():
    from pixgen.toy.train_clip import alignment_pairs
    from pixgen.toy.training import batch_images
    from pixgen.toy.world import BACKGROUNDS, Obj, Scene, render

    scene = Scene("white", [Obj("square", "red", "large", 0, 0, 14.0, 14.0, 24.0)])
    donor = Scene("black", [Obj("circle", "blue", "large", 2, 2, 50.0, 50.0, 24.0),
                            Obj("cross", "green", "large", 0, 0, 14.0, 14.0, 24.0)])
    clean = batch_images([render(scene)], torch.device("cpu")).expand(16, 3, 64, 64).contiguous()
    donors = (batch_images([render(donor)], torch.device("cpu")), ["black"])
    plain = alignment_pairs(clean, ["white"] * 16, (0.1, 0.5), torch.Generator().manual_seed(3))
    # clutter 0 draws no extra random numbers: the same spoilt pictures as before the option existed
    assert torch.equal(plain, alignment_pairs(clean, ["white"] * 16, (0.1, 0.5), torch.Generator().manual_seed(3),
                                              clutter=0.0, donors=donors))
    out = alignment_pairs(clean, ["white"] * 16, (0.1, 0.5), torch.Generator().manual_seed(3), clutter=1.0,
                          donors=donors)
    white = torch.tensor(BACKGROUNDS["white"]).float().view(1, 3, 1, 1) / 255
    own = (clean - white).abs().amax(1) > 0.02  # the red square's pixels
    assert torch.equal(out.permute(0, 2, 3, 1)[own], clean.permute(0, 2, 3, 1)[own])  # the scene itself is kept
    stray = ((out - white).abs().amax(1) > 0.02) & ~own
    assert torch.all(stray[:, 32:, 32:].flatten(1).sum(1) > 30)  # every picture gets the donor's blue circle
    near = torch.nn.functional.max_pool2d(own.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
    assert not (stray & near).any()  # strays keep clear of the scene's own object (the donor's cross sits there)
    blue = torch.tensor([30, 70, 220]).float().view(1, 3, 1, 1) / 255
    towards = ((out - white) * (blue - white)).sum(1)[stray]  # strays are the donor's colour, faded to the white
    assert torch.all(towards > 0)


@needs
def test_gradient_alignment_trains_the_image_tower_to_point_at_the_clean_render():
    import torch.nn.functional as F

    from pixgen.toy.train_clip import alignment_pairs, augment, create_toy_clip, gradient_alignment, normalize
    from pixgen.toy.world import Obj, Scene, render

    torch.manual_seed(0)
    model = create_toy_clip()
    scenes = [Scene("gray", [Obj(shape, colour, "large", 1, 1, 32.0, 32.0, 24.0)])
              for shape, colour in (("circle", "red"), ("square", "blue"), ("cross", "green"), ("triangle", "pink"))]
    clean = torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1).float() / 255 for s in scenes])
    gen = torch.Generator().manual_seed(1)
    wrong = alignment_pairs(clean, ["gray"] * 4, (0.1, 0.5), gen)
    targets = F.normalize(torch.randn(4, model.text_projection.shape[1], generator=gen), dim=-1)

    def embed(x):
        return model.encode_image(normalize(x, model))

    def cosine(create_graph):
        return gradient_alignment(embed, wrong, clean, targets, lambda im: augment(im, 48, torch.Generator().manual_seed(2)),
                                  create_graph=create_graph)

    before = cosine(False)
    assert before.shape == (4,) and torch.all(before.abs() <= 1)
    # the same gradient against the opposite way: exactly the opposite cosine
    opposite = gradient_alignment(embed, wrong, 2 * wrong - clean, targets,
                                  lambda im: augment(im, 48, torch.Generator().manual_seed(2)), create_graph=False)
    assert torch.allclose(opposite, -before, atol=1e-5)
    opt = torch.optim.Adam(model.visual.parameters(), lr=1e-3)
    for _ in range(15):  # the second derivative reaches the tower's weights and lifts the cosine
        opt.zero_grad()
        (1 - cosine(True)).mean().backward()
        opt.step()
    after = cosine(False)
    assert after.mean() > before.mean() + 0.2


def test_clip_training_refuses_a_bad_warp_amplitude_before_training(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    for bad, why in (("2", "is not two numbers"), ("3,1", "needs 0 < LO <= HI"), ("1,inf", "both finite")):
        result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--warp", "0.5",
                                          "--warp-amplitude", bad, "--steps", "1"])
        assert result.exit_code == 2 and why in result.output
    assert not (tmp_path / "state").exists()


@needs
def test_clip_training_can_start_from_a_base_with_an_image_tower_file(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy.train_clip import create_toy_clip, load_init, split_tower

    tower = TOY / "clip_early_visual.safetensors"
    assert split_tower(TOY / "clip.pt") == (TOY / "clip.pt", None)
    assert split_tower(f"{TOY / 'clip.pt'}+{tower}") == (TOY / "clip.pt", tower)
    model, plain = create_toy_clip(), create_toy_clip()
    load_init(model, f"{TOY / 'clip.pt'}+{tower}")
    load_init(plain, TOY / "clip.pt")
    from safetensors.torch import load_file

    want = load_file(str(tower))
    got = model.visual.state_dict()
    assert all(torch.equal(got[k].half(), want[k]) for k in want)  # the tower file's weights, not clip.pt's
    assert not all(torch.equal(plain.visual.state_dict()[k].half(), want[k]) for k in want)
    text = {k: v for k, v in plain.state_dict().items() if not k.startswith("visual.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in text.items())  # text side is clip.pt's
    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--lock-text", "--steps", "1",
                                      "--init", f"{TOY / 'clip.pt'}+{tmp_path / 'nope.safetensors'}"])
    assert result.exit_code == 2 and "nope.safetensors not found" in result.output
    assert not (tmp_path / "state").exists()


def test_clip_training_refuses_clutter_without_align_before_training(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--align-clutter", "0.3",
                                      "--steps", "1"])
    assert result.exit_code == 2 and "--align is 0" in result.output and "--align 0.5" in result.output
    assert not (tmp_path / "state").exists()
    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--align", "0.2",
                                      "--align-clutter-spoilt", "--steps", "1"])
    assert result.exit_code == 2 and "--align-clutter is 0" in result.output
    assert "--align-clutter 0.35 --align-clutter-spoilt" in result.output
    assert not (tmp_path / "state").exists()


def test_l2_worst_case_stays_in_its_ball_and_lowers_the_score_more_than_a_random_push():
    from pixgen.toy.train_clip import perturb_l2

    torch.manual_seed(0)
    proj = torch.nn.Linear(3 * 8 * 8, 16)
    embed = lambda x: proj(x.flatten(1))  # noqa: E731
    x = torch.rand(4, 3, 8, 8) * 0.6 + 0.2  # away from 0 and 1, so clamping plays no part
    targets = F.normalize(torch.randn(4, 16), dim=-1)
    score = lambda im: (F.normalize(embed(im), dim=-1) * targets).sum(-1)  # noqa: E731
    out = perturb_l2(embed, x, targets, eps=0.5, steps=3)
    norms = (out - x).flatten(1).norm(dim=1)
    assert torch.all(norms <= 0.5 + 1e-5) and torch.all(norms > 0.25)
    assert out.min() >= 0 and out.max() <= 1 and not out.requires_grad
    noise = torch.randn_like(x)
    push = x + 0.5 * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.all(score(out) < score(push) - 1e-3) and torch.all(score(out) < score(x) - 1e-3)
    assert torch.equal(perturb_l2(embed, x, targets, eps=0.0, steps=3), x)  # no radius, no change
    edge = torch.ones(1, 3, 8, 8)  # a white image can only get darker
    assert perturb_l2(embed, edge, targets[:1], eps=0.5, steps=2).max() <= 1


@needs
def test_clip_training_with_robust_shows_each_picked_scene_as_its_worst_case_for_its_own_caption(tmp_path,
                                                                                                monkeypatch):
    import pixgen.toy.train_clip as tc

    calls, batches = [], []
    real_perturb, real_batch = tc.perturb_l2, tc.make_batch
    monkeypatch.setattr(tc, "make_batch", lambda *a, **k: (batches.append(real_batch(*a, **k)), batches[-1])[1])

    def spy(embed, images, targets, eps, steps):
        out = real_perturb(embed, images, targets, eps, steps)
        calls.append((images, targets, out, eps, steps))
        return out

    monkeypatch.setattr(tc, "perturb_l2", spy)
    tc.train_clip(tmp_path, steps=1, batch=6, negatives=1, junk=0, robust=1.0, robust_eps=0.7, robust_steps=2,
                  init=TOY / "clip.pt", threads=None, progress=False, lr=1e-4, warmup=1, save_every=1, log_every=1)
    (images, targets, out, eps, steps), = calls
    scenes, texts = batches[0][0], batches[0][2]
    assert (eps, steps) == (0.7, 2) and len(images) == len(scenes)  # every scene, as robust=1.0 asks
    model = tc.create_toy_clip(str(TOY / "clip.pt"))
    own = F.normalize(tc.encode_text_fast(model, tc.tokenize(texts[:len(scenes)])), dim=-1)
    assert torch.allclose(targets, own, atol=1e-4)  # each image is pushed away from its own caption
    assert torch.all((out - images).flatten(1).norm(dim=1) <= 0.7 + 1e-4)


def test_relation_head_labels_each_colour_pair_by_row_and_column():
    from pixgen.toy.train_clip import RelationHead
    from pixgen.toy.world import COLOUR_NAMES, Obj, Scene

    red, cyan, blue = (COLOUR_NAMES.index(c) for c in ("red", "cyan", "blue"))
    scene = Scene("gray", [Obj("circle", "red", "large", 0, 1, 11, 32, 24), Obj("cross", "cyan", "small", 2, 2, 52, 52, 12),
                           Obj("square", "blue", "small", 2, 0, 52, 11, 12), Obj("square", "blue", "small", 1, 2, 32, 52, 12)])
    labels = dict(zip(RelationHead.PAIRS, RelationHead.labels(scene)))
    a, b = sorted((red, cyan))
    # red sits at column 0, row 1; cyan at column 2, row 2: red is above and left of cyan
    assert labels[(a, b)] == ((0, 0) if a == red else (2, 2))
    assert labels[tuple(sorted((red, blue)))] == (-1, -1)  # blue appears twice: no single place to compare
    assert sum(1 for v in labels.values() if v != (-1, -1)) == 1
    head = RelationHead(16)
    img = F.normalize(torch.randn(1, 16), dim=-1).requires_grad_(True)
    head.loss(img, [scene]).backward()
    assert img.grad.abs().sum() > 0
    lonely = Scene("gray", [Obj("circle", "red", "large", 0, 1, 11, 32, 24)])
    with torch.no_grad():
        assert head.loss(img, [lonely]).item() == 0.0  # no pair to compare: no loss, no NaN


def test_layout_heads_read_the_cells_and_the_named_place_relation_and_binding():
    from pixgen.toy.captions import RELATIONS, Ref, Spec
    from pixgen.toy.train_clip import LayoutHeads
    from pixgen.toy.world import COLOUR_NAMES, SHAPES, Obj, Scene

    scene = Scene("gray", [Obj("circle", "red", "large", 0, 1, 11, 32, 24), Obj("cross", "cyan", "small", 2, 2, 52, 52, 12)])
    cells, shapes = LayoutHeads.cell_labels(scene), LayoutHeads.cell_shapes(scene)
    assert cells[3] == 1 + COLOUR_NAMES.index("red") and cells[8] == 1 + COLOUR_NAMES.index("cyan")
    assert shapes[3] == 1 + SHAPES.index("circle") and shapes[8] == 1 + SHAPES.index("cross")
    assert sum(1 for c in cells if c) == 2 and sum(1 for c in shapes if c) == 2
    none = len(RELATIONS)
    red, circle = 1 + COLOUR_NAMES.index("red"), 1 + SHAPES.index("circle")
    blue, square = 1 + COLOUR_NAMES.index("blue"), 1 + SHAPES.index("square")
    assert LayoutHeads.text_labels(Spec("objects", (Ref("red", "circle", col=0),))) == (0, 3, none, red, circle, 0, 0)
    assert LayoutHeads.text_labels(Spec("objects", (Ref("red", "circle", col=2, row=0),)))[:3] == (2, 0, none)
    assert LayoutHeads.text_labels(Spec("objects", (Ref(None, "circle"),))) == (3, 3, none, 0, circle, 0, 0)
    relation = Spec("relation", (Ref("red", "circle"), Ref("blue", "square")), relation="below")
    assert LayoutHeads.text_labels(relation) == (3, 3, RELATIONS.index("below"), red, circle, blue, square)
    # the order of the two objects is part of what the text head must read
    swapped = Spec("relation", (Ref("blue", "square"), Ref("red", "circle")), relation="below")
    assert LayoutHeads.text_labels(swapped)[3:] == (blue, square, red, circle)

    heads = LayoutHeads(16)
    img = F.normalize(torch.randn(1, 16), dim=-1).requires_grad_(True)
    txt = F.normalize(torch.randn(1, 16), dim=-1).requires_grad_(True)
    image_loss, text_loss = heads.losses(img, [scene], txt, [relation])
    (image_loss + text_loss).backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0  # the heads teach the embeddings


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident size from /proc")
def test_release_freed_memory_hands_freed_heap_back_to_the_os():
    import os

    from pixgen.toy.training import release_freed_memory

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    chunks = [torch.ones(25_000) for _ in range(2000)]  # 100 KB each: heap, not mmap, so free() keeps them
    pin = torch.ones(25_000)  # allocated after them: the heap top cannot shrink past it on its own
    del chunks
    before = rss()
    if not release_freed_memory():
        pytest.skip("no glibc malloc_trim here")
    assert before - rss() > 100 * 2**20  # most of the 200 MB freed above is handed back
    assert pin.sum() == 25_000


@needs
@pytest.mark.parametrize("locked", ["image", "text"])
def test_a_locked_tower_keeps_its_weights_while_the_other_trains(tmp_path, locked):
    from pixgen.errors import PixgenError
    from pixgen.toy.train_clip import train_clip

    start = torch.load(TOY / "clip.pt", weights_only=True)
    lock = {f"lock_{locked}": True}
    train_clip(tmp_path, steps=2, batch=6, negatives=1, junk=0, init=TOY / "clip.pt", threads=None, progress=False,
               lr=1e-3, warmup=1, save_every=2, aux_layout=1.0, **lock)
    after = torch.load(tmp_path / "clip.pt", weights_only=True)
    image = [k for k in start if k.startswith("visual.")]
    text = [k for k in start if not k.startswith("visual.") and k != "logit_scale" and start[k].is_floating_point()]
    frozen, trained = (image, text) if locked == "image" else (text, image)
    assert frozen and all(torch.equal(start[k], after[k]) for k in frozen)
    assert any(not torch.equal(start[k], after[k]) for k in trained)
    # resuming without the flag would train the frozen tower with a mismatched optimizer: refused, with the fix
    with pytest.raises(PixgenError, match=f"--lock-{locked}"):
        train_clip(tmp_path, steps=3, resume=True, batch=6, negatives=1, junk=0, init=TOY / "clip.pt", threads=None,
                   progress=False, aux_layout=1.0)


@needs
def test_render_started_chains_begin_at_their_own_scene_and_that_start_is_their_positive(tmp_path, monkeypatch):
    from pixgen.toy import train_clip as tc
    from pixgen.toy.adversarial import AdversarialChains
    from pixgen.toy.training import load_state, load_toy_vqgan
    from pixgen.toy.world import render

    vqgan = load_toy_vqgan(TOY)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    chains = AdversarialChains(vqgan, 4, rng, gen, render_p=1.0)
    assert chains.from_render.all()
    for i in range(4):
        clean = torch.from_numpy(render(chains.scenes[i])).permute(2, 0, 1).float().div(255)
        with torch.no_grad():
            assert torch.allclose(chains.z[i], vqgan.encode(clean[None] * 2 - 1)[0], atol=1e-5)
        # the start is the scene through the VQGAN: close to the render, not the render itself
        gap = (chains.start_images[i] - clean).abs().mean()
        assert 0 < gap < 0.08, gap
    assert not AdversarialChains(vqgan, 4, rng, gen).from_render.any()

    for name in ("vqgan.ckpt", "vqgan.yaml"):
        shutil.copy(TOY / name, tmp_path / name)
    seen = []
    real_augment = tc.augment
    monkeypatch.setattr(tc, "augment", lambda x, size, g: (seen.append(x.detach().clone()), real_augment(x, size, g))[1])
    tc.train_clip(tmp_path, steps=1, batch=4, negatives=1, junk=0, chains=2, chain_render=1.0, roundtrip_p=0.0,
                  init=TOY / "clip.pt", threads=None, progress=False, lr=1e-4, warmup=1, save_every=1,
                  chain_life=(50, 50))
    state = load_state(tmp_path / "state" / "clip_finetune_state.pt")["chains"]
    batch = next(x for x in seen if len(x) > 2 * 2)  # the training batch, not a chain's crops
    assert torch.equal(batch[:2], state["start_images"])  # each chain's caption is matched with its start


@pytest.mark.parametrize("flags, says", [(["--lock-image"], "--init"), (["--lock-text"], "--init"),
                                         (["--lock-image", "--lock-text", "--init", str(TOY / "clip.pt")],
                                          "nothing to train")])
def test_locks_without_init_or_both_at_once_are_refused(tmp_path, flags, says):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), *flags, "--steps", "1"])
    assert result.exit_code == 2
    assert flags[0] in result.output and says in result.output
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("args, says", [(["nope.pt", "--base", "nope.pt", "--out", "t.safetensors"], "SRC"),
                                        ([str(TOY / "clip.pt"), "--base", str(TOY / "clip.pt"), "--out", "t.pt"],
                                         ".safetensors")])
def test_image_tower_command_refuses_missing_files_and_other_formats(tmp_path, args, says):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "image-tower", *[str(tmp_path / a) if a.startswith(("nope", "t.")) else a
                                                              for a in args]])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert not list(tmp_path.iterdir())


def test_scrambled_code_grids_swap_a_drawn_share_of_cells_for_codes_of_the_batch():
    from pixgen.toy.train_vqgan import scramble_codes

    idx = torch.arange(4 * 16 * 16).view(4, 16, 16) % 300
    out = scramble_codes(idx, (0.2, 0.4), torch.Generator().manual_seed(0))
    assert out.shape == idx.shape
    share = (out != idx).flatten(1).float().mean(1)
    assert torch.all((share > 0.1) & (share < 0.45))  # about 20-40% of each grid, less the swaps that drew the same
    assert set(out.unique().tolist()) <= set(idx.unique().tolist())  # only codes the batch already uses
    assert torch.equal(scramble_codes(idx, (0.0, 0.0), torch.Generator().manual_seed(0)), idx)


@needs
def test_decoder_fine_tune_keeps_encoder_and_codebook_and_resumes_exactly(tmp_path, monkeypatch):
    from pixgen.toy.train_vqgan import train_decoder_gan
    import pixgen.toy.train_vqgan as tv

    kwargs = dict(steps=3, batch=2, critic_warmup=1, save_every=1, log_every=1, progress=False, threads=None)
    train_decoder_gan(TOY, tmp_path / "straight", **kwargs)
    real_tqdm = tv.tqdm
    monkeypatch.setattr(tv, "tqdm", lambda it, **kw: real_tqdm(list(it)[:2], **kw))  # cut off after two steps
    train_decoder_gan(TOY, tmp_path / "stopped", **kwargs)
    monkeypatch.setattr(tv, "tqdm", real_tqdm)
    train_decoder_gan(TOY, tmp_path / "stopped", resume=True, **kwargs)

    base = torch.load(TOY / "vqgan.ckpt", weights_only=False)["state_dict"]
    a = torch.load(tmp_path / "straight" / "vqgan.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "stopped" / "vqgan.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run is the straight one
    for k in a:
        if k.startswith(("encoder.", "quant_conv.", "quantize.")):
            assert torch.equal(a[k], base[k].to(a[k].dtype)), k  # latents keep their meaning
    assert any(not torch.equal(a[k], base[k]) for k in a if k.startswith("decoder."))
    rows = [json.loads(x) for x in (tmp_path / "stopped" / "vqgan_gan.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and "l1" not in rows[0] and "l1" in rows[1]  # warm-up: critic only


@needs
def test_decoder_fine_tune_gives_the_critic_its_own_learning_rate(tmp_path, monkeypatch):
    import pixgen.toy.train_vqgan as tv

    made = []
    real_adam = torch.optim.Adam
    monkeypatch.setattr(tv.torch.optim, "Adam", lambda params, **kw: (made.append(kw["lr"]), real_adam(params, **kw))[1])
    tv.train_decoder_gan(TOY, tmp_path, steps=1, batch=1, lr=1e-4, critic_lr=4e-4, critic_warmup=0, progress=False,
                         threads=None)
    assert made == [1e-4, 4e-4]  # the decoder's optimiser, then the critic's
    made.clear()
    tv.train_decoder_gan(TOY, tmp_path / "b", steps=1, batch=1, lr=1e-4, critic_warmup=0, progress=False, threads=None)
    assert made == [1e-4, 1e-4]


def test_decoder_fine_tune_refuses_bad_options_before_training(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    runner = CliRunner()
    for args, says in ((["--init", str(tmp_path)], "has no vqgan.yaml"),
                       (["--init", str(TOY), "--scramble", "0.5"], "is not two numbers"),
                       (["--init", str(TOY), "--scramble", "0.4,0.1"], "needs 0 <= LO <= HI <= 1")):
        result = runner.invoke(app, ["toy", "train", "decoder", "--out", str(tmp_path / "o"), *args, "--steps", "1"])
        assert result.exit_code == 2 and says in result.output, result.output
    assert not (tmp_path / "o").exists()


@needs
def test_cut_and_fade_together_score_each_cut_image_against_its_own_caption(tmp_path, monkeypatch):
    import pixgen.toy.train_clip as tc

    seen = []
    real_augment = tc.augment
    monkeypatch.setattr(tc, "augment", lambda x, size, g: (seen.append(len(x)), real_augment(x, size, g))[1])
    tc.train_clip(tmp_path, steps=1, batch=6, negatives=1, junk=0, cut_p=1.0, fade=1.0, init=TOY / "clip.pt",
                  threads=None, progress=False, lr=1e-4, warmup=1, save_every=1, log_every=1)
    row = json.loads((tmp_path / "clip_finetune.log.jsonl").read_text().splitlines()[0])
    assert seen[0] > 2 * 6  # scenes, their cut variants and their faded copies were all in one batch
    assert 0.0 <= row["cut_acc"] <= 1.0 and 0.0 <= row["fade_rank_acc"] <= 1.0



def test_near_miss_variant_changes_one_thing_that_makes_the_caption_false():
    from collections import Counter

    from pixgen.toy.captions import Ref, Spec, holds, sample_pair
    from pixgen.toy.train_clip import near_miss_variant
    from pixgen.toy.world import Obj, Scene, overlaps

    rng = np.random.default_rng(3)
    kinds = Counter()
    for _ in range(300):
        scene, spec = sample_pair(rng)
        variant = near_miss_variant(scene, spec, rng)
        assert variant.background == scene.background and not holds(spec, variant)
        before, after = scene.objects, variant.objects
        if len(after) == len(before) - 1:  # one fewer, only ever for a count
            assert spec.kind == "count" and all(o in before for o in after)
            kinds["fewer"] += 1
            continue
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        if len(changed) == 1:  # the same object in another shape, everything else kept
            (a, b), = changed
            assert b.shape != a.shape and (b.colour, b.col, b.row, b.cx, b.cy, b.px) == (a.colour, a.col, a.row, a.cx, a.cy, a.px)
            kinds["shape"] += 1
            continue
        (a1, b1), (a2, b2) = changed
        if a1.colour != b1.colour:  # two colours swapped in place
            assert (b1.colour, b2.colour) == (a2.colour, a1.colour) and (b1.cx, b2.cx) == (a1.cx, a2.cx)
            kinds["colours"] += 1
        else:  # two objects swapped in place, each keeping its look, clear of the others
            assert (b1.col, b1.row, b2.col, b2.row) == (a2.col, a2.row, a1.col, a1.row)
            assert (b1.shape, b1.colour, b1.px) == (a1.shape, a1.colour, a1.px)
            assert not any(overlaps(x, y) for i, x in enumerate(after) for y in after[:i])
            kinds["places"] += 1
    assert set(kinds) == {"shape", "colours", "places", "fewer"} and min(kinds.values()) > 10
    for _ in range(30):  # one kind asked for: only that kind, or None where it does not apply
        scene, spec = sample_pair(rng)
        variant = near_miss_variant(scene, spec, rng, ("fewer",))
        assert (variant is None) == (spec.kind != "count") and (variant is None or len(variant.objects) < len(scene.objects))
    # a relation between two objects of one colour: swapping colours changes nothing, so only the shape or the
    # places can make it false
    red = Ref("red", "circle"), Ref("red", "square")
    spec = Spec("relation", red, relation="above")
    scene = Scene("gray", [Obj("circle", "red", "small", 1, 0, 32.0, 10.0, 12.0),
                           Obj("square", "red", "small", 1, 2, 32.0, 54.0, 12.0)])
    for _ in range(20):
        variant = near_miss_variant(scene, spec, rng)
        assert not holds(spec, variant) and {o.colour for o in variant.objects} == {"red"}


@needs
@pytest.mark.parametrize("option", ["stray_p", "near_miss_p"])
def test_stray_and_near_miss_variants_are_ranked_below_their_scene_and_leave_runs_without_them_as_they_were(
        tmp_path, monkeypatch, option):
    import pixgen.toy.train_clip as tc

    seen = []
    real_augment = tc.augment
    monkeypatch.setattr(tc, "augment", lambda x, size, g: (seen.append(len(x)), real_augment(x, size, g))[1])
    common = dict(steps=1, batch=6, negatives=1, junk=0, init=TOY / "clip.pt", threads=None, progress=False,
                  lr=1e-4, warmup=1, save_every=1, log_every=1)
    tc.train_clip(tmp_path / "variants", **{option: 1.0}, **common)
    row = json.loads((tmp_path / "variants" / "clip_finetune.log.jsonl").read_text().splitlines()[0])
    assert 0.0 <= row["cut_acc"] <= 1.0  # the variants were ranked (logged with the cut ones)
    tc.train_clip(tmp_path / "plain", **common)
    plain = json.loads((tmp_path / "plain" / "clip_finetune.log.jsonl").read_text().splitlines()[0])
    assert "cut_acc" not in plain and seen[0] > seen[1]  # no variants, and fewer images, without the option


def test_vqgan_training_takes_its_latent_grid_and_codebook_size_and_refuses_a_mismatched_resume(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from pixgen.checkpoints import load_vqgan
    from pixgen.cli import app
    from pixgen.toy.train_vqgan import train_vqgan

    train_vqgan(tmp_path, steps=1, batch=4, factor=2, n_embed=64, progress=False, threads=None)
    cfg = yaml.safe_load((tmp_path / "vqgan.yaml").read_text())["model"]["params"]
    assert cfg["ddconfig"]["ch_mult"] == [1, 2] and cfg["n_embed"] == 64
    model = load_vqgan(tmp_path / "vqgan.yaml", tmp_path / "vqgan.ckpt", cache=False)
    assert model.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 32, 32)  # 2 px per latent cell
    with pytest.raises(ValueError, match="started with factor 2 and n_embed 64"):
        train_vqgan(tmp_path, steps=2, batch=4, resume=True, progress=False, threads=None)
    runner = CliRunner()
    for args, says in ((["--factor", "3"], "--factor 3 is not supported"), (["--n-embed", "1"], "--n-embed 1 is too small"),
                       (["--resume", "--steps", "2"], "started with factor 2")):
        result = runner.invoke(app, ["toy", "train", "vqgan", "--out", str(tmp_path), *args])
        assert result.exit_code == 2 and says in result.output, result.output


def test_alignment_clutter_on_the_spoilt_scene_fades_the_named_objects_too():
    from pixgen.toy.train_clip import alignment_pairs
    from pixgen.toy.training import batch_images
    from pixgen.toy.world import BACKGROUNDS, Obj, Scene, render

    scene = Scene("white", [Obj("square", "red", "large", 0, 0, 14.0, 14.0, 24.0)])
    donor = Scene("black", [Obj("circle", "blue", "large", 2, 2, 50.0, 50.0, 24.0)])
    clean = batch_images([render(scene)], torch.device("cpu")).expand(16, 3, 64, 64).contiguous()
    donors = (batch_images([render(donor)], torch.device("cpu")), ["black"])
    spoilt = alignment_pairs(clean, ["white"] * 16, (0.1, 0.5), torch.Generator().manual_seed(3))
    on_clean = alignment_pairs(clean, ["white"] * 16, (0.1, 0.5), torch.Generator().manual_seed(3), clutter=1.0,
                               donors=donors)
    out = alignment_pairs(clean, ["white"] * 16, (0.1, 0.5), torch.Generator().manual_seed(3), clutter=1.0,
                          donors=donors, clutter_spoilt=True)
    white = torch.tensor(BACKGROUNDS["white"]).float().view(1, 3, 1, 1) / 255
    blue = torch.tensor([30, 70, 220]).float().view(1, 3, 1, 1) / 255
    corner = (slice(None), slice(None), slice(40, 60), slice(40, 60))  # where only the donor's circle lies
    # the same strays as on the clean scene (no extra random draws) ...
    assert torch.equal(out[corner], on_clean[corner])
    assert torch.all(((out[corner] - white) * (blue - white)).sum(1).flatten(1).amax(1) > 0)
    # ... but the scene's own square is the spoilt one, not the clean one
    own = (clean - white).abs().amax(1) > 0.02
    assert torch.equal(out.permute(0, 2, 3, 1)[own], spoilt.permute(0, 2, 3, 1)[own])
    assert not torch.equal(out.permute(0, 2, 3, 1)[own], clean.permute(0, 2, 3, 1)[own])


def test_a_fresh_toy_clip_is_created_without_open_clips_random_weights_warning(caplog):
    import logging

    from pixgen.toy.train_clip import create_toy_clip

    with caplog.at_level(logging.WARNING):
        model = create_toy_clip()
    assert model.visual is not None
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert logging.root.manager.disable == logging.NOTSET  # logging is switched back on afterwards


@needs
def test_clip_training_keeps_a_snapshot_of_its_weights_every_n_steps(tmp_path):
    from pixgen.toy.train_clip import train_clip

    train_clip(tmp_path, steps=4, batch=5, negatives=1, junk=0, init=TOY / "clip.pt", lock_text=True, lr=1e-3,
               warmup=1, threads=None, log_every=1, save_every=3, keep_every=2, progress=False)
    kept = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert kept == ["clip_step2.pt", "clip_step4.pt"]  # kept on their own steps, whatever save_every says
    two, four = (torch.load(tmp_path / "snapshots" / k, weights_only=True) for k in kept)
    last = torch.load(tmp_path / "clip.pt", weights_only=True)
    visual = [k for k in last if k.startswith("visual.")]
    assert all(torch.equal(four[k], last[k]) for k in last)  # the last snapshot is the final weights
    assert any(not torch.equal(two[k], four[k]) for k in visual)  # the earlier one is the run two steps before
    assert all(torch.equal(two[k], four[k]) for k in last if k.startswith("transformer."))  # text side locked


def test_cosine_decay_runs_from_one_down_to_its_floor_as_the_trainers_expect():
    from pixgen.toy.training import cosine_decay

    assert cosine_decay(0, 300) == 1.0
    assert cosine_decay(150, 300) == pytest.approx(0.5)
    assert cosine_decay(300, 300) == pytest.approx(0.0, abs=1e-12)
    assert cosine_decay(300, 300, 0.1) == pytest.approx(0.1)  # the VQGAN's floor
    assert cosine_decay(150, 300, 0.05) == pytest.approx(0.525)  # the CLIP's floor, halfway
    factors = [cosine_decay(s, 300, 0.05) for s in range(301)]
    assert all(a > b for a, b in zip(factors, factors[1:]))  # falls at every step


def test_train_defaults_reproduce_the_shipped_vqgan_and_evaluator():
    """`pixgen toy train vqgan|evaluator` with no --steps writes into checkpoints/toy: its default must be the
    recipe of the weights shipped there, or the bare command would replace them with a shorter-trained model."""
    import json

    import typer.main

    from pixgen.toy.cli import train_app

    group = typer.main.get_command(train_app)

    def default_steps(name):
        return next(p.default for p in group.commands[name].params if p.name == "steps")

    shipped_vqgan = torch.load(TOY / "vqgan.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert default_steps("vqgan") == shipped_vqgan == 1400
    assert default_steps("evaluator") == json.loads((TOY / "evaluator.json").read_text())["steps"]


def _stop_after(n):
    """A ``stop`` callback that asks for a stop at its n-th call (trainers ask once a step, at its end)."""
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= n

    return stop


def _vqgan_weights(d):
    return torch.load(d / "vqgan.ckpt", weights_only=False)["state_dict"]


def _clip_weights(d):
    return torch.load(d / "clip.pt", weights_only=True)


def _evaluator_weights(d):
    from safetensors.torch import load_file

    return load_file(d / "evaluator.safetensors")


def _prior_weights(d):
    from safetensors.torch import load_file

    return load_file(d / "prior.safetensors")


def _train_vqgan(d, **kw):
    from pixgen.toy.train_vqgan import train_vqgan

    train_vqgan(d, steps=3, batch=4, **kw)
    return "vqgan.log.jsonl"


def _train_decoder(d, **kw):
    from pixgen.toy.train_vqgan import train_decoder_gan

    train_decoder_gan(TOY, d, steps=3, batch=2, critic_warmup=1, **kw)
    return "vqgan_gan.log.jsonl"


def _train_clip(d, **kw):
    from pixgen.toy.train_clip import train_clip

    train_clip(d, steps=3, batch=6, negatives=1, junk=0, init=TOY / "clip.pt", lr=1e-4, warmup=1, **kw)
    return "clip_finetune.log.jsonl"


def _train_evaluator(d, **kw):
    from pixgen.toy.train_evaluator import train_evaluator

    train_evaluator(d, steps=3, batch=4, recon_pool=0, **kw)
    return "evaluator.log.jsonl"


def _train_prior(d, **kw):
    from pixgen.toy.prior import train_prior

    train_prior(d, steps=3, batch=4, roundtrip=0.0, **kw)
    return "prior.log.jsonl"


@pytest.mark.parametrize("train, weights", [(_train_vqgan, _vqgan_weights), (_train_decoder, _vqgan_weights),
                                            (_train_clip, _clip_weights), (_train_evaluator, _evaluator_weights),
                                            (_train_prior, _prior_weights)],
                         ids=["vqgan", "decoder", "clip", "evaluator", "prior"])
def test_a_stop_between_saves_saves_that_step_and_resume_matches_a_straight_run(tmp_path, train, weights):
    """Ctrl-C (the stop callback) long before the next periodic save loses no steps: the trainer saves after the
    step it is on, says how to go on, and --resume ends where an uninterrupted run does."""
    from pixgen.errors import Interrupted

    kw = dict(threads=None, progress=False, log_every=1, save_every=1000)
    log_name = train(tmp_path / "straight", **kw)
    with pytest.raises(Interrupted, match=r"stopped after step 2 of 3") as stopped:
        train(tmp_path / "stopped", stop=_stop_after(2), **kw)
    assert "--resume" in stopped.value.hint
    assert torch.load(next((tmp_path / "stopped" / "state").glob("*.pt")), weights_only=False)["step"] == 2
    train(tmp_path / "stopped", resume=True, **kw)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "stopped")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "stopped" / log_name).read_text().splitlines()]
    assert steps == [json.loads(x)["step"] for x in (tmp_path / "straight" / log_name).read_text().splitlines()]


@pytest.mark.parametrize("train, weights", [(_train_vqgan, _vqgan_weights), (_train_decoder, _vqgan_weights),
                                            (_train_clip, _clip_weights), (_train_evaluator, _evaluator_weights),
                                            (_train_prior, _prior_weights)],
                         ids=["vqgan", "decoder", "clip", "evaluator", "prior"])
def test_a_stopped_training_leaves_the_weights_so_far_where_it_says(tmp_path, train, weights):
    """The stop message says the weights so far are in OUT; the prior once kept only its resumable state."""
    from pixgen.errors import Interrupted

    with pytest.raises(Interrupted, match=f"the weights so far .* are in {tmp_path}"):
        train(tmp_path, stop=_stop_after(2), threads=None, progress=False, log_every=1, save_every=1000)
    assert weights(tmp_path)


def _blow_up(train):
    """A trainer called with a learning rate that makes its loss NaN within a few steps, saving only at the end."""
    from pixgen.toy.prior import train_prior
    from pixgen.toy.train_clip import train_clip
    from pixgen.toy.train_evaluator import train_evaluator
    from pixgen.toy.train_vqgan import train_decoder_gan, train_vqgan

    kw = dict(steps=4, lr=1e30, threads=None, progress=False, log_every=1)
    return {"vqgan": lambda d: train_vqgan(d, batch=2, **kw),
            "decoder": lambda d: train_decoder_gan(TOY, d, batch=1, critic_warmup=0, **kw),
            "clip": lambda d: train_clip(d, batch=4, negatives=1, junk=0, warmup=1, **kw),
            "evaluator": lambda d: train_evaluator(d, batch=2, recon_pool=0, **kw),
            "prior": lambda d: train_prior(d, batch=2, roundtrip=0.0, **kw)}[train]


@pytest.mark.parametrize("train, weights", [("vqgan", "vqgan.ckpt"), ("decoder", "vqgan.ckpt"), ("clip", "clip.pt"),
                                            ("evaluator", "evaluator.safetensors"), ("prior", "prior.safetensors")])
def test_a_training_that_blows_up_stops_naming_the_step_and_keeps_the_last_good_weights(tmp_path, train, weights):
    """As generation stops on a non-finite loss: the run once went on, wrote NaN weights over the last good
    ones, logged "loss": NaN and reported success."""
    from pixgen.errors import NonFiniteLossError

    (tmp_path / weights).write_bytes(b"the last good weights")
    with pytest.raises(NonFiniteLossError, match=r"training diverged: the loss became nan at step \d of 4") as err:
        _blow_up(train)(tmp_path)
    assert "lower" in err.value.hint and "1e+30" in err.value.hint
    assert (tmp_path / weights).read_bytes() == b"the last good weights"
    assert all("NaN" not in log.read_text() for log in tmp_path.glob("*.log.jsonl"))


def test_clip_weights_too_large_for_their_float16_file_are_not_saved(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["toy", "train", "clip", "--out", str(tmp_path), "--steps", "1", "--batch", "2",
                                      "--negatives", "0", "--lr", "1e30", "--warmup", "0"])
    assert result.exit_code == 2 and "became NaN or too large to save at step 1 of 1" in result.output, result.output
    assert "--lr 1e+29" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "clip.pt").exists() and not (tmp_path / "state").exists()


def test_resuming_drops_the_log_rows_written_after_the_saved_state(tmp_path):
    from pixgen.toy.training import TrainLog

    path = tmp_path / "x.log.jsonl"
    log = TrainLog(path, resume=False)
    for step in range(5):
        log.write(step, loss=1.0 / (step + 1))
    TrainLog(path, resume=True, start=3)  # the state was saved after step 2; steps 3 and 4 will run again
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]


def test_resuming_drops_a_torn_last_log_line_and_names_any_other_unreadable_one(tmp_path):
    from pixgen.errors import PixgenError
    from pixgen.toy.training import TrainLog

    path = tmp_path / "x.log.jsonl"
    log = TrainLog(path, resume=False)
    for step in range(3):
        log.write(step, loss=1.0)
    with path.open("a") as f:
        f.write('{"step": 50, "wall_s": 3.')  # what a kill while writing a row leaves
    TrainLog(path, resume=True, start=2).write(2, loss=0.5)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [0, 1, 2]
    path.write_text('{"step": 0, "wall_s": 1.0}\nnot json\n{"step": 1, "wall_s": 2.0}\n')
    with pytest.raises(PixgenError, match=f"line 2 of the training log {path}"):
        TrainLog(path, resume=True, start=1)


def test_ctrl_c_during_a_cli_training_run_saves_says_how_to_resume_and_resume_finishes(tmp_path, monkeypatch):
    import os
    import signal

    from typer.testing import CliRunner

    import pixgen.toy.prior as tp
    from pixgen.cli import app

    real = tp.corrupt
    calls = []

    def corrupt_then_ctrl_c(*args, **kwargs):  # Ctrl-C during the second step
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(tp, "corrupt", corrupt_then_ctrl_c)
    args = ["toy", "train", "prior", "--out", str(tmp_path), "--steps", "4", "--batch", "4", "--roundtrip", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "stopped after step 2 of 4" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the command put Ctrl-C back
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    steps = [json.loads(x)["step"] for x in (tmp_path / "prior.log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-2:] == [3, 4]  # each step logged once; 4: the held-out row


def test_unreadable_weights_and_states_get_a_message_not_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    other = tmp_path / "other.pt"  # a CLIP state dict of another architecture
    torch.save({"visual.conv1.weight": torch.zeros(4, 3, 2, 2), "logit_scale": torch.zeros(())}, other)
    state = tmp_path / "run" / "state" / "vqgan_state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"\x80\x02torn")  # as a disk that filled up might leave it
    for args, message in (
            (["toy", "train", "vqgan", "--out", str(tmp_path / "run"), "--steps", "2", "--resume"],
             "cannot read the training state"),
            (["toy", "train", "clip", "--out", str(tmp_path / "c"), "--init", str(junk), "--steps", "1"],
             "could not read CLIP weights"),
            (["toy", "train", "clip", "--out", str(tmp_path / "c"), "--init", str(other), "--steps", "1"],
             "is not the toy CLIP's weights"),
            (["toy", "image-tower", str(junk), "--base", str(TOY / "clip.pt"), "-o", str(tmp_path / "t.safetensors")],
             "could not read CLIP weights"),
            (["toy", "image-tower", str(other), "--base", str(other), "-o", str(tmp_path / "t.safetensors")],
             "is not the toy CLIP's weights")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "t.safetensors").exists()


def test_a_resume_with_other_settings_is_refused_naming_them_and_an_old_state_without_them_still_resumes(tmp_path):
    from pixgen.errors import Interrupted, PixgenError
    from pixgen.toy.train_vqgan import train_vqgan

    kw = dict(threads=None, progress=False)
    with pytest.raises(Interrupted):
        train_vqgan(tmp_path, steps=3, batch=4, seed=0, stop=_stop_after(2), **kw)
    with pytest.raises(PixgenError, match="started with --seed 0 --batch 4, not --seed 7 --batch 2") as refused:
        train_vqgan(tmp_path, steps=3, batch=2, seed=7, resume=True, **kw)
    assert "resume with --seed 0 --batch 4" in refused.value.hint
    with pytest.raises(PixgenError, match="started with --steps 3, not --steps 5") as refused:  # the lr schedule
        train_vqgan(tmp_path, steps=5, batch=4, resume=True, **kw)
    assert "schedule" in refused.value.hint
    state_path = tmp_path / "state" / "vqgan_state.pt"
    state = torch.load(state_path, weights_only=False)
    assert state["step"] == 2  # refused before any step ran
    torch.save({k: v for k, v in state.items() if k not in ("settings", "trainer")}, state_path)  # as saved before
    train_vqgan(tmp_path, steps=3, batch=2, resume=True, **kw)
    assert torch.load(state_path, weights_only=False)["step"] == 3


@needs
def test_a_resume_with_other_training_heads_names_the_option_and_an_old_state_gets_a_message(tmp_path):
    from pixgen.errors import Interrupted, PixgenError
    from pixgen.toy.train_clip import train_clip

    kw = dict(steps=2, batch=4, negatives=1, junk=0, threads=None, progress=False)
    with pytest.raises(Interrupted):
        train_clip(tmp_path, aux_layout=1.0, stop=_stop_after(1), **kw)
    with pytest.raises(PixgenError, match="started with --aux-layout 1.0, not --aux-layout 0.0"):
        train_clip(tmp_path, resume=True, **kw)  # was: "loaded state dict has a different number of parameter groups"
    state_path = tmp_path / "state" / "clip_state.pt"
    state = torch.load(state_path, weights_only=False)
    torch.save({k: v for k, v in state.items() if k not in ("settings", "trainer")}, state_path)
    with pytest.raises(PixgenError, match=f"the training state {state_path} does not fit this run"):
        train_clip(tmp_path, resume=True, **kw)


def test_resume_refuses_a_folder_without_a_state_and_fewer_steps_than_done(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy.train_evaluator import train_evaluator

    args = ["toy", "train", "evaluator", "--out", str(tmp_path / "e"), "--batch", "4", "--resume"]
    result = CliRunner().invoke(app, [*args, "--steps", "2"])
    assert result.exit_code == 2 and "nothing to resume in" in result.output, result.output
    assert "run without --resume" in result.output and not (tmp_path / "e").exists()
    train_evaluator(tmp_path / "e", steps=3, batch=4, recon_pool=0, threads=None, progress=False)
    state_path = tmp_path / "e" / "state" / "evaluator_state.pt"
    state = torch.load(state_path, weights_only=False)
    torch.save({k: v for k, v in state.items() if k != "settings"}, state_path)  # a state from before settings
    result = CliRunner().invoke(app, [*args, "--steps", "2"])
    assert result.exit_code == 2 and "has done 3 steps, more than --steps 2" in result.output, result.output


def test_resuming_a_finished_run_changes_nothing_and_one_stopped_before_its_report_finishes_it(tmp_path,
                                                                                            monkeypatch):
    from typer.testing import CliRunner

    import pixgen.toy.train_evaluator as te
    from pixgen.cli import app

    args = ["toy", "train", "evaluator", "--out", str(tmp_path), "--steps", "2", "--batch", "4"]
    real = te.heldout_accuracy

    class Killed(Exception):
        pass

    def killed(*a, **k):  # the run is killed after its last state was saved, while judging the held-out scenes
        raise Killed

    monkeypatch.setattr(te, "heldout_accuracy", killed)
    assert isinstance(CliRunner().invoke(app, args).exception, Killed)
    assert torch.load(tmp_path / "state" / "evaluator_state.pt", weights_only=False)["step"] == 2
    assert not (tmp_path / "evaluator_heldout.json").exists()
    monkeypatch.setattr(te, "heldout_accuracy", real)
    result = CliRunner().invoke(app, [*args, "--resume"])  # the run is not complete: resuming writes the report
    assert result.exit_code == 0 and "nothing to resume" not in result.output, result.output
    assert (tmp_path / "evaluator_heldout.json").is_file()

    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert f"nothing to resume: the run in {tmp_path} is complete (2 of 2 steps)" in result.output
    assert files == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}


def test_a_file_or_folder_in_the_place_of_a_trainers_own_is_refused_before_training(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy.train_evaluator import train_evaluator

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "state").write_text("")  # where the trainer keeps its state folder
    (tmp_path / "b" / "vqgan.log.jsonl").mkdir(parents=True)
    train_evaluator(tmp_path / "c", steps=1, batch=2, recon_pool=0, threads=None, progress=False)
    (tmp_path / "c" / "state" / "evaluator_state.pt").rename(tmp_path / "c" / "state" / "vqgan_state.pt")
    for out, extra, says in (("a", [], "a/state is a file, where the trainer keeps a folder"),
                             ("b", [], "b/vqgan.log.jsonl is a directory, where the trainer writes a file"),
                             ("c", ["--resume"], "is the state of a `pixgen toy train evaluator` run, not of a "
                                                 "`pixgen toy train vqgan` one")):
        result = CliRunner().invoke(app, ["toy", "train", "vqgan", "--out", str(tmp_path / out), "--steps", "1",
                                          "--batch", "2", *extra])
        assert result.exit_code == 2 and says in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / out / "vqgan.ckpt").exists()


@needs
def test_resuming_a_decoder_fine_tune_from_a_vqgan_of_another_shape_is_refused(tmp_path):
    from pixgen.errors import Interrupted, PixgenError
    from pixgen.toy.train_vqgan import train_decoder_gan, train_vqgan

    train_vqgan(tmp_path / "vf2", steps=1, batch=2, factor=2, threads=None, progress=False)
    kw = dict(steps=2, batch=1, critic_warmup=1, threads=None, progress=False)
    with pytest.raises(Interrupted):
        train_decoder_gan(TOY, tmp_path / "d", stop=_stop_after(1), **kw)
    with pytest.raises(PixgenError, match=r"another shape \(--factor 2 --n-embed 512\)") as refused:
        train_decoder_gan(tmp_path / "vf2", tmp_path / "d", resume=True, **kw)  # was: RuntimeError size mismatch
    assert str(TOY) in refused.value.hint
    train_decoder_gan(TOY, tmp_path / "d", resume=True, **{**kw, "steps": 3})  # no schedule: it may go on longer
    assert torch.load(tmp_path / "d" / "vqgan.ckpt", weights_only=False)["global_step"] == 3
