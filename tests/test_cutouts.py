import pytest
import torch

from pixgen.cutouts import MakeCutouts
from pixgen.errors import ConfigError


def test_cutouts_have_clip_input_shape_and_pass_gradients():
    make = MakeCutouts(24, 5, 1.0, [{"name": "RandomAffine", "kwargs": {"degrees": 10, "p": 1.0}}], noise=0.1)
    image = torch.rand(1, 3, 40, 56, requires_grad=True)
    crops = make(image)
    assert crops.shape == (5, 3, 24, 24)
    crops.mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_cut_pow_favours_small_crops():
    torch.manual_seed(0)
    small = MakeCutouts(16, 2000, cut_pow=4.0).boxes(64, 64, torch.device("cpu"))
    uniform = MakeCutouts(16, 2000, cut_pow=1.0).boxes(64, 64, torch.device("cpu"))
    side = lambda b: b[:, 3] - b[:, 1]  # noqa: E731
    assert side(small).mean() < side(uniform).mean() - 8
    for boxes in (small, uniform):
        assert side(boxes).min() >= 16 - 1e-4 and side(boxes).max() <= 64 + 1e-4
        assert boxes[:, 1].min() >= 0 and boxes[:, 3].max() <= 64 + 1e-4


def test_a_whole_image_crop_reproduces_the_image():
    make = MakeCutouts(32, 1)
    image = torch.rand(1, 3, 32, 32)
    make.boxes = lambda h, w, device: torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0]])
    assert torch.allclose(make(image), image, atol=1e-5)


def test_cutouts_are_seeded_by_torch():
    make = MakeCutouts(16, 3, augments=[{"name": "ColorJitter", "kwargs": {"hue": 0.1, "p": 1.0}}], noise=0.1)
    image = torch.rand(1, 3, 32, 32)
    torch.manual_seed(3)
    a = make(image)
    torch.manual_seed(3)
    assert torch.equal(a, make(image))


@pytest.mark.parametrize("spec, fragment", [
    ({"name": "RandomAfine"}, "did you mean RandomAffine"),
    ({"name": "RandomAffine", "kwargs": {"degreez": 3}}, "bad arguments for augmentation RandomAffine"),
])
def test_bad_augmentations_are_named(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        MakeCutouts(16, 2, augments=[spec])


@pytest.mark.parametrize("height, width, size, n", [(64, 64, 48, 8), (128, 96, 48, 8), (40, 56, 24, 5), (32, 32, 64, 3)])
def test_crops_match_torchvision_roi_align_in_value_and_gradient(height, width, size, n):
    """crop_resize is our faster stand-in for roi_align(aligned=True, sampling_ratio=-1): same numbers, including
    boxes of 1 to 3 samples per output pixel, a box on the image's edges and a second image in the batch."""
    from torchvision.ops import roi_align

    from pixgen.cutouts import crop_resize

    torch.manual_seed(0)
    image = torch.rand(2, 3, height, width, requires_grad=True)
    boxes = MakeCutouts(min(size, height, width), n, cut_pow=1.0).boxes(height, width, torch.device("cpu"))
    edge = torch.tensor([[1.0, 0.0, 0.0, float(min(height, width)), float(min(height, width))]])
    boxes = torch.cat([boxes, edge, boxes[:1] + torch.tensor([1.0, 0, 0, 0, 0])])
    ours = crop_resize(image, boxes, size)
    theirs = roi_align(image, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    assert ours.shape == theirs.shape == (n + 2, 3, size, size)
    assert torch.allclose(ours, theirs, atol=1e-5)
    weights = torch.randn_like(theirs)
    grad_ours, = torch.autograd.grad((ours * weights).sum(), image)
    grad_theirs, = torch.autograd.grad((theirs * weights).sum(), image)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-4)
    assert grad_ours[1].abs().sum() > 0  # the crops of the second image reach it, and only it
    assert torch.equal(grad_ours[1] == 0, grad_theirs[1] == 0)
