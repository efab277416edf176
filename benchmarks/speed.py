"""Iterations per second of the generation loop for a model, size and cutout count, on a chosen device.

    python benchmarks/speed.py --model random-tiny --size 64 --cutouts 16 --steps 50
    python benchmarks/speed.py --model toy --size 64 --cutouts 32 --device cuda
    python benchmarks/speed.py --model imagenet_f16_16384 --random-weights --size 256 --clip ViT-B-32

``--random-weights`` builds a registry model's real architecture (and the CLIP named by ``--clip``) with random
weights, so the speed of the real-size networks can be measured where no weights can be downloaded.

Times steady-state steps (after warm-up) with the device synchronised only at the ends, and prints the device,
torch version and thread count so results can be compared side by side.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from pixgen import config as config_mod
from pixgen import factory
from pixgen.factory import build_session
from pixgen.machine import machine_record


def _random_weight_vqgan(cfg, device, used=None):
    """Stands in for ``factory.load_vqgan_for``: the registry model's architecture with random weights, and no
    weights file (so nothing is reused between runs or recorded)."""
    from pixgen.checkpoints import get_entry, read_vqgan_config
    from pixgen.models.vqgan import VQGAN

    model = VQGAN(read_vqgan_config(get_entry(cfg.model).config)).to(device).eval().requires_grad_(False)
    return model, None


def _random_clip(text: str) -> str:
    """A --clip spec with no pretrained weights as MODEL:random (random weights on purpose; pixgen refuses an open_clip
    model without weights otherwise)."""
    from dataclasses import replace

    from pixgen.perceptor import RANDOM, ClipSpec

    spec = ClipSpec.parse(text)
    return text if spec.pretrained else str(replace(spec, pretrained=RANDOM))


def measure(model: str, size: int, cutouts: int, steps: int, warmup: int, device: str, clip: list[str],
            random_weights: bool) -> dict:
    if random_weights:  # before the config is built, which is what the session reads
        factory.load_vqgan_for = _random_weight_vqgan
        clip = [_random_clip(spec) for spec in clip]
    cfg = config_mod.build(({"prompt": "a red circle above a blue square | blurry:-0.5", "model": model,
                             "size": [size, size], "iterations": steps + warmup, "device": device,
                             "cutouts": {"n": cutouts}, "clip": clip}, "benchmark"))
    session = build_session(cfg)
    engine = session.engine
    sync = torch.cuda.synchronize if session.device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        engine.step(i)
    sync()
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        engine.step(i)
    sync()
    elapsed = time.perf_counter() - start
    return {
        "model": model + (" (random weights)" if random_weights else ""), "clip": clip or "default", "size": size, "cutouts": cutouts, "steps": steps,
        "it_per_s": round(steps / elapsed, 3), "s_per_it": round(elapsed / steps, 5),
        "device": str(session.device),
        "device_name": torch.cuda.get_device_name(session.device) if session.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": machine_record(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random-tiny")
    parser.add_argument("--size", type=int, nargs="+", default=[64])
    parser.add_argument("--cutouts", type=int, nargs="+", default=[16])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clip", action="append", default=[], help="CLIP spec (repeat for an ensemble)")
    parser.add_argument("--random-weights", action="store_true", help="real architecture, random weights")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for size in args.size:
        for n in args.cutouts:
            print(json.dumps(measure(args.model, size, n, args.steps, args.warmup, args.device, args.clip,
                                     args.random_weights)), flush=True)


if __name__ == "__main__":
    main()
