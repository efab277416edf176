"""The toy world's renderer and scene sampler obey the world's fixed rules."""
import numpy as np
import pytest

from pixgen.toy.world import (
    BACKGROUNDS, CANVAS, CELL_CENTRES, COLOURS, SHAPES, Obj, Scene, render, sample_scene, shape_mask,
)


def test_exact_palette():
    assert COLOURS["red"] == (220, 30, 30) and COLOURS["pink"] == (245, 130, 190)
    assert BACKGROUNDS == {"white": (240, 240, 240), "black": (20, 20, 20), "gray": (128, 128, 128)}


def test_render_uses_only_scene_colours():
    rng = np.random.default_rng(0)
    for _ in range(30):
        scene = sample_scene(rng)
        img = render(scene)
        assert img.shape == (CANVAS, CANVAS, 3) and img.dtype == np.uint8
        allowed = {BACKGROUNDS[scene.background]} | {COLOURS[o.colour] for o in scene.objects}
        assert {tuple(p) for p in img.reshape(-1, 3)} <= allowed
        assert tuple(img[0, 0]) == BACKGROUNDS[scene.background] or scene.cell(0, 0) is not None


def test_scenes_have_one_to_four_separate_objects_in_distinct_cells():
    rng = np.random.default_rng(1)
    for _ in range(200):
        scene = sample_scene(rng)
        assert 1 <= len(scene.objects) <= 4
        cells = [(o.col, o.row) for o in scene.objects]
        assert len(set(cells)) == len(cells)
        masks = [shape_mask(o.shape, o.cx, o.cy, o.px) for o in scene.objects]
        total = np.sum(masks, axis=0)
        assert total.max() <= 1, "objects overlap"
        for o, m in zip(scene.objects, masks):
            ys, xs = np.nonzero(m)
            assert xs.min() >= 0 and xs.max() < CANVAS and ys.min() >= 0 and ys.max() < CANVAS
            assert abs(o.cx - CELL_CENTRES[o.col]) <= 3 and abs(o.cy - CELL_CENTRES[o.row]) <= 3
            assert (10 <= o.px <= 14) if o.size == "small" else (22 <= o.px <= 26)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_geometry(shape):
    m = shape_mask(shape, 32.0, 32.0, 24.0)
    ys, xs = np.nonzero(m)
    assert 22 <= xs.max() - xs.min() + 1 <= 25 and 22 <= ys.max() - ys.min() + 1 <= 25
    area = m.sum() / 24.0**2
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}[shape]
    assert abs(area - expected) < 0.08
    if shape == "triangle":  # upright: narrow at the top, wide at the bottom
        rows = m.sum(1)[m.any(1)]
        assert rows[0] < 4 and rows[-1] > 20
    if shape == "cross":  # arm about a third of the size wide
        assert 7 <= m[32].sum() <= 25 and 7 <= m[:, 21].sum() <= 9


def test_render_draws_the_named_shape_and_colour_in_its_cell():
    scene = Scene("black", [Obj("square", "blue", "large", 0, 0, 12.5, 12.5, 24.0)])
    img = render(scene)
    assert tuple(img[12, 12]) == COLOURS["blue"]
    assert tuple(img[60, 60]) == BACKGROUNDS["black"]
