"""Whether an image tower's gradient points the way back once it has gone through the decoder, as the search
uses it.

``toy_warp_probe.py`` measures alignment in pixels: the cosine between the caption's gradient at a spoilt
picture and ``clean - spoilt``. The search does not move pixels; it moves the VQGAN latent, and its gradient is
the decoder's transpose applied to the pixel gradient (``J^T g``). Parts of a pixel gradient that no latent can
draw vanish there, so the pixel number could understate (or overstate) what the search gets. This probe
encodes each spoilt picture, decodes it as generation does (quantized, straight through), and compares the
tower's latent gradient with that of pixel guidance towards the clean render (mean squared error, which reaches
a right picture in 52 of 60 searches): their cosine, and the share of latent entries whose update sign agrees,
weighted by the size of pixel guidance's entry (Adam moves every entry by about the same step, so the sign is
what it follows).

    python benchmarks/toy_latent_alignment.py [--clip SPEC ...] [--names NAME ...] [--n 16] [--out FILE.json]

SPEC is a clip.pt, or BASE+TOWER.safetensors (default: the shipped towers).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from pixgen.factory import TOY_CLIP_MODEL, TOY_DIR, TOY_EARLY_TOWER, TOY_LATE_TOWER
from pixgen.perceptor import load_perceptor
from pixgen.toy.train_clip import decoder_transpose, normalize, tokenize
from pixgen.toy.training import load_toy_vqgan
from toy_warp_probe import spoilt_sets  # the same scenes and spoilt copies as the pixel probe


def probe(spec: str, vqgan, clean: torch.Tensor, texts: list[str], spoilt: dict[str, torch.Tensor]) -> dict:
    model = load_perceptor(f"{TOY_CLIP_MODEL}:{spec}").model
    size = model.visual.image_size[0]
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenize(texts)), dim=-1)
    out = {}
    for name, wrong in spoilt.items():
        picture, transpose = decoder_transpose(vqgan, wrong)  # as a search started from ``wrong`` holds it
        x = picture.clone().requires_grad_(True)
        score = (F.normalize(model.encode_image(normalize(F.interpolate(x, size=size, mode="area"), model)), dim=-1)
                 * text).sum()
        (tower,) = torch.autograd.grad(score, x)
        way = clean - picture  # pixel guidance's step (minus the gradient of half the squared error)
        g_tower, g_way = transpose(tower), transpose(way)
        flat = lambda t: t.flatten(1)  # noqa: E731
        weight = g_way.abs()
        agree = (torch.sign(g_tower) == torch.sign(g_way)).float() * weight
        sign = agree.flatten(1).sum(1) / weight.flatten(1).sum(1)
        out[name] = {"pixel_cosine": float(F.cosine_similarity(flat(tower), flat(way), dim=1).mean()),
                     "latent_cosine": float(F.cosine_similarity(flat(g_tower), flat(g_way), dim=1).mean()),
                     "latent_sign_agreement": float(sign.mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", nargs="*", default=None)
    parser.add_argument("--n", type=int, default=16, help="scenes per caption kind")
    parser.add_argument("--names", nargs="*", default=None, help="a label for each --clip, in order")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clip = str(TOY_DIR / "clip.pt")
    specs = args.clip or [clip, f"{clip}+{TOY_DIR / TOY_EARLY_TOWER}", f"{clip}+{TOY_DIR / TOY_LATE_TOWER}"]
    names = args.names or [Path(spec.split("+")[-1]).name for spec in specs]
    if len(names) != len(specs):
        parser.error(f"--names gave {len(names)} labels for {len(specs)} towers; give one per --clip")
    vqgan = load_toy_vqgan(TOY_DIR)
    clean, texts, _, spoilt = spoilt_sets(args.n)
    report = {"scenes": len(texts), "towers": {name: {"spec": spec, **probe(spec, vqgan, clean, texts, spoilt)}
                                               for name, spec in zip(names, specs)}}
    for name, row in report["towers"].items():
        print(name)
        for kind, r in row.items():
            if kind == "spec":
                continue
            print(f"    {kind:26s} pixel cos {r['pixel_cosine']:+.3f}  latent cos {r['latent_cosine']:+.3f}  "
                  f"sign agreement {r['latent_sign_agreement']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
