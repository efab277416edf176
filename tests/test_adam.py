"""pixgen's Adam steps as torch.optim.Adam does, bit for bit, and shares its saved state."""
import subprocess
import sys

import pytest
import torch

from pixgen.adam import Adam


def _problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(2, 32, 8, 8, generator=g)
    start = torch.randn(2, 32, 8, 8, generator=g)
    return target, start


def _run(make, steps: int, start: torch.Tensor, target: torch.Tensor, opt_state=None):
    z = torch.nn.Parameter(start.clone())
    opt = make([z])
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        # a loss whose gradient varies in size from entry to entry, as the search's does
        (((z - target) ** 2) * torch.linspace(0.01, 3, z.numel()).view_as(z)).sum().backward()
        opt.step()
    return z.detach(), opt


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_steps_match_torch_adam_exactly(weight_decay):
    target, start = _problem(0)
    ours, _ = _run(lambda p: Adam(p, lr=0.035, weight_decay=weight_decay), 60, start, target)
    theirs, _ = _run(lambda p: torch.optim.Adam(p, lr=0.035, weight_decay=weight_decay), 60, start, target)
    assert not torch.equal(ours, start)
    assert torch.equal(ours, theirs)


def test_state_moves_between_torch_adam_and_ours_both_ways():
    target, start = _problem(1)
    whole, _ = _run(lambda p: torch.optim.Adam(p, lr=0.05), 40, start, target)
    # 25 steps with torch's Adam, its state into ours for the last 15 (a state.pt from an earlier pixgen)
    half, torch_opt = _run(lambda p: torch.optim.Adam(p, lr=0.05), 25, start, target)
    resumed, ours = _run(lambda p: Adam(p, lr=0.05), 15, half, target, torch_opt.state_dict())
    assert torch.equal(resumed, whole)
    # and ours written out, read by torch's
    half, ours = _run(lambda p: Adam(p, lr=0.05), 25, start, target)
    resumed, _ = _run(lambda p: torch.optim.Adam(p, lr=0.05), 15, half, target, ours.state_dict())
    assert torch.equal(resumed, whole)


def test_cleared_state_starts_afresh_and_saved_lr_wins():
    target, start = _problem(2)
    z = torch.nn.Parameter(start.clone())
    opt = Adam([z], lr=0.1)
    ((z - target) ** 2).sum().backward()
    opt.step()
    assert float(opt.state[z]["step"]) == 1.0
    opt.state.clear()  # what the engine does when a coarse latent grows
    opt.step()
    assert float(opt.state[z]["step"]) == 1.0
    other = Adam([torch.nn.Parameter(start.clone())], lr=0.5)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == 0.1  # as torch.optim.Adam: the saved hyperparameters are loaded


def test_refuses_state_it_cannot_continue():
    z = torch.nn.Parameter(torch.zeros(3))
    amsgrad = torch.optim.Adam([z], amsgrad=True).state_dict()
    with pytest.raises(ValueError, match="amsgrad"):
        Adam([torch.nn.Parameter(torch.zeros(3))]).load_state_dict(amsgrad)
    two = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]).state_dict()
    with pytest.raises(ValueError, match="2 parameters, not 1"):
        Adam([torch.nn.Parameter(torch.zeros(3))]).load_state_dict(two)


def test_does_not_import_torch_compiler():
    code = ("import sys, torch\nfrom pixgen.adam import Adam\n"
            "z = torch.nn.Parameter(torch.ones(4)); opt = Adam([z], lr=0.1)\n"
            "for _ in range(3):\n    opt.zero_grad(); (z * z).sum().backward(); opt.step()\n"
            "opt.load_state_dict(opt.state_dict())\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
