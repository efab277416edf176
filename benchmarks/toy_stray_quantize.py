"""Do stray objects come from the codebook snap? Decode each finished search's latent with and without
quantisation and read both with the evaluator (single object, colour, two objects, attribution; seeds 0-1).

    python benchmarks/toy_stray_quantize.py

Prints, for the quantised image (what pixgen shows) and the continuous latent decoded directly: passes, objects
whose colour the prompt does not name ("strays"), and all objects read.
"""
from __future__ import annotations

import torch

from pixgen.api import _build_config
from pixgen.factory import build_session
from pixgen.toy.evaluate import judge, suite
from pixgen.toy.evaluator import load_evaluator


def main() -> None:
    torch.set_num_threads(1)
    ev = load_evaluator()
    items = [it for it in suite() if it.category in ("single object", "colour", "two objects", "colour attribution")]
    stats = {"q": [0, 0, 0], "c": [0, 0, 0]}  # passes, strays, objects
    for it in items:
        for seed in (0, 1):
            cfg = _build_config(it.prompt, None, {"model": "toy", "seed": seed}, None)
            s = build_session(cfg)
            s.engine.run(0, [], lambda: False)
            g = s.generator
            with torch.no_grad():
                q = g().detach()
                c = g.vqgan.decode(g.z).add(1).div(2).clamp(0, 1)
            want = {r.colour for r in it.spec.refs}
            for key, img in (("q", q), ("c", c)):
                scene = ev.read(img)[0]
                stats[key][0] += judge(it, scene)
                stats[key][1] += sum(o.colour not in want for o in scene.objects)
                stats[key][2] += len(scene.objects)
    print(len(items) * 2, "images; [passes, stray objects, objects]", stats)


if __name__ == "__main__":
    main()
