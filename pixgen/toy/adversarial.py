"""Adversarial images made inside CLIP training: persistent generation runs against the CLIP being trained.

A contrastively trained CLIP has only seen clean renders, so gradient ascent through the VQGAN finds pictures
it scores higher than any correct render (fields of coloured blobs). :class:`AdversarialChains` keeps ``n``
small pixgen-style generations alive during CLIP training: each holds a latent on the VQGAN codebook grid, a
training caption and a scene that caption was written for. Every training step moves every chain one Adam step
towards its caption under the *current* CLIP (straight-through quantisation, clamp with gradient, random crops,
total variation, as ``configs/toy.yaml`` does), and the trainer uses the decoded images as negatives: they
must score below the clean render of the same caption. A chain starts again from random codes with a new
caption after a random lifetime, so images from every stage of a generation (noise, blobs, late results) are
seen, always against the CLIP as it is now.
"""
from __future__ import annotations

import numpy as np
import torch

from pixgen.config import init_colors
from pixgen.losses import spherical_dist, total_variation
from pixgen.models.vqgan import VQGAN
from pixgen.ops import clamp_with_grad, flat_canvas, vector_quantize
from pixgen.toy.captions import Spec, sample_pair, spec_text
from pixgen.toy.training import batch_images
from pixgen.toy.world import Scene, render

__all__ = ["AdversarialChains"]


class AdversarialChains:
    """``n`` generations run one step per CLIP training step (see the module docstring).

    Args:
        vqgan: the frozen toy VQGAN (decoder and codebook).
        n: number of chains.
        life: (shortest, longest) number of steps a chain runs before it restarts.
        lr, tv_weight: Adam step size on the latent and total-variation weight, as in generation.
        resolution: image side in pixels.
        flat_p: share of (re)starts from a flat canvas (``init_color``) instead of random codes.
        flat_rgb: the flat start colours; with several, each flat start picks one at random (the toy preset
            starts from whichever of the world's three backgrounds the prompt scores best).
        cutouts: random crops per chain and step, their distances averaged as generation's prompt loss does
            (``configs/toy.yaml`` uses 8); more make each chain step as strong as a generation step.
        render_p: share of (re)starts from the VQGAN encoding of the clean render of the chain's own scene. Such a
            chain starts from a right answer, and shows where the search drifts to from one. Its decoded start
            image is kept in ``start_images`` (``from_render`` marks these chains): the trainer makes it the
            chain's positive, so the CLIP learns that nothing the search finds from there beats the start.
    """

    def __init__(self, vqgan: VQGAN, n: int, rng: np.random.Generator, gen: torch.Generator,
                 life: tuple[int, int] = (20, 120), lr: float = 0.05, tv_weight: float = 10.0,
                 resolution: int = 64, flat_p: float = 0.0,
                 flat_rgb: tuple[int, int, int] | list[tuple[int, int, int]] = (128, 128, 128), cutouts: int = 1,
                 render_p: float = 0.0):
        self.vqgan, self.n, self.life_range, self.lr, self.tv_weight = vqgan, n, life, lr, tv_weight
        self.flat_p, self.cutouts, self.render_p = flat_p, max(1, int(cutouts)), render_p
        book_dev = vqgan.codebook.device
        flat = flat_canvas(init_colors(flat_rgb), resolution, resolution, book_dev)
        with torch.no_grad():
            self.flat_z = vqgan.encode(flat * 2 - 1)  # (colours, d, h, w)
        self.book = vqgan.codebook.detach()
        self.lo = self.book.min(0).values.view(1, -1, 1, 1)
        self.hi = self.book.max(0).values.view(1, -1, 1, 1)
        self.side = resolution // vqgan.factor
        dev, d = self.book.device, self.book.shape[1]
        self.z = torch.zeros(n, d, self.side, self.side, device=dev)
        self.m = torch.zeros_like(self.z)
        self.v = torch.zeros_like(self.z)
        self.age = torch.zeros(n, dtype=torch.long)
        self.life = torch.zeros(n, dtype=torch.long)
        self.scenes: list[Scene] = [None] * n  # type: ignore[list-item]
        self.specs: list[Spec] = [None] * n  # type: ignore[list-item]
        self.texts: list[str] = [""] * n
        self.images = torch.zeros(n, 3, resolution, resolution, device=dev)
        self.start_images = torch.zeros(n, 3, resolution, resolution, device=dev)
        self.from_render = torch.zeros(n, dtype=torch.bool)
        for i in range(n):
            self._restart(i, rng, gen)
        # stagger the first lifetimes so that restarts are spread over the steps
        self.age = (torch.rand(n, generator=gen) * self.life.float()).long()

    def _restart(self, i: int, rng: np.random.Generator, gen: torch.Generator) -> None:
        # the codes are drawn even for a flat start, so the random streams do not depend on which start it is
        idx = torch.randint(len(self.book), (self.side * self.side,), generator=gen).to(self.book.device)
        if self.flat_p and rng.random() < self.flat_p:
            # one colour: no draw, so runs with the single gray start keep their random streams
            self.z[i] = self.flat_z[int(rng.integers(len(self.flat_z))) if len(self.flat_z) > 1 else 0]
        else:
            self.z[i] = self.book[idx].view(self.side, self.side, -1).permute(2, 0, 1)
        self.m[i].zero_()
        self.v[i].zero_()
        self.age[i] = 0
        lo, hi = self.life_range
        self.life[i] = int(rng.integers(lo, hi + 1))
        scene, spec = sample_pair(rng)
        self.scenes[i], self.specs[i] = scene, spec
        self.texts[i] = spec_text(spec, np.random.default_rng(int(rng.integers(2**31))))
        # drawn only when asked, so runs without render starts keep their random streams
        self.from_render[i] = bool(self.render_p) and rng.random() < self.render_p
        if self.from_render[i]:
            clean = batch_images([render(scene)], self.book.device)
            with torch.no_grad():
                self.z[i] = self.vqgan.encode(clean * 2 - 1)[0]
                q = vector_quantize(self.z[i:i + 1].movedim(1, -1), self.book).movedim(-1, 1)
                self.start_images[i] = self.vqgan.decode(q)[0].add(1).div(2).clamp(0, 1)

    def step(self, text_embeds: torch.Tensor, encode_image, augment, rng: np.random.Generator,
             gen: torch.Generator) -> torch.Tensor:
        """Restart finished chains, then move every chain one Adam step towards its caption.

        Args:
            text_embeds: (n, E) embeddings of ``self.texts`` (no gradient needed).
            encode_image: images (B, 3, H, W) in [0, 1] -> (B, E) CLIP embeddings.
            augment: images -> randomly cropped images at the CLIP's input size (differentiable).

        Returns:
            (n, 3, H, W) the chains' images in [0, 1] before this step's update (detached).
        """
        for i in range(self.n):
            if self.age[i] >= self.life[i]:
                self._restart(i, rng, gen)
        z = self.z.clone().requires_grad_(True)
        q = vector_quantize(z.movedim(1, -1), self.book).movedim(-1, 1)
        image = clamp_with_grad(self.vqgan.decode(q).add(1).div(2), 0.0, 1.0)
        crops = torch.cat([augment(image) for _ in range(self.cutouts)])  # (cutouts * n, 3, S, S)
        embeds = encode_image(crops).view(self.cutouts, self.n, -1)
        loss = spherical_dist(embeds, text_embeds.detach().unsqueeze(0)).mean(0).sum()
        if self.tv_weight:
            # every chain's own TV term, summed: all images have the same size, so n times the batch mean
            loss = loss + self.tv_weight * self.n * total_variation(image)
        (grad,) = torch.autograd.grad(loss, [z])
        with torch.no_grad():
            self.age += 1
            t = self.age.to(z.device).float().view(-1, 1, 1, 1)
            self.m.mul_(0.9).add_(grad, alpha=0.1)
            self.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
            m_hat = self.m / (1 - 0.9 ** t)
            v_hat = self.v / (1 - 0.999 ** t)
            self.z.sub_(self.lr * m_hat / (v_hat.sqrt() + 1e-8))
            self.z.copy_(torch.maximum(torch.minimum(self.z, self.hi), self.lo))
            self.images = image.detach()
        return self.images

    def state_dict(self) -> dict:
        return {"z": self.z, "m": self.m, "v": self.v, "age": self.age, "life": self.life, "scenes": self.scenes,
                "specs": self.specs, "texts": self.texts, "start_images": self.start_images,
                "from_render": self.from_render}

    def load_state_dict(self, state: dict) -> None:
        for key in ("z", "m", "v"):
            getattr(self, key).copy_(state[key])
        self.age, self.life = state["age"].clone(), state["life"].clone()
        self.scenes, self.specs, self.texts = list(state["scenes"]), list(state["specs"]), list(state["texts"])
        if "from_render" in state:  # states saved before render starts existed have none
            self.start_images.copy_(state["start_images"])
            self.from_render = state["from_render"].clone()
