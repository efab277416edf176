"""CLIP ensembles share cutouts by input size; the public loaders keep their documented shapes."""
import json

import pytest
import torch

import pixgen
from pixgen import cutouts as cutouts_mod
from pixgen.errors import ModelError
from pixgen.perceptor import ClipSpec


@pytest.fixture
def tiny48(tmp_path):
    """A second tiny CLIP config with a different input size (48), registered with open_clip for the test."""
    import open_clip

    from pixgen.perceptor import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "pixgen-random-tiny.json").read_text())
    cfg["vision_cfg"]["image_size"] = 48
    path = tmp_path / "pixgen-test-tiny48.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return "pixgen-test-tiny48"


def test_clip_spec_parsing():
    assert ClipSpec.parse("ViT-B-32:openai") == ClipSpec("ViT-B-32", "openai", 1.0)
    assert ClipSpec.parse("ViT-B-16:openai:0.5") == ClipSpec("ViT-B-16", "openai", 0.5)
    assert ClipSpec.parse("RN50:/tmp/w.pt:2") == ClipSpec("RN50", "/tmp/w.pt", 2.0)
    assert ClipSpec.parse("pixgen-random-tiny") == ClipSpec("pixgen-random-tiny", None, 1.0)


def test_ensemble_shares_cutouts_between_models_of_one_input_size(tiny, tiny48, monkeypatch):
    calls = []
    real = cutouts_mod.MakeCutouts.forward

    def counting(self, image):
        calls.append(self.cut_size)
        return real(self, image)

    monkeypatch.setattr(cutouts_mod.MakeCutouts, "forward", counting)
    r = pixgen.generate("a castle", write=False, clip=["pixgen-random-tiny", "pixgen-random-tiny::0.5",
                                                       f"{tiny48}::2"], **{**tiny, "iterations": 2})
    assert sorted(calls) == [32, 32, 48, 48]  # one batch per size per step, not one per model
    terms = r.losses[0]["terms"]
    assert len(terms) == 3 and all("@" in label for label in terms)
    # same crops and same weights: the second 32px model's term is exactly its weight times the first's
    assert terms["a castle @pixgen-random-tiny:random#1"] == pytest.approx(
        0.5 * terms["a castle @pixgen-random-tiny:random#0"], rel=1e-5)


def test_missing_clip_weights_file_is_named(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        pixgen.load_perceptor(f"pixgen-random-tiny:{tmp_path / 'nope.pt'}")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ModelError, match="known tags"):
        pixgen.load_perceptor("ViT-B-32:not-a-tag")


def test_load_vqgan_gives_encode_quantize_decode_and_codebook(tmp_path):
    from pixgen.models.vqgan import VQGAN, VQGANConfig

    cfg = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
                      z_channels=8, embed_dim=4, n_embed=16)
    model = VQGAN(cfg)
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg.to_taming()))
    torch.save({"state_dict": {**model.state_dict(), "loss.logvar": torch.zeros(())}}, tmp_path / "m.ckpt")
    loaded = pixgen.load_vqgan(tmp_path / "m.yaml", tmp_path / "m.ckpt")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = loaded.encode(x)
    assert z.shape == (1, 4, 16, 16)
    zq = loaded.quantize(z)
    codes = loaded.codebook
    assert codes.shape == (16, 4)
    flat = zq.permute(0, 2, 3, 1).reshape(-1, 4)
    assert all(any(torch.equal(v, c) for c in codes) for v in flat)  # every cell is a codebook vector
    assert loaded.decode(zq).shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.decode(zq), model.decode(zq))


def test_clip_weights_that_cannot_be_downloaded_name_model_place_and_fix(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # fail at once instead of trying the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time otherwise
    from pixgen.perceptor import load_perceptor

    with pytest.raises(ModelError) as info:
        load_perceptor("ViT-B-32:openai", cache_dir=tmp_path / "clip")
    text = str(info.value)
    assert "ViT-B-32:openai" in text
    assert str(tmp_path / "clip") in text
    assert "--clip ViT-B-32:/path/to/weights.pt" in text
