"""CLIP through open_clip: text and image embeddings, each model's own input size and normalisation,
and weighted ensembles of several models. pixgen's own configs with weight files (the toy world's CLIP) are built
by :mod:`pixgen.models.clip`, with the same numbers, without importing open_clip.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.atomic import atomic_safetensors, atomic_torch_save
from pixgen.config import is_step_range
from pixgen.errors import ModelError

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
_registered = False


def _register_configs() -> None:
    """Make pixgen's own model configs (random-tiny, toy) known to open_clip, once."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


RANDOM = "random"  # PRETRAINED that asks for random weights (open_clip's own models refuse no weights otherwise)
_STEPS = re.compile(r"@\s*([^@\s-]*)\s*-\s*([^@\s-]*)\s*$")
_SPEC_HINT = ("write MODEL[:PRETRAINED[:WEIGHT]][@START-END], e.g. ViT-B-32:openai, ViT-B-32:openai:0.5 or "
              "ViT-B-32:openai@0-0.6 (this model guides the first 60% of the steps)")


@dataclass(frozen=True)
class ClipSpec:
    """``MODEL[:PRETRAINED[:WEIGHT]][@START-END]``: an open_clip model name, a pretrained tag or file, an ensemble
    weight (finite, 0 or more: a negative one is refused, see :func:`_parse_weight`), and the part of the run
    (fractions of the steps, start inclusive, end exclusive) it guides.

    PRETRAINED may be ``BASE+TOWER``: the weights of BASE (a tag or file) with the image tower replaced by the
    one in the file TOWER (written by :func:`save_image_tower`), e.g. an image tower fine-tuned with its text
    tower kept as it was.
    """

    model: str
    pretrained: str | None = None
    weight: float = 1.0
    steps: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def parse(cls, text: str) -> "ClipSpec":
        source = text
        text = text.strip()
        if not text:
            raise ModelError("empty CLIP model spec", _SPEC_HINT)
        steps = (0.0, 1.0)
        match = _STEPS.search(text) if "@" in text and not _names_file(text) else None  # as '+': a file comes first
        if match:
            steps = _parse_steps(source, match.group(1), match.group(2))
            text = text[:match.start()].rstrip()
        elif "@" in text and not _names_file(text):
            raise ModelError(f"CLIP spec {source!r}: the part after '@' is not a step range START-END", _SPEC_HINT)
        weight = 1.0
        head = text
        if text.count(":") >= 2 or (":" in text and _is_number(text.rsplit(":", 1)[1])):
            maybe_head, tail = text.rsplit(":", 1)
            if _is_number(tail):
                weight, head = _parse_weight(source, tail), maybe_head
        model, _, pretrained = head.partition(":")
        if not model:
            raise ModelError(f"CLIP spec {source!r} has no model name", _SPEC_HINT)
        return cls(model, pretrained or None, weight, steps)

    def __str__(self) -> str:
        text = f"{self.model}:{self.pretrained or ''}:{self.weight:g}"
        return text if self.steps == (0.0, 1.0) else f"{text}@{self.steps[0]:g}-{self.steps[1]:g}"

    def active(self, step: int, total: int) -> bool:
        """Whether this model guides step ``step`` (0-based) of a run of ``total`` steps."""
        return step_in_range(self.steps, step, total)


def step_in_range(steps: tuple[float, float], step: int, total: int) -> bool:
    """Whether 0-based ``step`` of ``total`` lies in the fraction range [start, end) (end 1 includes the last)."""
    start, end = steps
    return round(start * total) <= step and (end >= 1.0 or step < round(end * total))


def _parse_steps(source: str, start: str, end: str) -> tuple[float, float]:
    try:
        lo, hi = float(start), float(end)
    except ValueError:
        raise ModelError(f"CLIP spec {source!r}: step range {start}-{end} is not two numbers", _SPEC_HINT) from None
    if not is_step_range(lo, hi):
        raise ModelError(f"CLIP spec {source!r}: step range {start}-{end} must satisfy 0 <= START < END <= 1",
                         "give the share of the run this model guides as fractions of the steps, e.g. @0.6-1")
    return lo, hi


def _parse_weight(source: str, text: str) -> float:
    """An ensemble weight: finite and not negative. A negative weight on a whole CLIP would push the image away
    from every prompt at once (and from the picture they describe), so it is refused; a prompt's own negative
    weight (``"a castle | blurry:-1"``) repels one thing and is the way to do that."""
    weight = float(text)
    if not math.isfinite(weight):
        raise ModelError(f"CLIP spec {source!r}: weight {text} is not a finite number", _SPEC_HINT)
    if weight < 0:
        raise ModelError(f"CLIP spec {source!r}: weight {text} is negative, which would push the image away from "
                         "every prompt at once",
                         "give a CLIP weight of 0 or more; to steer away from something give that prompt a "
                         "negative weight instead, e.g. \"a castle | blurry:-1\"")
    return weight


def _names_file(text: str) -> bool:
    """Whether ``MODEL:FILE`` or ``MODEL:FILE:WEIGHT`` names an existing file (whose path may hold an '@')."""
    pretrained = text.partition(":")[2]
    head, _, tail = pretrained.rpartition(":")
    return any(p and Path(p).expanduser().is_file() for p in (pretrained, head if _is_number(tail) else ""))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


class Perceptor(nn.Module):
    """One frozen CLIP model with its tokenizer, input size and normalisation.

    Shape:
        - ``encode_image``: (N, 3, S, S) in [0, 1], S = ``input_size`` -> (N, D), not normalised
        - ``encode_text``: list of k strings -> (k, D)
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, weight: float = 1.0,
                 steps: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        _sequence_first(getattr(model.visual, "transformer", None))
        self.tokenizer = tokenizer
        self.name = name
        self.weight = weight
        self.steps = steps  # the fractions of a run's steps this model guides: [start, end)
        pp = getattr(model.visual, "preprocess_cfg", None) or {}
        size = pp.get("size", getattr(model.visual, "image_size", 224))
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = pp.get("mean") or getattr(model.visual, "image_mean", None)
        std = pp.get("std") or getattr(model.visual, "image_std", None)
        if mean is None or std is None:
            from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

            mean, std = mean or OPENAI_DATASET_MEAN, std or OPENAI_DATASET_STD
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        """Width D of the shared image/text embedding space."""
        return int(self.model.visual.output_dim)

    @property
    def logit_scale(self) -> float:
        """The softmax scale the CLIP was trained with (``exp`` of its ``logit_scale``); 100 if it has none."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().float().exp()) if isinstance(scale, torch.Tensor) else 100.0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return self.model.encode_image((images - self.mean) / self.std)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.mean.device)
        return self.model.encode_text(tokens).float()


def _sequence_first(transformer: nn.Module | None) -> None:
    """Run an open_clip transformer stack sequence-first (L, N, D), a layout open_clip supports, where each
    block's ``nn.MultiheadAttention`` gets contiguous input. Batch-first, the attention transposes its input,
    and its input projection on that view runs as a batched product over a copied weight: the toy CLIP's image
    tower took 1.1x as long, with the same numbers (benchmarks/RESULTS.md, "Where a step's time goes"). Stacks
    of any other kind are left as they are."""
    blocks = getattr(transformer, "resblocks", None)
    if not getattr(transformer, "batch_first", False) or blocks is None:
        return
    if not all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks):
        return
    transformer.batch_first = False
    for block in blocks:
        block.attn.batch_first = False


def clip_cache_dir(home: Path | None = None) -> Path:
    if home is None:
        from pixgen.checkpoints import pixgen_home

        home = pixgen_home()
    return Path(home) / "clip"


def load_perceptor(spec: str | ClipSpec, device: str | torch.device = "cpu", *, seed: int = 0,
                   cache_dir: str | Path | None = None) -> Perceptor:
    """Load a CLIP model by ``MODEL:PRETRAINED[:WEIGHT]``: PRETRAINED is an open_clip tag, a local file, or
    ``random`` for random weights; pixgen's own configs (``pixgen-random-tiny``) take none for random weights, an
    open_clip model without one is refused (it would guide nothing)."""
    spec = ClipSpec.parse(spec) if isinstance(spec, str) else spec
    lean = _load_own(spec, device)
    if lean is not None:
        return lean
    import open_clip

    _register_configs()
    known = open_clip.list_models()
    if spec.model not in known:
        import difflib

        close = difflib.get_close_matches(spec.model, known, n=3)
        raise ModelError(f"unknown CLIP model {spec.model!r}",
                         (f"did you mean {', '.join(close)}? " if close else "")
                         + "`python -c 'import open_clip; print(open_clip.list_models())'` lists them")
    pretrained, tower = weights_files(spec)
    if pretrained == RANDOM:
        pretrained = None
    elif not pretrained and not spec.model.startswith("pixgen-"):  # pixgen's own test configs run random
        # a real model without weights guides nothing, and `MODEL:0.5` reads 0.5 as its weight: ask for the weights
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        example = f"{spec.model}:{tags[0]}" if tags else f"{spec.model}:/path/to/weights.pt"
        raise ModelError(f"CLIP spec {spec} names no pretrained weights for {spec.model}, which would run with "
                         "random weights",
                         f"write MODEL:PRETRAINED, e.g. --clip {example}"
                         + (f" (open_clip knows {', '.join(tags[:8])}{', ...' if len(tags) > 8 else ''})" if tags
                            else "") + f", or MODEL:/path/to/weights.pt; {spec.model}:{RANDOM} runs it with random "
                         "weights on purpose (e.g. to time it)")
    if pretrained and is_weights_file(pretrained):
        if not Path(pretrained).expanduser().is_file():
            raise ModelError(f"CLIP weights file {pretrained!r} for {spec.model} not found",
                             "check the path, or give a pretrained tag such as 'openai'")
        pretrained = str(Path(pretrained).expanduser())
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        if pretrained not in tags:
            raise ModelError(f"CLIP model {spec.model} has no pretrained tag {pretrained!r}",
                             f"known tags: {', '.join(tags) or '(none)'}; or give a path to a weights file")
    cache = Path(cache_dir) if cache_dir is not None else clip_cache_dir()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a random-weight model (no pretrained) is the same every time
            with contextlib.redirect_stdout(io.StringIO()), quiet_logging():
                model = open_clip.create_model(spec.model, pretrained=pretrained, device=device,
                                               cache_dir=str(cache), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a file that is no checkpoint fails in many ways (KeyError, ...)
        if pretrained and Path(pretrained).is_file():
            problem = _weights_file_problem(spec.model, Path(pretrained))
            if problem is not None:
                raise problem from None
        if pretrained and not Path(pretrained).is_file():
            damaged = _set_aside_damaged_cache(spec.model, pretrained, cache)
            if damaged is not None:
                raise damaged from None
            raise ModelError(
                f"could not get CLIP weights {spec.model}:{pretrained} ({type(exc).__name__}: {_short(exc)})",
                f"pixgen looked in {cache} (open_clip's download cache). Without network access, download the "
                f"weights elsewhere and pass the file: --clip {spec.model}:/path/to/weights.pt",
            ) from None
        raise ModelError(f"could not load CLIP {spec.model}:{pretrained or '(random)'} "
                         f"({type(exc).__name__}: {_short(exc)})",
                         "check that the weights file is a CLIP checkpoint (torch.save or safetensors of a state "
                         "dict) for this model name") from None
    if tower is not None:
        load_image_tower(model, tower)
    tokenizer = _tokenizer(spec.model)
    return Perceptor(model, tokenizer, f"{spec.model}:{_short_weights(spec.pretrained)}", spec.weight,
                     spec.steps).to(device)


def _read_weights_safely(path: Path) -> object:
    """What a weights file holds: a safetensors file's tensors, or a torch file read without running any code in it
    (a pickle that would is refused, UnsafeCheckpointError)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from pixgen.checkpoints import _torch_load_safely

    return _torch_load_safely(path)


_VQGAN_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "first_stage_model.")


def _weights_file_problem(model: str, path: Path) -> ModelError | None:
    """Why open_clip could not load the weights file ``path`` for ``model``, in words: a pickle that would run code
    (refused unread, as a VQGAN checkpoint is), a file that is no CLIP state dict (a VQGAN checkpoint, say), or
    weights of another architecture (with a shape that differs). None when none of these is found; the caller then
    reports open_clip's own error. Runs only after a failed load, so a good file is read once."""
    from pixgen.checkpoints import UnsafeCheckpointError

    hint = f"give the weights of a {model} CLIP (torch.save or safetensors of its state dict), or its pretrained tag"
    try:
        state = _read_weights_safely(path)
    except UnsafeCheckpointError as exc:
        return exc
    except Exception:  # noqa: BLE001 - unreadable: open_clip's own error says how
        return None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        return ModelError(f"{path} is not a CLIP state dict (it holds a {type(state).__name__})", hint)
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    if not any(k.startswith("visual.") for k in state):
        if any(k.startswith(_VQGAN_PREFIXES) for k in state):
            return ModelError(f"{path} is a VQGAN checkpoint, not a CLIP state dict",
                              "give it as --vqgan-checkpoint (with its --vqgan-config); " + hint)
        return ModelError(f"{path} is not a CLIP state dict (no 'visual.' weights)", hint)
    try:
        import open_clip

        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()), quiet_logging():
            own = open_clip.create_model(model, device="meta").state_dict()  # shapes only: nothing is allocated
    except Exception:  # noqa: BLE001 - the shapes are a courtesy; open_clip's own error is reported without them
        return None
    for k, v in state.items():
        if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape):
            return ModelError(f"the weights in {path} do not fit {model}: {k} is {tuple(v.shape)} in the file but "
                              f"{tuple(own[k].shape)} in {model}", "check MODEL in --clip MODEL:FILE; " + hint)
    missing = [k for k in own if k not in state]
    if missing:
        return ModelError(f"the weights in {path} do not fit {model}: {len(missing)} of its tensors are missing, "
                          f"e.g. {missing[0]}", "check MODEL in --clip MODEL:FILE; " + hint)
    return None


def _set_aside_damaged_cache(model: str, tag: str, cache: Path) -> ModelError | None:
    """After open_clip failed to load ``model:tag``: a file of it in the download cache (Hugging Face's layout) that
    cannot be read is moved aside to ``NAME.corrupt`` (the file the cache links to, so that it is not linked
    again), as a bad VQGAN in pixgen's cache is, and the error names it; None when every cached file reads."""
    import open_clip

    hub = (open_clip.get_pretrained_cfg(model, tag) or {}).get("hf_hub", "")
    parts = hub.strip("/").split("/")
    if len(parts) < 2:
        return None
    name = parts[2] if len(parts) > 2 else ""
    snapshots = cache / f"models--{parts[0]}--{parts[1]}" / "snapshots"
    for path in sorted(snapshots.glob("*/*")):
        if (not path.is_file() or path.suffix == ".corrupt"
                or not (path.name == name if name else path.name.startswith("open_clip_"))):
            continue
        try:
            _read_weights_safely(path)
            continue
        except Exception as exc:  # noqa: BLE001 - any failure to read means the cached copy is bad
            detail = f"{path.stat().st_size} bytes, unreadable: {type(exc).__name__}"
        target = path.resolve()
        bad = target.with_name(target.name + ".corrupt")
        try:
            os.replace(target, bad)
            path.unlink(missing_ok=True)  # the link to it, if it was one
        except OSError:
            return ModelError(f"the cached CLIP weights {path} for {model}:{tag} are damaged ({detail})",
                              "delete the file; the next run with network access downloads it again")
        return ModelError(f"the cached CLIP weights {path} for {model}:{tag} are damaged ({detail})",
                          f"the file was moved to {bad}; run again with network access to download it again, "
                          f"or pass a good file: --clip {model}:/path/to/weights.pt")
    return None


def _load_own(spec: ClipSpec, device: str | torch.device) -> Perceptor | None:
    """One of pixgen's own configs (``clip_configs``) with its weights in a file, built without importing open_clip
    (:mod:`pixgen.models.clip`: the same numbers, 2 s less CPU a process); None for anything else, and for a file
    that module cannot load, so that open_clip loads it or reports what is wrong with it."""
    from pixgen.models.clip import lean_config, load_clip

    config = CONFIG_DIR / f"{spec.model}.json"
    cfg = lean_config(config) if config.is_file() else None
    if cfg is None:
        return None
    pretrained, tower = weights_files(spec)
    if not pretrained or not is_weights_file(pretrained) or not Path(pretrained).expanduser().is_file():
        return None
    try:
        model = load_clip(cfg, Path(pretrained).expanduser(), device)
    except Exception:  # noqa: BLE001 - open_clip reads the file next and reports it properly if it is bad
        return None
    if tower is not None:
        load_image_tower(model, tower)
    tokenizer = _own_tokenizer(int(cfg["text_cfg"]["context_length"]))
    return Perceptor(model, tokenizer, f"{spec.model}:{_short_weights(spec.pretrained)}", spec.weight,
                     spec.steps).to(device)


@functools.lru_cache(maxsize=2)
def _own_tokenizer(context_length: int):
    """open_clip's tokenizer for pixgen's own configs, without importing open_clip (once a process, as below)."""
    from pixgen.models.clip import open_clip_tokenizer

    return open_clip_tokenizer(context_length)


@functools.lru_cache(maxsize=8)
def _tokenizer(model: str):
    """open_clip's tokenizer for ``model``, built once a process: the toy model's three image towers share one
    text side, and building its tokenizer (the BPE tables) took 0.09 s each time."""
    import open_clip

    return open_clip.get_tokenizer(model)


def _short_weights(pretrained: str | None) -> str:
    """A pretrained tag as is, files by their names only (labels in logs stay readable)."""
    if not pretrained:
        return "random"
    parts = pretrained.split("+")
    return "+".join(Path(x).name if is_weights_file(x) else x for x in parts)


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def is_weights_file(pretrained: str) -> bool:
    """Whether PRETRAINED names a file (a path, or a weights file name) rather than an open_clip tag."""
    return os.sep in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES)


TOWER_KEY = "pixgen_image_tower"  # metadata key that marks a file written by save_image_tower


def split_tower(pretrained: str) -> tuple[str, str | None]:
    """``BASE+TOWER.safetensors`` -> (BASE, TOWER.safetensors); anything else -> (pretrained, None), also a file
    whose own name holds a '+'. Only splits; :func:`weights_files` checks the parts."""
    base, plus, tower = pretrained.rpartition("+")
    if not plus or not tower.endswith(".safetensors") or Path(pretrained).expanduser().is_file():
        return pretrained, None
    return base, tower


def weights_files(spec: ClipSpec) -> tuple[str | None, Path | None]:
    """Split PRETRAINED into the base weights and the optional image-tower file (``BASE+TOWER``)."""
    pretrained = spec.pretrained
    if not pretrained:
        return pretrained, None
    base, tower = split_tower(pretrained)
    if tower is None:
        return pretrained, None
    tower_path = Path(tower).expanduser()
    if not tower_path.is_file():
        raise ModelError(f"image tower file {tower!r} for {spec.model} not found",
                         "check the path after '+' in BASE+TOWER: a .safetensors file written by "
                         "`pixgen toy image-tower` or pixgen.perceptor.save_image_tower")
    if not base:
        raise ModelError(f"CLIP spec {spec.model}:{pretrained}: no base weights before '+'",
                         "write BASE+TOWER, e.g. pixgen-toy-clip:checkpoints/toy/clip.pt+late.safetensors")
    return base, tower_path


def save_image_tower(model: nn.Module, path: str | Path, base: str = "") -> Path:
    """Write the image tower (``model.visual``) alone, float16 safetensors, atomically.

    ``base`` names the weights whose text tower it goes with; it is recorded, not enforced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.visual.state_dict().items()}
    return atomic_safetensors(state, path, metadata={TOWER_KEY: "1", "base": base})


def _read_image_tower(path: str | Path, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the image tower file ``path`` (written by :func:`save_image_tower`), checked against the
    image tower ``own`` (names and shapes) it is to replace."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # one read: the metadata mark and the tensors
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"could not read image tower file {path}: {_short(exc)}",
                         "give a .safetensors file written by `pixgen toy image-tower` or save_image_tower") from None
    if TOWER_KEY not in meta:
        raise ModelError(f"{path} is not an image tower file (no {TOWER_KEY!r} in its metadata)",
                         "after '+' in BASE+TOWER give a file written by `pixgen toy image-tower` or save_image_tower")
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, not {tuple(own[wrong[0]].shape)}")
        raise ModelError(f"image tower file {path} does not fit this CLIP model ({detail})",
                         "pair the tower file with the model it was trained as")
    return {k: v.to(own[k].dtype) for k, v in state.items()}


def load_image_tower(model: nn.Module, path: str | Path) -> None:
    """Replace ``model.visual``'s weights with those in ``path`` (written by :func:`save_image_tower`)."""
    model.visual.load_state_dict(_read_image_tower(path, model.visual.state_dict()))


def read_clip_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The CLIP state dict saved by ``torch.save`` in ``path``, or a ModelError that says what the file is not."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors of every kind (torch's own text suggests
        # weights_only=False, which would run the file's code): one clear message instead
        raise ModelError(f"could not read CLIP weights {path} ({type(exc).__name__}): not a state dict saved by "
                         "torch.save", "give a clip.pt state dict, e.g. checkpoints/toy/clip.pt") from None
    if not isinstance(state, dict) or not any(str(k).startswith("visual.") for k in state):
        raise ModelError(f"{path} is not a CLIP state dict with an image tower (no 'visual.' weights)",
                         "give a clip.pt state dict, e.g. checkpoints/toy/clip.pt")
    return state


def clip_state_with_tower(base: str | Path, tower: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The CLIP state dict in the file ``base``, with its image tower replaced by the one in ``tower`` when given:
    the weights pixgen loads as ``BASE+TOWER``, as one state dict in ``base``'s names and dtypes."""
    state = read_clip_state(base)
    if tower is not None:
        own = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        state.update({f"visual.{k}": v for k, v in _read_image_tower(tower, own).items()})
    return state


def merge_image_tower(base: str | Path, tower: str | Path, out: str | Path) -> Path:
    """Write :func:`clip_state_with_tower` as one plain state dict, atomically: a whole CLIP file for tools that
    load one file (open_clip, OpenAI's ``build_model``), where pixgen loads ``BASE+TOWER``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save(clip_state_with_tower(base, tower), out)


@contextlib.contextmanager
def quiet_logging():
    """open_clip logs a warning for random-weight models and an error before raising; pixgen reports both itself."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
