"""Would best-of-N restarts help? Re-rank a recorded eval run's seeds by what a run can see without the evaluator.

For each suite prompt, the run holds one image per seed, each with the evaluator's verdict. This scores every image
with each toy image tower (cosine between the whole 48x48 image and the prompt) and with the run's own final
loss, keeps the best-scoring seed of each prompt, and counts how often that pick passes. It also counts how many
prompts get the same verdict on every seed: if most do, a failure belongs to the prompt, and no choice among
restarts can fix it.

    python benchmarks/toy_rerank.py benchmarks/toy_eval_64_stage10_stage7 [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixgen.factory import TOY_DIR, TOY_EARLY_TOWER, TOY_LATE_TOWER
from pixgen.perceptor import load_perceptor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a `pixgen eval` output directory (results.json + images/)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    rows = json.loads((run / "results.json").read_text())["rows"]
    images = torch.stack([torch.from_numpy(np.array(Image.open(run / r["image"]).convert("RGB"))).permute(2, 0, 1)
                          for r in rows]).float() / 255
    clip = TOY_DIR / "clip.pt"
    towers = {"clip.pt": str(clip), "early": f"{clip}+{TOY_DIR / TOY_EARLY_TOWER}",
              "late": f"{clip}+{TOY_DIR / TOY_LATE_TOWER}"}
    scores: dict[str, np.ndarray] = {}
    for name, weights in towers.items():
        perceptor = load_perceptor(f"pixgen-toy-clip:{weights}", "cpu")
        with torch.no_grad():
            text = F.normalize(perceptor.encode_text([r["prompt"] for r in rows]), dim=-1)
            x = F.interpolate(images, size=(perceptor.input_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
            scores[name] = (F.normalize(perceptor.encode_image(x), dim=-1) * text).sum(-1).numpy()
    scores["final loss"] = -np.array([r["final_loss"] for r in rows])
    by_prompt: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_prompt.setdefault(r["prompt"], []).append(i)
    split = [ks for ks in by_prompt.values() if len({rows[k]["pass"] for k in ks}) > 1]
    report = {"run": str(run), "prompts": len(by_prompt), "prompts_with_split_verdicts": len(split),
              "passes_per_seed_mean": sum(r["pass"] for r in rows) / max(len(ks) for ks in by_prompt.values()),
              "pick": {}}
    for name, s in scores.items():
        picks = [ks[int(np.argmax(s[ks]))] for ks in by_prompt.values()]
        report["pick"][name] = {
            "passes_of_best_pick": sum(rows[k]["pass"] for k in picks),
            "right_picks_where_seeds_split": sum(rows[ks[int(np.argmax(s[ks]))]]["pass"] for ks in split)}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
