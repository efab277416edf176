"""Where a toy search step's CPU time goes, and what this round's two changes to the step saved, side by side.

Builds the toy preset's session (64x64, 8 cutouts, the early image tower) and times each part of a step with one
thread: the decode through the quantizer with its backward, the cutouts with their backward, the CLIP image tower
with its backward, and a whole ``Engine.step``. Each part is also timed the way the step ran before this round:
- crops by ``torchvision.ops.roi_align`` (now ``pixgen.cutouts.crop_resize``, the same numbers);
- codes laid out channels-last after the quantizer (now contiguous);
- open_clip's image transformer batch-first (now sequence-first, the same numbers).

Variants alternate in rounds; each round times ``passes`` calls, and the median round is reported, so that a
noisy shared machine affects both alike.

    python benchmarks/toy_step_cost.py --out benchmarks/toy_step_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pixgen import config as config_mod
from pixgen import cutouts as cutouts_mod
from pixgen.factory import build_session
from pixgen.machine import machine_record
from pixgen.models import vqgan as vqgan_mod
from pixgen.ops import vector_quantize

NOW_CROP = cutouts_mod.crop_resize
NOW_QUANTIZE = vqgan_mod._QuantizerBase.forward


def _roi_align_crop(image, boxes, size):
    from torchvision.ops import roi_align

    return roi_align(image, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _channels_last_codes(self, z):
    return vector_quantize(z.movedim(1, -1), self.weight).movedim(-1, 1)


def _use(before: bool, perceptors) -> None:
    cutouts_mod.crop_resize = _roi_align_crop if before else NOW_CROP
    vqgan_mod._QuantizerBase.forward = _channels_last_codes if before else NOW_QUANTIZE
    for perceptor in perceptors:
        stack = perceptor.model.visual.transformer
        stack.batch_first = before
        for block in stack.resblocks:
            block.attn.batch_first = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = config_mod.build((config_mod.load_file(config_mod.resolve_preset("toy")), "toy preset"),
                           ({"prompt": "a red circle above a blue square", "device": "cpu"}, "benchmark"))
    session = build_session(cfg)
    gen, engine = session.generator, session.engine
    perceptor = session.perceptors[0]
    make = engine.cutouts[perceptor.input_size]
    image = gen().detach().requires_grad_(True)
    crops = make(image).detach().requires_grad_(True)

    def decode():
        gen.z.grad = None
        gen().sum().backward()

    def cut():
        image.grad = None
        make(image).sum().backward()

    def clip():
        crops.grad = None
        perceptor.encode_image(crops).sum().backward()

    step = iter(range(10**9))
    parts = {"decode + backward": decode, "cutouts + backward": cut, "CLIP image tower + backward": clip,
             "whole step (Engine.step)": lambda: engine.step(next(step) % 50)}
    times = {(part, v): [] for part in parts for v in ("before", "now")}
    for _ in range(args.rounds):
        for part, fn in parts.items():
            for variant in ("before", "now"):
                _use(variant == "before", session.perceptors)
                fn()  # warm this variant's path
                start = time.process_time()
                for _ in range(args.passes):
                    fn()
                times[(part, variant)].append((time.process_time() - start) / args.passes * 1000)
    _use(False, session.perceptors)
    rows = []
    for part in parts:
        before, now = (statistics.median(times[(part, v)]) for v in ("before", "now"))
        rows.append({"part": part, "before_ms": round(before, 2), "now_ms": round(now, 2),
                     "ratio": round(now / before, 3)})
        print(f"{part:32s} before {before:7.2f} ms   now {now:7.2f} ms   ratio {now / before:.3f}")
    result = {"rows": rows, "rounds": args.rounds, "passes": args.passes, "threads": 1,
              "machine": machine_record()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
