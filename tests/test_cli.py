"""The command line: each bad input gets a clear message and exit code 2, and nothing half-written."""
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pixgen.cli import app

runner = CliRunner()
FAST = ["-m", "random-tiny", "--size", "32x32", "-i", "2", "--cutouts", "2", "--device", "cpu", "-q"]


def run(args, out_dir):
    return runner.invoke(app, ["generate", *args, "--output-dir", str(out_dir)])


def test_generate_prints_the_image_path(tmp_path):
    result = run(["a castle", *FAST], tmp_path / "out")
    assert result.exit_code == 0, result.output
    path = result.stdout.strip().splitlines()[-1]
    assert path.endswith("image.png") and os.path.isfile(path)


@pytest.fixture
def threads_seen(monkeypatch):
    """The torch thread count each run built its session with; torch's own count is put back afterwards."""
    import torch

    import pixgen.api as api

    seen = []
    build = api.build_session
    monkeypatch.setattr(api, "build_session", lambda cfg, **kw: seen.append(torch.get_num_threads()) or build(cfg, **kw))
    before = torch.get_num_threads()
    yield seen
    torch.set_num_threads(before)


def test_threads_option_applies_to_the_run_only_and_is_recorded(tmp_path, threads_seen):
    import torch

    torch.set_num_threads(2)
    result = run(["a castle", *FAST, "--threads", "1", "--name", "r"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert threads_seen == [1]  # the run used one thread
    assert torch.get_num_threads() == 2  # and gave torch back its own count
    assert "threads: 1" in (tmp_path / "out" / "r" / "run.yaml").read_text().splitlines()


def test_resume_keeps_the_runs_threads_unless_told(tmp_path, threads_seen):
    import torch

    torch.set_num_threads(1)
    assert run(["a castle", *FAST, "--threads", "2", "--name", "r"], tmp_path / "out").exit_code == 0
    run_dir = str(tmp_path / "out" / "r")
    assert runner.invoke(app, ["resume", run_dir, "-i", "3", "-q"]).exit_code == 0
    result = runner.invoke(app, ["resume", run_dir, "-i", "4", "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert threads_seen == [2, 2, 1]
    bad = runner.invoke(app, ["resume", run_dir, "-i", "5", "--threads", "0"])
    assert bad.exit_code == 2 and "threads must be at least 1" in bad.output


def test_size_is_rounded_to_the_model_factor_with_a_message(tmp_path):
    result = run(["a castle", *FAST, "--size", "30x35"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "rounded to 32x36" in result.stderr


def test_several_init_colors_choose_a_start_and_are_kept_in_the_config(tmp_path):
    from omegaconf import OmegaConf

    result = run(["a castle", *FAST, "--init-color", "200,30,30; 20,20,20"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "the best of 2 start colours" in result.stderr
    run_dir = os.path.dirname(result.stdout.strip().splitlines()[-1])
    saved = OmegaConf.load(os.path.join(run_dir, "run.yaml"))
    assert OmegaConf.to_container(saved.init_color) == [[200, 30, 30], [20, 20, 20]]


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def _png(tmp_path):
    from PIL import Image

    p = tmp_path / "ok.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(p)
    return p


@pytest.mark.parametrize("args, fragment", [
    ([""], "the prompt is empty"),
    (["| ^ |"], "only separators"),
    (["fog:abc1|x:1x"], "is not a number"),
    (["a:1:stopx"], "is not a number"),
    (["a", "--size", "0x64"], "positive width and height"),
    (["a", "--size", "abc"], "is not WIDTHxHEIGHT"),
    (["a", "-i", "0"], "iterations must be at least 1"),
    (["a", "-i", "-3"], "iterations must be at least 1"),
    (["a", "--cutouts", "0"], "cutouts must be at least 1"),
    (["a", "--lr", "0"], "learning rate"),
    (["a", "--lr", "-1"], "learning rate"),
    (["a", "--size", "2x2"], "too small for this model"),
    (["a", "--optimizer", "adamz"], "unknown optimizer 'adamz'"),
    (["a", "--augment", "RandomFlipz"], "unknown augmentation 'RandomFlipz'"),
    (["a", "--device", "tpu"], "unknown device 'tpu'"),
    (["a", "--device", "cuda"], "CUDA is not available"),
    (["a", "--model", "imagenet_f16_1638"], "imagenet_f16_16384"),
    (["a", "--set", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["a", "--set", "iterations=many"], "bad value for iterations"),
    (["a", "--set", "size=12"], "size takes a value of the same form as its default, [256,256]"),
    (["a", "--set", "sparsity.steps=late"], "bad value for sparsity.steps in --set overrides: expected a list"),
    # keys whose default is null: the form comes from the schema's declared type
    (["a", "--set", "sparsity.cap=abc"], "sparsity.cap takes a number, or null (its default)"),
    (["a", "--set", "threads=many"], "threads takes a whole number, or null"),
    (["a", "--set", "coarse.size=big"], "coarse.size takes a list, or null"),
    (["a", "--config", "no/such/file.yaml"], "not found"),
    (["a", "--clip", "ViT-B-99:openai"], "unknown CLIP model"),
    (["a", "--threads", "0"], "threads must be at least 1"),
    (["a", "--init-color", "1,2"], "is not R,G,B"),
    (["a", "--init-color", "1,2,256"], "is not R,G,B"),
    (["a", "--init-color", "1,2,3;4,5,6;7,8"], "'7,8' is not R,G,B"),
    (["a", "--seed", str(2 ** 64)], "out of range"),
    (["a", "--seed", str(2 ** 64 - 1), "--count", "2"], "the last image's seed"),
    # torch wraps -1 to 2**64-1: two recorded seeds would name one picture
    (["a", "--seed", "-1"], "seeds run from 0 to 2**64-1"),
    (["a", "--noise-prompt", str(10 ** 23)], "noise prompt '100000000000000000000000''s seed is out of range"),
    (["a", "--noise-prompt", "1:abc"], "'abc' after the seed is not a number"),
    (["a", "--noise-prompt", "lots"], "'lots' is not a whole-number seed"),
    (["a", "--set", "optim=5"], "optim in --set overrides is a group of keys (optim.name, optim.lr"),
    (["a", "--set", "cutouts.augments=3"], "bad value for cutouts.augments"),
    (["a", "--set", "prompt.x=1"], "prompt takes text"),
    # a run name is one folder inside -o: not a path out of it, not '.', not longer than a file system takes
    (["a", "--name", "sub/run"], "is not a plain folder name"),
    (["a", "--name", "/"], "is not a plain folder name"),
    (["a", "--name", ".."], "is not a plain folder name"),
    (["a", "--name", "x" * 300], "300 bytes long"),
    (["a", "--size", "6", "--model", "toy"], "a 6x6 image is too small for the border term"),
])
def test_bad_options_fail_clearly(tmp_path, args, fragment):
    if "--device" in args and "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    result = run([args[0], *FAST, *args[1:]], tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert not list((tmp_path / "out").glob("*/image.png"))


def test_invalid_yaml_config_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 3\noptim: {lr: 0.1\n")
    result = run(["a", *FAST, "--config", str(bad)], tmp_path / "out")
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr and "line" in result.stderr


def test_unknown_key_in_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iteratoins: 3\n")
    result = run(["a", *FAST, "--config", str(bad)], tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown config key 'iteratoins'" in result.stderr and "iterations" in result.stderr


@pytest.mark.parametrize("kind", ["missing", "not_image", "truncated", "directory"])
@pytest.mark.parametrize("flag", ["--image-prompt", "--init-image"])
def test_bad_image_inputs(tmp_path, kind, flag):
    if kind == "missing":
        path = str(tmp_path / "nope.png")
    elif kind == "not_image":
        path = _write(tmp_path / "notes.png", b"these are words, not pixels\n")
    elif kind == "directory":
        path = str(tmp_path)
    else:
        data = _png(tmp_path).read_bytes()
        path = _write(tmp_path / "cut.png", data[: len(data) // 2])
    result = run(["a", *FAST, flag, path], tmp_path / "out")
    assert result.exit_code == 2, result.output
    expected = {"missing": "not found", "not_image": "not an image", "truncated": "truncated",
                "directory": "is a directory"}[kind]
    assert expected in result.stderr


def test_output_directory_that_is_a_file_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    import pixgen.api

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded before the output directory was checked")

    monkeypatch.setattr(pixgen.api, "build_session", no_models)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for where, says in ((blocker, "is a file"), (blocker / "sub", "which is a file")):
        result = run(["a", *FAST], where)
        assert result.exit_code == 2, result.output
        assert says in result.stderr, result.stderr
    assert blocker.read_text() == "x"


def test_output_directory_given_as_an_image_file_name(tmp_path):
    result = run(["a", *FAST], tmp_path / "art.png")
    assert result.exit_code == 2, result.output
    assert "looks like a file name" in result.stderr and "art" in result.stderr
    assert not (tmp_path / "art.png").exists()
    (tmp_path / "old.png").mkdir()  # an existing directory that happens to carry the suffix is used as it is
    assert run(["a", *FAST], tmp_path / "old.png").exit_code == 0


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_prompts_file_and_count_make_each_seeds_own_image(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my list\na castle\n\n  a red circle | fog:0.5  \n")
    result = run(["--prompts", str(prompts), "--count", "2", "--seed", "5", *FAST], tmp_path / "out")
    assert result.exit_code == 0, result.output
    paths = result.stdout.strip().splitlines()
    assert len(paths) == 4 and all(os.path.isfile(p) for p in paths)
    made = [(yaml.safe_load((Path(p).parent / "run.yaml").read_text())) for p in paths]
    assert [(m["prompt"], m["seed"]) for m in made] == [("a castle", 5), ("a castle", 6),
                                                         ("a red circle | fog:0.5", 5), ("a red circle | fog:0.5", 6)]
    alone = run(["a red circle | fog:0.5", "--seed", "6", *FAST], tmp_path / "alone")
    assert alone.exit_code == 0, alone.output
    assert np.array_equal(_pixels(alone.stdout.strip().splitlines()[-1]), _pixels(paths[3]))
    assert not np.array_equal(_pixels(paths[2]), _pixels(paths[3]))


def test_prompts_file_with_one_prompt(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse\n")
    result = run(["--prompts", str(prompts), *FAST], tmp_path / "out")
    assert result.exit_code == 0, result.output
    (path,) = result.stdout.strip().splitlines()
    assert yaml.safe_load((Path(path).parent / "run.yaml").read_text())["prompt"] == "a lighthouse"


def test_prompts_file_is_checked_before_the_first_run(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a castle\na tower | fog:0.5:oops\n")
    result = run(["--prompts", str(prompts), *FAST], tmp_path / "out")
    assert result.exit_code == 2
    assert "oops" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("case", ["both", "empty", "missing", "count"])
def test_prompts_file_and_count_errors(tmp_path, case):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# only a comment\n\n" if case == "empty" else "a castle\n")
    args = {"both": ["a tower", "--prompts", str(prompts)], "empty": ["--prompts", str(prompts)],
            "missing": ["--prompts", str(tmp_path / "nope.txt")], "count": ["a tower", "--count", "0"]}[case]
    result = run([*args, *FAST], tmp_path / "out")
    assert result.exit_code == 2, result.output
    expected = {"both": "both a prompt and --prompts", "empty": "holds no prompts", "missing": "not found",
                "count": "--count must be at least 1"}[case]
    assert expected in result.stderr


def test_one_prompt_file_reader_for_generate_and_eval(tmp_path):
    from pixgen.cli_util import read_prompt_file
    from pixgen.errors import ConfigError

    path = tmp_path / "prompts.txt"
    path.write_text("# a comment line\n\n  a castle #1 at dawn  \n   # indented comment\na red circle # the toy's\n")
    assert read_prompt_file(path) == ["a castle #1 at dawn", "a red circle # the toy's"]  # free prompts keep '#'
    assert read_prompt_file(path, comments_after=True) == ["a castle", "a red circle"]  # eval's toy captions
    with pytest.raises(ConfigError, match="is a directory"):
        read_prompt_file(tmp_path)
    path.write_bytes(b"\xff\xfe a castle")
    with pytest.raises(ConfigError, match="cannot read prompts file"):
        read_prompt_file(path)


@pytest.mark.parametrize("command, suffix", [(["toy", "render", "a red circle"], ".png"),
                                             (["toy", "export-clip", "--torchscript"], ".pt"),
                                             (["toy", "image-tower", "src.pt", "--base", "base.pt"], ".safetensors")])
def test_every_file_output_follows_one_rule(tmp_path, command, suffix):
    """toy render, export-clip and image-tower refuse the same bad --out the same way, before any work."""
    for name in ("src.pt", "base.pt"):
        (tmp_path / name).write_bytes(b"")
    command = [str(tmp_path / a) if a.endswith(".pt") else a for a in command]
    (tmp_path / "afile").write_text("x")
    (tmp_path / f"d{suffix}").mkdir()
    for out, message in ((tmp_path / "x.jpg", f"must end in {suffix}"),
                         (tmp_path / f"d{suffix}", "is a directory"),
                         (tmp_path / "afile" / "sub" / f"x{suffix}", "which is a file")):
        result = runner.invoke(app, [*command, "-o", str(out)])
        assert result.exit_code == 2 and message in result.output, (out, result.output)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "base.pt", f"d{suffix}", "src.pt"]


def test_a_file_output_gets_its_missing_folders(tmp_path):
    out = tmp_path / "new" / "deeper" / "scene.png"
    result = runner.invoke(app, ["toy", "render", "a red circle", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 64)


def test_good_image_prompt_and_init_image_run(tmp_path):
    png = str(_png(tmp_path))
    result = run(["a", *FAST, "--image-prompt", f"{png}:0.5", "--init-image", png, "--init-weight", "0.5",
                  "--noise-prompt", "7:0.2"], tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_an_image_prompt_with_a_bad_weight_is_not_called_missing(tmp_path):
    png = str(_png(tmp_path))
    result = run(["a", *FAST, "--image-prompt", f"{png}:x"], tmp_path / "out")
    assert result.exit_code == 2
    assert "'x' after the image's path is not a number" in result.stderr and "not found" not in result.stderr


def test_an_image_prompt_with_too_many_numbers_says_so(tmp_path):
    png = str(_png(tmp_path))
    result = run(["a", *FAST, "--image-prompt", f"{png}:1:2:3"], tmp_path / "out")
    assert result.exit_code == 2
    assert "more than a weight and a stop follow the image's path" in result.stderr


@pytest.mark.parametrize("flag, value", [("--image-prompt", None), ("--noise-prompt", "5")])
def test_an_image_or_noise_prompt_alone_is_a_prompt(tmp_path, flag, value):
    result = run([*FAST, flag, value or str(_png(tmp_path))], tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_a_prompts_file_with_a_byte_order_mark(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes("\ufeffa red circle\r\na blue square\r\n".encode("utf-8"))
    from pixgen.cli_util import read_prompt_file

    assert read_prompt_file(prompts) == ["a red circle", "a blue square"]


def test_ctrl_c_in_a_batch_names_the_images_not_started(tmp_path, monkeypatch):
    import os
    import signal

    from pixgen import engine as engine_mod

    real_step = engine_mod.Engine.step
    calls = []

    def step_then_ctrl_c(self, step):
        out = real_step(self, step)
        calls.append(step)
        if len(calls) == 3:  # in the second image of the first prompt
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(engine_mod.Engine, "step", step_then_ctrl_c)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    result = run([*FAST, "-i", "2", "--prompts", str(prompts), "-n", "2", "--seed", "7"], tmp_path / "out")
    assert result.exit_code == 130, result.output
    assert "not started (2 of 4): 'a blue square' seed 7; 'a blue square' seed 8" in result.stderr


def test_the_largest_seed_torch_takes_runs(tmp_path):
    result = run(["a", *FAST, "--seed", str(2 ** 64 - 1)], tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_resume_of_a_non_run_directory(tmp_path):
    result = runner.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a resumable pixgen run" in result.stderr


def test_help_reads_well():
    result = runner.invoke(app, ["generate", "--help"])
    assert result.exit_code == 0
    for option in ("--size", "--iterations", "--seed", "--lr", "--optimizer", "--cutouts", "--cut-pow", "--augment",
                   "--image-prompt", "--init-image", "--init-weight", "--noise-prompt", "--save-every",
                   "--output-dir", "--device", "--config", "--set", "--video", "--from-image", "random-tiny"):
        assert option in result.output


def test_help_and_option_errors_do_not_import_torch():
    """The command line answers --help and reports a bad option before importing torch (seconds of start-up)."""
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom pixgen.cli import app\n"
            "r = CliRunner().invoke(app, ['generate', 'a red circle', '--size', '0x0'])\n"
            "assert r.exit_code == 2 and 'positive width' in r.output, r.output\n"
            "h = CliRunner().invoke(app, ['generate', '--help'])\n"
            "assert h.exit_code == 0\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_local_taming_checkpoint_pair_generates(tmp_path):
    import torch
    import yaml

    from pixgen.models.vqgan import VQGAN, VQGANConfig

    cfg = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
                      z_channels=8, embed_dim=4, n_embed=16)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg.to_taming()))
    torch.save({"state_dict": VQGAN(cfg).state_dict()}, tmp_path / "m.ckpt")
    args = ["a castle", "--vqgan-config", str(tmp_path / "m.yaml"), "--vqgan-checkpoint", str(tmp_path / "m.ckpt"),
            "--clip", "pixgen-random-tiny", "--size", "30x30", "-i", "2", "--cutouts", "2", "-q"]
    result = run(args, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "rounded to 30x30" not in result.stderr  # factor 2 for this model: 30 is already a multiple
    from PIL import Image

    assert Image.open(result.stdout.strip().splitlines()[-1]).size == (30, 30)
    missing = run(["a castle", "--vqgan-checkpoint", str(tmp_path / "none.ckpt"), "-q"], tmp_path / "out")
    assert missing.exit_code == 2 and "none" in missing.stderr


def test_generate_downloads_a_registry_model_on_first_use(tmp_path, monkeypatch):
    import yaml
    from ckpt_fixture import TINY, save_checkpoint, tiny_vqgan, write_yaml
    from http_fixture import FileServer

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PIXGEN_HOME", str(home))
    table = {"models": {"tinyreg": {"description": "tiny", "format": "VQModel",
                                    "config": str(write_yaml(tmp_path / "tiny.yaml")), "filename": "tinyreg.ckpt",
                                    "urls": ["http://127.0.0.1:9/unreachable"]}}}
    (home / "registry.yaml").write_text(yaml.safe_dump(table))
    server = FileServer().start()
    try:
        server.add("/m/tinyreg.ckpt", save_checkpoint(tmp_path / "src.ckpt", tiny_vqgan(TINY), "lightning").read_bytes())
        monkeypatch.setenv("PIXGEN_MIRRORS", server.url("/m/"))
        args = ["a castle", "--model", "tinyreg", "--clip", "pixgen-random-tiny", "--size", "32x32", "-i", "2",
                "--cutouts", "2", "-q"]
        first = run(args, tmp_path / "out")
        assert first.exit_code == 0, first.output
        assert (home / "tinyreg.ckpt").is_file()
        second = run(args, tmp_path / "out")
        assert second.exit_code == 0, second.output
        assert server.hits("/m/tinyreg.ckpt") == 1
    finally:
        server.stop()


def test_images_record_their_weights_and_a_rerun_with_other_weights_says_so(tmp_path):
    import json

    import torch
    import yaml

    from pixgen.download import sha256_of
    from pixgen.models.vqgan import VQGAN, VQGANConfig
    from pixgen.output import read_png_metadata

    cfg = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
                      z_channels=8, embed_dim=4, n_embed=16)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg.to_taming()))
    torch.manual_seed(0)
    torch.save({"state_dict": VQGAN(cfg).state_dict()}, tmp_path / "m.ckpt")
    args = ["a castle", "--vqgan-config", str(tmp_path / "m.yaml"), "--vqgan-checkpoint", str(tmp_path / "m.ckpt"),
            "--clip", "pixgen-random-tiny", "--size", "32x32", "-i", "2", "--cutouts", "2", "-q"]
    first = run(args, tmp_path / "out")
    assert first.exit_code == 0, first.output
    image = first.stdout.strip().splitlines()[-1]
    record = json.loads(read_png_metadata(image)["weights"])
    assert record == {"m.ckpt": sha256_of(tmp_path / "m.ckpt")[:16]}

    same = runner.invoke(app, ["generate", "--from-image", image, "-q", "--output-dir", str(tmp_path / "out")])
    assert same.exit_code == 0, same.output
    assert "weights differ" not in same.stderr

    torch.manual_seed(1)  # other weights under the same file name
    torch.save({"state_dict": VQGAN(cfg).state_dict()}, tmp_path / "m.ckpt")
    other = runner.invoke(app, ["generate", "--from-image", image, "-q", "--output-dir", str(tmp_path / "out")])
    assert other.exit_code == 0, other.output
    assert "weights or input images differ" in other.stderr and "m.ckpt is now" in other.stderr
    assert record["m.ckpt"] in other.stderr

    from PIL import Image, PngImagePlugin

    from pixgen.output import META_PREFIX

    info = PngImagePlugin.PngInfo()  # the same image, its weights record garbled
    for key, value in Image.open(image).text.items():
        info.add_text(key, "{not json" if key == META_PREFIX + "weights" else value)
    Image.open(image).save(tmp_path / "garbled.png", pnginfo=info)
    garbled = runner.invoke(app, ["generate", "--from-image", str(tmp_path / "garbled.png"), "-q",
                                  "--output-dir", str(tmp_path / "out2")])
    assert garbled.exit_code == 2 and "weights record is not readable" in garbled.stderr
    assert not (tmp_path / "out2").exists()


def test_rerun_of_an_image_without_a_thread_count_says_the_picture_can_depend_on_it(tmp_path):
    import yaml
    from PIL import Image, PngImagePlugin

    from pixgen.output import META_PREFIX

    first = run(["a castle", "--model", "random-tiny", "--size", "32x32", "-i", "1", "--cutouts", "1", "-q"],
                tmp_path / "out")
    assert first.exit_code == 0, first.output
    image = first.stdout.strip().splitlines()[-1]
    again = runner.invoke(app, ["generate", "--from-image", image, "-q", "--output-dir", str(tmp_path / "out")])
    assert again.exit_code == 0, again.output
    assert "records no thread count" not in again.stderr  # today's images carry the key (null: torch's choice)

    info = PngImagePlugin.PngInfo()  # the same image as pixgen wrote it before it kept a thread count
    for key, value in Image.open(image).text.items():
        if key == META_PREFIX + "config":
            stored = yaml.safe_load(value)
            del stored["threads"]
            value = yaml.safe_dump(stored)
        info.add_text(key, value)
    Image.open(image).save(tmp_path / "old.png", pnginfo=info)
    old = runner.invoke(app, ["generate", "--from-image", str(tmp_path / "old.png"), "-q",
                              "--output-dir", str(tmp_path / "out")])
    assert old.exit_code == 0, old.output
    assert "records no thread count" in old.stderr and "--threads" in old.stderr
    told = runner.invoke(app, ["generate", "--from-image", str(tmp_path / "old.png"), "-q", "--threads", "1",
                               "--output-dir", str(tmp_path / "out")])
    assert told.exit_code == 0 and "records no thread count" not in told.stderr


def test_python_m_pixgen_is_the_same_command_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pixgen", "generate", "a red circle", "--size", "0x64"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "positive width and height" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


REFUSED = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 120000000000 bytes. Error code 12"


def test_out_of_memory_is_an_error_message_not_a_traceback(tmp_path, monkeypatch):
    from pixgen import engine

    def step(self, i):
        raise RuntimeError(REFUSED)

    monkeypatch.setattr(engine.Engine, "step", step)
    result = run(["a castle", *FAST], tmp_path / "out")
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "error: out of memory on the machine while making a 32x32 image with 2 cutouts" in result.output
    assert "hint: ask for less memory: a smaller --size" in result.output


def test_every_command_turns_a_refused_allocation_into_an_error_message(capsys):
    import typer

    from pixgen.cli_util import friendly

    def refused():
        raise RuntimeError(REFUSED)

    def broken():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(typer.Exit) as stopped:
        friendly(refused)()
    assert stopped.value.exit_code == 2
    said = capsys.readouterr().err
    assert "error: out of memory on the machine while running this command: one allocation of 111.8 GiB" in said
    assert "hint: ask for less memory" in said
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # a bug stays a traceback
        friendly(broken)()
