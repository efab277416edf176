"""The Python API: ``generate`` a new run, ``resume`` an interrupted one. No argument parsing here."""
from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from pixgen import __version__
from pixgen import config as config_mod
from pixgen.engine import StepState
from pixgen.errors import ConfigError, PixgenError, is_out_of_memory, out_of_memory
from pixgen.interrupt import ctrl_c_stops_after_step
from pixgen.prompts import parse_prompt, parse_story
from pixgen.factory import Session, build_session, torch_threads, weights_changes
from pixgen.output import (CONFIG_NAME, LOG_NAME, STATE_NAME, RunWriter, atomic_write, frame_paths,
                           make_run_dir, metadata_for, to_pil, truncate_log)


@dataclass
class Result:
    """What a run produced. ``image`` is the final (or last saved) image; ``initial_image`` the random start."""

    image: Image.Image
    initial_image: Image.Image | None
    run_dir: Path | None
    losses: list[dict]
    config: DictConfig
    status: str = "done"  # done | interrupted
    messages: list[str] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)  # weights file name -> SHA-256 prefix (or "tag")
    # False for a run stopped while its config's recorded resumes were replayed: `pixgen resume` cannot repeat the
    # stops still to come, so it is made again from the start instead
    resumable: bool = True

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"


class _Recorder:
    """Keeps the loss records in memory for ``Result.losses``."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_step(self, state: StepState) -> None:
        pass

    def on_log(self, state: StepState) -> None:
        self.records.extend(state.records)

    def on_end(self, state: StepState, reason: str) -> None:
        pass


class _ProgressBar:
    """A tqdm bar with step, loss and it/s; the loss is refreshed whenever the engine reads losses back."""

    def __init__(self, total: int, start: int, desc: str = "pixgen"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, desc=desc, unit="it", dynamic_ncols=True, file=sys.stderr)

    def on_step(self, state: StepState) -> None:
        self.bar.update(state.step - self.bar.n)

    def on_log(self, state: StepState) -> None:
        if state.records:
            self.bar.set_postfix(loss=f"{state.records[-1]['loss']:.4f}", refresh=False)

    def on_end(self, state: StepState, reason: str) -> None:
        self.bar.close()


def _state_fn(session: Session):
    def state(step: int) -> dict[str, Any]:
        out = {
            "step": step,
            "z": session.generator.z.detach().cpu().clone(),
            "z_init": session.generator.z_init.detach().cpu().clone(),
            "optimizer": session.engine.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if session.device.type == "cuda":
            out["rng_cuda"] = torch.cuda.get_rng_state(session.device)
        return out

    return state


def _build_config(prompt: str | None, config: str | Path | None, overrides: dict[str, Any],
                  dotted: list[str] | None, base: DictConfig | None = None) -> DictConfig:
    layers: list[tuple[Any, str]] = []
    if base is not None:
        layers.append((base, "the stored config"))
    if config is not None:
        path = config_mod.resolve_preset(str(config))
        layers.append((config_mod.load_file(path), str(path)))
    nested = OmegaConf.create({})
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        OmegaConf.update(nested, key, value, force_add=True)
    if prompt is not None:
        nested.prompt = prompt
    layers.append((nested, "the options"))
    if dotted:
        layers.append((config_mod.parse_dotted(list(dotted)), "--set overrides"))
    cfg = config_mod.build(*layers)
    preset = config_mod.MODEL_PRESETS.get(cfg.model)
    if preset is not None and base is None:
        # A built-in model brings its own tuned defaults, beneath everything the user gave.
        path = config_mod.resolve_preset(preset)
        defaults = config_mod.load_file(path)
        # a start the user chose (image or flat colour) replaces the preset's other kind of start
        if cfg.init_image and "init_color" in defaults:
            del defaults["init_color"]
        if cfg.init_color is not None and "init_image" in defaults:
            del defaults["init_image"]
        cfg = config_mod.build((defaults, str(path)), *layers)
    _absolute_inputs(cfg)
    return cfg


def _absolute(path: str) -> str:
    """A relative path that names an existing file, made absolute; anything else as it is."""
    p = Path(path).expanduser()
    return str(p.resolve()) if not p.is_absolute() and p.exists() else path


def _absolute_inputs(cfg: DictConfig) -> None:
    """Store the init image's and image prompts' paths absolute, so that a re-run of the stored config
    (``--from-image``) finds them from any folder."""
    if cfg.init_image:
        cfg.init_image = _absolute(cfg.init_image)
    items = []
    for item in cfg.image_prompts:
        terms = parse_prompt(item)
        if any(_absolute(t.text) != t.text for t in terms):
            item = " | ".join(_absolute(t.text) + f":{t.weight!r}" + (f":{t.stop!r}" if t.stop != float("-inf") else "")
                              for t in terms)
        items.append(item)
    cfg.image_prompts = items


def generate(prompt: str | None = None, *, config: str | Path | None = None, overrides: list[str] | None = None,
             base: DictConfig | None = None, write: bool = True, progress: bool = True, echo: bool = True,
             made_with: dict[str, str] | None = None, **options: Any) -> Result:
    """Make an image from a prompt.

    Args:
        prompt: ``"a castle | fog:0.5 | blurry:-1"``; ``^`` separates story phases.
        config: a YAML file or preset name (``configs/NAME.yaml``) applied over the defaults.
        overrides: dotted ``key=value`` strings applied last (``["optim.lr=0.2"]``).
        base: a config to start from (e.g. one read from an earlier PNG).
        write: write a run directory (PNG, frames, log, state); ``False`` keeps everything in memory.
        progress: show a progress bar.
        echo: print the run's notes (a rounded size, the chosen start colour, ...) to stderr; they are in
            ``Result.messages`` either way.
        made_with: the weights record stored with an image this run re-makes (its PNG's ``weights``); if the
            weights now differ, the run says so in its notes, since it will not give the same image.
        **options: config keys, top-level or dotted (``iterations=50``, ``size=[64, 64]``,
            ``**{"optim.lr": 0.2}``).

    Returns:
        Result with the final PIL image, the run directory and the per-step losses.
    """
    _check_types(prompt=(prompt, (str, type(None)), "text or None"), overrides=(overrides, _LIST_OR_NONE, "a list of "
                 "'key=value' strings"), config=(config, (str, Path, type(None)), "a preset name or a path"))
    cfg = _build_config(prompt, config, options, overrides, base)
    return _make(cfg, write=write, progress=progress, echo=echo, made_with=made_with)


_LIST_OR_NONE = (list, tuple, type(None))


def _check_types(**arguments: tuple[Any, tuple[type, ...], str]) -> None:
    """ConfigError naming the first argument whose value is not of its types (name=(value, types, what it takes))."""
    for name, (value, types, what) in arguments.items():
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{name} must be {what}, got {type(value).__name__} {value!r}",
                              f"see help(pixgen.{sys._getframe(1).f_code.co_name.lstrip('_')})")


def generate_many(prompts: list[str | None], *, count: int = 1, config: str | Path | None = None,
                  overrides: list[str] | None = None, base: DictConfig | None = None, progress: bool = True,
                  echo: bool = True, made_with: dict[str, str] | None = None,
                  on_result: Callable[[Result], None] | None = None, keep: bool = True,
                  **options: Any) -> list[Result]:
    """Make ``count`` images of each prompt in one process, so the models load once and not once per image.

    Image k of a prompt has seed ``seed + k`` (``seed`` from the options or config) and is the image
    :func:`generate` makes alone with that seed. Every config is built and checked, prompts included, before
    the first run, so a bad prompt further down the list stops the batch before it starts. A run stopped by
    Ctrl-C ends the batch; it keeps its last image and resumes like any run. Arguments as :func:`generate`;
    ``on_result`` is called with each finished (or interrupted) run as it ends. ``keep=False`` holds on to the
    latest run only, so that a long batch keeps one image in memory at a time (take each from ``on_result``).

    Returns:
        The runs made, in order (the last one interrupted if the batch was stopped); with ``keep=False``, the last
        run alone.
    """
    _check_types(prompts=(prompts, (list, tuple), "a list of prompts (one prompt: [prompt])"),
                 count=(count, (int,), "a whole number"),
                 overrides=(overrides, _LIST_OR_NONE, "a list of 'key=value' strings"),
                 config=(config, (str, Path, type(None)), "a preset name or a path"))
    for prompt in prompts:
        _check_types(prompt=(prompt, (str, type(None)), "text or None"))
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}", "e.g. --count 4")
    if not prompts:
        raise ConfigError("no prompts given", "give at least one prompt")
    configs = []
    for prompt in prompts:
        cfg = _build_config(prompt, config, options, overrides, base)
        last = int(cfg.seed) + count - 1
        config_mod.check_seed(last, f"the last image's seed ({cfg.seed} + {count - 1} = {last})", "lower --seed or --count")
        if cfg.prompt.strip():
            parse_story(cfg.prompt)  # its errors quote the prompt
        configs.append(cfg)
    results: list[Result] = []
    shown: set[str] = set()  # a message already printed in this batch is not printed again
    for cfg in configs:
        for k in range(count):  # each seed's config is made when its turn comes: a count can be large
            one = copy.deepcopy(cfg)
            one.seed = int(cfg.seed) + k
            result = _make(one, write=True, progress=progress, echo=echo, made_with=made_with, shown=shown)
            if keep:
                results.append(result)
            else:
                results = [result]
            if on_result is not None:
                on_result(result)
            if result.interrupted:
                return results
    return results


def resume(run_dir: str | Path, *, iterations: int | None = None, threads: int | None = None,
           progress: bool = True) -> Result:
    """Continue an interrupted (or finished) run from its last saved state, up to ``iterations`` steps
    (``threads``: CPU threads for torch, in place of the run's own ``threads``)."""
    return _resume(run_dir, iterations=iterations, threads=threads, progress=progress)


def _resume(run_dir: str | Path, *, iterations: int | None = None, threads: int | None = None,
            progress: bool = True, stop_at: int | None = None) -> Result:
    _check_types(run_dir=(run_dir, (str, Path), "a run directory (str or Path)"),
                 iterations=(iterations, (int, type(None)), "a whole number or None"),
                 threads=(threads, (int, type(None)), "a whole number or None"))
    run_dir = Path(run_dir)
    cfg_path, state_path = run_dir / CONFIG_NAME, run_dir / STATE_NAME
    if not cfg_path.is_file() or not state_path.is_file():
        raise PixgenError(f"{str(run_dir)!r} is not a resumable pixgen run (no {CONFIG_NAME} or {STATE_NAME})",
                          "give the run directory printed by `pixgen generate`")
    cfg = config_mod.from_yaml_text(cfg_path.read_text(), str(cfg_path))
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        step = int(state["step"])
    except Exception as exc:  # noqa: BLE001 - any unreadable state file gets the same advice
        raise PixgenError(f"cannot read {state_path}: {exc}", "the run's state is damaged; start a new run") from None
    if iterations is not None and iterations != cfg.iterations:
        if iterations < step:
            raise ConfigError(f"{run_dir} is already at step {step}, so it cannot become a run of {iterations} steps",
                              f"give --iterations {step} or more, or start a new run")
        # the steps so far followed the old length's schedules: recorded, so that the config still makes this image
        cfg.resumed = [*cfg.resumed, [step, int(cfg.iterations)]]
        cfg.iterations = iterations
    if threads is not None:
        cfg.threads = threads
    config_mod.validate(cfg)
    return _execute(cfg, write=True, progress=progress, run_dir=run_dir, state=state, stop_at=stop_at)


def _make(cfg: DictConfig, **kwargs: Any) -> Result:
    """Run a new config. One that records resumes which changed the run's length (``resumed``) is made the way it
    was: each stretch runs as a run of the length it had then, stops where it was resumed, and the next resumes
    from there (in a scratch folder when the run is not written)."""
    if not cfg.resumed:
        return _execute(cfg, **kwargs)
    stretches = [(int(step), int(length)) for step, length in cfg.resumed]
    first = copy.deepcopy(cfg)
    first.resumed, first.iterations = [], stretches[0][1]
    scratch = None
    if not kwargs.get("write", True):
        scratch = tempfile.mkdtemp(prefix="pixgen-replay-")
        first.output_dir, first.run_name = scratch, "run"
    try:
        result = _execute(first, **{**kwargs, "write": True}, stop_at=stretches[0][0])
        initial = result.initial_image
        lengths = [length for _, length in stretches[1:]] + [int(cfg.iterations)]
        stops = [step for step, _ in stretches[1:]] + [None]
        for length, stop in zip(lengths, stops):
            if result.interrupted:
                break
            result = _resume(result.run_dir, iterations=length, threads=cfg.threads,
                             progress=kwargs.get("progress", True), stop_at=stop)
        last_stretch = (result.config.iterations == cfg.iterations and
                        OmegaConf.to_container(result.config.resumed) == OmegaConf.to_container(cfg.resumed))
        result.resumable = not result.interrupted or last_stretch  # the last stretch resumes as any run does
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    result.initial_image = initial
    if scratch is not None:
        result.run_dir = None
    return result


def _execute(cfg: DictConfig, **kwargs: Any) -> Result:
    # the config's thread count for this run only; a resume names its run directory, whose image and state are kept
    with torch_threads(cfg.threads), _refused_memory(cfg, kwargs.get("run_dir")):
        return _run(cfg, **kwargs)


@contextlib.contextmanager
def _refused_memory(cfg: DictConfig, run_dir: Path | None) -> Iterator[None]:
    """A refused allocation in the block, as an OutOfMemory error that names the run's size and cutouts and what to
    lower; with the run directory where the run had begun, so that its last saved image and state are not taken for
    lost. Other errors pass unchanged."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        width, height = (list(cfg.size) * 2)[:2]
        hint = ("ask for less memory: a smaller --size (half the width and height needs about a quarter of it) or "
                "fewer --cutouts; on a GPU, --device cpu uses the machine's memory instead")
        if run_dir is not None and (run_dir / STATE_NAME).is_file():
            hint += f". The run's last saved image and state are kept in {run_dir} (`pixgen resume {run_dir}`)"
        raise out_of_memory(exc, f"making a {width}x{height} image with {cfg.cutouts.n} cutouts per step",
                            hint) from None


def _stop_at(start: int, step: int, stop: Callable[[], bool]) -> Callable[[], bool]:
    """A stop check for Engine.run from step ``start`` that also stops once step ``step`` is done (the engine asks
    once after every step)."""
    done = [start]

    def should_stop() -> bool:
        done[0] += 1
        return stop() or done[0] >= step

    return should_stop


def _run(cfg: DictConfig, *, write: bool, progress: bool, run_dir: Path | None = None,
         state: dict | None = None, echo: bool = True, made_with: dict[str, str] | None = None,
         shown: set[str] | None = None, stop_at: int | None = None) -> Result:
    """One run (or its resumption from ``state``); ``stop_at`` ends it after that step as a Ctrl-C would, but
    reports it done (a stretch of a run replayed by :func:`_make`)."""
    session = build_session(cfg, state=state)
    changes = weights_changes(made_with, session.weights) if made_with is not None else []
    if changes:
        session.messages.append("the weights or input images differ from those that made the image, so this re-run "
                                "will not reproduce it exactly: " + "; ".join(changes))
    for message in session.messages if echo else ():
        if shown is None or message not in shown:
            print(f"pixgen: {message}", file=sys.stderr)
    if shown is not None:
        shown.update(session.messages)
    start = int(state["step"]) if state else 0
    if state is not None:
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and session.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], session.device)
    recorder = _Recorder()
    callbacks: list[Any] = [recorder]
    with torch.no_grad():
        initial = session.generator.render().detach() if start == 0 else None
    writer = None
    if write:
        if run_dir is None:
            run_dir = make_run_dir(cfg.output_dir, cfg.run_name, cfg.prompt or "image")
        atomic_write(run_dir / CONFIG_NAME, config_mod.to_yaml(cfg).encode())
        meta = metadata_for(cfg.prompt, cfg.seed, config_mod.to_yaml(cfg, without_location=True), __version__,
                            session.weights)
        writer = RunWriter(run_dir, meta, cfg.save_every, _state_fn(session), video=cfg.video, fps=cfg.fps)
        if start == 0:
            writer.save_frame(0, initial)
        else:
            (run_dir / "frames").mkdir(exist_ok=True)  # a user may have cleared the frames of a run to resume
            truncate_log(run_dir / LOG_NAME, start)
            for frame in frame_paths(run_dir / "frames"):
                if int(frame.stem) > start:
                    frame.unlink()
        callbacks.append(writer)
    if progress and start < cfg.iterations:
        callbacks.append(_ProgressBar(cfg.iterations, start))
    status = "done"
    if start < cfg.iterations and start != stop_at:
        with ctrl_c_stops_after_step() as stop, _refused_memory(cfg, run_dir):
            status = session.engine.run(start, callbacks, stop if stop_at is None else _stop_at(start, stop_at, stop))
        if status == "interrupted" and stop_at is not None and not stop():
            status = "done"
    elif writer is not None:
        writer.on_end(StepState(start, cfg.iterations, session.generator), "done")
    with torch.no_grad():
        final = session.generator.render().detach()
    return Result(image=to_pil(final), initial_image=to_pil(initial) if initial is not None else None,
                  run_dir=run_dir, losses=recorder.records, config=cfg, status=status, messages=session.messages,
                  weights=session.weights)
