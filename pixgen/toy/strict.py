"""A strict, hand-written reader of toy-world images: it trusts only pixels in the world's exact colours and only
outlines that match a world shape.

The learned evaluator (``evaluator.py``) is trained to be robust to the decoder's soft rendering, so it reads a
coloured blob as its nearest shape and does not mind strays. This reader is the opposite: each pixel takes the
nearest world colour if it is within ``tol`` of it (else it is "unclear"); same-coloured pixels are grouped into
4-connected regions; a region smaller than ``min_area`` is a speck; every other region is fitted with each of the
four shapes (centre and extent searched around its bounding box) and called that shape only when the best
fit's intersection over union reaches ``min_iou``, otherwise a "blob". :func:`strict_pass` then also asks that
the picture hold nothing but what the prompt names: no blobs, no extra objects, few specks and few unclear
pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pixgen.toy.captions import Spec, holds
from pixgen.toy.world import (BACKGROUND_NAMES, BACKGROUNDS, CELL_CENTRES, COLOUR_NAMES, COLOURS, SHAPES,
                              Obj, Scene, canvas_array, shape_mask)

__all__ = ["PALETTE", "StrictReading", "strict_read", "strict_pass", "names_exactly"]

BLOB = "blob"  # the shape of a region no world shape fits


@dataclass
class StrictReading:
    """What :func:`strict_read` found: the scene (blobs included, with shape ``"blob"``), each object's best
    fit, and the share of pixels that were specks or in no world colour."""
    scene: Scene
    fits: list[float] = field(default_factory=list)  # best IoU per object, in scene.objects order
    speck_px: int = 0
    unclear_share: float = 0.0

    @property
    def blobs(self) -> int:
        """How many of the objects read are blobs (regions no world shape fits)."""
        return sum(o.shape == BLOB for o in self.scene.objects)


# the world's 11 colours as RGB rows, object colours first (COLOUR_NAMES order), then backgrounds
PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES] + [BACKGROUNDS[b] for b in BACKGROUND_NAMES], dtype=np.float32)
_N_OBJ = len(COLOUR_NAMES)


def _regions(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected regions of a boolean mask, each as a boolean mask."""
    seen = np.zeros_like(mask)
    out = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        region = np.zeros_like(mask)
        ys, xs = zip(*pts)
        region[list(ys), list(xs)] = True
        out.append(region)
    return out


def _best_fit(region: np.ndarray) -> tuple[str, float, float, float, float]:
    """(shape, IoU, cx, cy, extent) of the world shape that best covers ``region``."""
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx0, cy0, ext0 = (x0 + x1) / 2, (y0 + y1) / 2, float(max(x1 - x0, y1 - y0))
    area = region.sum()
    best = ("", -1.0, cx0, cy0, ext0)
    for shape in SHAPES:
        for ext in (ext0 - 1, ext0, ext0 + 1):
            for dx in (-0.5, 0.0, 0.5):
                for dy in (-0.5, 0.0, 0.5):
                    m = shape_mask(shape, cx0 + dx, cy0 + dy, ext)
                    inter = np.logical_and(m, region).sum()
                    iou = inter / (area + m.sum() - inter)
                    if iou > best[1]:
                        best = (shape, float(iou), cx0 + dx, cy0 + dy, ext)
    return best


def strict_read(image, tol: float = 60.0, min_area: int = 24, min_iou: float = 0.75) -> StrictReading:
    """Read ``image`` (PIL or HWC uint8) the strict way; see the module's docstring."""
    x = canvas_array(image).astype(np.float32)
    dist = np.linalg.norm(x[:, :, None, :] - PALETTE[None, None], axis=-1)  # (64, 64, 11)
    label = dist.argmin(-1)
    label[dist.min(-1) > tol] = -1
    bg_counts = [(label == _N_OBJ + i).sum() for i in range(len(BACKGROUND_NAMES))]
    background = BACKGROUND_NAMES[int(np.argmax(bg_counts))]
    objs, fits, specks = [], [], 0
    for ci, colour in enumerate(COLOUR_NAMES):
        for region in _regions(label == ci):
            if region.sum() < min_area:
                specks += int(region.sum())
                continue
            shape, iou, cx, cy, ext = _best_fit(region)
            col = int(np.argmin([abs(cx - c) for c in CELL_CENTRES]))
            row = int(np.argmin([abs(cy - c) for c in CELL_CENTRES]))
            size = "small" if ext < 18 else "large"
            objs.append(Obj(shape if iou >= min_iou else BLOB, colour, size, col, row, float(cx), float(cy), ext))
            fits.append(iou)
    return StrictReading(Scene(background, objs), fits, specks, float((label == -1).mean()))


def strict_pass(spec: Spec, reading: StrictReading, holds_for: Callable[[Scene], bool] | None = None,
                max_speck_px: int = 40, max_unclear: float = 0.1) -> bool:
    """Whether the strict reading shows exactly what ``spec`` asks and nothing else.

    The read scene must pass ``holds_for`` (default: the caption holds of it; the eval suite passes its own
    ``judge``, whose colour category asks only for the colour); hold exactly as many objects as the caption
    names (its count for counting captions) and no blobs; and have at most ``max_speck_px`` pixels of specks and
    ``max_unclear`` of its pixels in no world colour.
    """
    scene = reading.scene
    if not names_exactly(spec, scene) or reading.blobs:
        return False
    if reading.speck_px > max_speck_px or reading.unclear_share > max_unclear:
        return False
    return holds_for(scene) if holds_for is not None else holds(spec, scene)


def names_exactly(spec: Spec, scene: Scene) -> bool:
    """Whether ``scene`` holds as many objects as ``spec`` names (its count for counting captions): no strays."""
    return len(scene.objects) == (spec.count if spec.kind == "count" else len(spec.refs))
