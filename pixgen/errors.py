"""User-facing errors: each says what was wrong and how to fix it."""
from __future__ import annotations


class PixgenError(Exception):
    """An error caused by the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def __reduce__(self):  # pickled with its hint (an error raised in a worker process reaches the parent whole)
        return (self.__class__, (self.message, self.hint))


class ConfigError(PixgenError):
    """A bad option, config file or override."""


class PromptError(PixgenError):
    """A prompt that cannot be parsed."""


class ModelError(PixgenError):
    """A model that cannot be found, downloaded or loaded."""


class InputImageError(PixgenError):
    """An image prompt or init image that is missing or unreadable."""


class NonFiniteLossError(PixgenError):
    """The loss became NaN or infinite; the run stopped and kept its last good image."""


class Interrupted(PixgenError):
    """The run was interrupted (Ctrl-C) after saving its state."""


class OutOfMemory(PixgenError):
    """The machine (or the GPU) had not enough free memory for what was asked."""


_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the
    RuntimeError torch raises when the CPU (or MPS) allocator is refused."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _MEMORY_WORDS)


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{max(1, round(n_bytes / 2**20))} MiB"


def out_of_memory(exc: BaseException, doing: str, hint: str) -> OutOfMemory:
    """The OutOfMemory error for ``exc`` (see :func:`is_out_of_memory`): ``doing`` says what was being done, and
    the message adds the size of the allocation that failed where torch names it."""
    import re

    text = str(exc)
    cpu = re.search(r"tried to allocate (\d+) bytes", text)
    gpu = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", text)
    where = "GPU" if type(exc).__name__ == "OutOfMemoryError" or "CUDA" in text or "MPS" in text else "machine"
    amount = _gib(int(cpu.group(1))) if cpu else gpu.group(1) if gpu else None
    asked = f": one allocation of {amount} was refused" if amount else ""
    return OutOfMemory(f"out of memory on the {where} while {doing}{asked}", hint)
