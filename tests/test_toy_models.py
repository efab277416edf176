"""The shipped toy weights load in their reference formats and do their jobs on rendered scenes."""
from pathlib import Path

import numpy as np
import pytest
import torch

from pixgen.factory import TOY_DIR, TOY_EARLY_TOWER, TOY_LATE_TOWER
from pixgen.toy.world import render, sample_scene

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"
needs = pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists() or not (TOY / "clip.pt").exists()
                           or not (TOY / "evaluator.safetensors").exists(), reason="toy weights not present")


def _images(n, seed):
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    x = torch.from_numpy(np.stack([render(s) for s in scenes]).astype(np.float32) / 255).permute(0, 3, 1, 2)
    return scenes, x


@needs
def test_vqgan_checkpoint_is_taming_format_and_reconstructs():
    import yaml

    import pixgen

    ckpt = torch.load(TOY / "vqgan.ckpt", map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"state_dict", "global_step", "epoch"}
    assert any(k.startswith("encoder.") for k in ckpt["state_dict"]) and "quantize.embedding.weight" in ckpt["state_dict"]
    cfg = yaml.safe_load((TOY / "vqgan.yaml").read_text())
    assert cfg["model"]["target"] == "taming.models.vqgan.VQModel"
    assert cfg["model"]["params"]["lossconfig"]["target"] == "taming.modules.losses.vqperceptual.DummyLoss"
    model = pixgen.load_vqgan(TOY / "vqgan.yaml", TOY / "vqgan.ckpt")
    _, x = _images(8, 7)
    with torch.no_grad():
        rec = ((model.decode(model.quantize(model.encode(x * 2 - 1))) + 1) / 2).clamp(0, 1)
    assert (rec - x).abs().mean() < 0.035  # shipped model: about 0.024
    assert ((rec - x).abs().amax(1) > 0.25).float().mean() < 0.05  # few pixels visibly wrong (about 3%, at edges)


@needs
def test_evaluator_reads_rendered_scenes():
    from pixgen.toy.evaluator import load_evaluator

    scenes, x = _images(40, 99)
    got = load_evaluator().read(x)
    exact = [
        s.background == g.background
        and sorted((o.col, o.row, o.colour, o.shape) for o in s.objects)
        == sorted((o.col, o.row, o.colour, o.shape) for o in g.objects)
        for s, g in zip(scenes, got)
    ]
    assert np.mean(exact) >= 0.9


@needs
def test_evaluator_reads_larger_pil_images_at_the_canvas_size():
    from PIL import Image

    from pixgen.toy.evaluator import load_evaluator

    scenes, _ = _images(6, 5)
    small = [render(s) for s in scenes]
    big = [Image.fromarray(a).resize((128, 128), Image.NEAREST) for a in small]
    ev = load_evaluator()

    def keys(scenes_read):
        return [(g.background, sorted((o.col, o.row, o.colour, o.shape) for o in g.objects)) for g in scenes_read]

    assert keys(ev.read(small)) == keys(ev.read(big))


def _clip():
    import open_clip

    from pixgen.toy.train_clip import CONFIG_DIR

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip.create_model("pixgen-toy-clip", pretrained=str(TOY / "clip.pt")).eval()


@needs
def test_clip_loads_as_openai_format_with_same_outputs():
    from open_clip.model import build_model_from_openai_state_dict

    model = _clip()
    sd = torch.load(TOY / "clip.pt", map_location="cpu", weights_only=True)
    openai_style = build_model_from_openai_state_dict({k: v.float() for k, v in sd.items()}).float().eval()
    assert openai_style.visual.transformer.resblocks[0].attn.num_heads == model.visual.transformer.width // 64
    x = torch.rand(2, 3, 48, 48)
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, 320, 49407
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), openai_style.encode_image(x), atol=1e-4)
        assert torch.allclose(model.encode_text(tokens), openai_style.encode_text(tokens), atol=1e-4)


@needs
def test_clip_prefers_true_caption_over_hard_negative():
    from pixgen.toy.captions import hard_negative, sample_pair, spec_text
    from pixgen.toy.train_clip import normalize, tokenize

    model = _clip()
    rng = np.random.default_rng(5)
    wins = total = 0
    for _ in range(24):
        scene, spec = sample_pair(rng, kind="single")
        neg = hard_negative(spec, scene, rng)
        if neg is None:
            continue
        x = torch.from_numpy(render(scene).astype(np.float32) / 255).permute(2, 0, 1)[None]
        x = torch.nn.functional.interpolate(x, size=48, mode="area")
        with torch.no_grad():
            img = torch.nn.functional.normalize(model.encode_image(normalize(x, model)), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokenize([spec_text(spec), spec_text(neg[0])])), dim=-1)
        s = (img @ txt.T)[0]
        wins += int(s[0] > s[1])
        total += 1
    assert wins / total >= 0.8


def test_toy_model_switches_to_the_late_image_tower_when_it_ships(tmp_path):
    from pixgen.factory import TOY_EARLY_TOWER, TOY_LATE_TOWER, toy_clip_specs

    assert [s.steps for s in toy_clip_specs(tmp_path)] == [(0.0, 1.0)]  # no tower file: the one CLIP all run
    (tmp_path / TOY_LATE_TOWER).write_bytes(b"")
    early, late = toy_clip_specs(tmp_path)
    assert early.steps[1] == late.steps[0] and early.steps[0] == 0.0 and late.steps[1] == 1.0
    assert early.pretrained == str(tmp_path / "clip.pt")
    assert late.pretrained == f"{tmp_path / 'clip.pt'}+{tmp_path / TOY_LATE_TOWER}"
    (tmp_path / TOY_EARLY_TOWER).write_bytes(b"")  # an early tower replaces clip.pt's own for the first steps
    early, late = toy_clip_specs(tmp_path)
    assert early.pretrained == f"{tmp_path / 'clip.pt'}+{tmp_path / TOY_EARLY_TOWER}" and early.steps == (0.0, 0.6)
    assert late.pretrained == f"{tmp_path / 'clip.pt'}+{tmp_path / TOY_LATE_TOWER}"


def test_the_toy_model_keeps_its_clip_when_its_vqgan_is_replaced(tmp_path):
    from omegaconf import OmegaConf

    from pixgen.factory import DEFAULT_CLIP, clip_specs_for, toy_clip_specs

    local = {"vqgan_config": str(tmp_path / "vqgan.yaml"), "vqgan_checkpoint": str(tmp_path / "vqgan.ckpt")}
    toy = OmegaConf.create({"model": "toy", "clip": None, **local})
    assert clip_specs_for(toy) == toy_clip_specs()  # a VQGAN of `pixgen toy train vqgan`, drawn for the toy CLIP
    other = OmegaConf.create({"model": "imagenet_f16_16384", "clip": None, **local})
    assert [str(s.model) for s in clip_specs_for(other)] == [DEFAULT_CLIP.split(":")[0]]


@needs
@pytest.mark.parametrize("tower", [TOY_EARLY_TOWER, TOY_LATE_TOWER])
def test_shipped_image_towers_share_the_text_tower_and_change_the_image_side(tower):
    from pixgen.perceptor import load_perceptor

    if not (TOY / tower).exists():
        pytest.skip(f"{tower} not present")
    base = load_perceptor(f"pixgen-toy-clip:{TOY / 'clip.pt'}")
    other = load_perceptor(f"pixgen-toy-clip:{TOY / 'clip.pt'}+{TOY / tower}")
    captions = ["a red circle", "a blue square above a green cross"]
    assert torch.equal(base.encode_text(captions), other.encode_text(captions))
    assert base.tokenizer is other.tokenizer  # built once a process, not once a tower
    _, x = _images(4, seed=3)
    with torch.no_grad():
        assert not torch.allclose(base.encode_image(x), other.encode_image(x), atol=1e-3)


def test_export_image_tower_needs_the_text_tower_of_its_base(tmp_path):
    from pixgen.errors import ModelError
    from pixgen.perceptor import load_perceptor
    from pixgen.toy.train_clip import create_toy_clip, export_image_tower, save_clip

    torch.manual_seed(0)
    model = create_toy_clip()
    save_clip(model, tmp_path / "base.pt")
    with torch.no_grad():
        model.visual.conv1.weight.add_(0.5)  # as if only the image tower had trained
    save_clip(model, tmp_path / "tuned.pt")
    tower = export_image_tower(tmp_path / "tuned.pt", tmp_path / "base.pt", tmp_path / "t.safetensors")
    p = load_perceptor(f"pixgen-toy-clip:{tmp_path / 'base.pt'}+{tower}")
    tuned = torch.load(tmp_path / "tuned.pt", weights_only=True)
    assert torch.equal(p.model.visual.conv1.weight.half(), tuned["visual.conv1.weight"])
    with torch.no_grad():
        model.token_embedding.weight.add_(0.5)  # now the text side moved too
    save_clip(model, tmp_path / "both.pt")
    with pytest.raises(ModelError, match="differ outside the image tower"):
        export_image_tower(tmp_path / "both.pt", tmp_path / "base.pt", tmp_path / "t2.safetensors")
    assert not (tmp_path / "t2.safetensors").exists()


@pytest.mark.skipif(not (TOY_DIR / TOY_LATE_TOWER).is_file(), reason="toy weights not present")
def test_a_toy_run_records_which_weights_files_made_it():
    import pixgen
    from pixgen.download import sha256_of

    result = pixgen.generate("a red circle", model="toy", iterations=1, size=[64, 64], write=False, progress=False,
                             echo=False)
    assert result.weights == {name: sha256_of(TOY_DIR / name)[:16] for name in
                              ("vqgan.ckpt", "clip.pt", TOY_LATE_TOWER, TOY_EARLY_TOWER) if (TOY_DIR / name).is_file()}
    assert len(result.weights) >= 3
