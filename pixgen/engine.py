"""The optimisation loop. It does no file I/O: everything a user sees is a callback.

Losses are kept on the device and read back every ``log_every`` steps in one transfer, so the loop does not
synchronise with the device on every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from pixgen.adam import Adam
from pixgen.contrast import contrast_loss
from pixgen.cutouts import MakeCutouts
from pixgen.errors import NonFiniteLossError
from pixgen.losses import (border_loss, latent_anchor_loss, palette_loss, prior_loss, prompt_loss,
                           sparsity_loss, total_variation)
from pixgen.perceptor import Perceptor, step_in_range


@dataclass
class Target:
    """One loss term: an embedding for one perceptor, with its weight, stop and label for logs."""

    label: str
    perceptor: int
    embed: torch.Tensor
    weight: float = 1.0
    stop: float = float("-inf")
    phase: int | None = None  # None: active in every phase
    # Near misses of a text prompt (K, D) that it should beat, with the contrast term's logit scale and weight.
    others: torch.Tensor | None = None
    contrast_scale: float = 100.0
    contrast_weight: float = 0.0


@dataclass
class StepState:
    """What callbacks see: the completed step number (1-based), the total, and the generator."""

    step: int
    total: int
    generator: nn.Module
    records: list[dict] = field(default_factory=list)

    @torch.no_grad()
    def image(self) -> torch.Tensor:
        """The current image (1, 3, H, W) in [0, 1], decoded from the latent after this step's update, at the
        run's output size (a coarse stage's image scaled up)."""
        render = getattr(self.generator, "render", None)
        return (render() if render is not None else self.generator()).detach()


class Callback(Protocol):
    def on_step(self, state: StepState) -> None: ...

    def on_log(self, state: StepState) -> None: ...

    def on_end(self, state: StepState, reason: str) -> None: ...


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9):
    """Optimizers by name: adam (pixgen's own, :class:`pixgen.adam.Adam`: torch's arithmetic without importing
    torch's compiler), and torch's adamw, adagrad, rmsprop and sgd (with momentum)."""
    name = name.lower()
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}")


class Engine:
    """Runs steps of: decode -> cutouts per CLIP input size -> embeddings -> losses -> optimizer step -> project.

    Args:
        generator: module whose ``forward()`` gives the image and whose ``latent_parameters()`` are optimised.
        perceptors: CLIP models; each has an ensemble ``weight`` and an ``input_size``.
        targets: loss terms, each naming the perceptor it belongs to and (optionally) its story phase.
        cutouts: one cutout maker per distinct perceptor input size, keyed by that size (shared by models).
        optimizer: an optimizer (torch's or :class:`pixgen.adam.Adam`) over the generator's latent; None for an
            Engine that only scores (losses).
        phases: the number of story phases, spread evenly over ``total`` steps.
        grow_step: with a generator that starts at a coarse size, the step (0-based) before which it grows to the
            output size (``generator.grow_()``); the optimizer's state starts afresh then.
    """

    def __init__(self, generator: nn.Module, perceptors: list[Perceptor], targets: list[Target],
                 cutouts: dict[int, MakeCutouts], optimizer: torch.optim.Optimizer | Adam | None, *, total: int,
                 phases: int = 1, init_weight: float = 0.0, tv_weight: float = 0.0, log_every: int = 10,
                 save_every: int | None = None, prior: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 prior_weight: float = 0.0, prior_steps: tuple[float, float] = (0.0, 1.0),
                 grow_step: int | None = None, border_weight: float = 0.0, border_width: int = 3,
                 sparsity_weight: float = 0.0, sparsity_steps: tuple[float, float] = (0.0, 1.0),
                 sparsity_cap: float | None = None, palette_weight: float = 0.0,
                 palette: torch.Tensor | None = None):
        self.generator, self.perceptors, self.targets = generator, perceptors, targets
        self.cutouts, self.optimizer = cutouts, optimizer
        self.total, self.phases = total, max(1, phases)
        self.init_weight, self.tv_weight, self.log_every = init_weight, tv_weight, log_every
        self.save_every = save_every or total
        self.prior, self.prior_weight, self.prior_steps = prior, prior_weight, tuple(prior_steps)
        self.grow_step = grow_step
        self.border_weight, self.border_width = border_weight, border_width
        self.sparsity_weight, self.sparsity_steps = sparsity_weight, tuple(sparsity_steps)
        self.sparsity_cap = sparsity_cap
        self.palette_weight, self.palette = palette_weight, palette  # palette: (K, 3) in the image's units
        self._start_image: torch.Tensor | None = None

    def grow_if_due(self, step: int) -> bool:
        """Grow a coarse generator to the output size once ``step`` (0-based) reaches ``grow_step``."""
        if self.grow_step is None or step < self.grow_step or getattr(self.generator, "grown", True):
            return False
        self.generator.grow_()
        if self.optimizer is not None:
            self.optimizer.state.clear()  # its moments belong to the coarse latent's shape
        return True

    def phase_at(self, step: int) -> int:
        """The story phase active while computing step ``step`` (0-based)."""
        return min(step * self.phases // max(1, self.total), self.phases - 1)

    def active_targets(self, step: int) -> list[Target]:
        """The targets that guide step ``step`` (0-based): those of its story phase whose CLIP is scheduled then."""
        phase = self.phase_at(step)
        on = [step_in_range(p.steps, step, self.total) for p in self.perceptors]
        return [t for t in self.targets if (t.phase is None or t.phase == phase) and on[t.perceptor]]

    def losses(self, image: torch.Tensor, targets: list[Target], step: int | None = None
               ) -> tuple[list[str], torch.Tensor]:
        """Per-term losses (K,) for ``image`` and their labels; the prior term counts only at a ``step`` (0-based)
        inside its range, and contrast terms only at a step (they guide the search, not the choice of start)."""
        labels: list[str] = []
        terms: list[torch.Tensor] = []
        by_perceptor: dict[int, list[Target]] = {}
        for t in targets:
            by_perceptor.setdefault(t.perceptor, []).append(t)
        for size, make in self.cutouts.items():
            users = [i for i, p in enumerate(self.perceptors) if p.input_size == size and i in by_perceptor]
            if not users:
                continue
            crops = make(image)
            for i in users:
                perceptor = self.perceptors[i]
                embeds = perceptor.encode_image(crops).float()
                for t in by_perceptor[i]:
                    labels.append(t.label)
                    terms.append(perceptor.weight * prompt_loss(embeds, t.embed, t.weight, t.stop))
                    if t.others is not None and t.contrast_weight and step is not None:
                        labels.append(f"{t.label} (contrast)")
                        terms.append(perceptor.weight * contrast_loss(embeds, t.embed, t.others, t.contrast_scale,
                                                                      t.contrast_weight))
        z = getattr(self.generator, "z", None)
        if self.init_weight and z is not None:
            labels.append("init_weight")
            terms.append(latent_anchor_loss(z, self.generator.z_init, self.init_weight))
        if self.tv_weight:
            labels.append("tv")
            terms.append(self.tv_weight * total_variation(image))
        if (self.prior is not None and self.prior_weight and step is not None
                and step_in_range(self.prior_steps, step, self.total)):
            labels.append("prior")
            terms.append(self.prior_weight * prior_loss(image, self.prior))
        if self.border_weight and step is not None:
            labels.append("border")
            terms.append(border_loss(image, self.start_image(image), self.border_width, self.border_weight))
        if (self.sparsity_weight and step is not None
                and step_in_range(self.sparsity_steps, step, self.total)):
            labels.append("sparsity")
            terms.append(sparsity_loss(image, self.start_image(image), self.sparsity_weight, self.sparsity_cap))
        if self.palette_weight and self.palette is not None and step is not None:
            labels.append("palette")
            terms.append(palette_loss(image, self.palette, self.palette_weight))
        return labels, torch.stack(terms) if terms else image.new_zeros(0)

    def start_image(self, like: torch.Tensor) -> torch.Tensor:
        """The picture the run started from, at the size of ``like`` (decoded from the starting latent, which a
        resumed run restores and a coarse stage's growth carries over), kept until the size changes."""
        if self._start_image is None or self._start_image.shape != like.shape:
            with torch.no_grad():
                self._start_image = self.generator.decode_latent(self.generator.z_init).detach()
        return self._start_image

    def step(self, step: int) -> tuple[list[str], torch.Tensor]:
        """One optimisation step (0-based index); returns labels and detached per-term losses."""
        if self.optimizer is None:
            raise RuntimeError("this Engine was built without an optimizer; it can only score images (losses)")
        self.optimizer.zero_grad(set_to_none=True)
        image = self.generator()
        labels, terms = self.losses(image, self.active_targets(step), step)
        terms.sum().backward()
        self.optimizer.step()
        self.generator.project_()
        return labels, terms.detach()

    def run(self, start: int, callbacks: list[Callback], should_stop: Callable[[], bool] = lambda: False) -> str:
        """Run from step ``start`` (steps already done) to ``total``; returns 'done' or 'interrupted'.

        Losses are checked at every log and save step, so callbacks that save on ``save_every`` steps only ever
        see a latent whose losses were finite. On a non-finite loss the latent is restored to the last checked
        one, callbacks get ``on_end(state, "nonfinite")``, and NonFiniteLossError is raised.
        """
        pending: list[tuple[int, list[str], torch.Tensor]] = []
        good = [p.detach().clone() for p in self.generator.latent_parameters()]
        good_step = start
        state = StepState(start, self.total, self.generator)
        reason = "done"
        for step in range(start, self.total):
            if self.grow_if_due(step):
                good = [p.detach().clone() for p in self.generator.latent_parameters()]
            labels, terms = self.step(step)
            pending.append((step + 1, labels, terms))
            state.step = step + 1
            stopping = should_stop()
            sync = state.step % self.log_every == 0 or state.step % self.save_every == 0
            if sync or state.step == self.total or stopping:
                state.records = self._flush(pending)
                pending = []
                bad = next((r for r in state.records if not math.isfinite(r["loss"])), None)
                if bad is not None:
                    with torch.no_grad():
                        for p, g in zip(self.generator.latent_parameters(), good):
                            p.copy_(g)
                    state.step = good_step
                    for cb in callbacks:
                        cb.on_end(state, "nonfinite")
                    raise NonFiniteLossError(
                        f"the loss became {bad['loss']} at step {bad['step']}; stopped and kept the last good image",
                        "lower the learning rate (--lr) or use another optimizer (--optimizer adam)")
                good = [p.detach().clone() for p in self.generator.latent_parameters()]
                good_step = state.step
                for cb in callbacks:
                    cb.on_log(state)
            for cb in callbacks:
                cb.on_step(state)
            if stopping and state.step < self.total:
                reason = "interrupted"
                break
        for cb in callbacks:
            cb.on_end(state, reason)
        return reason

    @staticmethod
    def _flush(pending: list[tuple[int, list[str], torch.Tensor]]) -> list[dict]:
        values = torch.cat([t for _, _, t in pending]).cpu().tolist()  # one device->host transfer
        records, i = [], 0
        for step, labels, terms in pending:
            chunk = values[i:i + len(labels)]
            i += len(labels)
            records.append({"step": step, "loss": float(sum(chunk)), "terms": dict(zip(labels, chunk))})
        return records
