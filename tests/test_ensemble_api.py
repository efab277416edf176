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


def test_clip_spec_step_ranges_parse_and_bad_ones_say_how_to_write_them():
    assert ClipSpec.parse("ViT-B-32:openai@0-0.6") == ClipSpec("ViT-B-32", "openai", 1.0, (0.0, 0.6))
    assert ClipSpec.parse("RN50:/tmp/w.pt:2 @ 0.6 - 1") == ClipSpec("RN50", "/tmp/w.pt", 2.0, (0.6, 1.0))
    assert str(ClipSpec.parse("RN50:openai:0.5@0.25-0.75")) == "RN50:openai:0.5@0.25-0.75"
    for bad, says in [("RN50:openai@0.7-0.2", "0 <= START < END <= 1"), ("RN50:openai@0-1.5", "0 <= START"),
                      ("RN50:openai@a-b", "not two numbers"), ("RN50:openai@0.5", "not a step range")]:
        with pytest.raises(ModelError, match=says) as info:
            ClipSpec.parse(bad)
        assert "@" in info.value.hint


def test_each_clip_guides_only_its_share_of_the_steps(tiny):
    r = pixgen.generate("a castle", write=False, clip=["pixgen-random-tiny@0-0.5", "pixgen-random-tiny::2@0.5-1"],
                        **tiny)
    by_step = {rec["step"]: set(rec["terms"]) - {"tv"} for rec in r.losses}
    assert sorted(by_step) == list(range(1, 7))
    first, second = "a castle @pixgen-random-tiny:random#0", "a castle @pixgen-random-tiny:random#1"
    assert all(by_step[s] == {first} for s in (1, 2, 3))
    assert all(by_step[s] == {second} for s in (4, 5, 6))


def test_clip_step_ranges_that_leave_steps_unguided_are_refused(tiny):
    from pixgen.errors import ConfigError

    with pytest.raises(ConfigError, match="no CLIP model guides steps 3-4 of 6") as info:
        pixgen.generate("a castle", write=False, clip=["pixgen-random-tiny@0-0.3", "pixgen-random-tiny@0.7-1"],
                        **tiny)
    assert "cover 0-1" in info.value.hint
    with pytest.raises(ConfigError, match=r"guides steps 1, 4-5, 10 of 10 \("):  # every gap is named, not one span
        pixgen.generate("a castle", write=False, clip=["pixgen-random-tiny@0.1-0.3", "pixgen-random-tiny@0.5-0.9"],
                        **{**tiny, "iterations": 10})


def test_the_start_colour_is_chosen_by_every_clip_of_the_run_also_one_scheduled_later(tiny):
    def start_note(clip):
        r = pixgen.generate("a castle", write=False, clip=clip, init_color=[[200, 30, 30], [20, 20, 20]],
                            **{**tiny, "iterations": 4})
        return next(m for m in r.messages if "start colours" in m)

    both = start_note(["pixgen-random-tiny", "pixgen-random-tiny::3"])
    assert both != start_note(["pixgen-random-tiny"])  # the second model's scores do count
    assert start_note(["pixgen-random-tiny@0-0.5", "pixgen-random-tiny::3@0.5-1"]) == both


def _two_tiny_clips(tmp_path):
    import open_clip

    from pixgen.perceptor import _register_configs

    _register_configs()
    torch.manual_seed(0)
    base = open_clip.create_model("pixgen-random-tiny")
    torch.manual_seed(1)
    other = open_clip.create_model("pixgen-random-tiny")
    torch.save(base.state_dict(), tmp_path / "base.pt")
    return base, other


def test_base_plus_image_tower_gives_the_base_text_and_the_tower_image_embeddings(tmp_path):
    from pixgen.perceptor import load_perceptor, save_image_tower

    base, other = _two_tiny_clips(tmp_path)
    tower = save_image_tower(other, tmp_path / "late.safetensors", base="base.pt")
    p = load_perceptor(f"pixgen-random-tiny:{tmp_path / 'base.pt'}+{tower}@0.5-1")
    assert p.steps == (0.5, 1.0) and p.name == "pixgen-random-tiny:base.pt+late.safetensors"
    images = torch.rand(2, 3, p.input_size, p.input_size)
    with torch.no_grad():
        want_image = other.encode_image((images - p.mean) / p.std)
        want_text = base.encode_text(p.tokenizer(["a castle"]))
        assert torch.allclose(p.encode_image(images), want_image, atol=2e-2)  # tower stored in float16
        assert not torch.allclose(p.encode_image(images), base.encode_image((images - p.mean) / p.std), atol=2e-2)
        assert torch.equal(p.encode_text(["a castle"]), want_text)


def test_image_tower_files_that_do_not_fit_are_refused_with_the_reason(tmp_path, tiny48):
    import open_clip
    from safetensors.torch import save_file

    from pixgen.perceptor import load_perceptor, save_image_tower

    _two_tiny_clips(tmp_path)
    wrong = save_image_tower(open_clip.create_model(tiny48), tmp_path / "wrong.safetensors")
    with pytest.raises(ModelError, match="does not fit this CLIP model"):
        load_perceptor(f"pixgen-random-tiny:{tmp_path / 'base.pt'}+{wrong}")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelError, match="not an image tower file"):
        load_perceptor(f"pixgen-random-tiny:{tmp_path / 'base.pt'}+{tmp_path / 'plain.safetensors'}")
    with pytest.raises(ModelError, match="image tower file .* not found"):
        load_perceptor(f"pixgen-random-tiny:{tmp_path / 'base.pt'}+{tmp_path / 'nope.safetensors'}")


def test_export_clip_with_a_tower_writes_one_file_that_loads_as_base_plus_tower(tmp_path, tiny48):
    import open_clip
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.perceptor import load_perceptor, save_image_tower

    base, other = _two_tiny_clips(tmp_path)
    tower = save_image_tower(other, tmp_path / "late.safetensors", base="base.pt")
    run = CliRunner().invoke
    result = run(app, ["toy", "export-clip", "--tower", str(tower), "--base", str(tmp_path / "base.pt"), "-o",
                       str(tmp_path / "out" / "merged.pt")])
    assert result.exit_code == 0, result.output
    merged = torch.load(tmp_path / "out" / "merged.pt", weights_only=True)
    assert set(merged) == set(base.state_dict())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["merged.pt"]  # no temporary file left
    joined = load_perceptor(f"pixgen-random-tiny:{tmp_path / 'base.pt'}+{tower}")
    alone = load_perceptor(f"pixgen-random-tiny:{tmp_path / 'out' / 'merged.pt'}")
    images = torch.rand(2, 3, alone.input_size, alone.input_size)
    with torch.no_grad():
        assert torch.equal(alone.encode_image(images), joined.encode_image(images))
        assert torch.equal(alone.encode_text(["a castle"]), joined.encode_text(["a castle"]))

    wrong = save_image_tower(open_clip.create_model(tiny48), tmp_path / "wrong.safetensors")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    base_pt, w_pt = str(tmp_path / "base.pt"), str(tmp_path / "w.pt")
    for args, message in (
        (["--tower", str(wrong), "--base", base_pt, "-o", w_pt], "does not fit"),
        (["--tower", base_pt, "--base", base_pt, "-o", w_pt], "could not read image tower file"),
        (["--tower", str(tower), "--base", str(tower), "-o", w_pt], "is not a CLIP state dict"),
        (["--tower", str(tower), "--base", str(junk), "-o", w_pt], "could not read CLIP weights"),
        (["--tower", str(tower), "--base", str(tmp_path / "nope.pt"), "-o", w_pt], "not found"),
        (["--tower", str(tower), "--base", base_pt, "-o", str(tmp_path / "w.safetensors")], "must end in .pt"),
        (["--tower", str(tower), "--base", base_pt, "-o", str(tower / "w.pt")], "which is a file"),
        (["--base", base_pt, "-o", w_pt], "nothing to export"),
        (["--torchscript", "--base", base_pt, "-o", w_pt], "is not the toy CLIP's weights"),  # random-tiny's
    ):
        result = run(app, ["toy", "export-clip", *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "w.pt").exists()


def test_the_image_tower_runs_sequence_first_with_the_same_embeddings_and_gradients():
    """The perceptor switches open_clip's image transformer to its (L, N, D) layout, which is faster on the CPU;
    the embedding and the gradient that reaches the image must not change."""
    import open_clip

    from pixgen.perceptor import load_perceptor

    p = load_perceptor("pixgen-random-tiny")
    tower = p.model.visual.transformer
    assert tower.batch_first is False and all(b.attn.batch_first is False for b in tower.resblocks)
    reference = open_clip.create_model("pixgen-random-tiny")
    reference.load_state_dict(p.model.state_dict())
    assert reference.visual.transformer.batch_first is True
    images = torch.rand(3, 3, p.input_size, p.input_size, requires_grad=True)
    ours = p.encode_image(images)
    grad_ours, = torch.autograd.grad(ours.square().sum(), images)
    theirs = reference.encode_image((images - p.mean) / p.std)
    grad_theirs, = torch.autograd.grad(theirs.square().sum(), images)
    assert torch.allclose(ours, theirs, atol=1e-5) and torch.allclose(grad_ours, grad_theirs, atol=1e-5)


@pytest.mark.parametrize("spec, says", [("pixgen-random-tiny::nan", "not a finite number"),
                                        ("pixgen-random-tiny::inf", "not a finite number"),
                                        ("ViT-B-32:openai:-1", "is negative")])
def test_clip_weights_that_are_not_finite_or_negative_are_refused_when_parsed(spec, says):
    with pytest.raises(ModelError, match=says):
        ClipSpec.parse(spec)


def test_ensemble_of_zero_weights_is_refused_before_loading(tiny, monkeypatch):
    from pixgen import factory
    from pixgen.errors import ConfigError

    monkeypatch.setattr(factory, "load_vqgan_for", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="every CLIP model has weight 0"):
        pixgen.generate("a castle", write=False, clip=["pixgen-random-tiny::0", "pixgen-random-tiny::0.0"], **tiny)
    with pytest.raises(ConfigError, match="no CLIP model guides steps 4-6 of 6"):
        pixgen.generate("a castle", write=False, clip=["pixgen-random-tiny@0-0.5", "pixgen-random-tiny::0@0.5-1"],
                        **tiny)


@pytest.mark.parametrize("spec", ["RN50", "RN50:0.5", "RN50::2@0-1"])
def test_open_clip_model_without_pretrained_weights_is_refused_with_its_tags(spec):
    with pytest.raises(ModelError, match="names no pretrained weights for RN50") as info:
        pixgen.load_perceptor(spec)
    assert "--clip RN50:openai" in info.value.hint and "RN50:random" in info.value.hint


def test_random_weights_on_purpose_and_pixgen_own_configs_without_weights_still_load():
    assert pixgen.load_perceptor("RN50:random").name == "RN50:random"
    assert pixgen.load_perceptor("pixgen-random-tiny").name == "pixgen-random-tiny:random"


@pytest.mark.parametrize("legacy", [False, True])
def test_clip_weights_whose_pickle_runs_code_are_refused_as_vqgan_checkpoints_are(tmp_path, legacy):
    from ckpt_fixture import Payload

    state = dict(pixgen.load_perceptor("pixgen-random-tiny").model.state_dict())
    state["note"] = Payload(tmp_path / "pwned")
    torch.save(state, tmp_path / "evil.pt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ModelError, match="refusing to load .*may be malicious"):
        pixgen.load_perceptor(f"pixgen-random-tiny:{tmp_path / 'evil.pt'}")
    assert not (tmp_path / "pwned").exists()


def test_vqgan_checkpoint_given_as_clip_weights_says_what_it_is(tmp_path):
    from ckpt_fixture import save_checkpoint, tiny_vqgan

    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(), "lightning")
    with pytest.raises(ModelError, match="is a VQGAN checkpoint, not a CLIP state dict") as info:
        pixgen.load_perceptor(f"pixgen-random-tiny:{ckpt}")
    assert "--vqgan-checkpoint" in info.value.hint


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_clip_weights_of_another_architecture_name_a_shape_that_differs(tmp_path, suffix):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in pixgen.load_perceptor("pixgen-random-tiny").model.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    torch.save(state, path) if suffix == ".pt" else save_file(state, str(path))
    with pytest.raises(ModelError, match=r"do not fit pixgen-toy-clip: \S+ is \(\d+.*\) in the file but \(\d+"):
        pixgen.load_perceptor(f"pixgen-toy-clip:{path}")


def test_damaged_clip_weights_in_the_download_cache_are_named_and_moved_aside(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from pixgen.perceptor import load_perceptor

    repo = tmp_path / "clip" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "blobs").mkdir()
    (repo / "blobs" / "f00d").write_bytes(b"PK\x03\x04 a download cut short")
    cached = repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    cached.parent.mkdir(parents=True)
    cached.symlink_to("../../blobs/f00d")
    with pytest.raises(ModelError, match="the cached CLIP weights .*open_clip_pytorch_model.bin .*are damaged") as info:
        load_perceptor("ViT-B-32:openai", cache_dir=tmp_path / "clip")
    assert not cached.exists() and (repo / "blobs" / "f00d.corrupt").is_file()
    assert "f00d.corrupt" in info.value.hint  # and the next run downloads the file again instead of linking to it


def test_clip_weights_path_with_an_at_sign_is_a_file_before_a_step_range(tmp_path):
    folder = tmp_path / "me@lab"
    folder.mkdir()
    (folder / "rt.pt").touch()
    path = folder / "rt.pt"
    assert ClipSpec.parse(f"pixgen-random-tiny:{path}") == ClipSpec("pixgen-random-tiny", str(path))
    assert ClipSpec.parse(f"pixgen-random-tiny:{path}:2@0-0.5") == ClipSpec("pixgen-random-tiny", str(path), 2.0,
                                                                            (0.0, 0.5))
    with pytest.raises(ModelError, match="not a step range"):
        ClipSpec.parse(f"pixgen-random-tiny:{tmp_path / 'you@lab' / 'rt.pt'}")  # no such file: still refused
