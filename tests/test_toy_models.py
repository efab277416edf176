"""The shipped toy weights load in their reference formats and do their jobs on rendered scenes."""
from pathlib import Path

import numpy as np
import pytest
import torch

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
