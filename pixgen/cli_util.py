"""Shared by pixgen's command-line modules: turning PixgenErrors into a message and an exit code."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Callable

import typer

from pixgen.atomic import blocking_file
from pixgen.errors import ConfigError, Interrupted, PixgenError, is_out_of_memory, out_of_memory


def friendly(func: Callable | None = None, *, aborted: str = "aborted") -> Callable:
    """Print PixgenErrors (and a refused allocation, as OutOfMemory) as 'error: ...' plus their hint and exit 2;
    a run that stopped cleanly on Ctrl-C (:class:`pixgen.errors.Interrupted`) says what it kept and exits 130, and
    any other Ctrl-C prints ``aborted`` and exits 130."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except Interrupted as exc:  # stopped cleanly by Ctrl-C, its work saved: what was kept, how to go on
                typer.echo(exc.message, err=True)
                if exc.hint:
                    typer.echo(f"  {exc.hint}", err=True)
                raise typer.Exit(130) from None
            except (PixgenError, MemoryError, RuntimeError) as exc:
                if not isinstance(exc, PixgenError):
                    if not is_out_of_memory(exc):
                        raise
                    exc = out_of_memory(exc, "running this command", "ask for less memory (a smaller --size, "
                                        "--batch or --cutouts, or fewer --jobs at once), or free some first")
                typer.echo(f"error: {exc.message}", err=True)
                if exc.hint:
                    typer.echo(f"  hint: {exc.hint}", err=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                typer.echo(aborted, err=True)
                raise typer.Exit(130) from None

        return wrapper

    return decorate(func) if func is not None else decorate


def set_threads(threads: int | None) -> None:
    """Apply a ``--threads`` option: ``None`` leaves torch's default; fewer than 1 is an error."""
    if threads is None:
        return
    if threads < 1:
        raise PixgenError(f"--threads {threads} is not a thread count",
                          "give 1 or more, or leave it out for torch's default")
    import torch

    torch.set_num_threads(threads)


def parse_colours(text: str, flag: str) -> list[list[int]]:
    """``"128,128,128"`` -> [[128, 128, 128]]; several colours are separated by ``;``."""
    colours = []
    for part in (p for p in text.split(";") if p.strip()):
        values = [v for v in re.split(r"[,\s]+", part.strip()) if v]
        if len(values) != 3 or not all(v.isdigit() and int(v) <= 255 for v in values):
            raise ConfigError(f"colour {part.strip()!r} is not R,G,B with values 0-255",
                              f"e.g. {flag} 128,128,128 (several: 128,128,128;20,20,20)")
        colours.append([int(v) for v in values])
    if not colours:
        raise ConfigError(f"{flag} {text!r} names no colour", f"e.g. {flag} 128,128,128")
    return colours


def read_prompt_file(path: Path, comments_after: bool = False) -> list[str]:
    """The prompts of a ``--prompts`` file: one per line, blank lines and lines starting with '#' left out; with
    ``comments_after`` also a '#' comment after a prompt (for toy captions, which hold no '#'; a free prompt may)."""
    return [prompt for _, prompt in read_prompt_lines(path, comments_after)]


def read_prompt_lines(path: Path, comments_after: bool = False) -> list[tuple[int, str]]:
    """:func:`read_prompt_file` with the line of the file each prompt stands on (from 1, comments and blank lines
    counted), so that an error about a prompt can send the user to it."""
    if path.is_dir():
        raise ConfigError(f"prompts file {str(path)!r} is a directory", "give a text file with one prompt per line")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is not part of a prompt
    except FileNotFoundError:
        raise ConfigError(f"prompts file {str(path)!r} not found", "give a text file with one prompt per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prompts file {str(path)!r} ({exc})",
                          "give a UTF-8 text file with one prompt per line") from None
    if comments_after:
        lines = [line.split("#", 1)[0] for line in lines]
    prompts = [(number, line.strip()) for number, line in enumerate(lines, 1)
               if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ConfigError(f"prompts file {str(path)!r} holds no prompts",
                          "write one prompt per line; lines starting with '#' are comments")
    return prompts


def check_output_file(path: Path, flag: str, suffix: str, example: str) -> Path:
    """Refuse, before any work, an output file that cannot be written where it is named: the wrong suffix, an
    existing directory, a path under a file, or a folder pixgen may not write in. Missing parent folders are made,
    as an output directory's are."""
    if path.suffix.lower() != suffix:
        raise PixgenError(f"{flag} {path} must end in {suffix}", f"e.g. {flag} {example}")
    if path.is_dir():
        raise PixgenError(f"{flag} {path} is a directory", f"name the file to write, e.g. {flag} {path / example}")
    blocker = blocking_file(path.parent)
    if blocker is not None:
        raise PixgenError(f"{flag} {path} lies under {blocker}, which is a file",
                          f"write elsewhere, e.g. {flag} {example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PixgenError(f"cannot make the folder of {flag} {path}: {exc.strerror or exc}",
                          "write somewhere you may create files") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PixgenError(f"cannot write in the folder of {flag} {path}: permission denied",
                          "write somewhere you may create files")
    return path
