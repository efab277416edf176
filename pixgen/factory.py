"""The one place that turns a validated config into objects: device, VQGAN, CLIP models, targets, engine."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pixgen import config as config_mod
from pixgen import shipped
from pixgen.contrast import check_swaps, near_misses
from pixgen.cutouts import MakeCutouts
from pixgen.engine import Engine, Target, make_optimizer
from pixgen.errors import ConfigError, InputImageError, ModelError
from pixgen.generators import VQGANGenerator
from pixgen.models.vqgan import VQGAN, VQGANConfig
from pixgen.ops import flat_canvas
from pixgen.output import load_image
from pixgen.perceptor import ClipSpec, Perceptor, is_weights_file, load_perceptor, weights_files
from pixgen.prompts import parse_prompt, parse_story

log = logging.getLogger("pixgen")

TOY_DIR = shipped.TOY_DIR

# Built-in bundles: a VQGAN and the CLIP that goes with it.
RANDOM_TINY_VQGAN = VQGANConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), resolution=64,
                                z_channels=16, embed_dim=16, n_embed=64)
RANDOM_TINY_CLIP = "pixgen-random-tiny"
DEFAULT_CLIP = "ViT-B-32:openai"
TOY_CLIP_MODEL = "pixgen-toy-clip"
TOY_EARLY_TOWER = "clip_early_visual.safetensors"  # the image tower for the first steps (else clip.pt's own)
TOY_LATE_TOWER = "clip_late_visual.safetensors"
TOY_SWITCH = 0.6  # share of the steps the toy CLIP's first image tower guides


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must be a known name and be present."""
    config_mod.check_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was requested but CUDA is not available here",
                              "use --device cpu (or auto), or install a CUDA build of torch on a machine with a GPU")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)",
                              "use --device cuda:0 or --device auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was requested but Apple's MPS backend is not available here",
                          "use --device cpu or auto")
    return torch.device(name)


# The loaded models of the latest run in this process, by what identifies them (see _reuse). Loading the toy
# model's VQGAN and two CLIPs costs about 1 s of CPU, a tenth of a 64x64 image's budget, and a notebook or
# `pixgen eval` makes one run after another with the same models.
_loaded: dict[tuple, torch.nn.Module] = {}


def _stamp(path: str | Path | None) -> tuple:
    """What a weights file looks like now (so a changed file is read again): path, size, modification time."""
    if path is None:
        return ()
    path = Path(path).expanduser()
    if not path.is_file():
        return (str(path),)
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _reuse(key: tuple, load, used: dict[tuple, torch.nn.Module]):
    """``load()``, or the model the previous run loaded under ``key`` (frozen models are never changed by a run).

    The model is recorded in ``used``; build_session keeps only the latest run's models, so at most one run's
    worth stays loaded between runs. :func:`release_models` drops them."""
    model = _loaded.get(key)
    if model is None:
        model = load()
    used[key] = model
    return model


def release_models() -> None:
    """Forget the models kept from the latest run, so that their memory (on the GPU too) can be freed."""
    _loaded.clear()


def random_tiny_vqgan(seed: int = 0) -> VQGAN:
    """A tiny VQGAN with fixed random weights, for tests and install checks (its images are noise)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQGAN(RANDOM_TINY_VQGAN)
        model.quantize.weight.data.normal_(0, 1)  # a spread-out codebook gives varied noise
    return model.eval().requires_grad_(False)


def load_vqgan_for(cfg: DictConfig, device: torch.device, used: dict | None = None) -> tuple[VQGAN, Path | None]:
    """The VQGAN named by ``cfg.model`` or the local ``vqgan_config``/``vqgan_checkpoint`` pair, and its weights
    file (None for the random-tiny test model, which has none). With ``used``, a model the previous run loaded
    from the same unchanged files is reused (see ``_reuse``)."""
    if cfg.model == "random-tiny" and not (cfg.vqgan_config or cfg.vqgan_checkpoint):
        return random_tiny_vqgan().to(device), None
    from pixgen import checkpoints  # the registry and download code, needed only for real weights

    if cfg.vqgan_config or cfg.vqgan_checkpoint:
        yaml_path, ckpt = checkpoints.resolve_vqgan(config_path=cfg.vqgan_config,
                                                    checkpoint_path=cfg.vqgan_checkpoint)
    elif cfg.model == "toy":
        yaml_path, ckpt = TOY_DIR / "vqgan.yaml", TOY_DIR / "vqgan.ckpt"
        if not ckpt.is_file():
            raise ModelError(f"the toy VQGAN is missing at {ckpt}",
                             "the toy weights ship with the source checkout; reinstall from it, or train them "
                             "with `pixgen toy train vqgan`")
    else:
        yaml_path, ckpt = checkpoints.resolve_vqgan(cfg.model)
    load = lambda: checkpoints.load_vqgan(yaml_path, ckpt, device=device)  # noqa: E731
    if used is None:
        return load(), Path(ckpt)
    key = ("vqgan", str(device), _stamp(yaml_path), _stamp(ckpt))
    return _reuse(key, load, used), Path(ckpt)


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 (size and mtime key the cache)
    from pixgen.download import sha256_of

    return sha256_of(Path(path))[:16]


def weights_record(vqgan_file: Path | None, specs: list[ClipSpec], extra: list[Path] = ()) -> dict[str, str]:
    """What each weights file of a run is: file name -> the first 16 hex digits of its SHA-256.

    Stored in every PNG beside the config, because a config that names a model (``model: toy``) or a file
    does not say which weights that was; a re-run (``--from-image``) compares them. An open_clip tag is
    recorded as itself (a tag names fixed weights). ``extra`` also takes the run's input images (its init image
    and image prompts), which a config names by path alone."""
    files: list[Path] = ([vqgan_file] if vqgan_file is not None else []) + list(extra)
    record: dict[str, str] = {}
    for spec in specs:
        pretrained, tower = weights_files(spec)
        if pretrained and is_weights_file(pretrained):
            files.append(Path(pretrained).expanduser())
        elif pretrained:
            record[f"{spec.model}:{pretrained}"] = "tag"
        if tower is not None:
            files.append(tower)
    for path in files:
        stat = path.stat()
        record[path.name] = _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return record


def weights_changes(stored: dict[str, str], now: dict[str, str]) -> list[str]:
    """How the weights of a re-run differ from those stored with the image it re-runs (empty if the same)."""
    changes = [f"{name} is now {now[name]}, was {stored[name]}" for name in stored
               if name in now and now[name] != stored[name]]
    changes += [f"{name} was used then, not now" for name in stored if name not in now]
    changes += [f"{name} is used now, not then" for name in now if name not in stored]
    return changes


def _weights_paths(spec: ClipSpec) -> list[Path]:
    """The local files a CLIP spec reads (its weights file and replacement image tower), if any."""
    pretrained, tower = weights_files(spec)
    files = [Path(pretrained)] if pretrained and is_weights_file(pretrained) else []
    return files + ([tower] if tower is not None else [])


def clip_specs_for(cfg: DictConfig) -> list[ClipSpec]:
    """The CLIP models to use: ``cfg.clip`` if given, else the model's own default."""
    if cfg.clip:
        return [ClipSpec.parse(s) for s in cfg.clip]
    local = cfg.vqgan_config or cfg.vqgan_checkpoint
    if cfg.model == "random-tiny" and not local:
        return [ClipSpec(RANDOM_TINY_CLIP)]
    if cfg.model == "toy":  # with a local VQGAN too: one trained by `pixgen toy train vqgan` is drawn for this CLIP
        return toy_clip_specs()
    return [ClipSpec.parse(DEFAULT_CLIP)]


def toy_clip_specs(toy_dir: Path = TOY_DIR) -> list[ClipSpec]:
    """The toy CLIP: ``clip.pt``'s text tower with an early image tower for the first 60% of the steps and, when
    present, the late one for the rest.

    All share one text tower, so the prompt targets are the same throughout; only the image side changes. The
    early tower (``clip_early_visual.safetensors``, else ``clip.pt``'s own) was trained to read faint objects,
    as a search from a flat canvas first draws them, and to point from spoilt pictures back to the right one; the
    late one to keep a picture that already satisfies its prompt, with its gradient aligned the same way
    (benchmarks/toy_results.md, "Switching image towers", "Aligned gradients" and "A late tower whose gradient
    points the way back as well").
    """
    clip = str(toy_dir / "clip.pt")
    early_tower, late_tower = toy_dir / TOY_EARLY_TOWER, toy_dir / TOY_LATE_TOWER
    early = f"{clip}+{early_tower}" if early_tower.is_file() else clip
    if not late_tower.is_file():
        return [ClipSpec(TOY_CLIP_MODEL, early)]
    return [ClipSpec(TOY_CLIP_MODEL, early, 1.0, (0.0, TOY_SWITCH)),
            ClipSpec(TOY_CLIP_MODEL, f"{clip}+{late_tower}", 1.0, (TOY_SWITCH, 1.0))]


def load_prior_for(cfg: DictConfig, device: torch.device):
    """The scene prior's ``restore`` function and its file, or (None, None) when the prior is off (weight 0)."""
    if not cfg.prior.weight:
        return None, None
    from pixgen.toy.prior import load_prior

    path = Path(cfg.prior.path).expanduser()
    if not path.is_file():
        raise ModelError(f"the scene prior {path} does not exist",
                         "train one with `pixgen toy train prior --out DIR` and give DIR/prior.safetensors, "
                         "or turn the prior off with --set prior.weight=0")
    try:
        model = load_prior(path, device)
    except Exception as exc:  # a wrong or damaged file: say which, not where deep inside safetensors it broke
        raise ModelError(f"could not read the scene prior {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                         "give a file written by `pixgen toy train prior`") from None
    return model.restore, path


def check_schedule(specs: list[ClipSpec], iterations: int) -> None:
    """Refuse CLIP weights and step ranges that leave some step of the run with no CLIP to guide it (a model of
    weight 0 guides nothing)."""
    if specs and not any(s.weight for s in specs):
        raise ConfigError(f"every CLIP model has weight 0 ({', '.join(map(str, specs))}), so nothing would guide "
                          "the run", "give at least one --clip model a weight above 0, e.g. --clip ViT-B-32:openai:1")
    idle = [step for step in range(iterations) if not any(s.weight and s.active(step, iterations) for s in specs)]
    if idle:
        runs: list[list[int]] = []  # the idle steps as runs of consecutive steps, counted from 1
        for step in idle:
            if runs and step == runs[-1][1]:
                runs[-1][1] = step + 1
            else:
                runs.append([step + 1, step + 1])
        gaps = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)
        ranges = ", ".join(f"{s.model}@{s.steps[0]:g}-{s.steps[1]:g}" for s in specs)
        raise ConfigError(f"no CLIP model guides steps {gaps} of {iterations} (step ranges: {ranges})",
                          "make the @START-END ranges of the --clip models cover 0-1 together, "
                          "e.g. --clip A@0-0.6 --clip B@0.6-1")


def fit_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Round each side to the nearest multiple of ``factor``; refuse sizes below one latent cell."""
    if width < factor or height < factor:
        raise ConfigError(f"size {width}x{height} is too small for this model, which needs at least "
                          f"{factor}x{factor} (one latent cell is {factor} pixels)",
                          f"use a size of {factor * 4}x{factor * 4} or larger")
    return max(factor, round(width / factor) * factor), max(factor, round(height / factor) * factor)


@dataclass
class Session:
    """Everything a run needs, built from one config."""

    config: DictConfig
    device: torch.device
    width: int
    height: int
    generator: VQGANGenerator
    perceptors: list[Perceptor]
    engine: Engine
    messages: list[str]
    weights: dict[str, str] = field(default_factory=dict)  # weights_record of the run


def _embed_targets(cfg: DictConfig, perceptors: list[Perceptor], cutouts: dict[int, MakeCutouts],
                   width: int, height: int, device: torch.device, messages: list[str],
                   rewordings: dict[str, str] | None = None) -> tuple[list[Target], int]:
    """The prompt's targets for each CLIP; a text term in ``rewordings`` is encoded in its other words."""
    rewordings = rewordings or {}
    targets: list[Target] = []
    phases = parse_story(cfg.prompt) if cfg.prompt.strip() else [[]]
    misses_of: dict[str, list[str]] = {}  # the near misses of each text term that has contrast terms
    if cfg.contrast.weight:
        swaps = check_swaps(OmegaConf.to_container(cfg.contrast.swaps, resolve=True))
        misses_of = {p.text: near_misses(rewordings.get(p.text, p.text), swaps)
                     for phase in phases for p in phase if p.weight > 0}
        alone = sorted(text for text, misses in misses_of.items() if not misses)
        if alone:
            messages.append(f"no contrast term for {', '.join(map(repr, alone))}: none of its words is in a class of "
                            "contrast.swaps, so it has no near misses to beat")
    names = [p.name for p in perceptors]
    for pi, perceptor in enumerate(perceptors):
        suffix = f" @{perceptor.name}" if len(names) > 1 else ""
        if names.count(perceptor.name) > 1:
            suffix += f"#{pi}"
        for phase_index, phase in enumerate(phases):
            if not phase:
                continue
            embeds = perceptor.encode_text([rewordings.get(p.text, p.text) for p in phase])
            for p, e in zip(phase, embeds):
                label = (f"[{phase_index}] " if len(phases) > 1 else "") + p.text + suffix
                target = Target(label, pi, e, p.weight, p.stop, phase_index if len(phases) > 1 else None)
                misses = misses_of.get(p.text) if p.weight > 0 else None
                if misses:
                    target.others = perceptor.encode_text(misses)
                    target.contrast_weight = float(cfg.contrast.weight)
                    target.contrast_scale = float(cfg.contrast.scale or perceptor.logit_scale)
                targets.append(target)
        for item in cfg.image_prompts:
            for p in parse_prompt(item):
                _check_image_prompt_weight(item, p.text)
                image = load_image(p.text, (width, height), what="image prompt").to(device)
                with torch.no_grad(), torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                    torch.manual_seed(cfg.seed)
                    embeds = perceptor.encode_image(cutouts[perceptor.input_size](image)).float()
                embed = torch.nn.functional.normalize(embeds, dim=-1).mean(0)
                targets.append(Target(f"image:{Path(p.text).name}{suffix}", pi, embed, p.weight, p.stop))
        for seed, weight, stop in config_mod.check_noise_prompts(list(cfg.noise_prompts)):
            gen = torch.Generator().manual_seed(seed)
            embed = torch.randn(perceptor.embed_dim, generator=gen).to(device)
            targets.append(Target(f"noise:{seed}{suffix}", pi, embed, weight, stop))
    return targets, len(phases)


@torch.no_grad()
def _score_flat_starts(colours: list[list[int]], vqgan: VQGAN, width: int, height: int,
                       perceptors: list[Perceptor], targets: list[Target], cutouts: dict[int, MakeCutouts],
                       seed: int) -> list[float]:
    """The first phase's prompt loss of each flat start colour, each scored on the same seeded cutouts.

    Every CLIP of the run scores, also one scheduled only for later steps (``@START-END``): the start sets the
    background for the whole run, and with the toy model's two image towers this choice passed more prompts than
    the first step's tower alone (benchmarks/toy_results.md, "Switching image towers").
    """
    first = [t for t in targets if t.phase in (None, 0)]
    scores = []
    device = vqgan.codebook.device
    for rgb in colours:
        generator = VQGANGenerator(vqgan, width, height, init=flat_canvas([rgb], width, height)).to(device)
        scorer = Engine(generator, perceptors, first, cutouts, optimizer=None, total=1)
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            torch.manual_seed(seed)
            _, terms = scorer.losses(generator(), first)
        scores.append(float(terms.sum()))
    return scores


def make_reproducible(device: torch.device) -> None:
    """On CUDA, ask PyTorch for deterministic kernels, so that the same seed and config give the same image on the
    same GPU, as they do on the CPU.

    cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it first starts in the process, so it is set here, before any
    work on the device (a value the user set is kept). cuDNN's autotuner, which may pick a different kernel each
    run, is turned off. An op with no deterministic CUDA kernel warns instead of failing the run. The setting is
    process-wide, as PyTorch's is; other devices are left alone.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if not torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(True, warn_only=True)


def _toy_wording(phases, reword: bool) -> tuple[dict[str, str], list[str]]:
    """The toy CLIP knows only its world's captions, so the picture will not follow words from outside them.

    Returns the terms to encode in other words (``reword`` on: a term that is a caption once common synonyms and
    forms are put in the grammar's words, e.g. "a big red circle" read as "a large red circle") and the messages:
    one for each such rewording, and a warning for each term that is no caption either way (the run goes ahead; the
    user may mean to try).
    """
    from pixgen.toy.captions import CaptionError, parse_caption, read_caption

    rewordings: dict[str, str] = {}
    messages = []
    for term in sorted({p.text for phase in phases for p in phase}):
        try:
            if reword:
                other = read_caption(term)[1]
            else:
                parse_caption(term)
                other = None
        except CaptionError as e:
            messages.append(f"{term!r} is not a caption of the toy world, so the toy CLIP will not follow it: "
                            f"{e.message}; {e.hint}")
            continue
        if other is not None:
            rewordings[term] = other
            messages.append(f"read {term!r} as {other!r}, in the toy world's own words, which are the only ones the "
                            "toy CLIP was trained on (--set toy_reword=false encodes it as written)")
    return rewordings, messages


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Within the block torch uses ``threads`` CPU threads (``None``: as it was); afterwards as many as before."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_image_prompt_weight(item: str, path: str) -> None:
    """``ref.png:x`` names no file, but ``ref.png`` is one: say that ``x`` is not a weight, not that the file is
    missing."""
    if ":" in path and not Path(path).expanduser().exists():
        head, tail = path.rsplit(":", 1)
        if Path(head).expanduser().is_file():
            try:
                float(tail)
                what = "more than a weight and a stop follow the image's path"
            except ValueError:
                what = f"{tail!r} after the image's path is not a number"
            raise InputImageError(f"image prompt {item!r}: {what}",
                                  "write PATH:WEIGHT or PATH:WEIGHT:STOP with plain numbers, e.g. ref.png:0.5")


def build_session(cfg: DictConfig, *, state: dict | None = None) -> Session:
    """Build the generator, CLIP models, targets, cutouts and engine for ``cfg`` (seeding torch first)."""
    messages: list[str] = []
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        make_reproducible(device)
    rewordings: dict[str, str] = {}
    if cfg.prompt.strip():
        phases = parse_story(cfg.prompt)  # fail on a bad prompt before loading any model
        if cfg.model == "toy":
            rewordings, notes = _toy_wording(phases, bool(cfg.toy_reword))
            messages += notes
    specs = clip_specs_for(cfg)  # a bad --clip spec or schedule is refused before any model loads
    check_schedule(specs, int(cfg.iterations))
    torch.manual_seed(cfg.seed)
    used: dict[tuple, torch.nn.Module] = {}
    vqgan, vqgan_file = load_vqgan_for(cfg, device, used)
    width, height = fit_size(int(cfg.size[0]), int(cfg.size[1]), vqgan.factor)
    if (width, height) != (cfg.size[0], cfg.size[1]):
        messages.append(f"size {cfg.size[0]}x{cfg.size[1]} rounded to {width}x{height} "
                        f"(this model works in multiples of {vqgan.factor} pixels)")
        cfg.size = [width, height]
    perceptors = [_reuse(("clip", str(device), str(spec), *map(_stamp, _weights_paths(spec))),
                         lambda spec=spec: load_perceptor(spec, device), used) for spec in specs]
    _loaded.clear()
    _loaded.update(used)
    augments = [asdict(a) if not isinstance(a, dict) else a
                for a in OmegaConf.to_container(cfg.cutouts.augments, resolve=True)]
    cutouts = {size: MakeCutouts(size, cfg.cutouts.n, cfg.cutouts.pow, augments, cfg.cutouts.noise)
               for size in sorted({p.input_size for p in perceptors})}
    # a coarse stage composes at (start_w, start_h) and grows to (width, height) before step grow_step
    # a stage that grows needs a step after it; one that never grows (share 1) composes at any length
    grows = float(cfg.coarse.share) < 1
    coarse = (config_mod.coarse_size([width, height], cfg.coarse.size, vqgan.factor)
              if cfg.iterations > 1 or not grows else None)
    start_w, start_h = coarse or (width, height)
    grow_step = None  # share 1: never grows, the picture is only scaled up by nearest pixel (``render``)
    if coarse:
        if grows:
            grow_step = min(max(1, round(float(cfg.coarse.share) * cfg.iterations)), cfg.iterations - 1)
        steps = f"for all {cfg.iterations} steps" if cfg.iterations > 1 else "for its one step"
        plan = (f"for {grow_step} of {cfg.iterations} steps, then {width}x{height} (coarse.size; " if grow_step else
                f"{steps}, scaled up to {width}x{height} by nearest pixel (coarse.share=1; ")
        messages.append(f"composing at {start_w}x{start_h} {plan}--set coarse.size=null runs at {width}x{height} "
                        f"throughout)")
    init = load_image(cfg.init_image, (start_w, start_h), what="init image") if cfg.init_image else None
    torch.manual_seed(cfg.seed)
    targets, n_phases = _embed_targets(cfg, perceptors, cutouts, width, height, device, messages, rewordings)
    if cfg.init_color is not None:  # a flat canvas: the one colour, or the candidate the prompts score best
        colours = config_mod.init_colors(cfg.init_color)
        pick = 0
        if len(colours) > 1 and state is None:  # a resumed run has its latent already
            scores = _score_flat_starts(colours, vqgan, start_w, start_h, perceptors, targets, cutouts, cfg.seed)
            pick = min(range(len(colours)), key=scores.__getitem__)
            messages.append(f"started from flat {','.join(map(str, colours[pick]))}, the best of {len(colours)} "
                            f"start colours for the prompt (losses {', '.join(f'{v:.3f}' for v in scores)})")
        init = flat_canvas([colours[pick]], start_w, start_h)
    torch.manual_seed(cfg.seed)
    generator = VQGANGenerator(vqgan, start_w, start_h, init=init, noise=float(cfg.init_noise),
                               grow_to=(width, height) if coarse else None).to(device)
    optimizer = make_optimizer(cfg.optim.name, generator.latent_parameters(), cfg.optim.lr,
                               cfg.optim.weight_decay, cfg.optim.momentum)
    if state is not None:
        with torch.no_grad():  # a run stopped after its coarse stage has a latent of the output size
            generator.z.data = state["z"].to(device).contiguous()
            generator.z_init = state["z_init"].to(device).contiguous()
        optimizer.load_state_dict(state["optimizer"])
    prior, prior_file = load_prior_for(cfg, device)
    engine = Engine(generator, perceptors, targets, cutouts, optimizer, total=cfg.iterations, phases=n_phases,
                    init_weight=cfg.init_weight, tv_weight=cfg.tv_weight, log_every=cfg.log_every,
                    save_every=cfg.save_every, prior=prior, prior_weight=float(cfg.prior.weight),
                    prior_steps=tuple(cfg.prior.steps), grow_step=grow_step,
                    border_weight=float(cfg.border.weight), border_width=int(cfg.border.width),
                    sparsity_weight=float(cfg.sparsity.weight), sparsity_steps=tuple(cfg.sparsity.steps),
                    sparsity_cap=None if cfg.sparsity.cap is None else float(cfg.sparsity.cap),
                    palette_weight=float(cfg.palette.weight),
                    palette=None if cfg.palette.colours is None else
                    torch.tensor(config_mod.palette_colours(cfg.palette.colours), dtype=torch.float32, device=device) / 255)
    inputs = [Path(cfg.init_image).expanduser()] if cfg.init_image else []
    inputs += [Path(p.text).expanduser() for item in cfg.image_prompts for p in parse_prompt(item)]
    return Session(cfg, device, width, height, generator, perceptors, engine, messages,
                   weights_record(vqgan_file, specs, extra=([prior_file] if prior_file else []) + inputs))
