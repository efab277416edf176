"""`pixgen models ...` through typer's CliRunner on pixgen.models_cli.app (offline, local server only)."""
from __future__ import annotations

import json

import pytest
import yaml
from ckpt_fixture import TINY, save_checkpoint, tiny_vqgan, write_yaml
from http_fixture import FileServer
from typer.testing import CliRunner

from pixgen.models_cli import app


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PIXGEN_HOME", str(home))
    monkeypatch.delenv("PIXGEN_MIRRORS", raising=False)
    table = {"models": {"tiny": {"description": "tiny test model", "format": "VQModel",
                                 "config": str(write_yaml(tmp_path / "tiny.yaml")), "filename": "tiny.ckpt",
                                 "urls": ["http://127.0.0.1:9/unreachable/tiny.ckpt"]}}}
    (home / "registry.yaml").write_text(yaml.safe_dump(table))
    return home


@pytest.fixture
def server():
    srv = FileServer().start()
    yield srv
    srv.stop()


def run(*args):
    return CliRunner().invoke(app, list(args))


def listing(home):
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)["vqgan"]}


def test_list_shows_registry_state_and_local_clip(home):
    snap = home / "clip" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (home / "clip" / "my-finetune.pt").write_bytes(b"x")
    result = run("list")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("imagenet_f16_16384", "gumbel_f8_8192", "wikiart_16384", "coco", "faceshq", "sflckr", "tiny"):
        assert name in out
    assert "* " in out and "GumbelVQ" in out and "not downloaded" in out
    assert "ViT-B-32:openai" in out and "my-finetune.pt" in out


def test_download_with_url_then_list_verify_and_path(home, server, tmp_path):
    data = save_checkpoint(tmp_path / "src.ckpt", tiny_vqgan(TINY), "lightning").read_bytes()
    url = server.add("/tiny.ckpt", data)
    result = run("download", "tiny", "--url", url, "--quiet")
    assert result.exit_code == 0, result.output
    assert (home / "tiny.ckpt").read_bytes() == data and str(home / "tiny.ckpt") in result.stdout
    assert listing(home)["tiny"]["downloaded"]

    result = run("verify", "tiny")
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout and "sha256" in result.stdout
    assert (home / "tiny.safetensors").is_file()

    result = run("path", "tiny")
    assert result.exit_code == 0 and result.stdout.strip() == str(home / "tiny.ckpt")
    assert run("path", "tiny", "--config").stdout.strip() == str(tmp_path / "tiny.yaml")


def test_download_reads_pixgen_mirrors(home, server, tmp_path, monkeypatch):
    data = save_checkpoint(tmp_path / "src.ckpt", tiny_vqgan(TINY), "bare").read_bytes()
    monkeypatch.setenv("PIXGEN_MIRRORS", "tiny=" + server.add("/mirror/tiny.ckpt", data))
    result = run("download", "tiny", "-q")
    assert result.exit_code == 0, result.output
    assert server.hits("/mirror/tiny.ckpt") == 1
    assert "already downloaded" in run("download", "tiny", "-q").stdout


def test_download_failure_exits_2_with_url_and_manual_steps(home, server):
    url = server.url("/gone.ckpt")
    result = run("download", "tiny", "--url", url, "--quiet", "--retries", "0")
    assert result.exit_code == 2
    assert "HTTP 404" in result.stderr and url in result.stderr
    assert f"save it as {home / 'tiny.ckpt'}" in result.stderr
    assert not (home / "tiny.ckpt").exists()


def test_unknown_name_suggests(home):
    result = run("download", "wikiart_16k")
    assert result.exit_code == 2
    assert "unknown model 'wikiart_16k'" in result.stderr and "wikiart_16384" in result.stderr


def test_verify_moves_corrupt_file_aside(home):
    (home / "tiny.ckpt").write_bytes(b"\x80\x02garbage" * 100)
    result = run("verify", "tiny")
    assert result.exit_code == 2
    assert "tiny.ckpt" in result.stderr and "tiny.ckpt.corrupt" in result.stderr
    assert not (home / "tiny.ckpt").exists() and (home / "tiny.ckpt.corrupt").exists()
    assert not listing(home)["tiny"]["downloaded"]


def test_path_of_missing_model_exits_1(home):
    result = run("path", "tiny")
    assert result.exit_code == 1
    assert result.stdout.strip() == str(home / "tiny.ckpt") and "pixgen models download tiny" in result.stderr


def test_verify_not_downloaded_is_clear(home):
    result = run("verify", "gumbel_f8_8192")
    assert result.exit_code == 2 and "not downloaded" in result.stderr


def test_the_built_in_toy_model_is_listed_located_and_verified_not_called_unknown(home, tmp_path, monkeypatch):
    from pixgen import shipped

    listing = run("list")
    assert listing.exit_code == 0 and "toy" in listing.stdout and "shipped" in listing.stdout
    path = run("path", "toy")
    assert path.exit_code == 0 and path.stdout.strip() == str(shipped.TOY_DIR / "vqgan.ckpt")
    assert run("path", "toy", "--config").stdout.strip() == str(shipped.TOY_DIR / "vqgan.yaml")
    assert "built in" in run("download", "toy").stdout
    verified = run("verify", "toy")
    assert verified.exit_code == 0, verified.output
    assert "toy: OK" in verified.stdout and "512 codes" in verified.stdout
    # a damaged copy is caught: the same files with one tower's weights made NaN
    import shutil

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "toy"
    shutil.copytree(shipped.TOY_DIR, copy, ignore=shutil.ignore_patterns("*.jsonl", "*.json"))
    tower = load_file(str(copy / "clip_late_visual.safetensors"))
    first = next(iter(tower))
    tower[first] = torch.full_like(tower[first], float("nan"))
    with safe_open(str(copy / "clip_late_visual.safetensors"), "pt") as f:
        metadata = f.metadata()
    save_file(tower, str(copy / "clip_late_visual.safetensors"), metadata=metadata)
    monkeypatch.setattr(shipped, "TOY_DIR", copy)
    broken = run("verify", "toy")
    assert broken.exit_code == 2 and "NaN or infinite" in broken.stderr


def test_download_takes_a_local_path_and_refuses_a_missing_one_in_one_line(home, tmp_path):
    src = save_checkpoint(tmp_path / "src.ckpt", tiny_vqgan(TINY), "bare")
    missing = run("download", "tiny", "--url", str(tmp_path / "nope.ckpt"), "-q")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert "is not a download URL (no such file either)" in missing.stderr and "file:///" in missing.stderr
    result = run("download", "tiny", "--url", str(src), "-q")
    assert result.exit_code == 0, result.output
    assert (home / "tiny.ckpt").read_bytes() == src.read_bytes()


def test_pixgen_mirrors_naming_a_missing_file_says_so(home, monkeypatch):
    monkeypatch.setenv("PIXGEN_MIRRORS", "~/no-such-mirrors.yaml")
    result = run("download", "tiny", "-q")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "~/no-such-mirrors.yaml, which does not exist" in result.stderr


@pytest.mark.parametrize("text", ["- tiny\n- other\n", "tiny: 5\n", "models:\n  - tiny\n"])
def test_malformed_user_registry_is_a_one_line_error(home, text):
    (home / "registry.yaml").write_text(text)
    for args in (["list"], ["download", "tiny", "-q"]):
        result = run(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "registry.yaml must hold `models:` mapping each NAME" in result.stderr and "hint:" in result.stderr


@pytest.mark.parametrize("text", ["- http://host/tiny.ckpt\n", "tiny: 5\n", "tiny: {url: x}\n"])
def test_malformed_mirrors_file_is_a_one_line_error(home, text):
    (home / "mirrors.yaml").write_text(text)
    result = run("download", "tiny", "-q")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "mirrors.yaml must map NAME (or '*' for base URLs) to a URL or a list of URLs" in result.stderr


def test_home_that_is_a_file_is_a_one_line_error(tmp_path, monkeypatch, server):
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("PIXGEN_HOME", str(tmp_path / "home"))
    result = run("download", "imagenet_f16_16384", "--url", server.url("/x.ckpt"), "-q")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{tmp_path / 'home'} is a file, not a directory" in result.stderr


def test_a_directory_in_the_checkpoints_place_is_refused_not_called_downloaded(home, server, tmp_path):
    data = save_checkpoint(tmp_path / "src.ckpt", tiny_vqgan(TINY), "bare").read_bytes()
    (home / "tiny.ckpt").mkdir()
    result = run("download", "tiny", "--url", server.add("/tiny.ckpt", data), "-q")
    assert result.exit_code == 2 and "downloaded tiny" not in result.stdout
    assert f"{home / 'tiny.ckpt'} is a directory" in result.stderr and "remove it" in result.stderr
    verify = run("verify", "tiny")
    assert verify.exit_code == 2 and "is a directory" in verify.stderr


def test_verify_moves_a_corrupt_safetensors_copy_aside_when_it_is_the_only_file(home):
    (home / "tiny.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    result = run("verify", "tiny")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (home / "tiny.safetensors").exists() and (home / "tiny.safetensors.corrupt").exists()
    assert "pixgen models download tiny" in result.stderr


def test_verify_leaves_a_good_checkpoint_alone_when_the_registry_config_is_missing(home, tmp_path):
    data = save_checkpoint(tmp_path / "src.ckpt", tiny_vqgan(TINY), "bare").read_bytes()
    (home / "tiny.ckpt").write_bytes(data)
    (tmp_path / "tiny.yaml").unlink()
    result = run("verify", "tiny")
    assert result.exit_code == 2 and "tiny.yaml" in result.stderr
    assert (home / "tiny.ckpt").read_bytes() == data and not (home / "tiny.ckpt.corrupt").exists()
    assert "moved to" not in result.stderr


def test_hints_after_a_bad_file_say_what_to_do_once_and_by_name(home, server):
    (home / "tiny.ckpt").write_bytes(b"\x80\x02garbage" * 100)
    hint = run("verify", "tiny").stderr.split("hint:")[1]
    assert "pixgen models download tiny" in hint and "NAME" not in hint
    assert hint.count("download it again") + hint.count("models download") == 1
    page = server.add("/tiny.ckpt", b"x")
    server.always("/tiny.ckpt", "html")
    result = run("download", "tiny", "--url", page, "-q")
    assert result.exit_code == 2 and "web page" in result.stderr
    assert "download it yourself from" not in result.stderr and "find a good copy elsewhere" in result.stderr
