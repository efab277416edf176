"""The evaluator: a small CNN that reads a toy-world image back into a :class:`Scene`.

It is trained separately from the generator and CLIP (``train_evaluator.py``) and only ever judges images;
nothing optimises against it. For each of the 3x3 grid cells it predicts the colour (or empty), the shape
and the size of the object there, from a 32x32 window around the cell centre; one more head predicts the
background.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixgen import shipped
from pixgen.atomic import atomic_safetensors, atomic_text
from pixgen.toy.world import (
    BACKGROUND_NAMES, CANVAS, CELL_CENTRES, COLOUR_NAMES, SHAPES, SIZE_NAMES, SIZES, Obj, Scene, canvas_array,
)

__all__ = ["Evaluator", "load_evaluator", "save_evaluator", "scene_targets", "DEFAULT_PATH"]

DEFAULT_PATH = shipped.TOY_DIR / "evaluator.safetensors"
N_CELLS = 9
EMPTY = 0  # colour class 0 is "no object"; 1..8 are COLOUR_NAMES


CROP = 32  # side of the window read around each cell centre


def cell_crops(x: torch.Tensor) -> torch.Tensor:
    """The 9 windows of side ``CROP`` centred on the grid cells, row by row (edges replicated).

    Shape:
        - x: (B, 3, 64, 64) -> (B * 9, 3, CROP, CROP)
    """
    half = CROP // 2
    padded = F.pad(x, (half, half, half, half), mode="replicate")
    starts = [int(round(c)) for c in CELL_CENTRES]  # window start in padded coordinates = centre
    crops = [padded[:, :, y:y + CROP, xx:xx + CROP] for y in starts for xx in starts]
    return torch.stack(crops, dim=1).flatten(0, 1)


class Evaluator(nn.Module):
    """Reads a (B, 3, 64, 64) image in [0, 1]: one small CNN, shared by the 9 grid cells, classifies the
    window around each cell centre (colour or empty, shape, size); a per-pixel MLP averaged over the image
    gives the background.

    Shape:
        - input: (B, 3, 64, 64), values in [0, 1] (other sizes are resized to 64x64 first)
        - output: dict with ``colour`` (B, 9, 9), ``shape`` (B, 9, 4), ``size`` (B, 9, 2), ``background`` (B, 3)
    """

    def __init__(self, width: int = 32, hidden: int = 128):
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.cell = nn.Sequential(
            block(3, w // 2), block(w // 2, w, 2),  # 16x16
            block(w, 2 * w), nn.MaxPool2d(2),  # 8x8
            block(2 * w, 2 * w), nn.MaxPool2d(2),  # 4x4
            nn.Flatten(), nn.Linear(2 * w * 16, hidden), nn.ReLU(inplace=True),
        )
        self.colour = nn.Linear(hidden, 1 + len(COLOUR_NAMES))
        self.shape = nn.Linear(hidden, len(SHAPES))
        self.size = nn.Linear(hidden, len(SIZE_NAMES))
        self.pixel = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 1), nn.ReLU(inplace=True))
        self.background = nn.Linear(16, len(BACKGROUND_NAMES))
        self.config = {"width": width, "hidden": hidden}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-2:] != (CANVAS, CANVAS):
            x = F.interpolate(x, size=(CANVAS, CANVAS), mode="area")
        x = x * 2 - 1
        b = x.shape[0]
        h = self.cell(cell_crops(x))
        bg = self.pixel(F.avg_pool2d(x, 4)).mean((2, 3))
        return {
            "colour": self.colour(h).view(b, N_CELLS, -1),
            "shape": self.shape(h).view(b, N_CELLS, -1),
            "size": self.size(h).view(b, N_CELLS, -1),
            "background": self.background(bg),
        }

    @torch.no_grad()
    def read(self, images: torch.Tensor | np.ndarray | list) -> list[Scene]:
        """The scenes in a batch of images: (B, 3, H, W) float in [0, 1], or uint8 HWC arrays / PIL images."""
        x = _as_batch(images, next(self.parameters()).device)
        was = self.training
        self.eval()
        out = self(x)
        self.train(was)
        colour = out["colour"].argmax(-1).cpu()
        shape = out["shape"].argmax(-1).cpu()
        size = out["size"].argmax(-1).cpu()
        bg = out["background"].argmax(-1).cpu()
        scenes = []
        for i in range(x.shape[0]):
            objs = []
            for cell in range(N_CELLS):
                c = int(colour[i, cell])
                if c == EMPTY:
                    continue
                col, row = cell % 3, cell // 3
                sz = SIZE_NAMES[int(size[i, cell])]
                objs.append(Obj(SHAPES[int(shape[i, cell])], COLOUR_NAMES[c - 1], sz, col, row,
                                CELL_CENTRES[col], CELL_CENTRES[row], SIZES[sz]))
            scenes.append(Scene(BACKGROUND_NAMES[int(bg[i])], objs))
        return scenes


def _as_batch(images, device: torch.device) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.to(device).float()
    x = torch.from_numpy(np.stack([canvas_array(im) for im in images]).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return x.to(device)


def scene_targets(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-cell colour (0 = empty), shape and size class indices (-100 where empty) and the background."""
    colour = np.zeros(N_CELLS, dtype=np.int64)
    shape = np.full(N_CELLS, -100, dtype=np.int64)
    size = np.full(N_CELLS, -100, dtype=np.int64)
    for o in scene.objects:
        cell = o.row * 3 + o.col
        colour[cell] = COLOUR_NAMES.index(o.colour) + 1
        shape[cell] = SHAPES.index(o.shape)
        size[cell] = SIZE_NAMES.index(o.size)
    return colour, shape, size, BACKGROUND_NAMES.index(scene.background)


def save_evaluator(model: Evaluator, path: str | Path = DEFAULT_PATH, meta: dict | None = None) -> Path:
    """Weights as float16 safetensors plus ``<name>.json`` with the architecture (and any metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}  # float16 halves the file; reading is unaffected
    atomic_safetensors(state, path)
    info = {"config": model.config, **(meta or {})}
    atomic_text(path.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return path


def load_evaluator(path: str | Path = DEFAULT_PATH, device: str = "cpu") -> Evaluator:
    """The shipped (or given) evaluator, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        from pixgen.errors import ModelError

        raise ModelError(f"evaluator weights not found at {path}",
                         "train them with `pixgen toy train evaluator` or restore checkpoints/toy/ from git")
    cfg_path = path.with_suffix(".json")
    cfg = json.loads(cfg_path.read_text())["config"] if cfg_path.exists() else {}
    model = Evaluator(**cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path), device="cpu").items()}
    model.load_state_dict(state)
    return model.to(device).eval()
