"""Where does the toy CLIP lose spatial relations? Probes trained on its frozen image features.

    python benchmarks/toy_relation_readout.py --clip checkpoints/toy/clip.pt --n 4000 --out result.json

Renders ``n`` two-object relation scenes (two different colours; call them a and b in colour-table order) and
asks, held out (last 20%), whether a is above b and whether a is left of b (pairs in the same row or column are
skipped for that question; chance 0.5). Three read-outs of the same scenes:

- ``linear``: the form the CLIP itself can use, score = embedding . (u_a - u_b), one learned direction per
  colour, on the pooled image embedding. If this is at chance, no caption embedding can separate the relation.
- ``pooled_mlp``: a two-layer MLP on the pooled embedding and the two colours (is the information there at all).
- ``tokens_mlp``: the same MLP on the last layer's patch tokens (is it there before pooling).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixgen.toy import train_clip as tc
from pixgen.toy.captions import sample_pair
from pixgen.toy.training import batch_images
from pixgen.toy.world import COLOUR_NAMES, render


def scenes(n: int, seed: int):
    rng = np.random.default_rng(seed)
    imgs, pair, target, known = [], [], [], []
    while len(imgs) < n:
        scene, _ = sample_pair(rng, kind="relation")
        if len(scene.objects) != 2 or scene.objects[0].colour == scene.objects[1].colour:
            continue
        a, b = sorted(scene.objects, key=lambda o: COLOUR_NAMES.index(o.colour))
        imgs.append(render(scene))
        pair.append((COLOUR_NAMES.index(a.colour), COLOUR_NAMES.index(b.colour)))
        target.append((float(a.row < b.row), float(a.col < b.col)))
        known.append((float(a.row != b.row), float(a.col != b.col)))
    return imgs, torch.tensor(pair), torch.tensor(target), torch.tensor(known)


def features(model, imgs):
    grab = {}
    hook = model.visual.transformer.register_forward_hook(lambda mod, i, o: grab.__setitem__("x", o))
    pooled, tokens = [], []
    with torch.no_grad():
        for i in range(0, len(imgs), 200):
            x = F.interpolate(batch_images(imgs[i:i + 200], "cpu"), size=model.visual.image_size[0],
                              mode="bilinear", antialias=True, align_corners=False)
            pooled.append(F.normalize(model.encode_image(tc.normalize(x, model)), dim=-1))
            tokens.append(grab["x"][:, 1:].flatten(1))  # drop the class token
    hook.remove()
    return torch.cat(pooled), torch.cat(tokens)


def accuracy(pred, target, known, split):
    out = {}
    for j, name in enumerate(("above", "left_of")):
        for part, rows in (("train", slice(0, split)), ("heldout", slice(split, None))):
            keep = known[rows, j].bool()
            out[f"{name}_{part}"] = round(float((pred[rows, j][keep] == target[rows, j][keep]).float().mean()), 3)
    return out


def masked_bce(logits, target, known):
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known).sum() / known.sum()


def linear_readout(emb, pair, target, known, split):
    diff = (F.one_hot(pair[:, 0], 8) - F.one_hot(pair[:, 1], 8)).float()
    x = (emb[:, :, None] * diff[:, None, :]).flatten(1) / emb[:split].norm(dim=1).mean()
    w = torch.zeros(x.shape[1], 2, requires_grad=True)
    bias = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = masked_bce(x[:split] @ w + bias, target[:split], known[:split]) + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return accuracy(((x @ w + bias) > 0).float(), target, known, split)


def mlp_readout(feat, pair, target, known, split, steps=3000):
    feat = (feat - feat[:split].mean(0)) / (feat[:split].std(0) + 1e-6)
    x = torch.cat([feat, 3 * F.one_hot(pair[:, 0], 8).float(), 3 * F.one_hot(pair[:, 1], 8).float()], 1)
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, split, (128,), generator=gen)
        loss = masked_bce(net(x[idx]), target[idx], known[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return accuracy((net(x) > 0).float(), target, known, split)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", default="checkpoints/toy/clip.pt")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--linear-only", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tc.create_toy_clip(args.clip).float().eval()
    imgs, pair, target, known = scenes(args.n, args.seed)
    pooled, tokens = features(model, imgs)
    split = int(0.8 * args.n)
    result = {"clip": args.clip, "n": args.n, "linear": linear_readout(pooled, pair, target, known, split)}
    if not args.linear_only:
        result["pooled_mlp"] = mlp_readout(pooled, pair, target, known, split)
        result["tokens_mlp"] = mlp_readout(tokens, pair, target, known, split)
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
