"""Devices: clear errors for a device that is unknown or absent, deterministic kernels on CUDA, and (on a machine
with a GPU only) generation, evaluation and every toy trainer run on CUDA, reproducibly.

The CUDA tests are marked ``gpu`` and skip where no GPU is present, as in CI; run them on a GPU machine with
``python -m pytest -q -m gpu tests/test_device.py`` (``benchmarks/gpu/session.sh`` does, on the lent device).
``PIXGEN_TEST_DEVICE=cpu`` runs the same tests on the CPU, to check the tests themselves where no GPU is.
"""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"
DEVICE = os.environ.get("PIXGEN_TEST_DEVICE", "cuda")
on_device = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def restore_determinism(monkeypatch):
    """Put PyTorch's process-wide determinism flags back after a test that sets them."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def test_cuda_runs_ask_for_deterministic_kernels_and_other_devices_are_left_alone(restore_determinism, monkeypatch):
    import os

    from pixgen.factory import make_reproducible

    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    make_reproducible(torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ

    make_reproducible(torch.device("cuda"))  # only flags and the environment: no GPU is touched
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # an op without a deterministic kernel warns
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own setting is kept
    make_reproducible(torch.device("cuda:0"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("device, says", [("gpu", "unknown device 'gpu'"), ("cuda:x", "unknown device 'cuda:x'"),
                                          ("cuda", "CUDA is not available")])
def test_toy_training_refuses_an_unknown_or_absent_device_before_training(tmp_path, device, says):
    from typer.testing import CliRunner

    from pixgen.cli import app

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(app, ["toy", "train", "evaluator", "--out", str(tmp_path), "--device", device,
                                      "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert says in result.output and "--device cpu" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "state").exists()  # refused before any training started


def test_toy_training_takes_auto_as_the_default_device(tmp_path):
    from pixgen.toy.training import pick_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected and pick_device(None).type == expected
    assert pick_device(" CPU ").type == "cpu"


# ---- on a GPU only ---------------------------------------------------------------------------------------------


def _generate(device: str, iterations: int, seed: int = 0, size: int = 64):
    import pixgen

    return pixgen.generate("a red circle above a blue square", model="toy", size=[size, size], iterations=iterations,
                           seed=seed, device=device, write=False, progress=False, echo=False)


@pytest.mark.gpu
@on_device
def test_generation_on_cuda_is_reproducible_and_agrees_with_the_cpu():
    first, second = _generate(DEVICE, 20), _generate(DEVICE, 20)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))  # same seed, same GPU: same image
    other = _generate(DEVICE, 20, seed=1)
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    # one step from the same flat start: float rounding apart, the GPU and the CPU take the same step
    gpu_one, cpu_one = _generate(DEVICE, 1), _generate("cpu", 1)
    diff = np.abs(np.asarray(gpu_one.image, dtype=np.float32) - np.asarray(cpu_one.image, dtype=np.float32)) / 255
    assert diff.mean() < 0.02, diff.mean()


@pytest.mark.gpu
@on_device
def test_a_coarse_run_on_cuda_grows_and_is_reproducible():
    first, second = _generate(DEVICE, 20, size=128), _generate(DEVICE, 20, size=128)  # the preset composes at 64
    assert any("composing at 64x64" in m for m in first.messages)
    assert first.image.size == (128, 128)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))


@pytest.mark.gpu
@on_device
def test_eval_suite_runs_on_cuda(tmp_path):
    from pixgen.toy.evaluate import run_suite

    report = run_suite(seeds=[0], iterations=4, out=tmp_path, max_per_category=1, progress=False, device=DEVICE,
                       threads=1)
    assert len(report["rows"]) == 8 and (report["machine"]["cuda"] or DEVICE == "cpu")
    assert (tmp_path / "results.json").is_file() and (tmp_path / "contact_sheet.png").is_file()
    # --jobs: each worker process opens the GPU on its own; the rows are those of one process
    jobs = run_suite(seeds=[0], iterations=4, out=tmp_path / "jobs", max_per_category=1, progress=False,
                     device=DEVICE, jobs=2)
    fields = ("prompt", "read", "strict_read", "final_loss")
    assert [[r[k] for k in fields] for r in jobs["rows"]] == [[r[k] for k in fields] for r in report["rows"]]


def _copy_vqgan(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("vqgan.ckpt", "vqgan.yaml"):
        shutil.copy(TOY / name, d / name)
    return d


def _trainers():
    """Each toy trainer with tiny settings and every option that moves work to the device turned on."""
    from pixgen.toy.prior import train_prior
    from pixgen.toy.train_clip import train_clip
    from pixgen.toy.train_evaluator import train_evaluator
    from pixgen.toy.train_vqgan import train_decoder_gan, train_vqgan

    common = dict(threads=None, log_every=1, save_every=1, progress=False)
    clip = dict(batch=6, negatives=1, junk=2, chains=3, chain_flat=0.5, chain_render=0.5, roundtrip_p=0.5,
                init=TOY / "clip.pt", lr=1e-4, warmup=1, aux_layout=1.0, aux_relation=1.0, fade=0.5, robust=0.5,
                warp=0.5, align=0.6, align_clutter=0.5, align_latent=True, cut_p=0.5, lock_text=True)
    return {
        "vqgan": (lambda out, **kw: train_vqgan(out, batch=4, **common, **kw), "vqgan.ckpt"),
        "decoder": (lambda out, **kw: train_decoder_gan(TOY, out, batch=2, critic_warmup=1, **common, **kw),
                    "vqgan.ckpt"),
        "clip": (lambda out, **kw: train_clip(_copy_vqgan(out), **clip, **common, **kw), "clip.pt"),
        "evaluator": (lambda out, **kw: train_evaluator(_copy_vqgan(out), batch=4, recon_pool=8, **common, **kw),
                      "evaluator.safetensors"),
        "prior": (lambda out, **kw: train_prior(_copy_vqgan(out), batch=4, **common, **kw), "prior.safetensors"),
    }


@pytest.mark.gpu
@on_device
@pytest.mark.parametrize("name", ["vqgan", "decoder", "clip", "evaluator", "prior"])
def test_every_toy_trainer_runs_on_cuda_and_an_interrupted_run_resumes_to_the_straight_one(tmp_path, name,
                                                                                          monkeypatch):
    import importlib

    train, weights = _trainers()[name]
    module = importlib.import_module({"vqgan": "pixgen.toy.train_vqgan", "decoder": "pixgen.toy.train_vqgan",
                                      "clip": "pixgen.toy.train_clip", "evaluator": "pixgen.toy.train_evaluator",
                                      "prior": "pixgen.toy.prior"}[name])
    if name == "evaluator":  # its held-out report runs on the CPU whatever the device, and takes a minute there
        monkeypatch.setattr(module, "heldout_accuracy", lambda model, vqgan=None: {"exact": 0.0})
    train(tmp_path / "straight", steps=3, device=DEVICE)
    real_tqdm = module.tqdm
    monkeypatch.setattr(module, "tqdm", lambda it, **kw: real_tqdm(list(it)[:2], **kw))  # cut off after two steps
    train(tmp_path / "stopped", steps=3, device=DEVICE)
    monkeypatch.setattr(module, "tqdm", real_tqdm)
    train(tmp_path / "stopped", steps=3, device=DEVICE, resume=True)

    def weights_of(d: Path) -> dict:
        if weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(d / weights)
        state = torch.load(d / weights, map_location="cpu", weights_only=False)
        return state.get("state_dict", state)

    a, b = weights_of(tmp_path / "straight"), weights_of(tmp_path / "stopped")
    tensors = [k for k in a if torch.is_tensor(a[k])]
    assert tensors and all(torch.isfinite(a[k].float()).all() for k in tensors)
    assert all(torch.equal(a[k], b[k]) for k in tensors)  # deterministic kernels: the resumed run is the straight one
    log = next((tmp_path / "straight").glob("*.log.jsonl"))
    assert len(log.read_text().splitlines()) >= 3 and next((tmp_path / "stopped").glob("*.log.jsonl")).name == log.name


@pytest.mark.parametrize("deterministic, calls", [(True, 1), (False, 0)])
def test_a_run_asks_for_deterministic_kernels_unless_its_config_opts_out(monkeypatch, deterministic, calls):
    import pixgen
    import pixgen.factory as factory

    seen = []
    monkeypatch.setattr(factory, "make_reproducible", lambda device: seen.append(device))
    result = pixgen.generate("a red circle", model="random-tiny", size=[32, 32], iterations=1, device="cpu",
                             write=False, progress=False, echo=False, deterministic=deterministic)
    assert seen == [torch.device("cpu")] * calls
    assert result.config.deterministic is deterministic  # and the config every output carries records the choice
