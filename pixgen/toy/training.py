"""Shared plumbing of the toy training scripts: device, seeding, resumable state, JSONL training logs, and the
toy VQGAN that several of them use."""
from __future__ import annotations

import ctypes
import json
import math
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pixgen.atomic import atomic_text, atomic_torch_save
from pixgen.errors import Interrupted, NonFiniteLossError, PixgenError

__all__ = ["pick_device", "seed_everything", "TrainLog", "save_state", "load_state", "batch_images",
           "load_toy_vqgan", "reconstruct", "release_freed_memory", "cosine_decay", "check_out_files", "load_resume",
           "check_resume", "mark_complete", "RunComplete"]


def cosine_decay(step: int, steps: int, floor: float = 0.0) -> float:
    """Learning-rate factor at ``step`` of a half-cosine from 1 (step 0) down to ``floor`` (step ``steps``)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / steps))


def pick_device(device: str | None = None) -> torch.device:
    """The requested device (checked: a clear error for an unknown or absent one), else CUDA when present, else
    CPU; on CUDA, deterministic kernels are asked for, so that a seed reproduces its weights there too."""
    from pixgen.factory import make_reproducible, resolve_device

    name = (device or "auto").strip().lower()
    if name == "auto":  # training never picks mps by itself, unlike generation's auto
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = resolve_device(name)
    make_reproducible(dev)
    return dev


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` from the running process, or None (another C library, or Windows)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # TypeError: Windows cannot open the running process by None
        return None


def release_freed_memory() -> bool:
    """Hand heap memory that torch has freed back to the OS (glibc ``malloc_trim``); False where unavailable.

    CPU training makes tensors of ever-changing sizes (batches of varying length, chains, crops); glibc keeps
    the freed pieces in its heap, and a one-thread run with chains grew by about 15 MB a step until the kernel
    killed it near 13 GB (step 670). Trimming every 10 steps slows that about tenfold: the same kind of run
    held 3.9 GB at step 1326 (``benchmarks/toy_train_memory.py``; the growth left is not yet understood).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return a numpy generator for data sampling."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def batch_images(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 HWC images -> float (B, 3, H, W) in [0, 1] on ``device``."""
    arr = np.stack(images).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device)


class TrainLog:
    """Appends one JSON object per line: step, wall seconds since the first run started, and metrics.

    Resuming at step ``start`` drops the rows of steps from ``start`` on, written after the state it resumes from
    was saved (a run killed between saves), so each step is logged once; the wall clock still counts their time.
    """

    def __init__(self, path: str | os.PathLike, resume: bool, start: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.path.exists():
            self.path.unlink()
        self.offset = 0.0
        if resume and self.path.exists():
            rows, torn = self._rows()
            if rows:
                self.offset = max(float(r.get("wall_s", 0.0)) for r in rows)
            kept = rows if start is None else [r for r in rows if r.get("step", 0) < start]
            if len(kept) < len(rows) or torn:
                atomic_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.t0 = time.time()

    def _rows(self) -> tuple[list[dict], bool]:
        """The rows logged so far, and whether the last line was torn (a run killed while writing it): that line
        is left out, as its step runs again. Any other unreadable line is an error naming it."""
        lines = [(n, ln) for n, ln in enumerate(self.path.read_text(errors="replace").splitlines(), 1) if ln.strip()]
        rows, torn = [], False
        for i, (number, line) in enumerate(lines):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            elif i == len(lines) - 1:
                torn = True
            else:
                raise PixgenError(f"line {number} of the training log {self.path} is not a log row: {line[:60]!r}",
                                  "delete that line (or the whole log) and resume again")
        return rows, torn

    def elapsed(self) -> float:
        return self.offset + time.time() - self.t0

    def write(self, step: int, **metrics: Any) -> None:
        row = {"step": step, "wall_s": round(self.elapsed(), 2)}
        row.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


STOP_NOTICE = "stopping after this training step and saving its state"


def halt_requested(stop: "Callable[[], bool] | None") -> bool:
    """Whether a trainer's ``stop`` callback (Ctrl-C on the command line) asks it to save and stop now."""
    return stop is not None and bool(stop())


def stopped_at(step: int, steps: int, out: str | os.PathLike) -> Interrupted:
    """What a trainer raises once it has saved after a stop was asked for."""
    return Interrupted(f"training stopped after step {step} of {steps}; the weights so far and the state to resume "
                       f"from are in {out}", "run the same command with --resume to go on")


def lower_lr(lr: float, flag: str | None = "--lr") -> str:
    """The hint of a diverged training whose command sets its learning rate with ``flag`` (None: a command with no
    such option, whose lr only Python callers set)."""
    if flag is None:
        return f"train again with another --seed (or, from Python, a lower lr than {lr:g})"
    return f"train again with a lower {flag} than {lr:g}, e.g. {flag} {lr / 10:g}"


def check_finite(step: int, steps: int, hint: str, *, losses: tuple[torch.Tensor, ...] = (),
                 weights: tuple[torch.nn.Module, ...] = (), dtype: torch.dtype = torch.float32) -> None:
    """Stop a training that has blown up, as generation stops on a non-finite loss: a NonFiniteLossError
    naming the step when one of ``losses`` (checked before the step updates the weights) is NaN or infinite, or
    when a weight of ``weights`` (checked before they are saved) is not finite in the ``dtype`` it is saved in
    (float16 overflows to infinity above 65504). Nothing of that step is saved, so the weights saved before it
    are kept."""
    for loss in losses:
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"training diverged: the loss became {value} at step {step + 1} of {steps}; "
                                     "stopped without saving that step (weights saved before it are kept)", hint)
    for module in weights:
        for name, value in module.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value.detach().to(dtype)).all():
                raise NonFiniteLossError(f"training diverged: the weights ({name}) became NaN or too large to save "
                                         f"at step {step + 1} of {steps}; stopped without saving them (weights "
                                         "saved before are kept)", hint)


def save_state(path: str | os.PathLike, **state: Any) -> None:
    """Write a resumable training state atomically (tmp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, path)


def log_and_save(step: int, steps: int, loss: torch.Tensor, *, log: "TrainLog", bar, log_every: int,
                 save_every: int, state_path: str | os.PathLike, model: torch.nn.Module,
                 opt: torch.optim.Optimizer, rng: np.random.Generator, gen: torch.Generator,
                 halt: bool = False, diverged_hint: str = "train again with a lower learning rate",
                 **extra: Any) -> bool:
    """End of a one-loss training step: log the loss every ``log_every`` steps (and at the last), save the
    resumable state (with ``extra``) every ``save_every`` steps, at the last and when ``halt``, once its weights are
    checked to be finite in float16 (:func:`check_finite`; the trainers save them so). Returns whether it saved."""
    if step % log_every == 0 or step == steps - 1 or halt:
        log.write(step, loss=loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
    if (step + 1) % save_every == 0 or step == steps - 1 or halt:
        check_finite(step, steps, diverged_hint, weights=(model,), dtype=torch.float16)
        save_state(state_path, model=model.state_dict(), opt=opt.state_dict(), rng=rng.bit_generator.state,
                   gen=gen.get_state(), step=step + 1, **extra)
        return True
    return False


def load_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The training state saved at ``path`` (None if there is none), or a PixgenError if it cannot be read."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimizer and RNG states
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways; the fix is the same
        raise PixgenError(f"cannot read the training state {path} to resume from ({type(exc).__name__}): it is "
                          "truncated or corrupt", f"delete {path} to train from the start, or train into a new "
                          "--out") from None
    if not isinstance(state, dict) or "step" not in state:
        raise PixgenError(f"{path} is not a pixgen training state", f"delete {path}, or train into a new --out")
    return state


def restore(state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
            gen: torch.Generator | None = None, path: str | os.PathLike | None = None) -> int:
    """Put a saved training state back into the model, optimizer and random generators; return its step. A state
    that does not fit them (saved by another trainer, or with other options, before states recorded those) is
    a PixgenError naming ``path``."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    except (KeyError, RuntimeError, ValueError) as exc:
        where = f"the training state {path}" if path is not None else "the training state"
        raise PixgenError(f"{where} does not fit this run: {str(exc).strip().splitlines()[0][:160]}",
                          "resume with the options the run was started with, or train into a new --out") from None
    rng.bit_generator.state = state["rng"]
    if gen is not None:
        gen.set_state(state["gen"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


class RunComplete(PixgenError):
    """A --resume of a run that has nothing left to do: it trained all its steps and wrote all its outputs."""


def check_out_files(out: str | os.PathLike, *files: str | os.PathLike) -> None:
    """Refuse, before any training, a folder where a trainer writes one of its ``files`` under ``out``, or a file
    where it puts their folder (such as ``OUT/state``): either would fail its first save, after the work."""
    out = Path(out)
    for path in map(Path, files):
        for folder in path.parents:
            if folder == out:
                break
            if folder.exists() and not folder.is_dir():
                raise PixgenError(f"{folder} is a file, where the trainer keeps a folder for {path.name}",
                                  f"move or delete {folder}, or train into a new --out")
        if path.is_dir():
            raise PixgenError(f"{path} is a directory, where the trainer writes a file",
                              f"move or delete {path}, or train into a new --out")


def load_resume(path: str | os.PathLike, out: str | os.PathLike, trainer: str) -> dict[str, Any]:
    """The state that a --resume of ``pixgen toy train TRAINER`` goes on from: refused when ``out`` holds none, or
    when it was saved by another trainer."""
    path = Path(path)
    state = load_state(path)
    if state is None:
        raise PixgenError(f"nothing to resume in {out}: it holds no saved state of `pixgen toy train {trainer}` "
                          f"({path} does not exist)", "run without --resume to start")
    saved_by = state.get("trainer", trainer)  # states from before they recorded it: restore() checks the fit
    if saved_by != trainer:
        raise PixgenError(f"{path} is the state of a `pixgen toy train {saved_by}` run, not of a `pixgen toy train "
                          f"{trainer}` one",
                          f"move or delete {path}, or train into a new --out")
    return state


def _option(key: str, value: Any, flags: dict[str, str]) -> str:
    """A setting as the command line gives it (``--batch 4``), or as ``key=value`` where it has no option."""
    flag = flags.get(key, "--" + key.replace("_", "-"))
    if not flag.startswith("--"):
        return f"{flag}={value!r}"
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    if value is None:
        return f"no {flag}"
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, (tuple, list)):
        value = ";".join(",".join(map(str, v)) for v in value) if value and isinstance(value[0], (tuple, list)) \
            else ",".join(map(str, value))
    return f"{flag} {value}"


def check_resume(state: dict[str, Any], out: str | os.PathLike, steps: int, settings: dict[str, Any],
                 flags: dict[str, str] | None = None) -> None:
    """Refuse a --resume whose ``settings`` (those that define the run: seed, batch, learning rate, ...) differ
    from the ones the state was saved with, naming them with their values (``flags``: the option of each key
    where it is not ``--key``); refuse fewer ``steps`` than the state has done, and raise :class:`RunComplete`
    when it has done them all (and, where it records that, written what comes after: ``complete``). States from
    before settings were recorded resume unchecked."""
    flags = flags or {}
    saved = state.get("settings")
    if isinstance(saved, dict):
        differ = [k for k in settings if k in saved and saved[k] != settings[k]]
        if differ:
            was = " ".join(_option(k, saved[k], flags) for k in differ)
            now = " ".join(_option(k, settings[k], flags) for k in differ)
            hint = f"resume with {was}, or train into a new --out"
            if "steps" in differ:
                hint += " (the learning-rate schedule runs over --steps: a run cannot be made longer or shorter)"
            raise PixgenError(f"the run in {out} was started with {was}, not {now}", hint)
    done = int(state["step"])
    if done > steps:
        raise PixgenError(f"the run in {out} has done {done} steps, more than --steps {steps}",
                          f"resume with --steps {done} or more, or train into a new --out")
    if done == steps and state.get("complete", True):
        raise RunComplete(f"nothing to resume: the run in {out} is complete ({done} of {steps} steps); its files "
                          "are left as they are", "train into a new --out, or drop --resume to train it again")


def mark_complete(path: str | os.PathLike) -> None:
    """Record in the state at ``path`` that its run wrote everything that follows its last step (a held-out
    report, say): a --resume then has nothing left to do (:func:`check_resume`)."""
    state = load_state(path)
    if state is not None:
        save_state(path, **{**state, "complete": True})


def load_toy_vqgan(directory: str | os.PathLike, device: torch.device | str = "cpu", hint: str | None = None):
    """The toy VQGAN from ``directory/vqgan.{yaml,ckpt}``, frozen, in eval mode (read like any taming
    checkpoint, without the safetensors cache copy: training directories change under it). One that cannot be
    read is a PixgenError with ``hint`` (default: train it again or copy the shipped one), not the hint of a
    downloaded model: the user trained this one."""
    from pixgen.checkpoints import load_vqgan

    directory = Path(directory)
    try:
        return load_vqgan(directory / "vqgan.yaml", directory / "vqgan.ckpt", device=device, cache=False)
    except PixgenError as exc:
        exc.hint = hint or (f"train it again with `pixgen toy train vqgan --out {directory}`, or copy the shipped "
                            "toy VQGAN's checkpoints/toy/vqgan.yaml and vqgan.ckpt there")
        raise


@torch.no_grad()
def reconstruct(vqgan, x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] through the VQGAN (encode, quantize, decode), back in [0, 1]."""
    return ((vqgan(x * 2 - 1) + 1) / 2).clamp(0, 1)
