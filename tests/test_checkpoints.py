"""pixgen.checkpoints: every taming format, safe unpickling, mismatches, the safetensors copy, the registry."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from ckpt_fixture import TINY, TINY_GUMBEL, malicious_checkpoint, save_checkpoint, tiny_vqgan, write_yaml
from http_fixture import FileServer

import pixgen.checkpoints as ck
from pixgen.checkpoints import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_vqgan,
    resolve_vqgan,
)
from pixgen.download import DownloadError
from pixgen.errors import ModelError


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own cache directory and no mirror settings from the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("PIXGEN_HOME", str(home))
    monkeypatch.delenv("PIXGEN_MIRRORS", raising=False)
    return home


def assert_same_weights(model, reference):
    got, want = model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


# -- formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["lightning", "state_dict", "bare"])
def test_plain_vqmodel_formats_load_strict_frozen_and_equal(tmp_path, fmt):
    ref = tiny_vqgan(TINY)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", ref, fmt)
    model = load_vqgan(write_yaml(tmp_path / "m.yaml"), ckpt)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert_same_weights(model, ref)
    z = torch.randn(1, TINY.embed_dim, 4, 4)
    assert torch.allclose(model.decode(z), ref.decode(z))


def test_gumbel_checkpoint_loads_embed_and_proj(tmp_path):
    ref = tiny_vqgan(TINY_GUMBEL)
    ckpt = save_checkpoint(tmp_path / "g.ckpt", ref, "lightning")
    model = load_vqgan(write_yaml(tmp_path / "g.yaml", TINY_GUMBEL), ckpt)
    assert model.config.gumbel
    assert torch.equal(model.state_dict()["quantize.proj.weight"], ref.state_dict()["quantize.proj.weight"])
    assert torch.equal(model.codebook, ref.codebook)


@pytest.mark.parametrize("yaml_kind", ["net2net", "first_stage_only"])
def test_net2net_checkpoint_loads_its_first_stage(tmp_path, yaml_kind):
    ref = tiny_vqgan(TINY)
    ckpt = save_checkpoint(tmp_path / "n.ckpt", ref, "net2net")
    config = write_yaml(tmp_path / "n.yaml", TINY, net2net=yaml_kind == "net2net")
    assert_same_weights(load_vqgan(config, ckpt), ref)


def test_legacy_serialization_format_loads(tmp_path):
    ref = tiny_vqgan(TINY)
    ckpt = save_checkpoint(tmp_path / "old.ckpt", ref, "lightning", legacy=True)
    assert_same_weights(load_vqgan(write_yaml(tmp_path / "m.yaml"), ckpt), ref)


def test_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path):
    """Storages tagged 'cuda:0' (as a GPU run saves them) are mapped to the CPU, with no GPU present."""
    ref = tiny_vqgan(TINY)
    registry = torch.serialization._package_registry
    fake = (-1, lambda obj: "cuda:0" if getattr(obj, "device", None) == torch.device("cpu") else None,
            lambda obj, location: None)
    registry.insert(0, fake)
    try:
        ckpt = save_checkpoint(tmp_path / "gpu.ckpt", ref, "lightning")
    finally:
        registry.remove(fake)
    import zipfile

    with zipfile.ZipFile(ckpt) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pkl
    model = load_vqgan(write_yaml(tmp_path / "m.yaml"), ckpt)
    assert_same_weights(model, ref)
    assert next(model.parameters()).device.type == "cpu"


# -- malicious pickles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_payload_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "payload-ran"
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", tiny_vqgan(TINY), marker, legacy=legacy)
    # Control: an ordinary unpickle of this very file does run the payload.
    probe = tmp_path / "probe"
    malicious_checkpoint(tmp_path / "probe.ckpt", tiny_vqgan(TINY), probe, legacy=legacy)
    torch.load(tmp_path / "probe.ckpt", weights_only=False)
    assert probe.exists()

    with pytest.raises(UnsafeCheckpointError) as info:
        load_vqgan(write_yaml(tmp_path / "m.yaml"), ckpt)
    assert "exec" in info.value.message and str(ckpt) in info.value.message
    assert not marker.exists()
    assert not list((tmp_path / "home").rglob("*.safetensors"))  # nothing cached from a refused file


def test_os_system_global_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "shell.ckpt"
    torch.save({"state_dict": tiny_vqgan(TINY).state_dict(), "x": Shell()}, path)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        ck.read_vqgan_state_dict(path)
    assert not marker.exists()


# -- bad files and mismatches ----------------------------------------------------------------------------------


def test_yaml_with_other_codebook_size_names_keys_and_shapes(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(TINY), "lightning")
    other = write_yaml(tmp_path / "other.yaml", VQGANConfigLike(n_embed=32))
    with pytest.raises(CheckpointMismatchError) as info:
        load_vqgan(other, ckpt)
    err = info.value
    assert "quantize.embedding.weight: checkpoint (16, 8) vs config (32, 8)" in err.message
    assert str(other) in err.message and str(ckpt) in err.message
    assert "n_embed=32" in err.hint and "16 codes" in err.hint


def test_gumbel_checkpoint_with_plain_yaml_says_so(tmp_path):
    ckpt = save_checkpoint(tmp_path / "g.ckpt", tiny_vqgan(TINY_GUMBEL), "lightning")
    with pytest.raises(CheckpointMismatchError) as info:
        load_vqgan(write_yaml(tmp_path / "plain.yaml", TINY), ckpt)
    assert "quantize.embed.weight" in info.value.message and "quantize.embedding.weight" in info.value.message
    assert "GumbelVQ" in info.value.hint


def test_yaml_with_other_depth_lists_missing_keys(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(TINY), "lightning")
    deeper = write_yaml(tmp_path / "deep.yaml", VQGANConfigLike(num_res_blocks=2))
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: encoder\.down\.0\.block\.1"):
        load_vqgan(deeper, ckpt)


@pytest.mark.parametrize("damage", ["truncated", "random", "html", "empty"])
def test_damaged_checkpoints_are_reported_with_their_path(tmp_path, damage):
    good = save_checkpoint(tmp_path / "good.ckpt", tiny_vqgan(TINY), "lightning").read_bytes()
    data = {"truncated": good[: len(good) // 2], "random": os.urandom(5000),
            "html": b"<!DOCTYPE html><html>Sign in to continue</html>", "empty": b""}[damage]
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data)
    with pytest.raises(CorruptCheckpointError) as info:
        load_vqgan(write_yaml(tmp_path / "m.yaml"), bad)
    assert str(bad) in info.value.message


def test_file_without_vqgan_weights_is_refused(tmp_path):
    path = tmp_path / "clip.pt"
    torch.save({"visual.proj": torch.zeros(2, 2), "text_projection": torch.zeros(2, 2)}, path)
    with pytest.raises(CorruptCheckpointError, match="holds no VQGAN weights"):
        load_vqgan(write_yaml(tmp_path / "m.yaml"), path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_before_a_run_and_not_cached(tmp_path, isolated_home, value):
    model = tiny_vqgan(TINY)
    with torch.no_grad():
        model.decoder.conv_out.weight[0, 0, 0, 0] = value
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, "lightning")
    with pytest.raises(CorruptCheckpointError, match="NaN or infinite weights in decoder.conv_out.weight"):
        load_vqgan(write_yaml(tmp_path / "m.yaml"), ckpt)
    assert ckpt.exists() and not list((isolated_home / "converted").glob("*.safetensors"))


def test_bad_yaml_is_a_model_error(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(TINY), "bare")
    (tmp_path / "broken.yaml").write_text("model: [unclosed")
    (tmp_path / "nodd.yaml").write_text(yaml.safe_dump({"model": {"params": {"embed_dim": 8}}}))
    with pytest.raises(ModelError, match="not valid YAML"):
        load_vqgan(tmp_path / "broken.yaml", ckpt)
    with pytest.raises(ModelError, match="ddconfig"):
        load_vqgan(tmp_path / "nodd.yaml", ckpt)


@pytest.mark.parametrize("where, key, value", [("params", "n_embed", -5), ("ddconfig", "ch_mult", []),
                                                ("ddconfig", "ch", 0), ("ddconfig", "ch_mult", [1, 0])])
def test_yaml_with_sizes_that_build_no_network_names_the_value(tmp_path, where, key, value):
    raw = yaml.safe_load(write_yaml(tmp_path / "m.yaml").read_text())
    params = raw["model"]["params"]
    (params if where == "params" else params["ddconfig"])[key] = value
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelError, match=f"not a usable taming VQGAN config: {key}: "):
        load_vqgan(tmp_path / "bad.yaml", save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(TINY), "bare"))


# -- the safetensors copy --------------------------------------------------------------------------------------


def test_second_load_uses_safetensors_copy_and_never_unpickles(tmp_path, isolated_home, monkeypatch):
    ref = tiny_vqgan(TINY)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", ref, "lightning")
    config = write_yaml(tmp_path / "m.yaml")
    load_vqgan(config, ckpt)
    copies = list((isolated_home / "converted").glob("m-*.safetensors"))
    assert len(copies) == 1

    def no_pickle(path):
        raise AssertionError("the pickle was read although a valid copy exists")

    monkeypatch.setattr(ck, "_torch_load_safely", no_pickle)
    assert_same_weights(load_vqgan(config, ckpt), ref)


def test_changed_checkpoint_invalidates_copy(tmp_path, monkeypatch):
    config = write_yaml(tmp_path / "m.yaml")
    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(TINY, seed=0), "lightning")
    load_vqgan(config, ckpt)
    newer = tiny_vqgan(TINY, seed=1)
    save_checkpoint(ckpt, newer, "bare")  # same path, new content
    assert_same_weights(load_vqgan(config, ckpt), newer)


def test_registry_model_keeps_copy_beside_checkpoint(tmp_path, isolated_home):
    entry_yaml = write_yaml(tmp_path / "tiny.yaml")
    add_user_entry(isolated_home, "tiny", entry_yaml)
    save_checkpoint(isolated_home / "tiny.ckpt", tiny_vqgan(TINY), "lightning")
    config, path = resolve_vqgan("tiny")
    load_vqgan(config, path)
    copy = isolated_home / "tiny.safetensors"
    assert copy.is_file()
    (isolated_home / "tiny.ckpt").unlink()  # the big pickle can go; the copy is enough
    assert resolve_vqgan("tiny") == (entry_yaml, copy)
    load_vqgan(*resolve_vqgan("tiny"))


def test_bad_file_in_cache_is_moved_aside_but_user_files_are_not(tmp_path, isolated_home):
    entry_yaml = write_yaml(tmp_path / "tiny.yaml")
    add_user_entry(isolated_home, "tiny", entry_yaml)
    cached = isolated_home / "tiny.ckpt"
    cached.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptCheckpointError) as info:
        load_vqgan(*resolve_vqgan("tiny", download=False))
    assert not cached.exists() and (isolated_home / "tiny.ckpt.corrupt").exists()
    assert "moved to" in info.value.hint
    with pytest.raises(ModelError, match="not downloaded"):
        resolve_vqgan("tiny", download=False)  # so the next run downloads it again

    mine = tmp_path / "mine.ckpt"
    mine.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptCheckpointError):
        load_vqgan(entry_yaml, mine)
    assert mine.exists()


# -- resolving names, the registry, downloads ------------------------------------------------------------------


def test_unknown_name_suggests_close_names():
    with pytest.raises(ModelError) as info:
        resolve_vqgan("imagenet_16384")
    assert info.value.message == "unknown model 'imagenet_16384'"
    assert "imagenet_f16_16384" in info.value.hint and "pixgen models list" in info.value.hint


def test_local_pair_and_sibling_yaml(tmp_path):
    ckpt = save_checkpoint(tmp_path / "mine.ckpt", tiny_vqgan(TINY), "lightning")
    config = write_yaml(tmp_path / "mine.yaml")
    assert resolve_vqgan(config_path=config, checkpoint_path=ckpt) == (config, ckpt)
    assert resolve_vqgan(checkpoint_path=ckpt) == (config, ckpt)
    with pytest.raises(ModelError, match="not found"):
        resolve_vqgan(config_path=config, checkpoint_path=tmp_path / "nope.ckpt")


def test_not_downloaded_without_download_says_how(isolated_home):
    with pytest.raises(ModelError) as info:
        resolve_vqgan("gumbel_f8_8192", download=False)
    assert "not downloaded" in info.value.message
    assert "pixgen models download gumbel_f8_8192" in info.value.hint
    assert str(isolated_home / "vqgan_gumbel_f8_8192.ckpt") in info.value.hint


def test_first_use_downloads_from_mirror_and_checks_structure(tmp_path, isolated_home, monkeypatch):
    add_user_entry(isolated_home, "tiny", write_yaml(tmp_path / "tiny.yaml"), urls=["http://127.0.0.1:9/none"])
    ref = tiny_vqgan(TINY)
    data = save_checkpoint(tmp_path / "src.ckpt", ref, "lightning").read_bytes()
    server = FileServer().start()
    try:
        server.add("/models/tiny.ckpt", data)
        monkeypatch.setenv("PIXGEN_MIRRORS", server.url("/models/"))  # a base URL: the file name is appended
        config, path = resolve_vqgan("tiny")
        assert path == isolated_home / "tiny.ckpt" and path.read_bytes() == data
        assert_same_weights(load_vqgan(config, path), ref)
        resolve_vqgan("tiny")
        assert server.hits("/models/tiny.ckpt") == 1  # cached after the first time
    finally:
        server.stop()


@pytest.mark.parametrize("served", ["wrong_model", "truncated", "malicious"])
def test_bad_download_is_rejected_and_not_cached(tmp_path, isolated_home, monkeypatch, served):
    add_user_entry(isolated_home, "tiny", write_yaml(tmp_path / "tiny.yaml"))
    marker = tmp_path / "ran"
    if served == "wrong_model":
        data = save_checkpoint(tmp_path / "s.ckpt", tiny_vqgan(TINY_GUMBEL), "lightning").read_bytes()
    elif served == "truncated":
        data = save_checkpoint(tmp_path / "s.ckpt", tiny_vqgan(TINY), "lightning").read_bytes()[:-700]
    else:
        data = malicious_checkpoint(tmp_path / "s.ckpt", tiny_vqgan(TINY), marker).read_bytes()
    server = FileServer().start()
    try:
        monkeypatch.setenv("PIXGEN_MIRRORS", "tiny=" + server.add("/t.ckpt", data))
        with pytest.raises(DownloadError) as info:
            ck.download_model("tiny", progress=False, retries=0, backoff=0.001)
    finally:
        server.stop()
    assert "failed its check" in info.value.message
    assert not (isolated_home / "tiny.ckpt").exists() and not (isolated_home / "tiny.ckpt.part").exists()
    assert not marker.exists()


def test_mirror_settings_order(tmp_path, isolated_home, monkeypatch):
    entry = ck.get_entry("wikiart_1024")
    assert ck.model_urls(entry) == list(entry.urls)
    monkeypatch.setenv("PIXGEN_MIRRORS", "wikiart_1024=http://a/x.ckpt,http://b/x.ckpt; http://lan/m/")
    assert ck.model_urls(entry) == ["http://a/x.ckpt", "http://b/x.ckpt", "http://lan/m/wikiart_1024.ckpt"]
    monkeypatch.delenv("PIXGEN_MIRRORS")
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "mirrors.yaml").write_text(yaml.safe_dump({"wikiart_1024": ["http://c/w.ckpt"]}))
    assert ck.model_urls(entry) == ["http://c/w.ckpt"]
    assert ck.model_urls(entry, urls=["http://d/w.ckpt"]) == ["http://d/w.ckpt"]


def test_pixgen_home_precedence(tmp_path, monkeypatch):
    assert ck.pixgen_home(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv("PIXGEN_HOME", str(tmp_path / "env"))
    assert ck.pixgen_home() == tmp_path / "env"
    monkeypatch.delenv("PIXGEN_HOME")
    checkout = Path(ck.__file__).resolve().parents[1]
    expected = checkout / "checkpoints" if (checkout / "pyproject.toml").is_file() else Path.home() / ".cache/pixgen"
    assert ck.pixgen_home() == expected


def test_packaged_registry_is_complete_and_consistent():
    entries = ck.registry()
    wanted = {"imagenet_f16_1024", "imagenet_f16_16384", "gumbel_f8_8192", "wikiart_1024", "wikiart_16384",
              "coco", "faceshq", "sflckr"}
    assert wanted <= set(entries) and ck.default_model_name() == "imagenet_f16_16384"
    assert len({e.filename for e in entries.values()}) == len(entries)
    for e in entries.values():
        cfg = ck.read_vqgan_config(e.config)
        assert e.urls and all(u.startswith(("http://", "https://")) for u in e.urls), e.name
        assert e.format in {"VQModel", "GumbelVQ", "Net2NetTransformer"}
        assert cfg.gumbel == (e.format == "GumbelVQ"), e.name
        assert e.sha256 is None or len(e.sha256) == 64
    assert ck.read_vqgan_config(entries["gumbel_f8_8192"].config).factor == 8
    assert ck.read_vqgan_config(entries["imagenet_f16_16384"].config).n_embed == 16384


# -- helpers ---------------------------------------------------------------------------------------------------


def VQGANConfigLike(**changes):  # noqa: N802 - reads like the dataclass it builds
    from dataclasses import replace

    return replace(TINY, **changes)


def add_user_entry(home: Path, name: str, config: Path, urls=("http://127.0.0.1:9/unused",)) -> None:
    home.mkdir(parents=True, exist_ok=True)
    table = {"models": {name: {"description": "tiny test model", "format": "VQModel", "config": str(config),
                               "filename": f"{name}.ckpt", "urls": list(urls)}}}
    (home / "registry.yaml").write_text(yaml.safe_dump(table))



@pytest.mark.parametrize("cfg", [TINY, TINY_GUMBEL])
def test_quantized_codes_are_laid_out_contiguously_for_the_decoder(cfg):
    """Moved back from (B, h, w, D), the codes would be channels-last, and the decoder would carry that layout to
    GroupNorm, whose CPU backward then takes a slow path (benchmarks/RESULTS.md, "Where a step's time goes")."""
    model = tiny_vqgan(cfg)
    z = torch.randn(1, cfg.embed_dim, 4, 4, requires_grad=True)
    codes = model.quantize(z)
    assert codes.is_contiguous()
    codes.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # still straight through


def test_a_folder_given_as_checkpoint_is_called_a_directory(tmp_path):
    config = write_yaml(tmp_path / "mine.yaml")
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelError, match="is a directory"):
        resolve_vqgan(config_path=config, checkpoint_path=tmp_path / "weights")


def test_copy_that_cannot_be_kept_is_a_plain_note_not_a_warning_with_source(tmp_path, capsys, recwarn):
    ckpt = save_checkpoint(tmp_path / "mine.ckpt", tiny_vqgan(TINY), "bare")
    home_file = tmp_path / "home-is-a-file"
    home_file.write_text("x")
    load_vqgan(write_yaml(tmp_path / "mine.yaml"), ckpt, home=home_file)
    err = capsys.readouterr().err
    assert err.startswith("pixgen: could not keep a safetensors copy of mine.ckpt") and "lambda" not in err
    assert not [w for w in recwarn if "safetensors copy" in str(w.message)]
