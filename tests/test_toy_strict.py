"""The strict reader: exact colours, fitted outlines, and a pass only for exactly what the prompt names."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixgen.toy.captions import Ref, Spec
from pixgen.toy.strict import BLOB, strict_pass, strict_read
from pixgen.toy.train_clip import warp_field, warp_shapes
from pixgen.toy.world import Obj, Scene, render, sample_scene


def _key(scene):
    return scene.background, sorted((o.colour, o.shape, o.size, o.col, o.row) for o in scene.objects)


def test_clean_renders_are_read_exactly():
    rng = np.random.default_rng(7)
    for _ in range(40):
        scene = sample_scene(rng)
        reading = strict_read(render(scene))
        assert _key(reading.scene) == _key(scene) and reading.blobs == 0


def test_a_bent_object_is_a_blob_and_fails_a_prompt_its_shape_would_pass():
    import torch

    scene = Scene("gray", [Obj("square", "red", "large", 1, 1, 32.0, 32.0, 24.0)])
    spec = Spec("objects", (Ref("red", "square"),))
    clean = strict_read(render(scene))
    assert strict_pass(spec, clean) and clean.fits[0] > 0.95
    x = torch.from_numpy(render(scene)).permute(2, 0, 1)[None].float() / 255
    field = warp_field(1, 64, 64, torch.Generator().manual_seed(0)) * 4.0
    bent = (warp_shapes(x, field)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    reading = strict_read(bent)
    assert reading.scene.objects[0].shape == BLOB and not strict_pass(spec, reading)
    assert reading.blobs == 1


def test_strays_specks_and_off_palette_pixels_fail_a_strict_pass():
    spec = Spec("objects", (Ref("red", "circle"),))
    target = Obj("circle", "red", "large", 0, 0, 11.5, 11.5, 20.0)
    assert strict_pass(spec, strict_read(render(Scene("white", [target]))))
    stray = Obj("square", "blue", "small", 2, 2, 53.0, 53.0, 12.0)
    with_stray = strict_read(render(Scene("white", [target, stray])))
    assert not strict_pass(spec, with_stray)  # the learned evaluator's judge would accept this
    img = render(Scene("white", [target]))
    img[40:48, 40:47] = (30, 70, 220)  # a 56-pixel blue speck: below an object's area, above the speck budget
    assert not strict_pass(spec, strict_read(img))
    noisy = render(Scene("white", [target])).astype(np.int16)
    noisy[::2] = np.clip(noisy[::2] + 90, 0, 255)  # half the rows far from every world colour
    assert not strict_pass(spec, strict_read(noisy.astype(np.uint8)))


@pytest.mark.parametrize("count, passes", [(2, False), (3, True), (4, False)])
def test_counting_needs_exactly_the_count(count, passes):
    objs = [Obj("square", "orange", "small", c, 1, 11.0 + 21 * c, 32.0, 12.0) for c in range(3)]
    spec = Spec("count", (Ref("orange", "square"),), count=count)
    assert strict_pass(spec, strict_read(render(Scene("black", objs)))) is passes


def test_larger_images_are_read_at_the_world_scale():
    scene = Scene("black", [Obj("triangle", "cyan", "large", 2, 0, 52.0, 12.0, 22.0)])
    big = Image.fromarray(render(scene)).resize((128, 128), Image.NEAREST)
    assert _key(strict_read(big).scene) == _key(scene)
    assert _key(strict_read(np.asarray(big)).scene) == _key(scene)  # an array is read like a PIL image
    two = sample_scene(np.random.default_rng(11), n_objects=2)
    assert _key(strict_read(Image.fromarray(render(two)).resize((128, 128), Image.NEAREST)).scene) == _key(two)
