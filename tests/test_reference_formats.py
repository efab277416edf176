"""The shipped toy weights load with the reference code of their formats and compute what pixgen computes.

- The VQGAN through taming-transformers' own ``VQModel``, built from ``vqgan.yaml`` by taming's
  ``instantiate_from_config`` and filled by its ``init_from_ckpt``, as VQGAN+CLIP scripts load a VQGAN.
- The CLIP through OpenAI's own ``build_model`` and tokenizer (the ``openai-clip`` package), as a plain
  OpenAI-format state dict; the two guidance image towers after ``pixgen toy export-clip --tower``; and through
  OpenAI's ``clip.load(path)`` after ``pixgen toy export-clip --torchscript``.

The reference packages are installed with ``--no-deps`` into ``.cache/`` for the test run only. Two of their
imports are not needed for loading and are stood in for when absent: taming imports pytorch-lightning (its
``VQModel`` is a ``LightningModule`` for training; a plain ``nn.Module`` base does the same for loading and
inference) and ``requests`` (to download LPIPS weights, which the toy YAML's ``DummyLoss`` never builds);
OpenAI's ``clip.py`` takes ``packaging`` from ``pkg_resources``, which setuptools has dropped.
OpenAI's ``clip.load(path)`` itself cannot read any plain state dict file with current torch (its failed attempt to
read the file as a TorchScript archive consumes the open file, and ``torch.load`` then meets its end), so the test
reads such files and calls ``build_model``, which is what ``clip.load`` does next; ``clip.load`` reads the
TorchScript archive, the form OpenAI ships its own weights in.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_pkgs import import_from, install, on_path

from pixgen.toy.world import render, sample_scene

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"
pytestmark = [pytest.mark.network,
              pytest.mark.filterwarnings("ignore::SyntaxWarning"),  # taming 0.0.1 compares with 'is not' a literal
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
              pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists() or not (TOY / "clip.pt").exists(),
                                 reason="toy weights not present")]


def _module(monkeypatch, name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)


def _absent(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def _scenes(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = np.stack([render(sample_scene(rng)) for _ in range(n)]).astype(np.float32) / 255
    return torch.from_numpy(x).permute(0, 3, 1, 2)


@pytest.fixture
def taming_vqmodel(monkeypatch):
    folder = install("taming-transformers==0.0.1", "taming/models/vqgan.py")
    if _absent("pytorch_lightning"):
        class Callback:
            pass

        _module(monkeypatch, "pytorch_lightning", LightningModule=torch.nn.Module, LightningDataModule=object,
                seed_everything=lambda *a, **k: None)
        _module(monkeypatch, "pytorch_lightning.trainer", Trainer=object)
        _module(monkeypatch, "pytorch_lightning.callbacks", Callback=Callback, ModelCheckpoint=Callback,
                LearningRateMonitor=Callback)
        _module(monkeypatch, "pytorch_lightning.utilities")
        _module(monkeypatch, "pytorch_lightning.utilities.distributed", rank_zero_only=lambda f: f)
    if _absent("requests"):
        _module(monkeypatch, "requests")
    main = import_from(folder, "taming.main")

    def load(config: Path, checkpoint: Path):
        from omegaconf import OmegaConf

        model = main.instantiate_from_config(OmegaConf.load(config).model).eval()
        model.init_from_ckpt(str(checkpoint))
        return model
    return load


def test_toy_vqgan_loads_in_taming_vqmodel_and_decodes_as_pixgen_does(taming_vqmodel):
    import pixgen

    ref = taming_vqmodel(TOY / "vqgan.yaml", TOY / "vqgan.ckpt")
    state = torch.load(TOY / "vqgan.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert set(ref.state_dict()) == set(state)  # every weight has its place in taming's model, and none is left
    ours = pixgen.load_vqgan(TOY / "vqgan.yaml", TOY / "vqgan.ckpt")
    x = _scenes(6, 3) * 2 - 1
    with torch.no_grad():
        quant, _, (_, _, codes) = ref.encode(x)
        ref_image = ref.decode(quant)
        z = ours.quantize(ours.encode(x))
        image = ours.decode(z)
    assert torch.allclose(z, quant, atol=1e-5)
    assert torch.allclose(image, ref_image, atol=1e-5)
    assert (ref_image - x).abs().mean() < 0.1  # and taming's model does reconstruct the world (about 0.057 in [-1, 1])
    assert codes.unique().numel() > 8


@pytest.fixture(scope="module")
def openai_clip():
    folder = install("openai-clip==1.0.1", "clip/model.py")
    with pytest.MonkeyPatch.context() as patch:
        if _absent("pkg_resources"):
            import packaging.version

            _module(patch, "pkg_resources", packaging=packaging)
        with on_path(folder):
            import clip
    return clip


def _same_as_pixgen(reference, spec: str):
    """Assert that ``reference`` embeds images and captions as pixgen's perceptor for ``spec`` does; returns that
    perceptor."""
    from pixgen.perceptor import load_perceptor

    ours = load_perceptor(spec)
    x = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    captions = ["a red circle above a blue square", "three orange squares on a black background",
                "a small pink cross in the top left corner"]
    with torch.no_grad():
        assert torch.allclose(reference.encode_image(x), ours.model.encode_image(x), atol=1e-5)
        assert torch.allclose(reference.encode_text(ours.tokenizer(captions)), ours.encode_text(captions), atol=1e-5)
    return ours


def test_toy_clip_loads_with_openai_build_model_and_tokenizer(openai_clip):
    state = torch.load(TOY / "clip.pt", map_location="cpu", weights_only=True)
    reference = openai_clip.model.build_model(state).float().eval()
    assert reference.visual.input_resolution == 48 and reference.context_length == 77
    assert reference.vocab_size == 49408
    assert reference.visual.transformer.resblocks[0].attn.num_heads == reference.visual.transformer.width // 64
    ours = _same_as_pixgen(reference, f"pixgen-toy-clip:{TOY / 'clip.pt'}")
    captions = ["a red circle", "two yellow triangles on a gray background", "a green cross left of a cyan circle"]
    tokens = ours.tokenizer(captions)
    assert torch.equal(openai_clip.tokenize(captions).long(), tokens.long())


def _export(tmp_path, *args) -> Path:
    from typer.testing import CliRunner

    from pixgen.cli import app

    out = tmp_path / "exported.pt"
    result = CliRunner().invoke(app, ["toy", "export-clip", "--base", str(TOY / "clip.pt"), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("tower", ["clip_early_visual.safetensors", "clip_late_visual.safetensors"])
def test_guidance_towers_exported_into_one_file_load_with_openai_build_model(openai_clip, tmp_path, tower):
    if not (TOY / tower).exists():
        pytest.skip(f"{tower} not present")
    out = _export(tmp_path, "--tower", str(TOY / tower))
    reference = openai_clip.model.build_model(torch.load(out, weights_only=True)).float().eval()
    _same_as_pixgen(reference, f"pixgen-toy-clip:{TOY / 'clip.pt'}+{TOY / tower}")


@pytest.mark.parametrize("tower", [None, "clip_early_visual.safetensors"])
def test_torchscript_export_loads_with_openai_clip_load(openai_clip, tmp_path, tower):
    if tower is not None and not (TOY / tower).exists():
        pytest.skip(f"{tower} not present")
    out = _export(tmp_path, "--torchscript", *(["--tower", str(TOY / tower)] if tower else []))
    reference, preprocess = openai_clip.load(str(out), device="cpu", jit=False)
    assert reference.visual.input_resolution == 48
    spec = f"pixgen-toy-clip:{TOY / 'clip.pt'}" + (f"+{TOY / tower}" if tower else "")
    _same_as_pixgen(reference.float().eval(), spec)
    archive = torch.jit.load(str(out))  # the archive's own methods run too, at other batch sizes than traced
    x = torch.rand(3, 3, 48, 48)
    tokens = openai_clip.tokenize(["a red circle", "two blue squares on a black background", "a green cross"])
    with torch.no_grad():
        assert torch.allclose(archive.encode_image(x), reference.encode_image(x), atol=1e-5)
        assert torch.allclose(archive.encode_text(tokens.long()), reference.encode_text(tokens), atol=1e-5)
