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
