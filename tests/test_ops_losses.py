import math

import pytest
import torch

from pixgen.losses import prompt_loss, spherical_dist
from pixgen.ops import clamp_with_grad, flat_canvas, nearest_codes, replace_grad, vector_quantize


def test_replace_grad_forwards_one_value_and_routes_gradient_to_the_other():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([5.0, 7.0], requires_grad=True)
    out = replace_grad(a * 10, b * 3)
    assert torch.equal(out, torch.tensor([10.0, 20.0]))
    out.sum().backward()
    assert a.grad is None or torch.all(a.grad == 0)
    assert torch.equal(b.grad, torch.tensor([3.0, 3.0]))


def test_vector_quantize_picks_the_nearest_code_and_passes_gradient_straight_through():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 3.0]])
    x = torch.tensor([[0.9, 1.2], [-1.5, 2.0], [0.1, -0.2]], requires_grad=True)
    q = vector_quantize(x, codebook)
    assert torch.equal(q.detach(), codebook[[1, 2, 0]])
    assert torch.equal(nearest_codes(x.detach(), codebook), torch.tensor([1, 2, 0]))
    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (q * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # identity gradient: straight-through


def test_clamp_with_grad_only_lets_gradients_push_back_into_range():
    x = torch.tensor([-0.5, 0.5, 1.5, 1.5, -0.5], requires_grad=True)
    y = clamp_with_grad(x, 0.0, 1.0)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))
    # a descent step moves x by -grad: for x=1.5, grad +1 lowers it (back into range), grad -1 raises it.
    y.backward(torch.tensor([-1.0, 1.0, 1.0, -1.0, 1.0]))
    assert torch.equal(x.grad, torch.tensor([-1.0, 1.0, 1.0, 0.0, 0.0]))


def test_spherical_distance_values():
    x = torch.tensor([[1.0, 0.0]])
    assert spherical_dist(x, torch.tensor([[3.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert spherical_dist(x, torch.tensor([[0.0, 2.0]])).item() == pytest.approx(math.pi ** 2 / 8, rel=1e-5)
    assert spherical_dist(x, torch.tensor([[-1.0, 0.0]])).item() == pytest.approx(math.pi ** 2 / 2, rel=1e-5)


def test_prompt_loss_weight_scales_and_negative_weight_repels():
    target = torch.tensor([1.0, 0.0])
    e = torch.tensor([[0.6, 0.8]], requires_grad=True)
    d = spherical_dist(e, target.unsqueeze(0)).item()
    assert prompt_loss(e, target, 2.0, -math.inf).item() == pytest.approx(2 * d, rel=1e-5)
    assert prompt_loss(e, target, -0.5, -math.inf).item() == pytest.approx(-0.5 * d, rel=1e-5)
    prompt_loss(e, target, -1.0, -math.inf).backward()
    attract = torch.autograd.grad(prompt_loss(e, target, 1.0, -math.inf), e)[0]
    assert torch.allclose(e.grad, -attract)


def test_stop_zeroes_the_gradient_once_distance_is_below_it_but_keeps_the_value():
    target = torch.tensor([1.0, 0.0])
    near = torch.tensor([[1.0, 0.1]], requires_grad=True)  # distance ~0.01
    far = torch.tensor([[0.0, 1.0]], requires_grad=True)   # distance ~1.23
    loss_near = prompt_loss(near, target, 1.0, 0.5)
    loss_near.backward()
    assert loss_near.item() == pytest.approx(spherical_dist(near, target[None]).item(), rel=1e-5)
    assert torch.all(near.grad == 0)
    prompt_loss(far, target, 1.0, 0.5).backward()
    assert far.grad.abs().sum() > 0


def test_flat_canvas_gives_one_flat_image_per_colour_in_unit_range():
    canvas = flat_canvas([[255, 0, 0], (20, 128, 240)], width=5, height=3)
    assert canvas.shape == (2, 3, 3, 5)
    assert torch.equal(canvas[0, :, 2, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(canvas[1, :, 0, 0], torch.tensor([20, 128, 240]) / 255)
    assert torch.equal(canvas[1].amin(dim=(1, 2)), canvas[1].amax(dim=(1, 2)))  # flat: no pixel differs


def test_a_16_bit_gray_image_is_scaled_not_clipped_to_white(tmp_path):
    import numpy as np
    from PIL import Image

    from pixgen.output import load_image

    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "gray16.png")
    assert load_image(tmp_path / "gray16.png").mean().item() == pytest.approx(128 / 255, abs=1e-6)


def test_an_image_is_turned_as_its_exif_orientation_says(tmp_path):
    import numpy as np
    from PIL import Image

    from pixgen.output import load_image

    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = 255  # white on the left as stored
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: a phone held upright
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "phone.jpg")
    assert shown.shape == (1, 3, 64, 32)
    assert shown[0, :, 0].mean() > 0.9 and shown[0, :, -1].mean() < 0.1  # the left now at the top
