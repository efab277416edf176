"""Adam for the search, with torch's arithmetic and torch's state-dict format, outside ``torch.optim``.

Every ``torch.optim.Optimizer`` imports torch's compiler (``torch._dynamo``) the first time it is built, stepped or
saved, which costs a fresh process about 1.2 s of CPU (benchmarks/RESULTS.md, "What one process pays before its
search"): an eighth of a one-image toy run, for a compiler the search never uses. This class does what
``torch.optim.Adam`` does on one device without it:

- the update is torch's single-tensor Adam (``torch.optim.adam._single_tensor_adam``: its ops in its order, the
  step count a float32 tensor read back as a Python number), so a search steps bit for bit as it did with
  ``torch.optim.Adam`` (``tests/test_adam.py`` checks this against torch's own);
- ``state_dict`` / ``load_state_dict`` read and write torch's layout, so a ``state.pt`` written by an earlier pixgen
  (with ``torch.optim.Adam``) resumes here, and the reverse.

Only what pixgen's search uses: one param group, L2 weight decay added to the gradient, no AMSGrad, no
maximisation, no capturable or fused modes.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "maximize": False, "foreach": None,
             "capturable": False, "differentiable": False, "fused": None, "decoupled_weight_decay": False}


class Adam:
    """Adam over ``params`` (one group); ``state`` maps each parameter to its step count and two moments."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [
            {**_DEFAULTS, "params": params, "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        for param in group["params"]:
            if param.grad is None:
                continue
            grad = param.grad
            state = self.state.get(param)
            if not state:
                state = self.state[param] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
            exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            step_t += 1
            if weight_decay != 0:
                grad = grad.add(param, alpha=weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: parameters numbered by their place in the group."""
        params = self.param_groups[0]["params"]
        index = {id(p): i for i, p in enumerate(params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(params)))
        return {"state": {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index},
                "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state written by :meth:`state_dict` or by ``torch.optim.Adam`` with one param group."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if not groups or len(groups) != 1:
            raise ValueError("the saved optimizer state is not Adam's with one parameter group")
        saved = groups[0]
        if saved.get("amsgrad") or saved.get("maximize") or saved.get("decoupled_weight_decay"):
            raise ValueError("the saved optimizer state uses an Adam option pixgen's search does not "
                             "(amsgrad, maximize or decoupled weight decay)")
        params = self.param_groups[0]["params"]
        if len(saved["params"]) != len(params):
            raise ValueError(f"the saved optimizer state has {len(saved['params'])} parameters, not {len(params)}")
        for key in ("lr", "betas", "eps", "weight_decay"):
            if key in saved:
                self.param_groups[0][key] = tuple(saved[key]) if key == "betas" else saved[key]
        self.state = {}
        for slot, param in zip(saved["params"], params):
            entry = state_dict["state"].get(slot)
            if not entry:
                continue
            self.state[param] = {
                "step": torch.as_tensor(entry["step"], dtype=torch.float32).clone(),
                "exp_avg": entry["exp_avg"].to(param.device, param.dtype).clone(),
                "exp_avg_sq": entry["exp_avg_sq"].to(param.device, param.dtype).clone()}
