"""pixgen's own CLIP configs are built without open_clip (pixgen.models.clip), with open_clip's numbers."""
import json
import subprocess
import sys

import pytest
import torch

from pixgen.errors import ModelError
from pixgen.factory import toy_clip_specs
from pixgen.models.clip import CLIP, lean_config
from pixgen.perceptor import CONFIG_DIR, Perceptor, _register_configs, load_image_tower, load_perceptor, weights_files

TEXTS = ["a red circle above a blue square", "three orange squares on a black background", "a café, naïvely!"]


def _through_open_clip(spec) -> Perceptor:
    import open_clip

    _register_configs()
    base, tower = weights_files(spec)
    model = open_clip.create_model(spec.model, pretrained=base, weights_only=True)
    if tower is not None:
        load_image_tower(model, tower)
    return Perceptor(model, open_clip.get_tokenizer(spec.model), spec.model)


def _assert_same(ours: Perceptor, theirs: Perceptor) -> None:
    assert isinstance(ours.model, CLIP)
    assert torch.equal(ours.tokenizer(TEXTS), theirs.tokenizer(TEXTS))
    assert torch.equal(ours.encode_text(TEXTS), theirs.encode_text(TEXTS))
    tokens = ours.tokenizer(TEXTS)
    with torch.no_grad():  # open_clip's own calls, for code that uses ``Perceptor.model`` directly
        assert torch.equal(ours.model.encode_text(tokens, normalize=True),
                           theirs.model.encode_text(tokens, normalize=True))
    assert (ours.input_size, ours.embed_dim, ours.logit_scale) == (theirs.input_size, theirs.embed_dim,
                                                                   theirs.logit_scale)
    assert torch.equal(ours.mean, theirs.mean) and torch.equal(ours.std, theirs.std)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = []
    for p in (ours, theirs):
        x = images.clone().requires_grad_(True)
        emb = p.encode_image(x)
        (grad,) = torch.autograd.grad((emb * torch.linspace(-1, 1, emb.shape[1])).sum(), x)
        results.append((emb.detach(), grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])  # the search follows this gradient: it must be the same too


@pytest.mark.parametrize("which", [0, 1], ids=["early tower", "late tower"])
def test_toy_clip_is_built_without_open_clip_with_its_numbers(which):
    spec = toy_clip_specs()[which]
    _assert_same(load_perceptor(spec), _through_open_clip(spec))


def test_random_tiny_weights_file_is_built_without_open_clip_with_its_numbers(tmp_path):
    import open_clip

    _register_configs()
    torch.manual_seed(3)
    torch.save(open_clip.create_model("pixgen-random-tiny").state_dict(), tmp_path / "tiny.pt")
    spec = f"pixgen-random-tiny:{tmp_path / 'tiny.pt'}"
    from pixgen.perceptor import ClipSpec

    _assert_same(load_perceptor(spec), _through_open_clip(ClipSpec.parse(spec)))


def test_files_it_cannot_read_go_to_open_clip(tmp_path):
    import open_clip

    _register_configs()
    state = open_clip.create_model("pixgen-random-tiny").state_dict()
    # a 'module.' prefix (a checkpoint saved from a wrapped model): open_clip strips it, the lean loader does not
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "wrapped.pt")
    p = load_perceptor(f"pixgen-random-tiny:{tmp_path / 'wrapped.pt'}")
    assert not isinstance(p.model, CLIP)
    assert torch.equal(p.model.visual.proj, state["visual.proj"])
    # files that are no checkpoint at all: open_clip's reading fails (in torch's unpickler, with an
    # UnpicklingError or a KeyError), and pixgen says so without a traceback
    for junk in (b"not a checkpoint", b"junk\n"):
        (tmp_path / "junk.pt").write_bytes(junk)
        with pytest.raises(ModelError, match="could not load CLIP pixgen-random-tiny"):
            load_perceptor(f"pixgen-random-tiny:{tmp_path / 'junk.pt'}")


def test_only_plain_openai_layout_configs_are_built_here(tmp_path):
    toy = json.loads((CONFIG_DIR / "pixgen-toy-clip.json").read_text())
    assert lean_config(CONFIG_DIR / "pixgen-toy-clip.json") == toy
    for change in ({"quick_gelu": False}, {"custom_text": True},
                   {"vision_cfg": {**toy["vision_cfg"], "pool_type": "avg"}},
                   {"text_cfg": {**toy["text_cfg"], "hf_tokenizer_name": "x"}}):
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps({**toy, **change}))
        assert lean_config(path) is None, change


def test_a_toy_run_imports_neither_open_clip_nor_torch_compiler(tmp_path):
    code = ("import sys, pixgen\n"
            f"pixgen.generate('a red circle', model='toy', iterations=2, save_every=2, progress=False, "
            f"output_dir={str(tmp_path)!r})\n"
            "print(sorted(m for m in ('open_clip', 'torchvision', 'timm', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
