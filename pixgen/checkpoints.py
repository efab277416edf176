"""VQGAN checkpoints: the named registry, the cache directory, safe loading of every taming format.

* :func:`resolve_vqgan` turns a registry name (downloading on first use) or a local YAML/ckpt pair into paths.
* :func:`load_vqgan` builds our :class:`~pixgen.models.vqgan.VQGAN` from a taming YAML and a checkpoint:
  plain ``VQModel``, ``GumbelVQ`` and Net2Net files (VQGAN under ``first_stage_model.*``), Lightning files
  (``{"state_dict": ...}``) or bare state dicts, saved on any device.
* Checkpoints are pickles from the internet, so they are read with torch's ``weights_only`` unpickler. The
  metadata classes a Lightning file names (callbacks, numpy scalars, ...) are replaced by inert stand-ins
  that run nothing; any other global (``os.system``, ``builtins.exec``, ...) makes the load fail with
  :class:`UnsafeCheckpointError`. After a checkpoint has loaded once, a safetensors copy of just the VQGAN
  weights is kept in the cache directory and used next time.

The registry is data: ``pixgen/registry/vqgan.yaml`` (plus an optional ``<home>/registry.yaml`` of the user's
own entries) and the architecture YAMLs in ``pixgen/registry/configs/``.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import yaml

from pixgen import shipped
from pixgen.download import DownloadError, download, partial_path, sha256_of
from pixgen.errors import ModelError
from pixgen.models.vqgan import VQGAN, VQGANConfig

__all__ = [
    "ModelEntry",
    "UnsafeCheckpointError",
    "CorruptCheckpointError",
    "CheckpointMismatchError",
    "pixgen_home",
    "registry",
    "default_model_name",
    "get_entry",
    "model_urls",
    "download_model",
    "resolve_vqgan",
    "read_vqgan_config",
    "read_vqgan_state_dict",
    "verify_checkpoint",
    "verify_model",
    "load_vqgan",
    "list_models",
    "local_clip_models",
    "DownloadError",
]

REGISTRY_DIR = Path(__file__).resolve().parent / "registry"
USER_REGISTRY = "registry.yaml"
MIRRORS_FILE = "mirrors.yaml"
CONVERTED_DIR = "converted"
_VQGAN_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


class UnsafeCheckpointError(ModelError):
    """A checkpoint whose pickle asks to import or call something a weights file never needs."""


class CorruptCheckpointError(ModelError):
    """A checkpoint that cannot be read: truncated, corrupt, or not a VQGAN checkpoint at all."""


class CheckpointMismatchError(ModelError):
    """A checkpoint whose weights do not fit the architecture its YAML describes."""


# --------------------------------------------------------------------------------------------------------------
# Cache directory and registry
# --------------------------------------------------------------------------------------------------------------


def pixgen_home(override: str | os.PathLike | None = None) -> Path:
    """Where weights are kept: ``override`` > ``$PIXGEN_HOME`` > the checkout's ``checkpoints/`` > ~/.cache/pixgen."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("PIXGEN_HOME")
    if env:
        return Path(env).expanduser()
    if shipped.in_checkout():
        return shipped.CHECKOUT / "checkpoints"
    return Path("~/.cache/pixgen").expanduser()


@dataclass(frozen=True)
class ModelEntry:
    """One named checkpoint of the registry."""

    name: str
    description: str
    format: str
    config: Path
    filename: str
    urls: tuple[str, ...]
    size: int | None = None
    approx_size: str | None = None
    sha256: str | None = None
    source: str | None = None

    def checkpoint_path(self, home: Path) -> Path:
        return Path(home) / self.filename

    def safetensors_path(self, home: Path) -> Path:
        return Path(home) / (Path(self.filename).stem + ".safetensors")


@lru_cache(maxsize=None)
def _packaged_table() -> dict:
    with open(REGISTRY_DIR / "vqgan.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def _entries_from(table: Mapping, base: Path, origin: str) -> dict[str, ModelEntry]:
    models = table.get("models") if isinstance(table, Mapping) else None
    if not isinstance(table, Mapping) or (table and "models" not in table) or not isinstance(models or {}, Mapping):
        raise ModelError(f"{origin} must hold `models:` mapping each NAME to its fields (config, filename, urls, ...)",
                         "see pixgen/registry/vqgan.yaml for the form, or fix or remove the file")
    entries = {}
    for name, raw in (models or {}).items():
        if not isinstance(raw, Mapping) or not raw.get("config") or not raw.get("filename"):
            raise ModelError(f"registry entry {name!r} in {origin} needs at least 'config' and 'filename'",
                             "see pixgen/registry/vqgan.yaml for the fields an entry takes")
        config = Path(str(raw["config"])).expanduser()
        entries[str(name)] = ModelEntry(
            name=str(name),
            description=str(raw.get("description") or ""),
            format=str(raw.get("format") or "VQModel"),
            config=config if config.is_absolute() else base / config,
            filename=str(raw["filename"]),
            urls=tuple(str(u) for u in raw.get("urls") or ()),
            size=int(raw["size"]) if raw.get("size") is not None else None,
            approx_size=str(raw["approx_size"]) if raw.get("approx_size") else None,
            sha256=str(raw["sha256"]).lower() if raw.get("sha256") else None,
            source=str(raw["source"]) if raw.get("source") else None,
        )
    return entries


def registry(home: str | os.PathLike | None = None) -> dict[str, ModelEntry]:
    """The named VQGANs: the packaged table, plus (overriding it) ``<home>/registry.yaml`` if present."""
    entries = _entries_from(_packaged_table(), REGISTRY_DIR, "pixgen/registry/vqgan.yaml")
    user_file = pixgen_home(home) / USER_REGISTRY
    if user_file.is_file():
        entries.update(_entries_from(_read_yaml(user_file) or {}, user_file.parent, str(user_file)))
    return entries


def default_model_name() -> str:
    return str(_packaged_table().get("default", "imagenet_f16_16384"))


def get_entry(name: str, home: str | os.PathLike | None = None) -> ModelEntry:
    """The registry entry called ``name``; an unknown name raises ModelError suggesting the closest ones."""
    entries = registry(home)
    if name in entries:
        return entries[name]
    folded = {k.lower().replace("-", "_"): k for k in entries}
    if name.lower().replace("-", "_") in folded:
        return entries[folded[name.lower().replace("-", "_")]]
    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.4)
    suggestion = f"did you mean {' or '.join(close)}? " if close else ""
    raise ModelError(f"unknown model {name!r}",
                     f"{suggestion}`pixgen models list` shows the known names; a local pair works with "
                     f"--vqgan-config FILE.yaml --vqgan-checkpoint FILE.ckpt")


def _mirror_spec_from_env(home: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Per-model URLs and base URLs from ``$PIXGEN_MIRRORS`` and ``<home>/mirrors.yaml``."""
    per_model: dict[str, list[str]] = {}
    bases: list[str] = []

    def take(mapping: Any, origin: str) -> None:
        form = "map NAME (or '*' for base URLs) to a URL or a list of URLs"
        if not isinstance(mapping, Mapping):
            raise ModelError(f"{origin} must {form}", "e.g. `tiny: [http://host/tiny.ckpt]`; fix or remove the file")
        for key, value in mapping.items():
            urls = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(u, str) for u in urls):
                raise ModelError(f"{origin} must {form}; {key!r} holds {value!r}",
                                 "e.g. `tiny: [http://host/tiny.ckpt]`; fix or remove the file")
            if str(key) == "*":
                bases.extend(urls)
            else:
                per_model.setdefault(str(key), []).extend(urls)

    env = os.environ.get("PIXGEN_MIRRORS", "").strip()
    if env:
        if Path(env).expanduser().is_file():
            take(_read_yaml(Path(env).expanduser()) or {}, env)
        else:
            for item in re.split(r"[;\s]+", env):
                if not item:
                    continue
                name, sep, urls = item.partition("=")
                if sep and "://" not in name:
                    per_model.setdefault(name, []).extend(u for u in urls.split(",") if u)
                elif "://" in item:
                    bases.append(item)
                elif Path(item).expanduser().is_dir():
                    bases.append(Path(item).expanduser().resolve().as_uri())
                elif item.lower().endswith((".yaml", ".yml")):
                    raise ModelError(f"PIXGEN_MIRRORS names the mirrors file {item}, which does not exist",
                                     "check the path, or set PIXGEN_MIRRORS='NAME=URL' or a base URL instead")
                else:
                    raise ModelError(f"PIXGEN_MIRRORS holds {item!r}, which is neither a URL, NAME=URL, "
                                     f"an existing folder nor a mirrors YAML file",
                                     "set PIXGEN_MIRRORS='NAME=URL,URL', a base URL such as http://host/dir/, "
                                     "or the path of a mirrors.yaml")
    mirrors_file = home / MIRRORS_FILE
    if mirrors_file.is_file():
        take(_read_yaml(mirrors_file) or {}, str(mirrors_file))
    return per_model, bases


def model_urls(entry: ModelEntry, home: str | os.PathLike | None = None,
               urls: Iterable[str] | None = None) -> list[str]:
    """The URLs tried for ``entry``, in order.

    Explicit ``urls`` win; otherwise mirrors configured for the entry (``PIXGEN_MIRRORS='NAME=URL,URL'`` or
    ``<home>/mirrors.yaml`` ``NAME: [URL, ...]``) and base URLs (``PIXGEN_MIRRORS=http://host/dir/`` or
    ``'*': [...]``, to which the entry's file name is appended) are used *instead of* the registry's hosts,
    so an air-gapped site never reaches out. Without any of these, the registry's URLs are used.
    """
    if urls:
        return list(urls)
    per_model, bases = _mirror_spec_from_env(pixgen_home(home))
    chosen = list(per_model.get(entry.name, []))
    chosen += [b.rstrip("/") + "/" + entry.filename for b in bases]
    return chosen or list(entry.urls)


# --------------------------------------------------------------------------------------------------------------
# Resolving and downloading
# --------------------------------------------------------------------------------------------------------------


def download_model(name: str, home: str | os.PathLike | None = None, *, urls: Iterable[str] | None = None,
                   progress: bool = True, timeout: float = 30.0, retries: int = 3, backoff: float = 1.0) -> Path:
    """Download the registry model ``name`` into the cache (if not there yet) and return the checkpoint path."""
    home_dir = pixgen_home(home)
    entry = get_entry(name, home_dir)
    dest = entry.checkpoint_path(home_dir)
    if dest.is_file():
        return dest
    verify = None if entry.sha256 else (lambda part: verify_checkpoint(entry.config, part))
    return download(model_urls(entry, home_dir, urls), dest, size=entry.size, sha256=entry.sha256, verify=verify,
                    timeout=timeout, retries=retries, progress=progress, backoff=backoff, name=entry.name)


def resolve_vqgan(name: str | None = None, config_path: str | os.PathLike | None = None,
                  checkpoint_path: str | os.PathLike | None = None, home: str | os.PathLike | None = None,
                  download: bool = True) -> tuple[Path, Path]:
    """(architecture YAML, weights file) for a registry ``name`` or a local ``config_path``/``checkpoint_path``.

    A registry model is downloaded on first use (``download=True``). The returned weights file is the .ckpt,
    or the safetensors copy when only that is left in the cache.
    """
    if config_path or checkpoint_path:
        return _resolve_local(config_path, checkpoint_path)
    home_dir = pixgen_home(home)
    entry = get_entry(name or default_model_name(), home_dir)
    if not entry.config.is_file():
        raise ModelError(f"the architecture YAML of {entry.name} is missing: {entry.config}",
                         "reinstall pixgen, or fix the 'config' field of the entry")
    ckpt, copy = entry.checkpoint_path(home_dir), entry.safetensors_path(home_dir)
    if ckpt.is_file():
        return entry.config, ckpt
    if copy.is_file():
        return entry.config, copy
    if not download:
        urls = model_urls(entry, home_dir)
        raise ModelError(f"model {entry.name} is not downloaded (expected at {ckpt})",
                         f"run `pixgen models download {entry.name}`, or download "
                         f"{urls[0] if urls else 'the checkpoint'} yourself and save it as {ckpt}")
    return entry.config, download_model(entry.name, home_dir)


def _resolve_local(config_path, checkpoint_path) -> tuple[Path, Path]:
    if not checkpoint_path:
        raise ModelError("a VQGAN config was given without its checkpoint",
                         "pass --vqgan-checkpoint FILE.ckpt too, or use a registry name with --model")
    ckpt = Path(checkpoint_path).expanduser()
    if not config_path:
        sibling = ckpt.with_suffix(".yaml")
        if not sibling.is_file():
            raise ModelError(f"no VQGAN config given for {ckpt}",
                             f"pass --vqgan-config FILE.yaml (or place it beside the checkpoint as {sibling.name})")
        config_path = sibling
    config = Path(config_path).expanduser()
    for kind, path in (("config", config), ("checkpoint", ckpt)):
        if path.is_dir():
            raise ModelError(f"VQGAN {kind} {path} is a directory", f"pass the {kind} file itself")
        if not path.is_file():
            raise ModelError(f"VQGAN {kind} not found: {path}", "check the path")
    return config, ckpt


# --------------------------------------------------------------------------------------------------------------
# Reading configs and checkpoints
# --------------------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ModelError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}", "fix or replace the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}", "check the path") from None


def read_vqgan_config(config_path: str | os.PathLike | Mapping) -> VQGANConfig:
    """The VQGAN architecture from a taming YAML (``VQModel``, ``GumbelVQ`` or a Net2Net file's first stage)."""
    origin = "the given config" if isinstance(config_path, Mapping) else str(config_path)
    raw = config_path if isinstance(config_path, Mapping) else _read_yaml(Path(config_path).expanduser())
    if not isinstance(raw, Mapping):
        raise ModelError(f"{origin} is not a taming VQGAN config (expected a mapping with model.params)")
    model = raw.get("model", raw)
    params = model.get("params", model) if isinstance(model, Mapping) else {}
    if isinstance(params, Mapping) and "first_stage_config" in params:  # Net2NetTransformer: use its VQGAN
        raw = {"model": params["first_stage_config"]}
    try:
        return VQGANConfig.from_taming(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelError(f"{origin} is not a usable taming VQGAN config: {exc}",
                         "it needs model.params.ddconfig, embed_dim and n_embed (as in taming's configs)") from None


class _Inert:
    """Stand-in for a metadata class named in a Lightning checkpoint: accepts anything, runs nothing."""

    stands_for = ""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return f"<inert {self.stands_for}>"


# Classes Lightning checkpoints mention in their metadata (callbacks keyed by class, numpy scores, saved
# hyper-parameters). They are never imported: each is replaced by an _Inert subclass.
_INERT_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "numpy.dtypes.")
_INERT_NAMES = {
    "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "argparse.Namespace",
    "typing.Any", "collections.defaultdict", "builtins.set", "builtins.frozenset", "pathlib.PosixPath",
    "pathlib.WindowsPath", "pathlib.Path",
}


def _is_inert(name: str) -> bool:
    return name in _INERT_NAMES or name.startswith(_INERT_PREFIXES)


@lru_cache(maxsize=None)
def _stand_in(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_Inert,), {"stands_for": name, "__module__": "pixgen.checkpoints"})


def _refuse(path: Path, names: list[str]) -> UnsafeCheckpointError:
    shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    return UnsafeCheckpointError(
        f"refusing to load {path}: its pickle asks to import or call {shown}, which a weights file never "
        f"needs; the file may be malicious, and nothing from it was run",
        "use checkpoints from a source you trust; pixgen reads only tensors and plain containers from them",
    )


def _torch_load_safely(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with Lightning metadata classes replaced by inert stand-ins."""
    is_zip = zipfile.is_zipfile(path)
    names: list[str] = []
    if is_zip:
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - unreadable pickles are reported by the load below
            names = []
    bad = [n for n in names if not _is_inert(n)]
    if bad:
        raise _refuse(path, bad)
    allowed = {n: _stand_in(n) for n in names}
    for _ in range(64):  # the legacy (non-zip) format names one offending global per failed attempt
        try:
            with torch.serialization.safe_globals([(cls, n) for n, cls in allowed.items()]):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as exc:
            text = str(exc)
            found = re.search(r"GLOBAL (\S+) (?:was not an allowed|whose module)", text)
            if found and _is_inert(found.group(1)) and found.group(1) not in allowed:
                allowed[found.group(1)] = _stand_in(found.group(1))
                continue
            if found:
                raise _refuse(path, [found.group(1)]) from None
            detail = (text.split("WeightsUnpickler error:")[-1].strip().splitlines() or ["unreadable"])[0]
            if re.search(r"reduce for unrecognized|new object|Can only build|NEWOBJ|persistent", detail):
                raise UnsafeCheckpointError(
                    f"refusing to load {path}: its pickle does something a weights file never needs ({detail}); "
                    f"nothing from it was run",
                    "use checkpoints from a source you trust",
                ) from None
            raise _corrupt(path, detail) from None
        except (RuntimeError, EOFError, ValueError, OSError, MemoryError, IndexError, KeyError,
                AttributeError, TypeError) as exc:
            raise _corrupt(path, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}") \
                from None
    raise _corrupt(path, "too many unknown classes in its metadata")


def _corrupt(path: Path, detail: str) -> CorruptCheckpointError:
    size = path.stat().st_size if path.exists() else 0
    return CorruptCheckpointError(
        f"cannot read checkpoint {path} ({size} bytes): it is truncated, corrupt or not a PyTorch checkpoint "
        f"({detail})",
        "download it again, or check that the file is a taming-transformers .ckpt",
    )


def _sniff(path: Path) -> None:
    """Catch files that are obviously not checkpoints before unpickling them."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CorruptCheckpointError(f"checkpoint {path} is empty", "download it again")
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<head", b"<?xml")):
        raise CorruptCheckpointError(f"{path} is a web page, not a checkpoint (a login or error page was saved)",
                                     "download the file again from a working link")


def _extract_vqgan_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Normalise the formats in the wild to bare VQGAN keys (``encoder.*``, ``quantize.*``, ...)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        what = f"keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CorruptCheckpointError(f"{path} is not a VQGAN checkpoint: no state_dict in it (found {what})",
                                     "pass a taming-transformers .ckpt or a saved VQGAN state dict")
    state = {str(k): v for k, v in state.items()}
    if any(k.startswith("first_stage_model.") for k in state):  # Net2Net: keep only the VQGAN
        state = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    elif state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        sample = ", ".join(list(state)[:4]) or "nothing"
        raise CorruptCheckpointError(f"{path} holds no VQGAN weights (no encoder.*/decoder.* keys; found {sample})",
                                     "is this a VQGAN checkpoint? CLIP or other model files do not work here")
    odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CorruptCheckpointError(f"{path} has non-tensor entries in its state dict: {', '.join(odd[:5])}")
    return state


def read_vqgan_state_dict(checkpoint_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The VQGAN weights of a checkpoint, read safely onto the CPU (taming .ckpt, state dict or safetensors)."""
    path = Path(checkpoint_path).expanduser()
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}", "check the path, or `pixgen models download NAME`")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise _corrupt(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return _extract_vqgan_state(obj, path)
    _sniff(path)
    obj = _torch_load_safely(path)
    state = _extract_vqgan_state(obj, path)
    # Own the kept tensors (the rest of the file, such as a transformer or the optimizer, is freed and unmapped).
    return {k: v.detach().clone() for k, v in state.items()}


def _mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], cfg: VQGANConfig,
              config_path: Any, checkpoint_path: Any) -> CheckpointMismatchError | None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return None

    def few(items: list[str]) -> str:
        return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

    parts = []
    if missing:
        parts.append(f"missing from the checkpoint: {few(missing)}")
    if unexpected:
        parts.append(f"not in the config's architecture: {few(unexpected)}")
    if shapes:
        parts.append(f"different shapes: {'; '.join(shapes[:6])}" + (f" (+{len(shapes) - 6} more)"
                                                                       if len(shapes) > 6 else ""))
    hints = []
    if "quantize.embed.weight" in state and not cfg.gumbel:
        hints.append("the checkpoint is a GumbelVQ (quantize.embed/quantize.proj) but the config is a plain "
                     "VQModel; use a GumbelVQ config such as the one of gumbel_f8_8192")
    elif "quantize.embedding.weight" in state and cfg.gumbel:
        hints.append("the checkpoint is a plain VQModel but the config is a GumbelVQ")
    codes = state.get("quantize.embedding.weight", state.get("quantize.embed.weight"))
    if codes is not None and codes.ndim == 2 and codes.shape[0] != cfg.n_embed:
        hints.append(f"the config says n_embed={cfg.n_embed} but the checkpoint has {codes.shape[0]} codes")
    hints.append("use the YAML that was published with this checkpoint")
    return CheckpointMismatchError(
        f"checkpoint {checkpoint_path} does not match config {config_path}:\n  " + "\n  ".join(parts),
        "; ".join(hints),
    )


def _expected_state(cfg: VQGANConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return VQGAN(cfg).state_dict()


def _refuse_non_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike, hint: str) -> None:
    """CorruptCheckpointError naming the weights of ``state`` (read from ``path``) that hold NaN or infinity.

    A float64 sum is finite exactly when every weight is (float32's largest values cannot overflow it): one pass over
    the weights, and no mask as large as them."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v.sum(dtype=torch.float64))]
    if bad:
        raise CorruptCheckpointError(f"{path} holds NaN or infinite weights in {', '.join(bad[:5])}"
                                     + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""), hint)


def verify_checkpoint(config_path: str | os.PathLike, checkpoint_path: str | os.PathLike) -> dict[str, Any]:
    """Check structurally that a checkpoint loads safely and fits its YAML; raise ModelError naming what does not.

    Returns a small report: number of tensors, parameters and the config's codebook size.
    """
    cfg = read_vqgan_config(config_path)
    state = read_vqgan_state_dict(checkpoint_path)
    problem = _mismatch(_expected_state(cfg), state, cfg, config_path, checkpoint_path)
    if problem:
        raise problem
    _refuse_non_finite(state, checkpoint_path, "download it again")
    return {"tensors": len(state), "parameters": sum(v.numel() for v in state.values()), "n_embed": cfg.n_embed}


# --------------------------------------------------------------------------------------------------------------
# Loading, with a safetensors copy kept in the cache
# --------------------------------------------------------------------------------------------------------------


def _arch_key(cfg: VQGANConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_taming(), sort_keys=True).encode()).hexdigest()[:16]


def _copy_path(checkpoint: Path, home: Path) -> Path:
    """Where the safetensors copy of ``checkpoint`` lives (registry files: beside it, in the cache)."""
    checkpoint = checkpoint.resolve()
    if checkpoint.parent == home.resolve():
        return checkpoint.with_suffix(".safetensors")
    key = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:12]
    return home / CONVERTED_DIR / f"{checkpoint.stem}-{key}.safetensors"


def _source_stamp(checkpoint: Path) -> dict[str, str]:
    st = checkpoint.stat()
    return {"source_size": str(st.st_size), "source_mtime_ns": str(st.st_mtime_ns)}


def _read_copy(copy: Path, checkpoint: Path, cfg: VQGANConfig) -> dict[str, torch.Tensor] | None:
    """The cached weights if the copy was made from this very checkpoint file for this architecture."""
    if not copy.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(copy), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            stamp = _source_stamp(checkpoint)
            if meta.get("source_size") != stamp["source_size"] or meta.get("source_mtime_ns") != \
                    stamp["source_mtime_ns"] or meta.get("arch") != _arch_key(cfg):
                return None
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # noqa: BLE001 - an unreadable copy is ignored and rewritten
        return None


def _write_copy(copy: Path, checkpoint: Path, cfg: VQGANConfig, state: Mapping[str, torch.Tensor]) -> None:
    from pixgen.atomic import atomic_safetensors

    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": "pt", "pixgen": "vqgan", "source": checkpoint.name, "arch": _arch_key(cfg),
                **_source_stamp(checkpoint)}
        atomic_safetensors({k: v.contiguous() for k, v in state.items()}, copy, metadata=meta)
    except OSError as exc:
        # A note, not a warning: Python's warning format would print a line of pixgen's source under it.
        print(f"pixgen: could not keep a safetensors copy of {checkpoint.name} in {copy.parent} "
              f"({exc.strerror or exc}); the checkpoint is read in full again next time", file=sys.stderr)


def _quarantine_if_cached(checkpoint: Path, home: Path, exc: ModelError) -> None:
    """A bad file inside the cache directory is renamed to ``*.corrupt`` so it is never taken for good again.

    Files elsewhere (the user's own) are left alone; only the error explains them.
    """
    try:
        in_cache = checkpoint.resolve().parent == home.resolve()
    except OSError:
        return
    if not in_cache or not checkpoint.is_file():
        return
    bad = checkpoint.with_name(checkpoint.name + ".corrupt")
    try:
        os.replace(checkpoint, bad)
    except OSError:
        return
    if checkpoint.suffix != ".safetensors":
        checkpoint.with_suffix(".safetensors").unlink(missing_ok=True)
    try:
        names = [e.name for e in registry(home).values()
                 if checkpoint.name in (e.filename, e.safetensors_path(home).name)]
    except ModelError:
        names = []
    exc.hint = _moved_hint(bad, names[0] if names else None, exc)


def _moved_hint(bad: Path, name: str | None, exc: ModelError) -> str:
    """The hint of a checkpoint error once the file was moved to ``bad``: how to get a good copy, and (for a file
    that reads but is unsafe or does not fit) the error's own advice on what to get."""
    again = f"run `pixgen models download {name}` for a good copy" if name else "download it again"
    own = "" if isinstance(exc, CorruptCheckpointError) or not exc.hint else f"; {exc.hint}"
    return f"the file was moved to {bad}; {again}{own}"


def load_vqgan(config_path: str | os.PathLike, checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu",
               *, home: str | os.PathLike | None = None, cache: bool = True) -> VQGAN:
    """Build the VQGAN described by a taming YAML with the weights of a checkpoint, in eval mode, frozen.

    The checkpoint is read safely (see the module docstring) on the CPU, normalised (``loss.*`` dropped,
    Net2Net's ``first_stage_model.`` stripped) and loaded strictly; a mismatch raises
    :class:`CheckpointMismatchError` naming the keys and shapes. With ``cache`` a safetensors copy of the
    weights is kept under ``home`` and read next time instead of the pickle.
    """
    config_path, checkpoint = Path(config_path).expanduser(), Path(checkpoint_path).expanduser()
    cfg = read_vqgan_config(config_path)
    if not checkpoint.is_file():
        raise ModelError(f"checkpoint not found: {checkpoint}", "check the path, or `pixgen models download NAME`")
    home_dir = pixgen_home(home)
    is_copy = checkpoint.suffix == ".safetensors"
    copy = None if is_copy or not cache else _copy_path(checkpoint, home_dir)
    state = _read_copy(copy, checkpoint, cfg) if copy is not None else None
    fresh = state is None
    try:
        if fresh:
            state = read_vqgan_state_dict(checkpoint)
        problem = _mismatch(_expected_state(cfg), state, cfg, config_path, checkpoint)
        if problem:
            raise problem
        _refuse_non_finite(state, checkpoint, "the file is damaged or came from a training run that diverged; use "
                           "another checkpoint")
    except (CorruptCheckpointError, UnsafeCheckpointError, CheckpointMismatchError) as exc:
        _quarantine_if_cached(checkpoint, home_dir, exc)
        raise
    with torch.device("meta"):
        model = VQGAN(cfg)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.eval().requires_grad_(False)
    if fresh and copy is not None:
        _write_copy(copy, checkpoint, cfg, state)
    return model.to(device)


# --------------------------------------------------------------------------------------------------------------
# Verification and listing, for the command line
# --------------------------------------------------------------------------------------------------------------


def verify_model(name: str, home: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check a downloaded registry model (size, checksum when known, structure) and refresh its safetensors copy.

    A file that fails is renamed to ``<file>.corrupt`` so it is never taken for a good download.
    """
    home_dir = pixgen_home(home)
    entry = get_entry(name, home_dir)
    ckpt, copy = entry.checkpoint_path(home_dir), entry.safetensors_path(home_dir)
    target = ckpt if ckpt.is_file() else copy if copy.is_file() else None
    if ckpt.is_dir():
        raise ModelError(f"{ckpt} is a directory, not the checkpoint of {entry.name}",
                         f"remove it (or move it away), then run `pixgen models download {entry.name}`")
    if target is None:
        raise ModelError(f"model {entry.name} is not downloaded (expected at {ckpt})",
                         f"run `pixgen models download {entry.name}`")
    report: dict[str, Any] = {"name": entry.name, "path": str(target), "size": target.stat().st_size}
    try:
        if target == copy:  # only the safetensors copy is left; it is safe by construction, check its fit
            report.update(verify_checkpoint(entry.config, copy))
            return report
        if entry.size is not None and report["size"] != entry.size:
            raise CorruptCheckpointError(f"{ckpt} is {report['size']} bytes but should be {entry.size} bytes")
        report["sha256"] = sha256_of(ckpt)
        if entry.sha256 and report["sha256"] != entry.sha256:
            raise CorruptCheckpointError(f"{ckpt} has SHA-256 {report['sha256']} but should have {entry.sha256}")
        report["checksum"] = "matches" if entry.sha256 else "none known (structure checked instead)"
        copy.unlink(missing_ok=True)  # re-read the .ckpt itself, and rewrite the copy from it
        model = load_vqgan(entry.config, ckpt, home=home_dir)  # which refuses NaN or infinite weights
        state = model.state_dict()
    except (CorruptCheckpointError, UnsafeCheckpointError, CheckpointMismatchError) as exc:
        # Only a fault of the file itself moves it aside: a missing or broken YAML or registry entry is no reason
        # to throw away a good download.
        if target.is_file():
            bad_path = target.with_name(target.name + ".corrupt")
            os.replace(target, bad_path)
            if target == ckpt:
                copy.unlink(missing_ok=True)
            exc.hint = _moved_hint(bad_path, entry.name, exc)
        raise
    report.update({"tensors": len(state), "parameters": sum(v.numel() for v in state.values()),
                   "n_embed": model.config.n_embed, "safetensors_copy": str(copy) if copy.is_file() else None})
    return report


def local_clip_models(home: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """CLIP weights already in ``<home>/clip`` (open_clip's cache there), as ``MODEL:PRETRAINED`` names or files."""
    clip_dir = pixgen_home(home) / "clip"
    if not clip_dir.is_dir():
        return []
    found: list[dict[str, str]] = []
    claimed: set[Path] = set()
    try:
        import open_clip

        pairs = open_clip.list_pretrained()
    except Exception:  # noqa: BLE001 - listing must not fail because open_clip cannot be imported
        pairs = []
    for model, tag in pairs:
        try:
            cfg = open_clip.get_pretrained_cfg(model, tag)
        except Exception:  # noqa: BLE001
            continue
        hits: list[Path] = []
        hub = cfg.get("hf_hub") or ""
        if hub:  # open_clip's convention: "org/repo/" (default file name) or "org/repo/file"
            repo_id, filename = os.path.split(hub)
            snapshots = clip_dir / ("models--" + repo_id.replace("/", "--")) / "snapshots"
            if snapshots.is_dir():
                hits += [p for p in snapshots.glob("*/*") if p.is_file() and (p.name == filename or not filename)]
        url = cfg.get("url") or ""
        if url and (clip_dir / os.path.basename(url)).is_file():
            hits.append(clip_dir / os.path.basename(url))
        if hits:
            found.append({"name": f"{model}:{tag}", "path": str(hits[0])})
            claimed.update(p.resolve() for p in hits)
    for path in sorted(clip_dir.iterdir()):
        if path.is_file() and path.suffix in (".pt", ".pth", ".bin", ".safetensors") and path.resolve() not in claimed:
            found.append({"name": f"(local file) {path.name}", "path": str(path)})
    return found


TOY_FILES = ("vqgan.yaml", "vqgan.ckpt", "clip.pt", "clip_early_visual.safetensors", "clip_late_visual.safetensors",
             "evaluator.safetensors")


def toy_files() -> dict[str, Path]:
    """The built-in toy model's files, shipped with pixgen (not downloaded): name -> path."""
    return {name: shipped.TOY_DIR / name for name in TOY_FILES}


def _toy_row() -> dict[str, Any]:
    """The built-in toy model as a row of ``pixgen models list``."""
    files = toy_files()
    missing = [n for n, p in files.items() if not p.is_file()]
    try:
        cfg = read_vqgan_config(files["vqgan.yaml"])
        codes, factor = cfg.n_embed, cfg.factor
    except ModelError:
        codes, factor = None, None
    return {"name": "toy", "kind": "built-in", "codes": codes, "factor": factor,
            "size": sum(p.stat().st_size for p in files.values() if p.is_file()), "approx_size": None,
            "state": "shipped" if not missing else f"incomplete (no {', '.join(missing)})", "downloaded": not missing,
            "path": str(shipped.TOY_DIR), "safetensors_copy": False, "default": False,
            "description": "the offline toy world: VQGAN, CLIP with two image towers, evaluator (--model toy)"}


def verify_toy() -> dict[str, Any]:
    """Check the built-in toy model's files: each present and each loading as generation and the eval load it (the
    VQGAN from its taming checkpoint, the CLIP with each image tower, the evaluator), every weight finite."""
    from pixgen.factory import toy_clip_specs
    from pixgen.perceptor import load_perceptor
    from pixgen.toy.evaluator import load_evaluator

    files = toy_files()
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ModelError(f"the built-in toy model is missing {', '.join(missing)}",
                         "reinstall pixgen, or restore checkpoints/toy from the source checkout")
    from safetensors.torch import load_file

    model = load_vqgan(files["vqgan.yaml"], files["vqgan.ckpt"])  # which refuses NaN or infinite weights
    for spec in toy_clip_specs(shipped.TOY_DIR):
        load_perceptor(spec)
    load_evaluator(files["evaluator.safetensors"])
    stored = {files["clip.pt"]: torch.load(files["clip.pt"], map_location="cpu", weights_only=True)}
    stored.update({files[n]: load_file(str(files[n])) for n in TOY_FILES if n.endswith(".safetensors")})
    for path, state in stored.items():
        _refuse_non_finite(state, path, "reinstall pixgen, or restore checkpoints/toy from the source checkout")
    states = [model.state_dict(), *stored.values()]
    return {"name": "toy", "path": str(shipped.TOY_DIR), "size": sum(p.stat().st_size for p in files.values()),
            "tensors": sum(len(s) for s in states), "parameters": sum(v.numel() for s in states for v in s.values()),
            "n_embed": model.config.n_embed, "safetensors_copy": None}


def list_models(home: str | os.PathLike | None = None) -> dict[str, Any]:
    """What ``pixgen models list`` shows: every registry VQGAN with its state, the built-in toy model, and the CLIP
    weights on disk."""
    home_dir = pixgen_home(home)
    default = default_model_name()
    rows = [_toy_row()]
    for entry in registry(home_dir).values():
        ckpt, copy = entry.checkpoint_path(home_dir), entry.safetensors_path(home_dir)
        present = ckpt if ckpt.is_file() else copy if copy.is_file() else None
        partial = partial_path(ckpt)
        try:
            cfg = read_vqgan_config(entry.config)
            codes, factor = cfg.n_embed, cfg.factor
        except ModelError:
            codes, factor = None, None
        if present is not None:
            state = "downloaded"
            size = present.stat().st_size
        elif partial.is_file():
            state = f"partial ({partial.stat().st_size} bytes)"
            size = entry.size
        else:
            state = "not downloaded"
            size = entry.size
        rows.append({
            "name": entry.name,
            "kind": entry.format,
            "codes": codes,
            "factor": factor,
            "size": size,
            "approx_size": entry.approx_size,
            "state": state,
            "downloaded": present is not None,
            "path": str(present or ckpt),
            "safetensors_copy": copy.is_file(),
            "default": entry.name == default,
            "description": entry.description,
        })
    return {"home": str(home_dir), "vqgan": rows, "clip": local_clip_models(home_dir)}
