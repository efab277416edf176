"""Where the files pixgen ships beside its code are: the presets (``configs/``) and the toy world's weights
(``checkpoints/toy/``).

In a checkout (an editable install, or the source tree itself) they are the checkout's own folders, so a preset or
a retrained model is used the moment it is written. A wheel or ``pip install .`` carries a copy of them inside the
package, under ``pixgen/_data/`` (``setup.py`` puts it there), since the top-level folders are not installed.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "_data"


def in_checkout() -> bool:
    """Whether this pixgen runs from its source tree (its ``pyproject.toml`` beside the package)."""
    return (CHECKOUT / "pyproject.toml").is_file()


def shipped_dir(relative: str) -> Path:
    """The folder ``relative`` (e.g. ``"configs"``) of the checkout, or of the installed copy outside one."""
    return (CHECKOUT if in_checkout() else DATA_DIR) / relative


PRESET_DIR = shipped_dir("configs")
TOY_DIR = shipped_dir("checkpoints/toy")
