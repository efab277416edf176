"""CLIP of OpenAI's layout (ViT image tower, causal text transformer, QuickGELU), built without open_clip, for the
model configs pixgen ships (``pixgen/clip_configs``: the toy world's CLIP and the random-tiny test model).

Importing open_clip brings torchvision, timm and torch's compiler with it: about 2 s of CPU, a fifth of a
one-image toy run (benchmarks/RESULTS.md, "What one process pays before its search"). A CLIP whose config is one of
pixgen's own and whose weights come from a file is built here instead. The module tree, parameter names and
forward pass are open_clip's for these configs (``CLIP`` with ``VisionTransformer``, ``Transformer`` and
``ResidualAttentionBlock``, op for op), so the same weight files load in both and the embeddings and their
gradients are bit for bit the same (``tests/test_lean_clip.py``). Anything else (open_clip's own model names,
pretrained tags, other layouts) goes through open_clip, and so does any file this module cannot load.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# CLIP's image normalisation (OpenAI's; open_clip's OPENAI_DATASET_MEAN and _STD).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_TOP_KEYS = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
_VISION_KEYS = {"image_size", "layers", "width", "head_width", "patch_size"}
_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers"}


def lean_config(path: Path) -> dict | None:
    """The config in ``path`` if this module builds it exactly as open_clip would: OpenAI's layout with QuickGELU
    and no option beyond sizes; else None (open_clip builds it)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or set(cfg) != _TOP_KEYS or cfg.get("quick_gelu") is not True:
        return None
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if not (isinstance(vision, dict) and set(vision) == _VISION_KEYS
            and isinstance(text, dict) and set(text) == _TEXT_KEYS):
        return None
    return cfg


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_1(x)
        mask = attn_mask.to(q.dtype) if attn_mask is not None else None
        x = x + self.attn(q, q, q, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Blocks over (N, L, D) input; ``batch_first = False`` runs them sequence-first inside, as open_clip's does."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width, self.layers, self.batch_first = width, layers, True
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.batch_first:
            x = x.transpose(0, 1).contiguous()
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, head_width: int, output_dim: int):
        super().__init__()
        self.image_size = (image_size, image_size)
        self.output_dim = output_dim
        self.preprocess_cfg = {"size": image_size, "mean": OPENAI_MEAN, "std": OPENAI_STD}
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, width // head_width)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        x = self.ln_post(self.transformer(x))
        return x[:, 0] @ self.proj


class CLIP(nn.Module):
    """open_clip's ``CLIP`` for an OpenAI-layout config: ``encode_image`` and ``encode_text``, as open_clip's (not
    normalised unless ``normalize=True``)."""

    def __init__(self, cfg: dict):
        super().__init__()
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        self.visual = VisionTransformer(vision["image_size"], vision["patch_size"], vision["width"],
                                        vision["layers"], vision["head_width"], cfg["embed_dim"])
        width, self.context_length = text["width"], text["context_length"]
        self.transformer = Transformer(width, text["layers"], text["heads"])
        # the table is read from the weights file: no random start for 49408 rows
        self.token_embedding = nn.Embedding(text["vocab_size"], width, _weight=torch.empty(text["vocab_size"], width))
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.register_buffer("attn_mask", torch.empty(0), persistent=False)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.visual(image)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def _causal_mask(n: int) -> torch.Tensor:
    return torch.empty(n, n).fill_(float("-inf")).triu_(1)


def load_clip(cfg: dict, weights: str | Path, device: str | torch.device = "cpu") -> CLIP:
    """A :class:`CLIP` for ``cfg`` with the weights in ``weights`` (a plain state dict in open_clip's names, as
    ``torch.save`` or safetensors, float16 or float32), in float32 on ``device``, in eval mode.

    Raises ``ValueError`` or ``RuntimeError`` for a file that is not such a state dict (the caller then lets
    open_clip try it), ``OSError`` for one that cannot be read.
    """
    if str(weights).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights} is not a plain state dict")
    with torch.random.fork_rng(devices=[]):  # the layers' random starts, overwritten below, leave torch's RNG as it was
        model = CLIP(cfg)
    # strict: a file with other names or shapes (another layout, an OpenAI archive, a 'module.' prefix) raises,
    # and open_clip, which converts such files, gets it instead
    model.load_state_dict(state, strict=True)
    model.attn_mask = _causal_mask(model.context_length)
    return model.to(device).eval()


def save_torchscript(cfg: dict, state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """The CLIP ``state`` (open_clip's and OpenAI's names) of config ``cfg`` as a TorchScript archive with
    ``encode_image`` and ``encode_text``, written atomically: the form OpenAI ships its CLIP weights in, and the one
    OpenAI's ``clip.load(path)`` reads (it rebuilds its model from the archive's weights; with current torch it
    cannot read a plain state dict). The weights are kept in float32, so the archive's own methods run on the CPU.

    Raises ``RuntimeError`` when ``state`` does not fit ``cfg``."""
    from pixgen.atomic import atomic_path

    with torch.random.fork_rng(devices=[]):
        model = CLIP(cfg)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    # the causal mask as a constant of the traced graph, not a buffer: TorchScript would list even a non-persistent
    # buffer among the archive's weights, and OpenAI's loader refuses any name it does not know
    del model._buffers["attn_mask"]
    object.__setattr__(model, "attn_mask", _causal_mask(model.context_length))
    size = model.visual.image_size[0]
    tokens = torch.zeros(1, model.context_length, dtype=torch.long)
    tokens[0, :3] = torch.tensor([49406, 320, 49407])  # start, "a", end: the end token is the largest id
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch deprecates TorchScript; OpenAI reads it
        # the attention's shape checks become constants of the graph: right for any batch of this config's sizes
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace_module(model.eval(), {"encode_image": (torch.zeros(1, 3, size, size),),
                                                       "encode_text": (tokens,)}, check_trace=False)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, same_name=True) as tmp:  # the archive is named after the file
            torch.jit.save(traced, str(tmp))
    return path


def open_clip_tokenizer(context_length: int):
    """open_clip's BPE tokenizer (``SimpleTokenizer``), read from open_clip's own ``tokenizer.py`` without importing
    the open_clip package (whose ``__init__`` imports torchvision and timm); through the package if it is imported
    already or that file cannot be loaded alone."""
    if "open_clip" not in sys.modules:
        try:
            package = importlib.util.find_spec("open_clip")
            source = Path(next(iter(package.submodule_search_locations))) / "tokenizer.py"
            spec = importlib.util.spec_from_file_location("pixgen._open_clip_tokenizer", source)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.SimpleTokenizer(context_length=context_length)
        except Exception:  # noqa: BLE001 - any trouble here: the package's own way below
            pass
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)

