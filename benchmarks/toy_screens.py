"""Cheap generation-time screens of the toy model on a held-out prompt set (section "Seven generation-time
screens" of toy_results.md). Each variant changes one thing against the shipped preset; none needs training.

    python benchmarks/toy_screens.py VARIANT OUT [--prompt-seed 25] [--seeds 0,1] [--max-per-category N]

Variants:
  shipped     the preset as it is (with the border term since the twelfth session; every screen before it ran
              without, and its "shipped" rows are the no-border preset)
  no-border   the preset without the border term (border.weight=0): the "shipped" of the screens before
  snap        the CLIPs see the decoded image snapped, straight through, to the world's 11 colours (every step);
              the saved image is the decoder's own
  ensemble    steps 1-60 guided by the shipped early tower and stage 10's tower together (weight 1 each); pass
              stage 10's tower file with --stage10 (git show 59a4a1b~1:checkpoints/toy/clip_early_visual.safetensors)
  tv-l1       isotropic L1 total variation (Charbonnier, eps 1e-3) at weight 0.3 instead of squared TV at 10
  early-only  the early tower for all 100 steps, no late tower
  lr-0.07, lr-0.035, lr-0.025, cutouts-16, iterations-150   one preset value changed
  whole-views every cutout is the whole canvas, with no RandomAffine (noise kept): the tower's 8 px patch grid
              stays fixed to the canvas, nearer its training views (85-100% crops) (ninth session)
  cosine      the learning rate cosine-decayed over the run from the preset's (or --lr) to a tenth of it (ninth
              session)
  contrast-W  contrast terms at weight W (pixgen/contrast.py) with the word classes of configs/toy-contrast.yaml
              and numbers (tenth session; the screens of prompt seeds 33-35 ran before near misses kept "a"/"an"
              in agreement with a changed word)
  contrast-nocount-0.5   configs/toy-contrast.yaml as it is: weight 0.5, no numbers
  and-mask-T  each cutout's gradient taken back to the image on its own; a pixel value keeps their sum only where
              the views touching it agree in sign, |sum of signs| / views >= T (eleventh session); and-mask-0 keeps
              every value: the same search as shipped, computed this way (a check of the patch)
  tv-late-0   the TV term for steps 1-60 only (the early tower's part), none for 61-100 (eleventh session)
  border-W-K  a term K x the mean squared difference between the image's outer W-pixel frame and the start's
              (eleventh session; now the config keys border.width and border.weight)
  split-W     each object a two-object or relation prompt names is also its own prompt at weight W, beside the
              whole prompt ("a green circle and a pink cross | a green circle:W | a pink cross:W"); judged on the
              whole prompt's meaning (thirteenth session)
  layout-W    as split-W, each object's own prompt also naming a place that fits the prompt: a relation's objects
              where the relation puts them ("A above B": "A at the top", "B at the bottom"), two objects the
              first on the left and the second on the right (thirteenth session)
  sparsity-W  a term W x the mean absolute difference between the whole image and the start (the flat background
              the run began from): a steady pull of every pixel back to the background, so that only what the
              prompt's gradient holds up stays (thirteenth session; the config key sparsity.weight)
  area-W      the name sparsity-W was screened under, as a patch beside the border term; it now runs as
              sparsity-W, which made the same images bit for bit (18 of prompt seeds 50 and 63 checked)
  sparsity-late-W         sparsity-W for steps 61-100 only, the late tower's part (sparsity.steps=[0.6,1.0]): the
                          objects form without the pull, which then clears what is faint (fourteenth session)
  sparsity-latecap-C-W    as sparsity-late-W, each value's change counted up to C only (sparsity.cap=C): drawn
                          objects feel no pull, faint smears and edges do (fourteenth session)
  sparsity-early-W        sparsity-W for steps 1-60 only, the early tower's part (sparsity.steps=[0.0,0.6]): the
                          pull while the objects form, none while the late tower finishes (fourteenth session)

Variants joined by '+' apply together: border-3-5+contrast-nocount-0.5 (twelfth session).

The preset's own lr became 0.035 after these screens (it was 0.05). To run a variant as it was screened, give the
learning rate of the time: screens A-G (snap ... cutouts-16) and their baseline ran with ``--lr 0.05``; lr-0.025
and iterations-150 ran with the preset's 0.035. "shipped" with ``--lr 0.05`` is the old preset.

Writes OUT/results.json, table.md, contact_sheet.png and images/ (pixgen eval's layout) and prints one line:
passes, nothing extra, strict, objects per image (strict reader), CPU seconds per image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

import pixgen.engine as engine
from pixgen.config import resolve_preset
from pixgen.toy.captions import Ref, Spec, spec_text
from pixgen.toy.evaluate import SuiteItem, held_out, held_out_source, run_suite
from pixgen.toy.strict import PALETTE as WORLD_PALETTE
from pixgen.toy.training import cosine_decay

TOY = Path(__file__).resolve().parent.parent / "checkpoints" / "toy"
PALETTE = torch.from_numpy(WORLD_PALETTE) / 255  # the world's 11 colours, in [0, 1]


def nearest_world_colours(image: torch.Tensor) -> torch.Tensor:
    """Each pixel of a (B, 3, H, W) image in [0, 1] replaced by the nearest of the world's 11 colours."""
    pal = PALETTE.to(image)
    x = image.permute(0, 2, 3, 1)
    return pal[((x[..., None, :] - pal) ** 2).sum(-1).argmin(-1)].permute(0, 3, 1, 2)


def snap_to_palette(image: torch.Tensor) -> torch.Tensor:
    """Each pixel replaced by the nearest world colour in the forward pass; the gradient passes straight through."""
    return image + (nearest_world_colours(image) - image).detach()


def patch_snap() -> None:
    """The CLIP terms see the snapped image; the TV term still sees the decoder's own."""
    losses = engine.Engine.losses

    def snapped(self, image, targets, step=None):
        if step is None:  # scoring the flat start colours: they are palette colours already
            return losses(self, image, targets, step)
        labels, terms = losses(self, snap_to_palette(image), targets, step)
        if self.tv_weight:
            terms = terms.clone()
            terms[labels.index("tv")] = self.tv_weight * engine.total_variation(image)
        return labels, terms

    engine.Engine.losses = snapped


def tv_l1(image: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean isotropic L1 total variation, smoothed by ``eps`` where the image is flat."""
    dx = image[..., :-1, 1:] - image[..., :-1, :-1]
    dy = image[..., 1:, :-1] - image[..., :-1, :-1]
    return (dx.pow(2).sum(1) + dy.pow(2).sum(1) + eps ** 2).sqrt().mean()


def patch_cosine(final: float = 0.1) -> None:
    """Before each step, set the learning rate to its start times a cosine from 1 down to ``final``."""
    step = engine.Engine.step

    def decayed(self, i):
        for group in self.optimizer.param_groups:
            group.setdefault("start_lr", group["lr"])
            group["lr"] = group["start_lr"] * cosine_decay(i, max(1, self.total - 1), final)
        return step(self, i)

    engine.Engine.step = decayed


def patch_and_mask(threshold: float) -> None:
    """Each step, every cutout's gradient is taken back to the image on its own, and a pixel value keeps the sum of
    them only where the views that touch it agree in sign: |sum of signs| / (views touching it) >= ``threshold``
    (an AND-mask across views). Directions that only some views ask for are dropped. The TV term is unchanged."""
    from pixgen.cutouts import crop_resize

    def step(self, i):
        self.optimizer.zero_grad(set_to_none=True)
        image = self.generator()
        targets = self.active_targets(i)
        flat = image.detach()
        labels, terms, total = [], [], torch.zeros_like(flat[0])
        for size, make in self.cutouts.items():
            users = [k for k, p in enumerate(self.perceptors) if p.input_size == size
                     and any(t.perceptor == k for t in targets)]
            if not users:
                continue
            _, _, h, w = flat.shape
            copies = flat.expand(make.n, -1, -1, -1).clone().requires_grad_()
            boxes = make.boxes(h, w, flat.device)
            boxes[:, 0] = torch.arange(make.n, dtype=boxes.dtype)
            crops = make.augment(crop_resize(copies, boxes, make.cut_size))
            if make.noise > 0:
                facs = torch.rand(make.n, 1, 1, 1) * make.noise
                crops = crops + facs * torch.randn_like(crops)
            loss = flat.new_zeros(())
            for k in users:
                perceptor = self.perceptors[k]
                embeds = perceptor.encode_image(crops).float()
                for t in (t for t in targets if t.perceptor == k):
                    term = perceptor.weight * engine.prompt_loss(embeds, t.embed, t.weight, t.stop)
                    labels.append(t.label)
                    terms.append(term.detach())
                    loss = loss + term
            (grads,) = torch.autograd.grad(loss, copies)
            signs = grads.sign()
            agree = signs.sum(0).abs() / signs.abs().sum(0).clamp(min=1)
            total = total + grads.sum(0) * (agree >= threshold)
        tv = self.tv_weight * engine.total_variation(image)
        labels.append("tv")
        terms.append(tv.detach())
        image.backward(total[None] + torch.autograd.grad(tv, image, retain_graph=True)[0])
        self.optimizer.step()
        self.generator.project_()
        return labels, torch.stack(terms)

    engine.Engine.step = step


def patch_tv_until(share: float) -> None:
    """The TV term only for the first ``share`` of the steps; after that the search may sharpen edges."""
    step = engine.Engine.step

    def regularised_early(self, i):
        self.__dict__.setdefault("tv_start", self.tv_weight)
        self.tv_weight = self.tv_start if i < round(share * self.total) else 0.0
        return step(self, i)

    engine.Engine.step = regularised_early


# The toy world's word classes for contrast terms (configs/toy-contrast.yaml), and the class of numbers that the
# first contrast screens (prompt seeds 33-35) also swapped.
NUMBERS = [["two", "2"], ["three", "3"], ["four", "4"]]


def toy_swaps(numbers: bool) -> list:
    swaps = yaml.safe_load(resolve_preset("toy-contrast").read_text())["contrast"]["swaps"]
    return [*swaps[:5], NUMBERS, *swaps[5:]] if numbers else swaps  # numbers where the screens had them


def tower(path: Path | str, steps: str) -> str:
    return f"pixgen-toy-clip:{TOY / 'clip.pt'}+{path}:1@{steps}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", help="one of the variants above, or several joined by '+' "
                                    "(border-3-5+contrast-nocount-0.5)")
    ap.add_argument("out")
    ap.add_argument("--prompt-seed", type=int, default=25)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--max-per-category", type=int, default=None)
    ap.add_argument("--categories", default=None, help="only these categories, comma-separated")
    ap.add_argument("--stage10", default=None, help="stage 10's early tower file (variant ensemble)")
    ap.add_argument("--lr", type=float, default=None, help="the preset's learning rate for this run (default: as is)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    early, late = TOY / "clip_early_visual.safetensors", TOY / "clip_late_visual.safetensors"
    options: dict = {"overrides": [f"optim.lr={args.lr}"]} if args.lr is not None else {}
    for v in args.variant.split("+"):
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        apply_variant(v, options, args, ap, early, late)
    items = held_out(58, seed=args.prompt_seed)
    split = options.pop("split", None)
    if split is not None:
        items = [split_item(it, args.split_weight, layout=split == "layout") for it in items]
    report = run_suite(seeds=[int(s) for s in args.seeds.split(",")], out=args.out, progress=False, items=items,
                       source=held_out_source(58, args.prompt_seed), max_per_category=args.max_per_category,
                       categories=args.categories.split(",") if args.categories else None, overwrite=True, **options)
    s, t = report["summary"]["overall"], report["timing"]
    print(f"{args.variant}: pass {round(s['accuracy'] * s['n'])} nothing-extra {round(s['exact'] * s['n'])} "
          f"strict {round(s['strict'] * s['n'])} of {s['n']}, objects/image {s.get('strict_objects_per_image')}, "
          f"CPU {t['cpu_s_per_image_mean']} s/image")


VARIANTS = ["shipped", "snap", "ensemble", "tv-l1", "early-only", "lr-0.05", "lr-0.07", "lr-0.035", "lr-0.025",
            "cutouts-16", "iterations-150", "whole-views", "cosine", "contrast-0.5", "contrast-1", "contrast-2",
            "contrast-5", "contrast-nocount-0.5", "and-mask-0.5", "and-mask-0.25", "and-mask-0", "tv-late-0",
            "border-3-5", "border-3-20", "no-border", "split-0.3", "split-0.5", "split-1",
            "layout-0.3", "layout-1", "area-1", "area-3", "sparsity-1", "sparsity-2", "sparsity-3", "sparsity-6",
            "sparsity-late-3", "sparsity-late-6", "sparsity-latecap-0.15-3", "sparsity-latecap-0.15-6",
            "sparsity-early-3", "sparsity-early-6"]


# Where each object of a two-object prompt is asked to be by the layout-W variant: (col, row) of the first and the
# second object, by relation; two objects without one go side by side.
PLACES = {"above": ((None, 0), (None, 2)), "below": ((None, 2), (None, 0)), "left of": ((0, None), (2, None)),
          "right of": ((2, None), (0, None)), None: ((0, None), (2, None))}


def split_item(item: SuiteItem, weight: float, layout: bool = False) -> SuiteItem:
    """A two-object or relation item whose prompt also names each object on its own at ``weight`` (with
    ``layout``, in a place that fits the prompt); the spec, which the verdict reads, stays the item's."""
    spec = item.spec
    if spec.kind not in ("objects", "relation") or len(spec.refs) != 2:
        return item
    places = PLACES[spec.relation] if layout else ((None, None), (None, None))
    parts = [spec_text(Spec("objects", (Ref(r.colour, r.shape, r.size, *place),)))
             for r, place in zip(spec.refs, places)]
    return SuiteItem(item.category, spec, " | ".join([item.prompt, *(f"{t}:{weight:g}" for t in parts)]))


def apply_variant(v: str, options: dict, args, ap, early: Path, late: Path) -> None:
    """Change ``options`` (or patch the engine) for one variant."""
    if v == "snap":
        patch_snap()
    elif v == "ensemble":
        if not args.stage10:
            ap.error("variant ensemble needs --stage10 FILE")
        options["clip"] = [tower(early, "0-0.6"), tower(args.stage10, "0-0.6"), tower(late, "0.6-1")]
    elif v == "tv-l1":
        engine.total_variation = tv_l1
        options["tv_weight"] = 0.3
    elif v == "early-only":
        options["clip"] = [tower(early, "0-1")]
    elif v.startswith("lr-"):
        options.setdefault("overrides", []).append(f"optim.lr={v[3:]}")
    elif v == "cutouts-16":
        options.setdefault("overrides", []).append("cutouts.n=16")
    elif v == "iterations-150":
        options["iterations"] = 150
    elif v == "whole-views":
        options.setdefault("overrides", []).extend(["cutouts.pow=0.0001", "cutouts.augments=[]"])
    elif v == "cosine":
        patch_cosine(0.1)
    elif v.startswith(("split-", "layout-")):
        options["split"] = v.split("-", 1)[0]
        args.split_weight = float(v.split("-", 1)[1])
    elif v.startswith(("sparsity-late", "sparsity-early")):
        *_, weight = v.split("-")
        steps = "[0.0,0.6]" if v.startswith("sparsity-early") else "[0.6,1.0]"
        extra = [f"sparsity.cap={v.split('-')[2]}"] if v.startswith("sparsity-latecap-") else []
        options.setdefault("overrides", []).extend([f"sparsity.weight={weight}", f"sparsity.steps={steps}", *extra])
    elif v.startswith(("sparsity-", "area-")):  # area-W: the screen's patch, which became this config key
        options.setdefault("overrides", []).append(f"sparsity.weight={v.split('-', 1)[1]}")
    elif v == "no-border":
        options.setdefault("overrides", []).append("border.weight=0")
    elif v.startswith("border-"):  # screened as a patch of the engine, which became these config keys (same runs)
        _, width, weight = v.split("-")
        options.setdefault("overrides", []).extend([f"border.width={width}", f"border.weight={weight}"])
    elif v == "tv-late-0":
        patch_tv_until(0.6)
    elif v.startswith("and-mask-"):
        patch_and_mask(float(v.rsplit("-", 1)[1]))
    elif v.startswith("contrast-"):
        options["contrast"] = {"weight": float(v.rsplit("-", 1)[1]), "swaps": toy_swaps("nocount" not in v)}


if __name__ == "__main__":
    main()
