"""The run configuration: a typed schema, YAML loading, dotted overrides and validation with clear errors.

Precedence, lowest first: schema defaults < preset/``--config`` file < explicit options < ``--set key=value``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pixgen import shipped
from pixgen.atomic import blocking_file
from pixgen.errors import ConfigError

PRESET_DIR = shipped.PRESET_DIR
OPTIMIZERS = ("adam", "adamw", "adagrad", "rmsprop", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Built-in models whose tuned preset applies beneath the user's own config, options and overrides.
MODEL_PRESETS = {"toy": "toy", "random-tiny": "smoke"}


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd and rmsprop


@dataclass
class Augment:
    name: str = "RandomHorizontalFlip"
    kwargs: dict[str, Any] = field(default_factory=dict)


def _default_augments() -> list[Augment]:
    return [
        Augment("RandomHorizontalFlip", {"p": 0.5}),
        Augment("RandomAffine", {"degrees": 15, "translate": [0.1, 0.1], "p": 0.7, "padding_mode": "border"}),
        Augment("RandomPerspective", {"distortion_scale": 0.3, "p": 0.5}),
        Augment("ColorJitter", {"hue": 0.05, "saturation": 0.1, "p": 0.5}),
    ]


@dataclass
class CutoutConfig:
    n: int = 32
    pow: float = 1.0
    noise: float = 0.1
    augments: list[Augment] = field(default_factory=_default_augments)


@dataclass
class PriorConfig:
    path: Optional[str] = None  # a scene-prior file written by `pixgen toy train prior`
    weight: float = 0.0
    steps: list[float] = field(default_factory=lambda: [0.0, 1.0])  # share of the run it acts in


@dataclass
class ContrastConfig:
    # Each text prompt with a positive weight also asks to beat its near misses: the prompts that differ from it
    # in one word of a class in ``swaps`` (pixgen/contrast.py). 0 turns it off.
    weight: float = 0.0
    scale: Optional[float] = None  # logit scale of the softmax; None: the CLIP's own
    swaps: list[Any] = field(default_factory=list)  # word classes: [[[circle, disc], [square, box]], ...]


@dataclass
class BorderConfig:
    # Keep the picture's outer frame, ``width`` pixels wide, as the run started it (its flat init colour or init
    # image): a term ``weight`` x the mean squared difference there, at every step. Objects are then drawn whole,
    # inside the canvas, rather than cut by its edge. 0 turns it off.
    weight: float = 0.0
    width: int = 3


@dataclass
class SparsityConfig:
    # Pull every pixel back towards the run's start (its flat init colour or init image): a term ``weight`` x the
    # mean absolute difference over the whole picture, at every step. Being L1, it takes the same small toll from
    # every change, so what the prompt's gradient holds up stays while faint smears and weak stray blobs fade back
    # into the start. 0 turns it off.
    weight: float = 0.0
    steps: list[float] = field(default_factory=lambda: [0.0, 1.0])  # share of the run it acts in
    # Each value's change counts up to ``cap`` and no further, so a change larger than that (an object the prompt
    # has already drawn) feels no pull, and only faint ones are taken back; None: no cap.
    cap: Optional[float] = None


@dataclass
class PaletteConfig:
    # Pull every pixel towards the nearest of ``colours`` ([[R, G, B], ...], 0-255): a term ``weight`` x the mean
    # over pixels of the distance (RGB in [0, 1] units) to the nearest palette colour. Soft rims and in-between
    # shades are pushed to one side or the other, so the picture is drawn in flat regions of the palette's colours.
    # 0 turns it off.
    weight: float = 0.0
    colours: Optional[list[Any]] = None


@dataclass
class CoarseConfig:
    # Compose first at a smaller size, then grow to ``size`` for the rest of the run: the image is scaled up
    # (nearest pixel), encoded again, and the search goes on from there with a fresh optimizer. The coarse stage
    # keeps the aspect of ``size`` and fits within this [WIDTH, HEIGHT]; None, or a ``size`` that already fits,
    # runs at ``size`` throughout.
    size: Optional[list[int]] = None
    # Share of the iterations spent at the coarse size; 1 spends them all there and never grows: the picture is
    # only scaled up (nearest pixel), for a model that draws nothing finer than its coarse size.
    share: float = 0.9


@dataclass
class RunConfig:
    prompt: str = ""
    image_prompts: list[str] = field(default_factory=list)
    noise_prompts: list[str] = field(default_factory=list)
    init_image: Optional[str] = None
    init_color: Optional[list[Any]] = None  # [R, G, B], or a list of them to choose from
    init_weight: float = 0.0
    # Gaussian noise added to the starting latent, in units of the codebook's per-channel spread, drawn from the
    # seed. From a flat start (the toy preset) seeds otherwise differ only in their crops, and a prompt's pictures
    # look alike over seeds; about 1 leaves the start looking flat (within a few levels of 255) and spreads them.
    init_noise: float = 0.0
    tv_weight: float = 0.0
    size: list[int] = field(default_factory=lambda: [256, 256])
    iterations: int = 300
    seed: int = 0
    save_every: int = 50
    log_every: int = 10
    output_dir: str = "outputs"
    run_name: Optional[str] = None
    device: str = "auto"
    # On CUDA, ask PyTorch for deterministic kernels (same seed, same image on the same GPU); false trades that for
    # whatever speed PyTorch's defaults give. No effect on the CPU, which is deterministic anyway.
    deterministic: bool = True
    # CPU threads torch uses for the run (restored afterwards); None leaves torch's own choice, usually one per
    # core. The count changes how sums are split, and a long search can grow that rounding into a different
    # image, so a run that must repeat on another machine fixes it. The toy preset sets 1.
    threads: Optional[int] = None
    video: bool = False
    fps: int = 20
    model: str = "imagenet_f16_16384"
    # model toy only: a prompt term that is not a toy-world caption as written but becomes one in the grammar's own
    # words ("a big red circle" -> "a large red circle", "on top of" -> "above") is encoded in those words, as the
    # toy CLIP knows no others; false encodes every term as written.
    toy_reword: bool = True
    vqgan_config: Optional[str] = None
    vqgan_checkpoint: Optional[str] = None
    clip: list[str] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cutouts: CutoutConfig = field(default_factory=CutoutConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    border: BorderConfig = field(default_factory=BorderConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    palette: PaletteConfig = field(default_factory=PaletteConfig)
    # Written by `pixgen resume -i N` when it changes a run's length: [STEP, ITERATIONS] pairs, each saying that the
    # steps up to STEP ran as a run of ITERATIONS steps. The schedules (a CLIP's @START-END, story phases, a term's
    # steps) are shares of the run's length, so those steps followed the old length; a re-run of the config
    # (--from-image) replays the same stops and resumes, and so makes the same picture.
    resumed: list[Any] = field(default_factory=list)


# Keys that say where a run is written, not what it makes: left out of the config embedded in images.
LOCATION_KEYS = ("output_dir", "run_name")


def schema() -> DictConfig:
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _unknown_key_error(key: str, where: str) -> ConfigError:
    known = _all_keys(OmegaConf.to_container(schema()))
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown config key {key!r} in {where}", hint)


def _all_keys(tree: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            keys.append(prefix + k)
            keys.extend(_all_keys(v, prefix + k + "."))
    return keys


def _check_groups(base: DictConfig, other: Any, where: str, prefix: str = "") -> None:
    """Refuse a plain value given for a group of keys (``--set optim=5``) with the group's keys, before omegaconf
    does so in words that name none."""
    if not isinstance(other, (dict, DictConfig)):
        return
    for key, value in other.items():
        node = base.get(key) if isinstance(base, DictConfig) and key in base else None
        if not isinstance(node, DictConfig):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, (dict, DictConfig)):
            _check_groups(node, value, where, name + ".")
        elif value is not None:
            keys = ", ".join(f"{name}.{k}" for k in node.keys())
            example = next(iter(node.keys()))
            raise ConfigError(f"{name} in {where} is a group of keys ({keys}), not a value; got {value!r}",
                              f"set one of its keys, e.g. --set {name}.{example}=...")


def _merge(base: DictConfig, other: Any, where: str) -> DictConfig:
    _check_groups(base, other, where)
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
        if "not in struct" in str(exc) or "Key '" in str(exc) and "not" in str(exc):
            raise _unknown_key_error(str(key), where) from None
        raise _bad_value_error(str(key) if key else None, exc, where) from None


def _bad_value_error(key: str | None, exc: Exception, where: str) -> ConfigError:
    """A value of the wrong type: names the key and shows its default, whose form the value must take."""
    reason = _first_line(exc)
    if "is not a ListConfig" in reason:  # omegaconf's words for "a list was expected"
        reason = "expected a list"
    default = OmegaConf.select(schema(), key) if key else None
    if isinstance(default, (DictConfig, ListConfig)):
        default = OmegaConf.to_container(default)
    hint = "check the value's type against `pixgen generate --help`"
    if isinstance(default, str):
        hint = f"{key} takes text" + (f", e.g. its default {default!r}" if default else "")
    elif default is not None:
        shown = str(default).replace(" ", "") if isinstance(default, list) else default
        hint = f"{key} takes a value of the same form as its default, {shown}"
    elif key and (form := _declared_form(key)):
        hint = f"{key} takes {form}, or null (its default)"
    return ConfigError(f"bad value for {key} in {where}: {reason}" if key else f"bad value in {where}: {reason}",
                       hint)


_FORMS = {float: "a number", int: "a whole number", str: "text", bool: "true or false", list: "a list"}


def _declared_form(key: str) -> str | None:
    """What kind of value the schema declares for dotted ``key`` ("a number", "a list", ...), read from the
    dataclasses' annotations: the only record of the form of a key whose default is null."""
    cls: Any = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    if typing.get_origin(cls) is typing.Union:  # Optional[X]: the form is X's
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if len(args) != 1:
            return None
        cls = args[0]
    return _FORMS.get(typing.get_origin(cls) or cls)  # list[int] -> list


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def resolve_preset(name_or_path: str) -> Path:
    """A ``--config`` value: an existing YAML path, or the name of a preset in ``configs/``."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
    raise ConfigError(f"config file {name_or_path!r} not found",
                      f"give a path to a YAML file, or a preset name: {', '.join(presets) or '(none shipped)'}")


def _yaml_mapping(text: str, what: str, hint: str) -> dict:
    """Parse YAML text that must hold a mapping; ``what`` names its source in the error."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} is not valid YAML{at}: {getattr(exc, 'problem', exc)}", hint) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must hold a mapping of keys, not {type(data).__name__}",
                          "write it as `key: value` lines, e.g. `iterations: 200`")
    return data


def load_file(path: str | Path) -> DictConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}", "check the path") from None
    data = _yaml_mapping(text, f"config file {str(path)!r}", "fix the YAML syntax (indentation, ':' after keys, quotes)")
    return OmegaConf.create(data)


def parse_dotted(overrides: list[str]) -> DictConfig:
    """``["optim.lr=0.2", "size=[64,64]"]`` -> a config tree; values are YAML (numbers, lists, strings)."""
    tree = OmegaConf.create({})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} has no '='", "write overrides as --set key=value, e.g. optim.lr=0.2")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has no key", "write overrides as --set key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        OmegaConf.update(tree, key, value, force_add=True)
    return tree


def build(*layers: tuple[Any, str]) -> DictConfig:
    """Merge layers (each a mapping and a description for errors) onto the schema, then validate."""
    cfg = schema()
    for layer, where in layers:
        if layer is None:
            continue
        cfg = _merge(cfg, layer, where)
    validate(cfg)
    return cfg


def check_device(name: str) -> None:
    """Refuse a device name that is neither one of DEVICES nor cuda:N, before torch is asked for it."""
    if name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()):
        return
    raise ConfigError(f"unknown device {name!r}", "use --device cpu, cuda, cuda:N, mps or auto")


def _positive(value: float, name: str, hint: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}", hint)


def init_colors(value: Any) -> list[list[int]]:
    """``init_color`` as a list of candidate colours: ``[R, G, B]`` is one, ``[[R, G, B], ...]`` several."""
    return _rgb_list(value, "init_color", "e.g. --init-color 128,128,128 for a flat gray start")


def palette_colours(value: Any) -> list[list[int]]:
    """``palette.colours`` as a list of colours (``[R, G, B]`` alone is a palette of one)."""
    return _rgb_list(value, "palette.colours", "e.g. --set 'palette.colours=[[220,30,30],[240,240,240]]'")


def _rgb_list(value: Any, key: str, hint: str) -> list[list[int]]:
    """``[R, G, B]`` or ``[[R, G, B], ...]`` as a list of colours; raise ConfigError naming ``key`` otherwise."""
    try:
        items = list(value)
        if not items:
            raise ConfigError(f"{key} is an empty list", hint)
        colours = [list(c) for c in items] if not isinstance(items[0], (int, float)) else [items]
    except TypeError:
        raise ConfigError(f"{key} must be [R, G, B] or a list of such colours, got {value!r}", hint) from None
    for rgb in colours:
        if len(rgb) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgb):
            raise ConfigError(f"{key} must be three whole numbers 0-255 (red, green, blue), or a list of such "
                              f"colours; got {rgb!r}", hint)
    return colours


def is_step_range(lo: float, hi: float) -> bool:
    """Whether [lo, hi) is a share of a run's steps (as fractions): 0 <= lo < hi <= 1. CLIP specs' ``@START-END``
    and ``prior.steps`` both take one."""
    return 0.0 <= lo < hi <= 1.0


def _check_contrast(contrast: DictConfig) -> None:
    if not math.isfinite(contrast.weight) or contrast.weight < 0:
        raise ConfigError(f"contrast.weight must be a finite number >= 0, got {contrast.weight}",
                          "e.g. --set contrast.weight=1 (0 turns contrast terms off)")
    if contrast.scale is not None and (not math.isfinite(contrast.scale) or contrast.scale <= 0):
        raise ConfigError(f"contrast.scale must be a number > 0 or null, got {contrast.scale}",
                          "leave it null to use the CLIP's own logit scale, or give e.g. 100")
    from pixgen.contrast import check_swaps

    check_swaps(OmegaConf.to_container(contrast.swaps, resolve=True))
    if contrast.weight and not contrast.swaps:
        raise ConfigError("contrast.weight is set but contrast.swaps gives no word classes to write near misses from",
                          "e.g. --set 'contrast.swaps=[[[red],[blue],[green]],[[circle],[square]]]'")


def _check_steps(key: str, steps: Any, what: str, example: str) -> None:
    """A config key that holds a share of the run, [START, END] (``prior.steps``, ``sparsity.steps``)."""
    steps = list(steps)
    if len(steps) != 2 or not is_step_range(*steps):
        raise ConfigError(f"{key} must be [START, END] with 0 <= START < END <= 1, got {steps}",
                          f"give the share of the run {what} acts in, e.g. --set {key}={example}")


def _check_prior(prior: DictConfig) -> None:
    if not math.isfinite(prior.weight) or prior.weight < 0:
        raise ConfigError(f"prior.weight must be a finite number >= 0, got {prior.weight}",
                          "e.g. --set prior.weight=30 (0 turns the prior off)")
    _check_steps("prior.steps", prior.steps, "the prior", "[0.3,1.0]")
    if prior.weight and not prior.path:
        raise ConfigError("prior.weight is set but prior.path names no prior",
                          "give the file with --set prior.path=DIR/prior.safetensors "
                          "(`pixgen toy train prior --out DIR` writes one)")


def _check_border(border: DictConfig, size: list[int]) -> None:
    if not math.isfinite(border.weight) or border.weight < 0:
        raise ConfigError(f"border.weight must be a finite number >= 0, got {border.weight}",
                          "e.g. --set border.weight=5 (0 turns the border term off)")
    if border.weight and border.width < 1:
        raise ConfigError(f"border.width must be at least 1, got {border.width}", "e.g. --set border.width=3")
    if border.weight and 2 * border.width >= min(int(v) for v in size):
        smallest = 2 * border.width + 1
        error = ConfigError(f"a {size[0]}x{size[1]} image is too small for the border term, which holds a frame "
                            f"{border.width} pixels wide on each side (border.width) and needs an inside",
                            f"give a larger --size ({smallest}x{smallest} or more; the model may round it up), or "
                            "turn the term off with --set border.weight=0")
        error.smallest_side = smallest  # for a command whose --size is written otherwise to word its own hint
        raise error


def _check_palette(palette: DictConfig) -> None:
    if not math.isfinite(palette.weight) or palette.weight < 0:
        raise ConfigError(f"palette.weight must be a finite number >= 0, got {palette.weight}",
                          "e.g. --set palette.weight=1 (0 turns the palette term off)")
    if palette.weight and palette.colours is None:
        raise ConfigError("palette.weight is set but palette.colours is not: the term needs the colours to pull to",
                          "e.g. --set 'palette.colours=[[220,30,30],[240,240,240]]', or palette.weight=0")
    if palette.colours is not None:
        palette_colours(palette.colours)  # raises on a malformed colour


def _check_sparsity(sparsity: DictConfig) -> None:
    if not math.isfinite(sparsity.weight) or sparsity.weight < 0:
        raise ConfigError(f"sparsity.weight must be a finite number >= 0, got {sparsity.weight}",
                          "e.g. --set sparsity.weight=3 (0 turns the sparsity term off)")
    _check_steps("sparsity.steps", sparsity.steps, "the term", "[0.6,1.0]")
    if sparsity.cap is not None and not (math.isfinite(sparsity.cap) and sparsity.cap > 0):
        raise ConfigError(f"sparsity.cap must be a finite number > 0 (a change in [0, 1] pixel units), "
                          f"got {sparsity.cap}", "e.g. --set sparsity.cap=0.15, or sparsity.cap=null for no cap")


def _check_coarse(coarse: DictConfig) -> None:
    if coarse.size is not None:
        size = list(coarse.size)
        if len(size) != 2 or any(v <= 0 for v in size):
            raise ConfigError(f"coarse.size must be [WIDTH, HEIGHT] with both positive, got {size}",
                              "e.g. --set coarse.size=[64,64], or coarse.size=null for no coarse stage")
    if not math.isfinite(coarse.share) or not 0 < coarse.share <= 1:
        raise ConfigError(f"coarse.share must be above 0 and at most 1, got {coarse.share}",
                          "give the share of the iterations spent at the coarse size, e.g. --set coarse.share=0.9 "
                          "(1: the whole run, the picture scaled up at the end)")


def coarse_size(size: list[int], coarse: list[int] | None, factor: int) -> tuple[int, int] | None:
    """The size a run composes at before growing to ``size``: ``size`` scaled down (aspect kept) to fit within
    ``coarse``, in multiples of ``factor``; None when ``coarse`` is None or ``size`` fits it already."""
    if coarse is None:
        return None
    width, height = int(size[0]), int(size[1])
    scale = max(width / int(coarse[0]), height / int(coarse[1]))
    if scale <= 1:
        return None
    w = max(factor, int(round(width / scale / factor)) * factor)
    h = max(factor, int(round(height / scale / factor)) * factor)
    return None if (w, h) == (width, height) else (w, h)


_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mp4", ".webm")


def _check_output_dir(output_dir: str) -> None:
    """Refuse an output directory that is an existing file, or is named like an image file (``-o art.png``) unless
    such a directory exists: before any model loads, not after."""
    root = Path(output_dir).expanduser()
    blocker = blocking_file(root)
    if blocker is not None:
        where = "is a file" if blocker == root else f"lies under {str(blocker)!r}, which is a file"
        raise ConfigError(f"the output directory {output_dir!r} {where}; pixgen writes each run into a directory "
                          "of its own there, as DIR/RUN/image.png",
                          "give a directory that exists or can be made, e.g. -o outputs")
    if root.suffix.lower() in _FILE_SUFFIXES and not root.is_dir():
        raise ConfigError(f"the output directory {output_dir!r} looks like a file name; pixgen writes each run into "
                          "its own directory, as DIR/RUN/image.png",
                          f"give a directory, e.g. -o {str(root.with_suffix(''))!r}, and --name to name the run")


# What torch.manual_seed takes, less its negative seeds: torch wraps -1 to 2**64-1, so two recorded seeds would name
# one picture.
SEED_RANGE = (0, 2 ** 64 - 1)


def check_seed(seed: int, what: str | None = None, hint: str = "e.g. --seed 42") -> None:
    """Refuse a seed torch cannot take, before any model loads (``what`` names it in the message)."""
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(f"{what or f'seed {seed}'} is out of range: seeds run from 0 to 2**64-1", hint)


def _check_run_name(name: str | None) -> None:
    """A run name is one folder name inside the output directory: not a path, not '.' or '..', not too long."""
    if name is None:
        return
    hint = "give a plain folder name such as --name my-run; put the folder elsewhere with -o DIR"
    if not name.strip() or name in (".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise ConfigError(f"run name {name!r} is not a plain folder name (it may not be empty, '.' or '..', or hold "
                          "'/' or '\\')", hint)
    if len(name.encode("utf-8")) > 200:
        raise ConfigError(f"run name is {len(name.encode('utf-8'))} bytes long; a folder name may have at most 200 "
                          "here (pixgen may add -2, -3, ... to keep runs apart)", hint)


def check_noise_prompts(items: list[str]) -> list[tuple[int, float, float]]:
    """Each noise prompt, ``SEED[:WEIGHT[:STOP]]``, as (seed, weight, stop); ConfigError on a bad one."""
    from pixgen.prompts import parse_prompt

    out = []
    for item in items:
        for p in parse_prompt(item):
            head = p.text.split(":", 1)[0].strip()
            try:
                seed = int(p.text)
            except ValueError:
                if ":" in p.text and head.lstrip("+-").isdigit():
                    raise ConfigError(f"noise prompt {item!r}: {p.text.split(':', 1)[1]!r} after the seed is not a "
                                      "number", "write noise prompts as SEED:WEIGHT, e.g. 42:0.5") from None
                raise ConfigError(f"noise prompt {item!r}: {p.text!r} is not a whole-number seed",
                                  "write noise prompts as SEED:WEIGHT, e.g. 42:0.5") from None
            check_seed(seed, f"noise prompt {item!r}'s seed", "e.g. --noise-prompt 42:0.5")
            out.append((seed, p.weight, p.stop))
    return out


def _check_resumed(resumed: Any, iterations: int) -> None:
    """``resumed``: [STEP, ITERATIONS] pairs, steps in order, each within its run's length and the last within
    this one's."""
    hint = "it is written by `pixgen resume -i N`; leave it as pixgen wrote it, or --set resumed=[] to drop it"
    last = 0
    for entry in resumed:
        pair = list(entry) if isinstance(entry, (list, ListConfig)) else None
        if (pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
                or not last <= pair[0] <= pair[1] or pair[0] < 1):
            raise ConfigError(f"resumed must be a list of [STEP, ITERATIONS] pairs with 1 <= STEP <= ITERATIONS and "
                              f"the steps in order, got {entry!r}", hint)
        last = pair[0]
    if last > iterations:
        raise ConfigError(f"iterations is {iterations}, but the run was already at step {last} when it was last "
                          "resumed", f"give --iterations {last} or more")


def validate(cfg: DictConfig) -> None:
    """Check values that the schema's types cannot; raise ConfigError saying what to change."""
    size = list(cfg.size)
    if len(size) == 1:
        cfg.size = [size[0], size[0]]
        size = list(cfg.size)
    if len(size) != 2:
        raise ConfigError(f"size must be WIDTH HEIGHT, got {size!r}", "e.g. --size 256x256 or --set size=[256,256]")
    for v, axis in zip(size, ("width", "height")):
        if v <= 0:
            raise ConfigError(f"image {axis} must be positive, got {v}", "e.g. --size 256x256 or --set size=[256,256]")
    if cfg.iterations <= 0:
        raise ConfigError(f"iterations must be at least 1, got {cfg.iterations}", "e.g. --iterations 300")
    check_seed(int(cfg.seed))
    _check_run_name(cfg.run_name)
    check_noise_prompts(list(cfg.noise_prompts))
    _check_resumed(cfg.resumed, int(cfg.iterations))
    if cfg.save_every <= 0:
        raise ConfigError(f"save_every must be at least 1, got {cfg.save_every}", "e.g. --save-every 50")
    if cfg.log_every <= 0:
        raise ConfigError(f"log_every must be at least 1, got {cfg.log_every}", "e.g. --set log_every=10")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be at least 1, got {cfg.threads}",
                          "e.g. --threads 1, or leave it out (--set threads=null) for torch's own choice")
    if cfg.fps <= 0:
        raise ConfigError(f"fps must be at least 1, got {cfg.fps}", "e.g. --set fps=20")
    _positive(cfg.optim.lr, "learning rate (optim.lr)", "e.g. --lr 0.1")
    if cfg.optim.name.lower() not in OPTIMIZERS:
        close = difflib.get_close_matches(cfg.optim.name.lower(), OPTIMIZERS, n=1)
        raise ConfigError(f"unknown optimizer {cfg.optim.name!r}",
                          (f"did you mean {close[0]}? " if close else "") + f"choose one of: {', '.join(OPTIMIZERS)}")
    if cfg.cutouts.n <= 0:
        raise ConfigError(f"cutouts must be at least 1, got {cfg.cutouts.n}", "e.g. --cutouts 32")
    _positive(cfg.cutouts.pow, "cut power (cutouts.pow)", "e.g. --cut-pow 1.0")
    if cfg.cutouts.noise < 0:
        raise ConfigError(f"cutouts.noise must be >= 0, got {cfg.cutouts.noise}", "e.g. --set cutouts.noise=0.1")
    check_device(str(cfg.device))
    if cfg.init_color is not None:
        init_colors(cfg.init_color)  # raises on a malformed colour
        if cfg.init_image:
            raise ConfigError("init_image and init_color both set; a run starts from one of them",
                              "drop one (a preset may set init_color: use --set init_color=null)")
    if not math.isfinite(cfg.init_noise) or cfg.init_noise < 0:
        raise ConfigError(f"init_noise must be a finite number >= 0, got {cfg.init_noise}", "e.g. --init-noise 1")
    if not math.isfinite(cfg.init_weight) or not math.isfinite(cfg.tv_weight):
        raise ConfigError("init_weight and tv_weight must be finite numbers", "e.g. --init-weight 0.5")
    _check_prior(cfg.prior)
    _check_contrast(cfg.contrast)
    _check_coarse(cfg.coarse)
    _check_border(cfg.border, size)
    _check_sparsity(cfg.sparsity)
    _check_palette(cfg.palette)
    _check_output_dir(cfg.output_dir)
    if not cfg.prompt.strip() and not cfg.image_prompts and not cfg.noise_prompts:
        raise ConfigError("the prompt is empty", 'give a text prompt, e.g. pixgen generate "a red circle"')


def to_yaml(cfg: DictConfig, *, without_location: bool = False) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    if without_location:
        for key in LOCATION_KEYS:
            data.pop(key, None)
    return OmegaConf.to_yaml(OmegaConf.create(data))


def from_yaml_text(text: str, where: str) -> DictConfig:
    """Build a run config from YAML stored in a pixgen output (a PNG's text chunk or run.yaml)."""
    data = _yaml_mapping(text, f"the config stored in {where}",
                         "the file was damaged; use a PNG or run.yaml written by pixgen")
    return build((data, where))
