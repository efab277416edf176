"""Train the toy CLIP contrastively on rendered scenes and their captions, with hard negatives.

Each step draws ``batch`` (scene, caption) pairs from :func:`pixgen.toy.captions.sample_pair`, adds
``negatives`` hard-negative captions per scene (one word changed: colour, shape, size, position,
background, relation, count, or two colours swapped; each checked to be false of its scene), and a few
"junk" images decoded by the toy VQGAN from random codes (the kind of picture a generation starts from;
no caption is true of them). The loss is CLIP's symmetric cross-entropy, with soft targets spread over
every caption that is actually true of an image (the truth matrix comes from :func:`holds`), so a
caption that happens to describe two scenes in the batch is not pushed away from either. A second term,
weighted by ``hard_weight``, is a two-way softmax of each scene's true caption against each of its own hard
negatives, so that the one-word differences are not drowned by the many easy negatives.

Images are augmented like generation cutouts: a random crop covering 85-100% of each side, resized to the
tower's input size, sometimes with a little noise. The text tower runs on sequences cut just after the
longest caption's end token; with the causal mask this gives exactly what ``encode_text`` gives on the
full 77-token context, several times faster.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch
import torch.nn.attention
import torch.nn.functional as F
from tqdm import tqdm

from pixgen.atomic import atomic_torch_save
from pixgen.cli_util import set_threads
from pixgen.errors import PixgenError
from pixgen.perceptor import quiet_logging
from pixgen.toy.adversarial import AdversarialChains
from pixgen.toy.captions import RELATIONS, Spec, hard_negative, holds, sample_pair, spec_text
from pixgen.toy.training import (TrainLog, batch_images, check_finite, check_out_files, check_resume, cosine_decay,
                                 halt_requested, load_resume, load_toy_vqgan, lower_lr, pick_device, reconstruct,
                                 release_freed_memory, restore, save_state, seed_everything, stopped_at)
from pixgen.toy.world import BACKGROUNDS, CANVAS, COLOUR_NAMES, SHAPES, Scene, overlaps, place_object, render

__all__ = ["CLIP_NAME", "CONFIG_DIR", "create_toy_clip", "tokenize", "encode_text_fast", "augment", "train_clip", "save_clip",
           "export_image_tower"]

CLIP_NAME = "pixgen-toy-clip"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "clip_configs"


def create_toy_clip(pretrained: str | None = None) -> torch.nn.Module:
    """The toy CLIP (open_clip ``CLIP``) from our model config, optionally with weights from a file."""
    open_clip.add_model_config(CONFIG_DIR)
    if pretrained is None:  # random weights are meant here: no "initialized randomly" warning before training
        with quiet_logging():
            return open_clip.create_model(CLIP_NAME)
    return open_clip.create_model(CLIP_NAME, pretrained=pretrained)


@lru_cache(maxsize=1)
def _tokenizer():
    open_clip.add_model_config(CONFIG_DIR)
    return open_clip.get_tokenizer(CLIP_NAME)


@lru_cache(maxsize=200_000)
def _tokens(text: str) -> torch.Tensor:
    return _tokenizer()([text])[0]


def tokenize(texts: list[str]) -> torch.Tensor:
    """(N, 77) token ids, cached per caption."""
    return torch.stack([_tokens(t) for t in texts])


def encode_text_fast(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the shortest prefix that holds every end token."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    t = tokens[:, :length]
    x = model.token_embedding(t) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), t.argmax(dim=-1)]
    return x @ model.text_projection


def augment(images: torch.Tensor, size: int, gen: torch.Generator, min_side: float = 0.85,
            noise_p: float = 0.3) -> torch.Tensor:
    """Random crops covering ``min_side``-100% of each side, resized to ``size``; some get light noise.

    Shape:
        - images: (B, 3, H, W) in [0, 1]; returns (B, 3, size, size) in [0, 1]
    """
    b, dev = images.shape[0], images.device
    u = torch.rand(b, generator=gen).to(dev)
    side = 1 - (1 - min_side) * u * u  # mostly close to the whole canvas, as cutouts with a small cut_pow
    tx = (torch.rand(b, generator=gen).to(dev) * 2 - 1) * (1 - side)
    ty = (torch.rand(b, generator=gen).to(dev) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = side, side, tx, ty
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    noisy = (torch.rand(b, 1, 1, 1, generator=gen) < noise_p).float().to(dev)
    sigma = torch.rand(b, 1, 1, 1, generator=gen).to(dev) * 0.05
    out = out + noisy * sigma * torch.randn(out.shape, generator=gen).to(dev)
    return out.clamp(0, 1)


def normalize(images: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    cfg = model.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _quick_true(spec: Spec, pairs: set) -> bool:
    return all((r.colour, r.shape) in pairs for r in spec.refs)


def truth_matrix(scenes: list[Scene | None], specs: list[Spec]) -> torch.Tensor:
    """(n_images, n_captions) bool: whether each caption is true of each scene (junk images: all false)."""
    t = torch.zeros(len(scenes), len(specs), dtype=torch.bool)
    for i, scene in enumerate(scenes):
        if scene is None:
            continue
        pairs = {(o.colour, o.shape) for o in scene.objects}
        for j, spec in enumerate(specs):
            if _quick_true(spec, pairs) and holds(spec, scene):
                t[i, j] = True
    return t


def hard_negative_margins(logits: torch.Tensor, row_of: torch.Tensor, owners: list[int], truth: torch.Tensor,
                          nb: int) -> torch.Tensor:
    """Logit of each hard-negative caption (columns ``nb`` on, written for scene ``owners[j]``) minus that
    scene's own caption (column = scene index), on the scene's row of ``logits`` (``row_of[scene]``; -1: no row).
    Negatives that happen to hold for their scene (``truth``) are left out."""
    own = torch.tensor(owners[nb:], device=logits.device, dtype=torch.long)
    cols = torch.arange(nb, nb + len(own), device=logits.device)
    rows = row_of[own]
    keep = (rows >= 0) & ~truth[own, cols]
    rows, own, cols = rows[keep], own[keep], cols[keep]
    return logits[rows, cols] - logits[rows, own]


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against targets spread evenly over each row's true entries (rows with none skipped)."""
    keep = target.any(1)
    if not keep.any():
        return logits.sum() * 0
    tgt = target[keep].float()
    tgt = tgt / tgt.sum(1, keepdim=True)
    return -(tgt * F.log_softmax(logits[keep], dim=1)).sum(1).mean()


def stray_variant(scene: Scene, rng: np.random.Generator) -> Scene | None:
    """The scene with one more object, of a random shape, colour and size, in a free grid cell: a picture with
    something its caption does not name, which generation leaves (stage 13 preferred a clean held-out render to
    the same render with a small stray in 111 of 116, but by a small margin). None when no cell has room."""
    used = {(o.col, o.row) for o in scene.objects}
    free = [(c, r) for r in range(3) for c in range(3) if (c, r) not in used]
    for k in rng.permutation(len(free)):
        col, row = free[int(k)]
        shape, colour = SHAPES[int(rng.integers(len(SHAPES)))], COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
        obj = place_object(rng, shape, colour, "large" if rng.random() < 0.3 else "small", col, row,
                           list(scene.objects))
        if obj is not None:
            return Scene(scene.background, [*scene.objects, obj])
    return None


NEAR_MISS_KINDS = ("shape", "colours", "places", "fewer")


def near_miss_variant(scene: Scene, spec: Spec, rng: np.random.Generator,
                      kinds: tuple[str, ...] = NEAR_MISS_KINDS) -> Scene | None:
    """The scene changed in one way that makes its caption false, every pixel else kept: a named object in another
    shape ("shape"), the colours of two named objects swapped ("colours"), two named objects swapped in place
    ("places", which flips a relation), or one object fewer of a counted kind ("fewer"); one kind drawn from those
    of ``kinds`` that apply. None when none does.

    The hard-negative captions teach each image to prefer its caption to a near-miss caption; the search holds the
    caption and moves the image, so what guides it is the other way round: the caption preferring its image to a
    near-miss image. Random batches seldom hold such pairs, and the towers rank them weakly: on clean renders of
    held-out prompts the stage-14 early tower prefers the right scene to the shape change by a cosine of 0.022
    (a changed colour: 0.125) and to the swapped places in 7 of 24 (benchmarks/toy_results.md, "Near-miss images";
    200-300 CPU steps of this option did not change that).
    """
    objs = list(scene.objects)
    named = [i for i, o in enumerate(objs) if any(r.matches(o) for r in spec.refs)]
    for k in rng.permutation(len(kinds)):
        kind, out = kinds[int(k)], list(objs)
        if kind == "shape" and named:
            i = named[int(rng.integers(len(named)))]
            others = [s for s in SHAPES if s != objs[i].shape]
            out[i] = replace(objs[i], shape=others[int(rng.integers(len(others)))])
        elif kind in ("colours", "places") and len(named) >= 2 and spec.kind != "count":
            i, j = (named[int(n)] for n in rng.choice(len(named), 2, replace=False))
            a, b = objs[i], objs[j]
            if kind == "colours":
                out[i], out[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
            else:
                out[i] = replace(a, col=b.col, row=b.row, cx=_inside(b.cx, a.px), cy=_inside(b.cy, a.px))
                out[j] = replace(b, col=a.col, row=a.row, cx=_inside(a.cx, b.px), cy=_inside(a.cy, b.px))
                if any(overlaps(out[m], o) for m in (i, j) for n, o in enumerate(out) if n != m):
                    continue
        elif kind == "fewer" and spec.kind == "count" and named:
            del out[named[int(rng.integers(len(named)))]]
        else:
            continue
        variant = Scene(scene.background, out)
        if not holds(spec, variant):  # e.g. two red objects swapped in colour describe the scene as before
            return variant
    return None


def _inside(c: float, px: float) -> float:
    """A centre coordinate moved just far enough that an object of extent ``px`` stays on the canvas."""
    return float(np.clip(c, px / 2 + 0.5, CANVAS - px / 2 - 0.5))


def cut_variant(scene: Scene, spec: Spec, rng: np.random.Generator,
                cut: tuple[float, float] = (0.3, 0.6)) -> Scene | None:
    """The scene with one object the caption names pushed over the nearest canvas edge, so that a random
    ``cut`` share of its extent lies outside: a picture the caption no longer describes (the evaluator cannot
    read a half-shown shape), which generation otherwise drifts towards. None when the caption names no object.
    """
    named = [o for o in scene.objects if any(r.matches(o) for r in spec.refs)]
    if not named:
        return None
    obj = named[int(rng.integers(len(named)))]
    share = rng.uniform(*cut)
    gaps = {"left": obj.cx, "right": CANVAS - obj.cx, "top": obj.cy, "bottom": CANVAS - obj.cy}
    side = min(gaps, key=gaps.get)
    inside = obj.px * (0.5 - share)  # centre's distance inside the edge (negative: outside)
    cx, cy = obj.cx, obj.cy
    if side == "left":
        cx = inside
    elif side == "right":
        cx = CANVAS - inside
    elif side == "top":
        cy = inside
    else:
        cy = CANVAS - inside
    moved = replace(obj, cx=float(cx), cy=float(cy))
    return Scene(scene.background, [moved if o is obj else o for o in scene.objects])


def background_rgb(names: list[str], like: torch.Tensor) -> torch.Tensor:
    """(B, 3, 1, 1) flat colours in [0, 1] of the named backgrounds, in ``like``'s dtype and device."""
    rgb = torch.tensor([BACKGROUNDS[name] for name in names], dtype=like.dtype, device=like.device)
    return (rgb / 255).view(-1, 3, 1, 1)


def fade_to_background(images: torch.Tensor, backgrounds: list[str], contrast: tuple[float, float],
                       gen: torch.Generator) -> torch.Tensor:
    """``images`` (B, 3, H, W in [0, 1]) blended towards their flat background colour, each keeping a share of
    its contrast drawn uniformly from ``contrast``: the faint objects a search from a flat canvas passes through."""
    if not len(images):
        return images.clone()
    bg = background_rgb(backgrounds, images)
    lo, hi = contrast
    keep = (lo + (hi - lo) * torch.rand(len(images), generator=gen)).to(images.device).view(-1, 1, 1, 1)
    return bg + keep * (images - bg)


def warp_field(b: int, h: int, w: int, gen: torch.Generator, spacing: int = 8) -> torch.Tensor:
    """(B, 2, H, W) smooth random displacements (x, y) with an RMS of one pixel per image: Gaussian noise on a
    grid of control points ``spacing`` pixels apart, upsampled bicubically."""
    ctrl = torch.randn(b, 2, h // spacing + 1, w // spacing + 1, generator=gen)
    field = F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)
    return field / field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)


def warp_shapes(images: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W in [0, 1]) bent by ``field`` (B, 2, H, W, in pixels; see :func:`warp_field`): the
    objects keep their colours, places and hard edges but lose their shapes, becoming the coloured blobs a
    search drifts to. Sampling is nearest-neighbour with a replicated border, so every pixel keeps an exact
    colour of the scene and flat backgrounds stay flat.

    Shape:
        - images: (B, 3, H, W); field: (B, 2, H, W); returns (B, 3, H, W)
    """
    b, _, h, w = images.shape
    if not b:
        return images.clone()
    field = field.to(images.device, images.dtype)
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device), torch.arange(w, device=images.device),
                            indexing="ij")
    px = xs[None] + 0.5 + field[:, 0]
    py = ys[None] + 0.5 + field[:, 1]
    grid = torch.stack([px / w * 2 - 1, py / h * 2 - 1], dim=-1)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=False)


def perturb_l2(embed, images: torch.Tensor, targets: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """``images`` (B, 3, H, W in [0, 1]) moved within an L2 ball of radius ``eps`` (per image) to lower the cosine
    between ``embed(image)`` and its row of ``targets`` (B, D, unit length), by ``steps`` of normalised gradient
    descent (projected gradient descent). Training on these teaches the image tower a loss surface without
    small-pixel shortcuts, whose gradients look like the objects ("perceptually aligned gradients")."""
    if not len(images) or eps <= 0 or steps <= 0:
        return images.detach().clone()
    x = images.detach()
    targets = targets.detach()
    delta = torch.zeros_like(x)
    step_size = 2.5 * eps / steps

    def l2(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    for _ in range(steps):
        delta.requires_grad_(True)
        score = (F.normalize(embed(x + delta), dim=-1) * targets).sum()
        (grad,) = torch.autograd.grad(score, delta)
        with torch.no_grad():
            delta = delta - step_size * grad / l2(grad)
            delta = delta * (eps / l2(delta)).clamp(max=1.0)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def alignment_pairs(clean: torch.Tensor, backgrounds: list[str], contrast: tuple[float, float],
                    gen: torch.Generator, max_warp: float = 3.0, clutter: float = 0.0,
                    donors: tuple[torch.Tensor, list[str]] | None = None,
                    mix: tuple[float, float, float] | None = None, clutter_spoilt: bool = False) -> torch.Tensor:
    """Spoilt copies of ``clean`` renders (B, 3, H, W in [0, 1]), as a search's picture looks before it is right:
    a third faded towards the background (contrast drawn from ``contrast``), a third bent into blobs (RMS
    displacement up to ``max_warp`` px), a third both bent and faded. ``mix`` (faded, bent, both) weighs the three
    kinds instead of equal thirds; left out, the draws are those of every run before it existed.

    With ``clutter`` > 0, that share of them is instead the clean scene with stray objects added: the objects of
    random ``donors`` render (a pair: B' images, 3 x H x W, e.g. the whole batch, and their background names),
    bent and faded to a random contrast, pasted wherever the clean scene shows its background (2 px clear of its
    objects). Searches draw such strays in their first steps and keep them; the way back to the clean render is
    to paint them out. With ``clutter_spoilt`` the strays go onto the spoilt picture instead of the clean one, so
    the caption's own objects are faint or bent too: the way back restores them and paints out only the strays,
    and "paint out whatever is faint" no longer fits the pairs. It draws no extra random numbers.
    """
    b = len(clean)
    if not b:
        return clean.clone()
    if mix is None:
        kind = torch.randint(0, 3, (b,), generator=gen).to(clean.device)
    else:
        kind = torch.multinomial(torch.tensor(mix, dtype=torch.float), b, replacement=True, generator=gen)
        kind = kind.to(clean.device)
    amp = (0.5 + (max_warp - 0.5) * torch.rand(b, generator=gen)).to(clean.device).view(-1, 1, 1, 1)
    bent = warp_shapes(clean, warp_field(b, clean.shape[2], clean.shape[3], gen) * amp)
    out = torch.where((kind >= 1).view(-1, 1, 1, 1), bent, clean)
    faded = fade_to_background(out, backgrounds, contrast, gen)
    out = torch.where((kind != 1).view(-1, 1, 1, 1), faded, out)
    if clutter and donors is not None and len(donors[0]):
        pick = torch.rand(b, generator=gen) < clutter
        which = torch.randint(len(donors[0]), (b,), generator=gen)
        src = warp_shapes(donors[0][which].to(clean), warp_field(b, clean.shape[2], clean.shape[3], gen) * amp)
        bg, donor_bg = background_rgb(backgrounds, clean), background_rgb([donors[1][int(i)] for i in which], clean)
        is_obj = (src - donor_bg).abs().amax(1, keepdim=True) > 0.02
        free = (clean - bg).abs().amax(1, keepdim=True) <= 0.02
        base = clean
        if clutter_spoilt:  # paste on the spoilt picture, and not where a bent object spills past its outline
            base = out
            free &= (out - bg).abs().amax(1, keepdim=True) <= 0.02
        free = -F.max_pool2d(-free.float(), 5, stride=1, padding=2) > 0.5  # keep 2 px clear of the scene's objects
        keep = (0.25 + 0.75 * torch.rand(b, generator=gen)).to(clean.device).view(-1, 1, 1, 1)
        strays = torch.where(is_obj & free, bg + keep * (src - bg), base)
        out = torch.where(pick.to(clean.device).view(-1, 1, 1, 1), strays, out)
    return out


def gradient_alignment(embed, wrong: torch.Tensor, right: torch.Tensor, targets: torch.Tensor, view,
                       create_graph: bool = True, through=None) -> torch.Tensor:
    """Per image, the cosine between the way the caption score climbs at ``wrong`` (its gradient with respect to
    the (B, 3, H, W) picture, through ``view``, the crops the tower sees) and the way to ``right``, the picture
    it should become: ``right - wrong``. ``targets`` (B, D, unit length) are the captions' embeddings. A tower
    trained to raise this ("perceptually aligned gradients") leads a search the way pixel guidance does, from a
    faint or bent object to its true shape; ``create_graph`` keeps the graph so the cosine can be trained.

    ``through`` (see :func:`decoder_transpose`) maps both pixel directions to the latent a search moves before
    they are compared, so that only what the decoder can draw counts."""
    w = wrong.detach().requires_grad_(True)
    # the fused attention kernels have no second derivative; the plain one does
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        score = (F.normalize(embed(view(w)), dim=-1) * targets.detach()).sum()
    (grad,) = torch.autograd.grad(score, w, create_graph=create_graph)
    way = (right - wrong).detach()
    if through is not None:
        grad, way = through(grad, create_graph), through(way, False).detach()
    return F.cosine_similarity(grad.flatten(1), way.flatten(1), dim=1, eps=1e-12)


def decoder_transpose(vqgan, images: torch.Tensor):
    """``images`` (B, 3, H, W in [0, 1]) as a search holds them: encoded to the VQGAN latent and decoded through
    its codebook (quantized straight through, as in generation). Returns the decoded pictures (in [0, 1], no
    gradient) and a function that maps a pixel direction at them to the latent gradient a search would get from
    it, the decoder's transpose ``J^T g``, keeping the graph when asked so that a loss on it can be trained."""
    with torch.no_grad():
        z = vqgan.encode(images * 2 - 1)
    z.requires_grad_(True)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):  # twice differentiable attention
        picture = (vqgan.decode(vqgan.quantize(z)) + 1) / 2

    def transpose(pixel_grad: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        (grad,) = torch.autograd.grad(picture, z, grad_outputs=pixel_grad, create_graph=create_graph,
                                      retain_graph=True)
        return grad

    return picture.detach().clamp(0, 1), transpose


def make_batch(rng: np.random.Generator, batch: int, negatives: int, canonical_p: float = 0.3,
               fixed: list[tuple[Scene, Spec, str]] = (), kinds: dict[str, float] | None = None):
    """Scenes, their images, caption texts and specs (positives first, then hard negatives), and for each
    caption the index of the scene it was written for. ``fixed`` (scene, spec, text) pairs come first, then
    ``batch`` random ones, their caption kinds drawn with the weights ``kinds`` (default ``PAIR_KINDS``)."""
    scenes, images, texts, specs, neg_texts, neg_specs, owners = [], [], [], [], [], [], []
    drawn = [(scene, spec, text) for scene, spec, text in fixed] + [None] * batch
    for item in drawn:
        if item is None:
            scene, spec = sample_pair(rng, weights=kinds)
            text = None
        else:
            scene, spec, text = item
        seed = None if rng.random() < canonical_p else int(rng.integers(2**31))

        def say(s: Spec) -> str:
            return spec_text(s, None if seed is None else np.random.default_rng(seed))

        scenes.append(scene)
        images.append(render(scene))
        texts.append(text if text is not None else say(spec))
        specs.append(spec)
        for _ in range(negatives):
            neg = hard_negative(spec, scene, rng)
            if neg is not None:
                neg_texts.append(say(neg[0]))
                neg_specs.append(neg[0])
                owners.append(len(scenes) - 1)
    return scenes, images, texts + neg_texts, specs + neg_specs, list(range(len(scenes))) + owners


class JunkPool:
    """Images the toy VQGAN decodes from random codes, remade when its checkpoint changes.

    The codes come from the pool's own generator seeded with ``seed``, so a resumed run rebuilds exactly the
    pool it had, without touching the training's random streams.
    """

    def __init__(self, vqgan_dir: Path, size: int = 512, seed: int = 0, hint: str | None = None):
        self.path = Path(vqgan_dir) / "vqgan.ckpt"
        self.size, self.seed, self.hint = size, seed, hint
        self.mtime = None
        self.images: torch.Tensor | None = None
        self.checked = False

    def refresh(self) -> None:
        """Make the pool from the checkpoint, or remake it if the checkpoint has changed since. One that cannot be
        read is an error at the first call, made before training; later it is passed over and the pool kept, so
        that a file changed under a running training does not stop it."""
        first, self.checked = not self.checked, True
        if not self.path.exists() or self.path.stat().st_mtime == self.mtime:
            return
        try:
            model = load_toy_vqgan(self.path.parent, hint=self.hint)
        except Exception:
            if first:
                raise
            return
        self.mtime = self.path.stat().st_mtime
        book, h = model.codebook.detach(), model.config.resolution // model.factor
        out, gen = [], torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for i in range(0, self.size, 64):
                n = min(64, self.size - i)
                # half fully random codes, half blocky maps of random codes (coarse coloured patches)
                idx = torch.randint(len(book), (n, h, h), generator=gen)
                coarse = torch.randint(len(book), (n, h // 4, h // 4), generator=gen)
                coarse = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
                idx = torch.where(torch.arange(n).view(n, 1, 1) % 2 == 0, idx, coarse)
                z = book[idx].movedim(-1, 1)
                out.append(((model.decode(z) + 1) / 2).clamp(0, 1))
        self.images = torch.cat(out)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        if self.images is None or n == 0:
            return None
        return self.images[torch.randint(len(self.images), (n,), generator=gen)]


def export_image_tower(src: str | Path, base: str | Path, out: str | Path) -> Path:
    """Write the image tower of the toy CLIP ``src`` alone, for use as ``BASE+TOWER`` with ``base``.

    Refuses unless ``src``'s text side (every weight outside ``visual.`` but the logit scale, which generation
    does not use) equals ``base``'s bit for bit, as after ``pixgen toy train clip --init BASE --lock-text``: only
    then does BASE+TOWER give ``src``'s embeddings.
    """
    from pixgen.errors import ModelError
    from pixgen.perceptor import read_clip_state, save_image_tower

    a, b = read_clip_state(src), read_clip_state(base)
    text = [k for k in a if not k.startswith("visual.") and k != "logit_scale"]
    differ = [k for k in text if k not in b or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    if differ:
        raise ModelError(f"{src} and {base} differ outside the image tower ({len(differ)} tensors, e.g. {differ[0]})",
                         "export the tower of a run trained with --init BASE --lock-text, and give that BASE")
    model = create_toy_clip()  # the state dict already read, not the file again
    _load_toy_state(model, a, src)
    return save_image_tower(model, out, base=Path(base).name)


def split_tower(init: str | Path) -> tuple[Path, Path | None]:
    """``clip.pt`` -> (clip.pt, None); ``clip.pt+tower.safetensors`` -> (clip.pt, tower.safetensors), as
    generation reads ``BASE+TOWER`` (:func:`pixgen.perceptor.split_tower`)."""
    from pixgen.perceptor import split_tower as split

    base, tower = split(str(init))
    return Path(base).expanduser(), None if tower is None else Path(tower).expanduser()


def _load_toy_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Fill the toy CLIP ``model`` from ``state`` (read from ``where``), or say that it holds another CLIP."""
    from pixgen.errors import ModelError

    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelError(f"{where} is not the toy CLIP's weights: {str(exc).splitlines()[0][:200]}",
                         "give a clip.pt of the toy CLIP, e.g. checkpoints/toy/clip.pt") from None


def load_init(model: torch.nn.Module, init: str | Path) -> None:
    """Fill ``model`` from a ``clip.pt``, or from ``clip.pt+tower.safetensors`` (that image tower on it)."""
    from pixgen.perceptor import read_clip_state

    base, tower = split_tower(init)
    _load_toy_state(model, read_clip_state(base), base)
    if tower is not None:  # a shipped image tower on its clip.pt, as generation loads BASE+TOWER
        from pixgen.perceptor import load_image_tower

        load_image_tower(model, tower)


def save_clip(model: torch.nn.Module, path: str | Path) -> Path:
    """The open_clip / OpenAI-format state dict in float16 (loads into float32 models unchanged)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half().contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    return atomic_torch_save(state, path)


class LayoutHeads(torch.nn.Module):
    """Training-only linear heads on the CLIP's unit embeddings (``--aux-layout``; never saved in clip.pt).

    The image head reads each of the 9 grid cells' content from the image embedding: its colour (or empty)
    and its shape (or empty). The text head reads from the caption embedding the column and row a caption
    names for its one object (or none), its relation (or none), and the colour and shape of the first and
    second object it names (or none), in the caption's order, so that "a red circle above a blue square" and
    "a blue square above a red circle" must differ. Contrastive training alone leaves the toy CLIP almost blind
    to place: captions that differ only in "left"/"right" get text embeddings at cosine 0.997. The heads make
    both towers carry layout and which colour goes with which shape where, which the contrastive and
    hard-negative terms can then align.
    """

    SCALE = 10.0  # unit embeddings are small; scaled so the heads' logits can grow without large weights
    N_COLOURS = 1 + len(COLOUR_NAMES)  # none, then each colour
    N_SHAPES = 1 + len(SHAPES)  # none, then each shape
    # text head outputs: column (4), row (4), relation, then colour and shape of the first and second object
    TEXT_SPLITS = (4, 4, 1 + len(RELATIONS), N_COLOURS, N_SHAPES, N_COLOURS, N_SHAPES)

    def __init__(self, dim: int):
        super().__init__()
        self.image = torch.nn.Linear(dim, 9 * (self.N_COLOURS + self.N_SHAPES))
        self.text = torch.nn.Linear(dim, sum(self.TEXT_SPLITS))

    @staticmethod
    def _per_cell(scene: Scene, attr: str, names: tuple[str, ...]) -> list[int]:
        """Per grid cell (row-major): 0 when empty, else 1 + the index of the object's ``attr`` in ``names``."""
        labels = [0] * 9
        for o in scene.objects:
            labels[o.row * 3 + o.col] = 1 + names.index(getattr(o, attr))
        return labels

    @classmethod
    def cell_labels(cls, scene: Scene) -> list[int]:
        """Per grid cell: 0 when empty, else 1 + the colour's index."""
        return cls._per_cell(scene, "colour", COLOUR_NAMES)

    @classmethod
    def cell_shapes(cls, scene: Scene) -> list[int]:
        """Per grid cell: 0 when empty, else 1 + the shape's index."""
        return cls._per_cell(scene, "shape", SHAPES)

    @staticmethod
    def text_labels(spec: Spec) -> tuple[int, ...]:
        """(column, row, relation, first colour, first shape, second colour, second shape); the last of each
        range means "not named" for column, row and relation, 0 for the colours and shapes."""
        col = row = 3
        if spec.kind == "objects" and len(spec.refs) == 1:
            ref = spec.refs[0]
            col = 3 if ref.col is None else ref.col
            row = 3 if ref.row is None else ref.row
        relation = RELATIONS.index(spec.relation) if spec.kind == "relation" and spec.relation else len(RELATIONS)
        named: list[int] = []
        for i in range(2):
            ref = spec.refs[i] if i < len(spec.refs) else None
            named.append(0 if ref is None or ref.colour is None else 1 + COLOUR_NAMES.index(ref.colour))
            named.append(0 if ref is None else 1 + SHAPES.index(ref.shape))
        return (col, row, relation, *named)

    def losses(self, img: torch.Tensor, scenes: list[Scene], txt: torch.Tensor,
               specs: list[Spec]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the image head on ``scenes`` and of the text head on ``specs`` (unit embeddings)."""
        n = len(scenes)
        out = self.image(img * self.SCALE)
        colours = out[:, :9 * self.N_COLOURS].reshape(n * 9, self.N_COLOURS)
        shapes = out[:, 9 * self.N_COLOURS:].reshape(n * 9, self.N_SHAPES)
        cells = torch.tensor([self.cell_labels(s) for s in scenes], device=img.device).view(-1)
        kinds = torch.tensor([self.cell_shapes(s) for s in scenes], device=img.device).view(-1)
        image_loss = F.cross_entropy(colours, cells) + F.cross_entropy(shapes, kinds)
        labels = torch.tensor([self.text_labels(s) for s in specs], device=txt.device)
        parts = self.text(txt * self.SCALE).split(self.TEXT_SPLITS, dim=1)
        text_loss = sum(F.cross_entropy(part, labels[:, i]) for i, part in enumerate(parts))
        return image_loss, text_loss


class RelationHead(torch.nn.Module):
    """Training-only head (``--aux-relation``): reads from the image embedding, for every pair of colours
    present once each, whether the first is above, level with or below the second, and left of, level with or
    right of it (grid rows and columns). Relation captions ask for exactly this comparison; the contrastive
    terms alone never taught it (relation probe at chance through the layout fine-tunes).
    """

    PAIRS = [(a, b) for a in range(len(COLOUR_NAMES)) for b in range(a + 1, len(COLOUR_NAMES))]

    def __init__(self, dim: int):
        super().__init__()
        self.head = torch.nn.Linear(dim, len(self.PAIRS) * 6)

    @classmethod
    def labels(cls, scene: Scene) -> list[tuple[int, int]]:
        """Per colour pair: (vertical, horizontal) with 0 = first above/left of second, 1 = same row/column,
        2 = below/right; (-1, -1) where either colour is absent or appears more than once."""
        where: dict[int, list[tuple[int, int]]] = {}
        for o in scene.objects:
            where.setdefault(COLOUR_NAMES.index(o.colour), []).append((o.row, o.col))
        out = []
        for a, b in cls.PAIRS:
            if len(where.get(a, ())) != 1 or len(where.get(b, ())) != 1:
                out.append((-1, -1))
                continue
            (ra, ca), (rb, cb) = where[a][0], where[b][0]
            out.append((1 + (ra > rb) - (ra < rb), 1 + (ca > cb) - (ca < cb)))
        return out

    def loss(self, img: torch.Tensor, scenes: list[Scene]) -> torch.Tensor:
        labels = torch.tensor([self.labels(s) for s in scenes], device=img.device).view(-1)
        logits = self.head(img * LayoutHeads.SCALE).view(-1, 3)
        if not (labels >= 0).any():
            return logits.sum() * 0
        return F.cross_entropy(logits, labels, ignore_index=-1)


def _param_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# The options of the settings a resumed run is checked against, where they are not --KEY (the others have none)
RESUME_FLAGS = {"roundtrip_p": "--roundtrip", "cut_p": "--cut", "stray_p": "--stray", "near_miss_p": "--near-miss",
                "junk": "junk", "weight_decay": "weight_decay", "chain_life": "chain_life", "fade_range": "fade_range",
                "fade_weight": "fade_weight"}


def train_clip(
    out: str | Path = "checkpoints/toy", steps: int = 1500, seed: int = 0, batch: int = 96, negatives: int = 3,
    junk: int = 12, hard_weight: float = 1.0, lr: float = 1e-3, weight_decay: float = 0.1, warmup: int = 150,
    resume: bool = False,
    device: str | None = None, threads: int | None = 1, log_every: int = 20, save_every: int = 200,
    progress: bool = True, chains: int = 0, chain_weight: float = 1.0,
    chain_life: tuple[int, int] = (20, 120), chain_flat: float = 0.0, roundtrip_p: float = 0.0,
    init: str | Path | None = None, chain_cutouts: int = 1, cut_p: float = 0.0, stray_p: float = 0.0,
    near_miss_p: float = 0.0,
    chain_flat_colours: list[tuple[int, int, int]] | None = None, kinds: dict[str, float] | None = None,
    aux_layout: float = 0.0, aux_relation: float = 0.0, lock_image: bool = False, lock_text: bool = False,
    chain_render: float = 0.0, fade: float = 0.0, fade_range: tuple[float, float] = (0.08, 0.6),
    fade_weight: float = 1.0, robust: float = 0.0, robust_eps: float = 1.0, robust_steps: int = 2,
    warp: float = 0.0, warp_amplitude: tuple[float, float] = (1.0, 2.5), align: float = 0.0,
    align_weight: float = 1.0, align_clutter: float = 0.0, align_mix: tuple[float, float, float] | None = None,
    align_latent: bool = False, align_clutter_spoilt: bool = False, keep_every: int = 0,
    vqgan: str | Path | None = None, stop: Callable[[], bool] | None = None,
) -> torch.nn.Module:
    """Train (or resume) the toy CLIP; writes ``clip.pt``, a resumable state and ``clip.log.jsonl``.

    ``chains`` > 0 runs that many generations against the CLIP as it trains
    (:class:`pixgen.toy.adversarial.AdversarialChains`): their captions join the batch with clean renders,
    their current images join as negatives, and ``chain_weight`` weighs a term asking each clean render to
    beat its chain's image on the chain's caption; ``chain_flat`` is the share of chains that start from a flat
    canvas (gray, or one of ``chain_flat_colours``; ``configs/toy.yaml`` starts from a flat background) rather
    than random codes. ``roundtrip_p`` is the share of batch images replaced by
    their VQGAN reconstruction, so that decoder blur alone is not a cue against an image. ``init`` starts
    from the weights in a ``clip.pt`` (fine-tuning) instead of random ones; ``chain_cutouts`` is the number
    of crops each chain is scored on per step (generation uses 8). ``cut_p`` is the share of scenes also shown
    with a named object pushed half over the canvas edge (:func:`cut_variant`); weighted like the hard
    negatives, the caption must prefer the whole scene to that cut one. ``stray_p`` is the share of scenes also shown
    with one more object in a free cell (:func:`stray_variant`), which the caption must rank below the scene as it is,
    the same way, and ``near_miss_p`` the share also shown changed in one way that makes the caption false
    (:func:`near_miss_variant`: another shape, two colours or places swapped, one fewer); a fine-tune keeps its own log
    and state (``clip_finetune.log.jsonl``, ``state/clip_finetune_state.pt``) so the first stage's stay.
    ``kinds`` weighs the caption kinds of the random pairs (default ``PAIR_KINDS``; ``"position"`` adds single
    objects whose caption always names their place). ``aux_layout`` > 0 adds :class:`LayoutHeads` with
    that weight, ``aux_relation`` > 0 a :class:`RelationHead` (training only). ``lock_image`` freezes the
    image tower (its weights are saved unchanged) and trains the text side alone, to align captions with what
    the image embedding already holds; ``lock_text`` freezes the text side instead (the captions' embeddings
    stay put while the image tower learns, e.g. against chains). A resumed run must be given the same locks, and
    the same settings of its data, losses and schedule (:data:`RESUME_FLAGS` lists how they are refused).
    ``chain_render`` is the share of chains that start from their own scene's clean render (VQGAN-encoded);
    for those the decoded start, not the clean render, is the positive the chain's image must not beat.
    ``fade`` is the share of scenes also shown faded towards their background (objects at a contrast drawn from
    ``fade_range``), as a search from a flat canvas first sees them: the faded image must still pick its own
    caption over the others and over its hard negatives, and rank below its full-contrast render on that
    caption (weighed by ``fade_weight``), so that faint right content already outscores faint wrong content
    while full contrast still scores best (:func:`fade_to_background`).
    ``robust`` is the share of scenes whose (augmented) image is replaced by its worst case within an L2 ball of
    radius ``robust_eps`` against its own caption (:func:`perturb_l2`, ``robust_steps`` steps), so that the image
    tower's gradients point at real objects rather than at invisible pixel patterns; it needs no chains.
    ``warp`` is the share of scenes also shown bent into blobs by a smooth random displacement field
    (:func:`warp_field`, :func:`warp_shapes`), twice along the same field: at an RMS amplitude drawn from
    ``warp_amplitude`` pixels and at double that. The caption must rank the clean scene above the mild blob and
    the mild blob above the strong one (weighed like the hard negatives), so the score climbs along the way from
    a blob of the right colour to the right shape, the way a search has to go.
    ``align`` is the share of scenes also shown spoilt the way a search's picture is on its way (faded towards the
    background, bent into blobs by a field of up to 3 px RMS, or both; see :func:`alignment_pairs`); for each,
    the gradient of its caption's score with respect to the spoilt picture must point at the clean render
    (:func:`gradient_alignment`, ``align_weight`` times one minus the cosine). This shapes the input gradient
    that guides generation directly, at the cost of a second backward pass through the image tower.
    ``align_clutter`` is the share of those spoilt pictures that are instead the clean scene with stray objects
    from other scenes of the batch pasted on its background, so that the gradient also paints strays out;
    ``align_clutter_spoilt`` pastes them on the spoilt picture instead, so the caption's own objects are faint too.
    ``align_mix`` weighs the faded, bent and bent-and-faded kinds (default equal thirds), e.g. to train the way
    from a blob back to its shape harder. ``align_latent`` shows the spoilt pictures as a search holds them (through
    the VQGAN) and compares the two directions in the latent the search moves (:func:`decoder_transpose`), not in
    pixels; it needs the VQGAN. ``keep_every`` > 0 also keeps the weights every that many steps as
    ``snapshots/clip_stepN.pt``, so that each can be judged on the generation suite afterwards. ``vqgan`` is the
    directory holding ``vqgan.yaml`` and ``vqgan.ckpt`` (default: ``out``), e.g. ``checkpoints/toy`` for the shipped one.
    """
    set_threads(threads)
    dev = pick_device(device)
    out = Path(out)
    rng = seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_toy_clip().to(dev)
    if init is not None:
        load_init(model, init)
    if lock_image and lock_text:
        raise PixgenError("lock_image and lock_text together would leave nothing to train", "lock one tower at most")
    if lock_image:
        model.visual.requires_grad_(False)
    if lock_text:  # everything but the image tower and the temperature
        for name, p in model.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                p.requires_grad_(False)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    heads = LayoutHeads(model.text_projection.shape[1]).to(dev) if aux_layout else None
    pair_head = RelationHead(model.text_projection.shape[1]).to(dev) if aux_relation else None
    groups = _param_groups(model, weight_decay)
    for extra in (heads, pair_head):
        if extra is not None:
            groups.append({"params": list(extra.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    vq_dir = Path(vqgan) if vqgan is not None else out
    vq_hint = (f"train it again with `pixgen toy train vqgan --out {vq_dir}`, or give --vqgan checkpoints/toy to use "
               "the shipped one")
    vq = load_toy_vqgan(vq_dir, dev, vq_hint) if chains or roundtrip_p or (align and align_latent) else None
    runs = (AdversarialChains(vq, chains, rng, gen, life=chain_life, flat_p=chain_flat, cutouts=chain_cutouts,
                                flat_rgb=chain_flat_colours or (128, 128, 128), render_p=chain_render)
            if chains else None)
    stage = "clip" if init is None else "clip_finetune"
    state_path = out / "state" / f"{stage}_state.pt"
    check_out_files(out, state_path, out / f"{stage}.log.jsonl", out / "clip.pt",
                    *([out / "snapshots" / "clip_step1.pt"] if keep_every else []))
    settings = {"seed": seed, "batch": batch, "negatives": negatives, "junk": junk, "hard_weight": hard_weight,
                "lr": lr, "weight_decay": weight_decay, "warmup": warmup, "steps": steps, "chains": chains,
                "chain_weight": chain_weight, "chain_life": tuple(chain_life), "chain_flat": chain_flat,
                "roundtrip_p": roundtrip_p, "chain_cutouts": chain_cutouts, "cut_p": cut_p, "stray_p": stray_p,
                "near_miss_p": near_miss_p,
                "chain_flat_colours": [tuple(c) for c in chain_flat_colours] if chain_flat_colours else None,
                "kinds": dict(kinds) if kinds else None, "aux_layout": aux_layout, "aux_relation": aux_relation,
                "chain_render": chain_render, "fade": fade, "fade_range": tuple(fade_range),
                "fade_weight": fade_weight, "robust": robust, "robust_eps": robust_eps, "robust_steps": robust_steps,
                "warp": warp, "warp_amplitude": tuple(warp_amplitude), "align": align, "align_weight": align_weight,
                "align_clutter": align_clutter, "align_mix": tuple(align_mix) if align_mix else None,
                "align_latent": align_latent, "align_clutter_spoilt": align_clutter_spoilt}
    state = load_resume(state_path, out, "clip") if resume else None
    start = 0
    if state is not None:
        for key, flag, now in (("lock_image", "--lock-image", lock_image), ("lock_text", "--lock-text", lock_text)):
            if bool(state.get(key, False)) != now:
                was = "with" if state.get(key) else "without"
                raise PixgenError(f"the saved run in {out} was trained {was} {flag}, this resume is not",
                                  f"resume it {was} {flag}, or start a new run in another --out directory")
        check_resume(state, out, steps, settings, RESUME_FLAGS)
        start = restore(state, model, opt, rng, gen, path=state_path)
        if runs is not None and "chains" in state:
            runs.load_state_dict(state["chains"])
        if heads is not None and "layout_heads" in state:
            heads.load_state_dict(state["layout_heads"])
        if pair_head is not None and "relation_head" in state:
            pair_head.load_state_dict(state["relation_head"])
    pool = JunkPool(vq_dir, seed=seed, hint=vq_hint)
    pool.refresh()  # an unusable VQGAN is refused here, before training, not passed over without junk images
    log = TrainLog(out / f"{stage}.log.jsonl", resume=state is not None, start=start)

    def embed_images(images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(normalize(images, model))

    bar = tqdm(range(start, steps), initial=start, total=steps, desc="clip", disable=not progress)
    # cut, stray and near-miss variants alike: the caption must prefer the scene as it is
    variant_kinds = [(share, make) for share, make in (
        (cut_p, lambda scene, spec: cut_variant(scene, spec, rng)),
        (stray_p, lambda scene, spec: stray_variant(scene, rng)),
        (near_miss_p, lambda scene, spec: near_miss_variant(scene, spec, rng))) if share]
    for step in bar:
        if step % 250 == 0 or step == start:
            pool.refresh()
        if step % 10 == 0:
            release_freed_memory()  # without it the process grows by 10-20 MB a step on CPU
        lr_now = lr * min(1.0, (step + 1) / max(warmup, 1)) * cosine_decay(step, steps, 0.05)
        for g in opt.param_groups:
            g["lr"] = lr_now
        fixed, chain_images = [], None
        if runs is not None:
            with torch.no_grad():
                chain_text = encode_text_fast(model, tokenize(runs.texts).to(dev))
            chain_images = runs.step(chain_text, embed_images, lambda im: augment(im, size, gen), rng, gen)
            fixed = list(zip(runs.scenes, runs.specs, runs.texts))
        scenes, images, texts, specs, owners = make_batch(rng, batch, negatives, fixed=fixed, kinds=kinds)
        x = batch_images(images, dev)
        fade_of = [i for i in range(len(scenes)) if fade and rng.random() < fade]
        faded = fade_to_background(x[fade_of], [scenes[i].background for i in fade_of], fade_range, gen)
        warp_of = [i for i in range(len(scenes)) if warp and rng.random() < warp]
        bent = torch.zeros(0, *x.shape[1:], device=dev)
        if warp_of:  # the same field twice: a mild blob and one bent twice as far
            field = warp_field(len(warp_of), x.shape[2], x.shape[3], gen)
            lo, hi = warp_amplitude
            amp = (lo + (hi - lo) * torch.rand(len(warp_of), generator=gen)).view(-1, 1, 1, 1)
            bent = torch.cat([warp_shapes(x[warp_of], field * amp), warp_shapes(x[warp_of], field * amp * 2)])
        align_of = [i for i in range(len(scenes)) if align and rng.random() < align]
        align_right = x[align_of].clone()
        align_wrong = alignment_pairs(align_right, [scenes[i].background for i in align_of], fade_range, gen,
                                      clutter=align_clutter, donors=(x, [s.background for s in scenes]),
                                      mix=align_mix, clutter_spoilt=align_clutter_spoilt)
        if vq is not None and roundtrip_p:
            pick = (torch.rand(len(x), generator=gen) < roundtrip_p).to(dev)
            if pick.any():
                x[pick] = reconstruct(vq, x[pick])
            if len(faded):  # drawn only when there are faded images, so runs without --fade stay as they were
                pick = (torch.rand(len(faded), generator=gen) < roundtrip_p).to(dev)
                if pick.any():
                    faded[pick] = reconstruct(vq, faded[pick])
            if len(bent):  # as above: drawn only with --warp, and decoder blur is no cue against a blob
                pick = (torch.rand(len(bent), generator=gen) < roundtrip_p).to(dev)
                if pick.any():
                    bent[pick] = reconstruct(vq, bent[pick])
        if runs is not None and runs.from_render.any():  # a chain that started right: its start is its positive
            sel = runs.from_render.nonzero().flatten().to(dev)
            x[sel] = runs.start_images[sel]
        junk_x = pool.sample(junk, gen)
        all_scenes: list[Scene | None] = list(scenes)
        if junk_x is not None:
            x = torch.cat([x, junk_x.to(dev)])
            all_scenes += [None] * len(junk_x)
        adv_start = len(all_scenes)
        if chain_images is not None:
            x = torch.cat([x, chain_images])
            all_scenes += [None] * len(chain_images)
        cut_of: list[int] = []  # the scene each cut image was made from; scored only against that caption
        if variant_kinds:
            cut_images = []
            for i in range(len(scenes)):
                for share, make in variant_kinds:
                    if rng.random() < share and (variant := make(scenes[i], specs[i])) is not None:
                        cut_of.append(i)
                        cut_images.append(render(variant))
            if cut_images:
                x = torch.cat([x, batch_images(cut_images, dev)])
        fade_start = len(x)
        x = torch.cat([x, faded])
        warp_start = len(x)
        x = torch.cat([x, bent])
        truth = truth_matrix(all_scenes, specs).to(dev)
        x = augment(x, size, gen)
        txt = F.normalize(encode_text_fast(model, tokenize(texts).to(dev)), dim=-1)
        robust_of = [i for i in range(len(scenes)) if robust and rng.random() < robust]
        if robust_of:  # each picked scene's view becomes its worst case for its own caption
            own = torch.tensor(robust_of, device=dev)
            x = x.clone()
            x[own] = perturb_l2(embed_images, x[own], txt[own], robust_eps, robust_steps)
        img_all = F.normalize(embed_images(x), dim=-1)
        img = img_all[:len(all_scenes)]
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T
        loss = (soft_ce(logits, truth) + soft_ce(logits.T, truth.T)) / 2
        nb = len(scenes)
        if hard_weight and len(specs) > nb:  # each scene against its own hard negatives, two-way
            margin = hard_negative_margins(logits, torch.arange(nb, device=dev), owners, truth, nb)
            if len(margin):
                loss = loss + hard_weight * F.softplus(margin).mean()
        cut_gap = None
        if cut_of:  # the caption must prefer its scene to the same scene cut, with a stray, or a near miss
            own = torch.tensor(cut_of, device=dev)
            cut_logits = scale * (img_all[len(all_scenes):fade_start] * txt[own]).sum(-1)
            cut_gap = (logits[own, own] - cut_logits).detach()
            loss = loss + hard_weight * F.softplus(cut_logits - logits[own, own]).mean()
        fade_hn = fade_rank = None
        if fade_of:  # faint right content must beat faint wrong captions, and lose to its own full contrast
            own = torch.tensor(fade_of, device=dev)
            f_logits = scale * img_all[fade_start:warp_start] @ txt.T
            loss = loss + fade_weight * soft_ce(f_logits, truth[own])
            row_of = torch.full((nb,), -1, device=dev)  # each scene's row in f_logits, -1 if not faded
            row_of[own] = torch.arange(len(own), device=dev)
            hn_margin = hard_negative_margins(f_logits, row_of, owners, truth, nb)
            if len(hn_margin):
                loss = loss + fade_weight * hard_weight * F.softplus(hn_margin).mean()
                fade_hn = (hn_margin < 0).float().mean()
            rank = f_logits[torch.arange(len(own), device=dev), own] - logits[own, own]
            loss = loss + fade_weight * F.softplus(rank).mean()
            fade_rank = (rank < 0).float().mean()
        warp_rank = None
        if warp_of:  # clean scene above its mild blob, mild blob above the strong one, on the scene's caption
            own = torch.tensor(warp_of, device=dev)
            k = len(warp_of)
            mild = scale * (img_all[warp_start:warp_start + k] * txt[own]).sum(-1)
            strong = scale * (img_all[warp_start + k:warp_start + 2 * k] * txt[own]).sum(-1)
            loss = loss + hard_weight * (F.softplus(mild - logits[own, own]) + F.softplus(strong - mild)).mean()
            warp_rank = (logits[own, own] > mild).float().mean()
        align_cos = None
        if align_of:  # the caption's gradient at a spoilt picture must point at the clean render
            own = torch.tensor(align_of, device=dev)
            through = None
            if align_latent:  # as the search holds it, compared in the latent it moves
                align_wrong, through = decoder_transpose(vq, align_wrong)
            align_cos = gradient_alignment(embed_images, align_wrong, align_right, txt[own],
                                           lambda im: augment(im, size, gen), through=through)
            loss = loss + align_weight * (1 - align_cos).mean()
        aux = None
        if heads is not None:
            aux = heads.losses(img[:nb], list(scenes), txt, list(specs))
            loss = loss + aux_layout * (aux[0] + aux[1])
        pair_loss = None
        if pair_head is not None:
            pair_loss = pair_head.loss(img[:nb], list(scenes))
            loss = loss + aux_relation * pair_loss
        adv_gap = None
        if chain_images is not None:  # the chain's caption must prefer the clean render to the chain's image
            k = torch.arange(len(chain_images), device=dev)
            gap = logits[k, k] - logits[adv_start + k, k]
            loss = loss + chain_weight * F.softplus(-gap).mean()
            adv_gap = gap.detach()
        check_finite(step, steps, lower_lr(lr), losses=(loss,))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                top = logits[:nb].argmax(1)
                top1 = truth[torch.arange(nb), top].float().mean().item()
                pos = logits[torch.arange(nb), torch.arange(nb)]
                hn = [(owners[j], j) for j in range(nb, len(specs)) if not truth[owners[j], j]]
                hn_total = len(hn)
                hn_wins = sum(int(pos[i] > logits[i, j]) for i, j in hn)
            metrics = dict(loss=loss.item(), top1=top1, scale=scale.item(), lr=lr_now)
            if hn_total:
                metrics["hard_neg_acc"] = hn_wins / hn_total
            if fade_hn is not None:  # faded scenes whose caption beats its hard negative
                metrics["fade_hard_neg_acc"] = fade_hn.item()
            if fade_rank is not None:  # faded scenes their caption ranks below the full-contrast render
                metrics["fade_rank_acc"] = fade_rank.item()
            if warp_rank is not None:  # bent scenes their caption ranks below the clean one
                metrics["warp_acc"] = warp_rank.item()
            if align_cos is not None:  # mean cosine between the caption's gradient and the way to the render
                metrics["align_cos"] = align_cos.mean().item()
            if cut_gap is not None:  # share of cut scenes the caption ranks below the whole scene
                metrics["cut_acc"] = (cut_gap > 0).float().mean().item()
            if aux is not None:
                metrics["aux_image"], metrics["aux_text"] = aux[0].item(), aux[1].item()
            if pair_loss is not None:
                metrics["aux_relation"] = pair_loss.item()
            if adv_gap is not None:  # share of chains whose clean render wins, and the mean cosine gap
                metrics["chain_acc"] = (adv_gap > 0).float().mean().item()
                metrics["chain_gap"] = (adv_gap / scale).mean().item()
            log.write(step, **metrics)
            bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{top1:.2f}", hn=f"{metrics.get('hard_neg_acc', 0):.2f}",
                            adv=f"{metrics.get('chain_acc', 0):.2f}")
        keep = keep_every > 0 and (step + 1) % keep_every == 0
        halt = halt_requested(stop)
        if (step + 1) % save_every == 0 or step == steps - 1 or keep or halt:
            check_finite(step, steps, lower_lr(lr), weights=(model,), dtype=torch.float16)  # clip.pt is float16
            check_finite(step, steps, lower_lr(lr), weights=tuple(m for m in (heads, pair_head) if m is not None))
            extra_state = {"chains": runs.state_dict()} if runs is not None else {}
            if heads is not None:
                extra_state["layout_heads"] = heads.state_dict()
            if pair_head is not None:
                extra_state["relation_head"] = pair_head.state_dict()
            save_clip(model, out / "clip.pt")
            if keep:  # a copy to judge later: the run's weights as they were at this step
                (out / "snapshots").mkdir(exist_ok=True)
                save_clip(model, out / "snapshots" / f"clip_step{step + 1}.pt")
            # the state last: a state at the last step means a finished run
            save_state(state_path, model=model.state_dict(), opt=opt.state_dict(), rng=rng.bit_generator.state,
                       gen=gen.get_state(), step=step + 1, lock_image=lock_image, lock_text=lock_text,
                       trainer="clip", settings=settings, **extra_state)
        if halt and step < steps - 1:
            raise stopped_at(step + 1, steps, out)
    save_clip(model, out / "clip.pt")
    return model


if __name__ == "__main__":  # python -m pixgen.toy.train_clip [steps] [--resume]
    import sys

    train_clip(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 1500, resume="--resume" in sys.argv)
