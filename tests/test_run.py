"""End-to-end runs on the random-tiny smoke model: optimisation, outputs, reproducibility, resume."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixgen
from pixgen import api as api_mod
from pixgen import engine as engine_mod
from pixgen.errors import NonFiniteLossError
from pixgen.output import read_png_metadata

QUIET_CUTS = {"n": 8, "augments": [], "noise": 0.0}


def _mean(values):
    return sum(values) / len(values)


def test_optimisation_lowers_the_loss_against_a_text_target():
    r = pixgen.generate("a red circle", model="random-tiny", size=[32, 32], iterations=40, write=False,
                        progress=False, device="cpu", cutouts=QUIET_CUTS, log_every=1, optim={"lr": 0.2})
    losses = [rec["loss"] for rec in r.losses]
    assert len(losses) == 40
    assert _mean(losses[-5:]) < _mean(losses[:5]) * 0.95


def test_optimisation_lowers_the_loss_against_an_image_prompt(tmp_path):
    path = tmp_path / "target.png"
    Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8")).save(path)
    r = pixgen.generate(None, image_prompts=[str(path)], model="random-tiny", size=[32, 32], iterations=40,
                        write=False, progress=False, device="cpu", cutouts=QUIET_CUTS, log_every=1,
                        optim={"lr": 0.2})
    losses = [rec["loss"] for rec in r.losses]
    assert set(r.losses[0]["terms"]) == {"image:target.png"}
    assert _mean(losses[-5:]) < _mean(losses[:5]) * 0.8


def test_run_directory_contents(tiny):
    r = pixgen.generate("a castle | fog:0.5", seed=3, **tiny)
    d = r.run_dir
    assert (d / "image.png").is_file() and (d / "run.yaml").is_file() and (d / "state.pt").is_file()
    assert sorted(p.name for p in (d / "frames").iterdir()) == ["000000.png", "000003.png", "000006.png"]
    records = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in records] == list(range(1, 7))
    assert set(records[0]["terms"]) == {"a castle", "fog"}
    assert records[-1]["loss"] == pytest.approx(sum(records[-1]["terms"].values()))
    assert not [p for p in d.rglob("*") if ".tmp" in p.name]  # atomic writes leave no temporaries


def test_png_carries_prompt_seed_config_and_version(tiny):
    r = pixgen.generate("a castle:2", seed=11, **tiny)
    meta = read_png_metadata(r.run_dir / "image.png")
    assert meta["prompt"] == "a castle:2"
    assert meta["seed"] == "11"
    assert meta["version"] == pixgen.__version__
    assert meta["step"] == "6"
    assert "iterations: 6" in meta["config"] and "seed: 11" in meta["config"]
    assert "output_dir" not in meta["config"]  # where a run is written does not change the image


def test_same_seed_and_config_give_the_same_png_bytes(tiny, tmp_path):
    a = pixgen.generate("a castle", seed=5, **tiny)
    b = pixgen.generate("a castle", seed=5, **{**tiny, "output_dir": str(tmp_path / "other")})
    c = pixgen.generate("a castle", seed=6, **tiny)
    assert (a.run_dir / "image.png").read_bytes() == (b.run_dir / "image.png").read_bytes()
    assert np.asarray(a.image).tobytes() != np.asarray(c.image).tobytes()


def test_from_image_reruns_the_stored_config(tiny):
    from typer.testing import CliRunner

    from pixgen.cli import app

    a = pixgen.generate("a castle | sky:-1", seed=9, **tiny)
    out = CliRunner().invoke(app, ["generate", "--from-image", str(a.run_dir / "image.png"), "-q",
                                   "--output-dir", tiny["output_dir"]])
    assert out.exit_code == 0, out.output
    again = out.stdout.strip().splitlines()[-1]
    assert open(again, "rb").read() == (a.run_dir / "image.png").read_bytes()


def test_video_has_one_frame_per_saved_frame(tiny):
    import imageio.v2 as imageio

    r = pixgen.generate("a castle", video=True, **{**tiny, "iterations": 9})
    frames = sorted((r.run_dir / "frames").iterdir())
    assert len(frames) == 4  # step 0, 3, 6, 9
    reader = imageio.get_reader(r.run_dir / "progress.mp4", format="FFMPEG")
    try:
        count = reader.count_frames()
        first = reader.get_data(0)
    finally:
        reader.close()
    assert count == len(frames)
    assert first.shape == (32, 32, 3)


@pytest.mark.parametrize("clip", [None, ["pixgen-random-tiny@0-0.5", "pixgen-random-tiny::2@0.5-1"]])
def test_interrupt_saves_state_and_resume_matches_an_uninterrupted_run(tiny, tmp_path, generate_ctrl_c, clip):
    if clip:  # stopped just after the handover: the resumed steps must stay with the second CLIP
        tiny = {**tiny, "clip": clip}
    straight = pixgen.generate("a castle", seed=2, **{**tiny, "output_dir": str(tmp_path / "straight")})

    stopped = generate_ctrl_c(3, "a castle", seed=2, **tiny)  # after the 4th step: not on a save boundary
    assert stopped.interrupted
    state = torch.load(stopped.run_dir / "state.pt", weights_only=True)
    assert state["step"] == 4
    assert read_png_metadata(stopped.run_dir / "image.png")["step"] == "4"
    assert (stopped.run_dir / "frames" / "000004.png").is_file()

    resumed = pixgen.resume(stopped.run_dir, progress=False)
    assert resumed.status == "done"
    steps = [json.loads(line)["step"] for line in (stopped.run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert (resumed.run_dir / "image.png").read_bytes() == (straight.run_dir / "image.png").read_bytes()


def test_resume_can_extend_a_finished_run(tiny):
    r = pixgen.generate("a castle", **tiny)
    more = pixgen.resume(r.run_dir, iterations=9, progress=False)
    assert read_png_metadata(more.run_dir / "image.png")["step"] == "9"
    assert len(more.losses) == 3


def test_nan_loss_stops_keeps_last_good_image_and_says_so(tiny, monkeypatch):
    real_losses = engine_mod.Engine.losses

    def poisoned(self, image, targets, step=None):
        labels, terms = real_losses(self, image, targets, step)
        self.calls = getattr(self, "calls", 0) + 1
        return labels, terms * float("nan") if self.calls >= 5 else terms

    monkeypatch.setattr(engine_mod.Engine, "losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="kept the last good image"):
        pixgen.generate("a castle", **tiny)
    run_dir = next((os.path.join(tiny["output_dir"], d) for d in os.listdir(tiny["output_dir"])))
    image = np.asarray(Image.open(os.path.join(run_dir, "image.png")))
    assert np.isfinite(image).all() and image.std() > 0
    assert read_png_metadata(os.path.join(run_dir, "image.png"))["step"] == "4"  # last checked step


def test_a_built_in_model_brings_its_preset_beneath_user_options(tmp_path):
    from pixgen.api import _build_config

    cfg = _build_config("a castle", None, {"model": "random-tiny"}, None)
    assert cfg.iterations == 20 and list(cfg.size) == [64, 64]  # configs/smoke.yaml
    cfg = _build_config("a castle", None, {"model": "random-tiny", "iterations": 3}, ["size=[32,48]"])
    assert cfg.iterations == 3 and list(cfg.size) == [32, 48]
    own = tmp_path / "own.yaml"
    own.write_text("iterations: 7\n")
    assert _build_config("a castle", own, {"model": "random-tiny"}, None).iterations == 7


def test_init_color_starts_from_a_flat_canvas_and_a_chosen_start_replaces_the_presets(tmp_path):
    from pixgen.api import _build_config
    from pixgen.errors import ConfigError
    from pixgen.factory import build_session

    cfg = _build_config("a castle", None, {"model": "random-tiny", "init_color": [200, 30, 30]}, None)
    session = build_session(cfg)
    with torch.no_grad():
        expected = session.generator.vqgan.encode(torch.tensor([200, 30, 30]).div(255).view(1, 3, 1, 1)
                                                  .expand(1, 3, 64, 64) * 2 - 1)
    assert torch.allclose(session.generator.z_init, expected)

    red = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(red)
    # the toy preset starts from a flat background (gray first); a user's init image replaces that start
    assert [list(c) for c in _build_config("a", None, {"model": "toy"}, None).init_color][0] == [128, 128, 128]
    # the toy preset fixes one torch thread (the image can depend on the count); null leaves torch's choice
    assert _build_config("a", None, {"model": "toy"}, None).threads == 1
    assert _build_config("a", None, {"model": "toy"}, ["threads=null"]).threads is None
    assert _build_config("a", None, {"model": "random-tiny"}, None).threads is None
    # and holds its outer frame to the start (weight 5, 3 pixels); other models leave the border term off
    toy = _build_config("a", None, {"model": "toy"}, None)
    assert (toy.border.weight, toy.border.width) == (5.0, 3)
    assert _build_config("a", None, {"model": "random-tiny"}, None).border.weight == 0.0
    cfg = _build_config("a", None, {"model": "toy", "init_image": str(red)}, None)
    assert cfg.init_color is None and cfg.init_image == str(red)
    with pytest.raises(ConfigError, match="both set"):
        pixgen.generate("a", model="random-tiny", init_image=str(red), init_color=[1, 2, 3], write=False, progress=False)
    with pytest.raises(ConfigError, match="three whole numbers 0-255"):
        pixgen.generate("a", model="random-tiny", init_color=[1, 2, 300], write=False, progress=False)
    with pytest.raises(ConfigError, match="three whole numbers 0-255"):
        pixgen.generate("a", model="random-tiny", init_color=[[1, 2, 3], [4, 5]], write=False, progress=False)


def test_several_init_colors_start_from_the_one_the_prompt_scores_best():
    from pixgen.api import _build_config
    from pixgen.factory import _score_flat_starts, build_session

    colours = [[200, 30, 30], [20, 20, 20], [240, 240, 240], [30, 70, 220]]

    def start(cands, seed=0):
        session = build_session(_build_config("a castle", None, {"model": "random-tiny", "init_color": cands,
                                                                  "seed": seed}, None))
        encoded = [session.generator.vqgan.encode(torch.tensor(c).div(255).view(1, 3, 1, 1).expand(1, 3, 64, 64) * 2 - 1)
                   for c in cands]
        hits = [i for i, z in enumerate(encoded) if torch.allclose(session.generator.z_init, z)]
        assert len(hits) == 1
        return session, cands[hits[0]]

    session, chosen = start(colours)
    scores = _score_flat_starts(colours, session.generator.vqgan, 64, 64, session.perceptors,
                                session.engine.targets, session.engine.cutouts, seed=0)
    assert chosen == colours[min(range(4), key=scores.__getitem__)]
    assert len(set(scores)) == 4  # the colours really were told apart
    assert any("best of 4 start colours" in m for m in session.messages)
    assert start(colours[::-1])[1] == chosen  # every candidate is judged on the same crops: order does not matter
    assert start(colours)[1] == chosen  # and the choice is reproducible


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "checkpoints" / "toy" / "clip.pt").exists(),
                    reason="toy weights not present")
@pytest.mark.parametrize("background, rgb", [("black", [20, 20, 20]), ("white", [240, 240, 240])])
def test_toy_preset_starts_from_the_background_the_prompt_names(background, rgb):
    from pixgen.api import _build_config
    from pixgen.factory import build_session

    session = build_session(_build_config(f"a red circle on a {background} background", None, {"model": "toy"}, None))
    assert any(f"started from flat {','.join(map(str, rgb))}" in m for m in session.messages)


@pytest.mark.parametrize("echo", [True, False])
def test_run_notes_are_printed_only_when_echo_is_on_and_always_returned(echo, capsys):
    import pixgen

    result = pixgen.generate("a castle", model="random-tiny", size=[64, 64], iterations=1,
                             init_color=[[20, 20, 20], [240, 240, 240]], write=False, progress=False, echo=echo)
    note = next(m for m in result.messages if "best of 2 start colours" in m)
    assert (f"pixgen: {note}" in capsys.readouterr().err) is echo


def test_runs_in_one_process_reuse_unchanged_models_and_make_the_same_image(tmp_path, monkeypatch):
    from ckpt_fixture import TINY, save_checkpoint, tiny_vqgan, write_yaml

    from pixgen import checkpoints, factory

    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_vqgan(TINY), "lightning")
    yaml_path = write_yaml(tmp_path / "m.yaml")
    clip_file = tmp_path / "clip.pt"
    torch.save(factory.load_perceptor("pixgen-random-tiny").model.state_dict(), clip_file)
    other_clip = tmp_path / "other.pt"
    other_clip.write_bytes(clip_file.read_bytes())
    loads = []
    real_vqgan, real_clip = checkpoints.load_vqgan, factory.load_perceptor
    monkeypatch.setattr(checkpoints, "load_vqgan", lambda *a, **k: loads.append("vqgan") or real_vqgan(*a, **k))
    monkeypatch.setattr(factory, "load_perceptor", lambda *a, **k: loads.append("clip") or real_clip(*a, **k))

    def run(clip=clip_file):
        return pixgen.generate("a castle", vqgan_config=str(yaml_path), vqgan_checkpoint=str(ckpt),
                               clip=[f"pixgen-random-tiny:{clip}"], size=[16, 16], iterations=3, seed=1,
                               write=False, progress=False, device="cpu", cutouts={"n": 2})

    pixgen.release_models()
    first, second = run(), run()
    assert loads == ["vqgan", "clip"]  # the second run loaded nothing
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    stat = clip_file.stat()
    os.utime(clip_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed weights file is read again
    run()
    assert loads == ["vqgan", "clip", "clip"]
    run(other_clip)  # only the latest run's models are kept: going back to the first CLIP loads it again
    run()
    assert loads == ["vqgan", "clip", "clip", "clip", "clip"]
    pixgen.release_models()
    run()
    assert loads[-2:] == ["vqgan", "clip"]


def test_init_noise_makes_seeds_differ_from_a_flat_start_and_stays_reproducible():
    def start(seed, noise):
        r = pixgen.generate("a red circle", model="random-tiny", size=[32, 32], iterations=1, seed=seed,
                            init_color=[128, 128, 128], init_noise=noise, write=False, progress=False, echo=False)
        return np.asarray(r.initial_image).astype(int)

    assert np.array_equal(start(0, 0.0), start(1, 0.0))  # a flat start is the same for every seed
    assert not np.array_equal(start(0, 1.0), start(1, 1.0))
    assert np.array_equal(start(3, 1.0), start(3, 1.0))


def test_no_init_noise_draws_nothing_so_earlier_runs_repeat():
    from pixgen.generators.vqgan import VQGANGenerator
    from pixgen.factory import random_tiny_vqgan
    from pixgen.ops import flat_canvas

    vqgan, flat = random_tiny_vqgan(), flat_canvas([[128, 128, 128]], 32, 32)
    torch.manual_seed(0)
    clean = VQGANGenerator(vqgan, 32, 32, init=flat)
    after = torch.rand(1)
    torch.manual_seed(0)
    noisy = VQGANGenerator(vqgan, 32, 32, init=flat, noise=2.0)
    assert torch.rand(1) != after  # the noise came from the global RNG
    torch.manual_seed(0)
    VQGANGenerator(vqgan, 32, 32, init=flat, noise=0.0)
    assert torch.rand(1) == after  # none drawn without noise
    assert not torch.equal(clean.z, noisy.z)
    assert torch.all(noisy.z >= noisy.z_min) and torch.all(noisy.z <= noisy.z_max)


def test_negative_init_noise_is_refused():
    from pixgen.errors import ConfigError

    with pytest.raises(ConfigError, match="init_noise"):
        pixgen.generate("a red circle", model="random-tiny", init_noise=-1, write=False, progress=False)


def test_a_batch_makes_each_seeds_config_when_its_turn_comes_and_can_keep_only_the_latest(tiny, monkeypatch):
    import pixgen.api as api

    seen = []

    def fake_execute(cfg, **kwargs):  # stands in for a run; the third one is stopped by Ctrl-C
        seen.append((cfg.prompt, int(cfg.seed)))
        return api.Result(image=None, initial_image=None, run_dir=None, losses=[], config=cfg,
                          status="interrupted" if len(seen) == 3 else "done")

    monkeypatch.setattr(api, "_execute", fake_execute)
    reported = []
    # a million images of each prompt: built up front, their configs alone would take many minutes
    results = pixgen.generate_many(["a", "b"], count=10 ** 6, seed=7, keep=False, on_result=reported.append, **tiny)
    assert seen == [("a", 7), ("a", 8), ("a", 9)]
    assert len(reported) == 3 and results == [reported[-1]] and results[0].interrupted
    seen.clear()
    kept = pixgen.generate_many(["a", "b"], count=2, seed=7, **tiny)  # keep=True: every run, in order
    assert [int(r.config.seed) for r in kept] == [7, 8, 7] and [r.config.prompt for r in kept] == ["a", "a", "b"]


CPU_REFUSAL = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
               "to allocate 120000000000 bytes. Error code 12 (Cannot allocate memory)")


def test_allocation_failures_are_recognised_and_sized():
    from pixgen.errors import is_out_of_memory, out_of_memory

    assert is_out_of_memory(RuntimeError(CPU_REFUSAL)) and is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has ..."))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"))
    cpu = out_of_memory(RuntimeError(CPU_REFUSAL), "doing X", "lower Y")
    assert cpu.message == "out of memory on the machine while doing X: one allocation of 111.8 GiB was refused"
    gpu = out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0"), "doing X", "h")
    assert gpu.message.endswith("on the GPU while doing X: one allocation of 2.50 GiB was refused")


def test_a_refused_allocation_mid_run_is_a_clear_error_that_keeps_the_run(tiny, monkeypatch):
    from pixgen.errors import OutOfMemory

    real_step = engine_mod.Engine.step

    def step(self, i):
        if i == 4:
            raise RuntimeError(CPU_REFUSAL)
        return real_step(self, i)

    monkeypatch.setattr(engine_mod.Engine, "step", step)
    with pytest.raises(OutOfMemory) as caught:
        pixgen.generate("a castle", **tiny)
    run_dir = Path(tiny["output_dir"]) / os.listdir(tiny["output_dir"])[0]
    assert "32x32 image with 4 cutouts per step: one allocation of 111.8 GiB" in caught.value.message
    assert f"kept in {run_dir}" in caught.value.hint and "--size" in caught.value.hint
    assert read_png_metadata(run_dir / "image.png")["step"] == "3"  # the last save_every step
    monkeypatch.setattr(engine_mod.Engine, "step", real_step)

    def refuse(*args, **kwargs):
        raise RuntimeError(CPU_REFUSAL)

    monkeypatch.setattr(api_mod, "build_session", refuse)  # a resume refused memory before its first step
    with pytest.raises(OutOfMemory) as caught:
        pixgen.resume(run_dir, progress=False)
    assert f"kept in {run_dir}" in caught.value.hint
    monkeypatch.undo()
    assert read_png_metadata(pixgen.resume(run_dir, progress=False).run_dir / "image.png")["step"] == "6"


def test_other_runtime_errors_are_not_called_out_of_memory(tiny, monkeypatch):
    def step(self, i):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")

    monkeypatch.setattr(engine_mod.Engine, "step", step)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        pixgen.generate("a castle", **tiny)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="file modes are POSIX")
def test_outputs_get_the_permissions_of_a_plain_new_file_not_owner_only(tiny):
    from pixgen.atomic import NEW_FILE_MODE as _NEW_FILE_MODE

    mask = os.umask(0)
    os.umask(mask)
    assert _NEW_FILE_MODE == 0o666 & ~mask
    r = pixgen.generate("a castle", **tiny)
    for name in ("image.png", "run.yaml", "state.pt"):
        assert (r.run_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_resume_that_changes_the_length_is_recorded_and_its_image_remade(tiny, tmp_path, generate_ctrl_c):
    # The toy model hands over between its image towers at 60% of the run: steps 1-4 of a run stopped at 4 of 6 and
    # resumed to 10 followed the 6-step schedule, which the config alone would not say.
    toy = {"model": "toy", "iterations": 6, "save_every": 3, "output_dir": tiny["output_dir"], "progress": False}
    stopped = generate_ctrl_c(3, "a red circle", seed=4, **toy)
    longer = pixgen.resume(stopped.run_dir, iterations=10, progress=False)
    finished = pixgen.resume(longer.run_dir, iterations=12, progress=False)
    meta = read_png_metadata(finished.run_dir / "image.png")
    assert "resumed:\n- - 4\n  - 6\n- - 10\n  - 10\n" in meta["config"] and meta["step"] == "12"

    from pixgen.config import from_yaml_text

    stored = from_yaml_text(meta["config"], "image.png")
    again = pixgen.generate(base=stored, output_dir=str(tmp_path / "again"), progress=False)
    assert (again.run_dir / "image.png").read_bytes() == (finished.run_dir / "image.png").read_bytes()
    in_memory = pixgen.generate(base=stored, write=False, progress=False)
    assert in_memory.run_dir is None and in_memory.image.tobytes() == finished.image.tobytes()
    assert in_memory.initial_image.tobytes() == stopped.initial_image.tobytes()
    plain = pixgen.generate(base=from_yaml_text(meta["config"].replace("resumed:", "old:").split("old:")[0],
                                                "image.png"), write=False, progress=False)
    assert plain.image.tobytes() != finished.image.tobytes()  # so the replay is what made it match


def test_resume_refuses_a_length_below_the_steps_done(tiny):
    r = pixgen.generate("a castle", **tiny)
    with pytest.raises(pixgen.PixgenError, match="already at step 6") as err:
        pixgen.resume(r.run_dir, iterations=3, progress=False)
    assert "--iterations 6 or more" in err.value.hint
    assert "iterations: 6" in (r.run_dir / "run.yaml").read_text()


def test_resume_remakes_the_frames_folder_if_it_was_removed(tiny, generate_ctrl_c):
    import shutil

    stopped = generate_ctrl_c(3, "a castle", seed=2, **tiny)
    shutil.rmtree(stopped.run_dir / "frames")
    resumed = pixgen.resume(stopped.run_dir, progress=False)
    assert resumed.status == "done" and (stopped.run_dir / "frames" / "000006.png").is_file()


def test_input_images_are_stored_by_absolute_path_and_recorded_by_content(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32), (200, 40, 40)).save("start.png")
    Image.new("RGB", (32, 32), (40, 40, 200)).save("ref.png")
    r = pixgen.generate("a castle", init_image="start.png", image_prompts=["ref.png:0.5"], **tiny)
    meta = read_png_metadata(r.run_dir / "image.png")
    assert f"init_image: {tmp_path / 'start.png'}" in meta["config"]
    assert f"{tmp_path / 'ref.png'}:0.5" in meta["config"]
    record = json.loads(meta["weights"])
    assert set(record) >= {"start.png", "ref.png"}
    Image.new("RGB", (32, 32), (0, 0, 0)).save("start.png")
    from pixgen.config import from_yaml_text

    again = pixgen.generate(base=from_yaml_text(meta["config"], "x"), write=False, progress=False,
                            made_with=record, echo=False)
    assert any("start.png is now" in m for m in again.messages)


@pytest.mark.parametrize("call, says", [
    (lambda: pixgen.generate_many("a castle", model="random-tiny"), "prompts must be a list of prompts"),
    (lambda: pixgen.generate_many(["a castle"], count="2", model="random-tiny"), "count must be a whole number"),
    (lambda: pixgen.generate_many(["a castle", 3], model="random-tiny"), "prompt must be text or None"),
    (lambda: pixgen.generate("a castle", overrides="optim.lr=0.2", model="random-tiny"),
     "overrides must be a list of 'key=value' strings"),
    (lambda: pixgen.generate(["a castle"], model="random-tiny"), "prompt must be text or None"),
    (lambda: pixgen.resume(5), "run_dir must be a run directory"),
    (lambda: pixgen.resume("somewhere", iterations="x"), "iterations must be a whole number or None"),
])
def test_api_arguments_of_the_wrong_type_are_named(call, says):
    with pytest.raises(pixgen.PixgenError, match=says) as err:
        call()
    assert "help(pixgen." in err.value.hint


def test_a_replay_stopped_before_its_last_stretch_is_not_offered_as_resumable(tiny, tmp_path, generate_ctrl_c):
    from pixgen.config import from_yaml_text

    toy = {"model": "toy", "iterations": 6, "save_every": 3, "output_dir": tiny["output_dir"], "progress": False}
    first = pixgen.generate("a red circle", seed=4, **toy)
    pixgen.resume(first.run_dir, iterations=10, progress=False)
    stored = from_yaml_text((first.run_dir / "run.yaml").read_text(), "run.yaml")
    # Ctrl-C in the first stretch: a plain resume would run it to 6 steps and stop, not go on to 10
    early = generate_ctrl_c(2, base=stored, output_dir=str(tmp_path / "early"), progress=False)
    assert early.interrupted and not early.resumable
    # in the last stretch it resumes as any run does
    late = generate_ctrl_c(8, base=stored, output_dir=str(tmp_path / "late"), progress=False)
    assert late.interrupted and late.resumable
    done = pixgen.resume(late.run_dir, progress=False)
    assert done.image.tobytes() == pixgen.resume(first.run_dir, progress=False).image.tobytes()
