"""CLIP through open_clip: text and image embeddings, each model's own input size and normalisation,
and weighted ensembles of several models.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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


@dataclass(frozen=True)
class ClipSpec:
    """``MODEL[:PRETRAINED[:WEIGHT]]``: an open_clip model name, a pretrained tag or file, an ensemble weight."""

    model: str
    pretrained: str | None = None
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "ClipSpec":
        text = text.strip()
        if not text:
            raise ModelError("empty CLIP model spec", "write MODEL:PRETRAINED[:WEIGHT], e.g. ViT-B-32:openai")
        weight = 1.0
        head = text
        if text.count(":") >= 2 or (":" in text and _is_number(text.rsplit(":", 1)[1])):
            maybe_head, tail = text.rsplit(":", 1)
            if _is_number(tail):
                weight, head = float(tail), maybe_head
        model, _, pretrained = head.partition(":")
        if not model:
            raise ModelError(f"CLIP spec {text!r} has no model name", "e.g. ViT-B-32:openai")
        return cls(model, pretrained or None, weight)

    def __str__(self) -> str:
        return f"{self.model}:{self.pretrained or ''}:{self.weight:g}"


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

    def __init__(self, model: nn.Module, tokenizer, name: str, weight: float = 1.0):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.weight = weight
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

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return self.model.encode_image((images - self.mean) / self.std)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.mean.device)
        return self.model.encode_text(tokens).float()


def clip_cache_dir(home: Path | None = None) -> Path:
    if home is None:
        from pixgen.checkpoints import pixgen_home

        home = pixgen_home()
    return Path(home) / "clip"


def load_perceptor(spec: str | ClipSpec, device: str | torch.device = "cpu", *, seed: int = 0,
                   cache_dir: str | Path | None = None) -> Perceptor:
    """Load a CLIP model by ``MODEL:PRETRAINED[:WEIGHT]`` (pretrained may be a local file, or empty for random)."""
    import open_clip

    _register_configs()
    spec = ClipSpec.parse(spec) if isinstance(spec, str) else spec
    known = open_clip.list_models()
    if spec.model not in known:
        import difflib

        close = difflib.get_close_matches(spec.model, known, n=3)
        raise ModelError(f"unknown CLIP model {spec.model!r}",
                         (f"did you mean {', '.join(close)}? " if close else "")
                         + "`python -c 'import open_clip; print(open_clip.list_models())'` lists them")
    pretrained = spec.pretrained
    if pretrained and (os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
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
            with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
                model = open_clip.create_model(spec.model, pretrained=pretrained, device=device,
                                               cache_dir=str(cache), weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:
        if pretrained and not Path(pretrained).is_file():
            raise ModelError(
                f"could not get CLIP weights {spec.model}:{pretrained} ({type(exc).__name__}: {_short(exc)})",
                f"pixgen looked in {cache} (open_clip's download cache). Without network access, download the "
                f"weights elsewhere and pass the file: --clip {spec.model}:/path/to/weights.pt",
            ) from None
        raise ModelError(f"could not load CLIP {spec.model}:{pretrained or '(random)'}: {_short(exc)}",
                         "check that the weights file matches the model name") from None
    tokenizer = open_clip.get_tokenizer(spec.model)
    return Perceptor(model, tokenizer, f"{spec.model}:{spec.pretrained or 'random'}", spec.weight).to(device)


@contextlib.contextmanager
def _quiet_logging():
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
