"""Atomic file writes, shared by every part of pixgen that writes a file a user keeps.

Each file is written under a temporary name in its own directory, flushed to disk and renamed into place, so a
crash, a full disk or Ctrl-C leaves either the old file or the new one under the real name, never half of one.
This module imports only the standard library and torch, so the lean loaders can use it without pulling in the
image and video stack.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (0o644 under the usual umask 022)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", same_name: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name; on a clean exit it is flushed to disk,
    given a plain new file's mode and renamed onto ``path``.

    On any failure, Ctrl-C included, the temporary file is removed and ``path`` keeps what it held before. The
    permissions are those a plain new file would get (mkstemp's own are owner-only, which would hide outputs from a
    group or a web server). ``suffix`` ends the temporary name, for writers that pick a format from it.
    ``same_name``: the temporary file has ``path``'s own name, in a temporary folder beside it, for writers that
    store the name in the file (torch's archives are named after it, so a random name would make the same weights
    differ byte for byte from save to save).
    """
    path = Path(path)
    folder = None
    if same_name:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        tmp = folder / path.name
        tmp.touch()
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, NEW_FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if folder is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()


def blocking_file(folder: str | os.PathLike) -> Path | None:
    """The file that keeps ``folder`` from being made: the nearest of it and its parents that exists, when that is
    not a directory; None when the folder exists or can be made under a directory."""
    folder = Path(folder)
    nearest = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return nearest if nearest is not None and not nearest.is_dir() else None


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` for UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically, and with the same bytes as a plain ``torch.save`` to ``path``."""
    import torch

    with atomic_path(path, same_name=True) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file``, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)
