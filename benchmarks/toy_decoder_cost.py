"""CPU cost of one decode and backward pass through toy VQGAN layouts, measured side by side.

A search step decodes the latent and back-propagates through the decoder once, so this is the decoder's share
of every step. Weights are random (the cost does not depend on them). Each layout is timed in turn, six rounds
of ten passes with one thread, and the mean of the middle four rounds is printed.

    python benchmarks/toy_decoder_cost.py
"""
from __future__ import annotations

import dataclasses
import time

import torch

from pixgen.models.vqgan import VQGAN
from pixgen.toy.train_vqgan import TOY_VQGAN

LAYOUTS = {
    "factor 4, ch_mult (1, 1, 2) (shipped)": TOY_VQGAN,
    "factor 2, ch_mult (1, 2) (pixgen toy train vqgan --factor 2)": dataclasses.replace(TOY_VQGAN, ch_mult=(1, 2)),
    "factor 2, ch_mult (1, 1)": dataclasses.replace(TOY_VQGAN, ch_mult=(1, 1)),
}


def main(rounds: int = 6, passes: int = 10, canvas: int = 64) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {name: VQGAN(cfg).eval().requires_grad_(False) for name, cfg in LAYOUTS.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            side = canvas // model.factor
            z = torch.randn(1, model.config.embed_dim, side, side, requires_grad=True)
            start = time.process_time()
            for _ in range(passes):
                model.decode(z).sum().backward()
            times[name].append((time.process_time() - start) / passes * 1000)
    base = None
    for name, values in times.items():
        middle = sorted(values)[1:-1]
        ms = sum(middle) / len(middle)
        base = base or ms
        print(f"{name:62s} {ms:6.1f} ms  ({ms / base:.2f}x)")


if __name__ == "__main__":
    main()
