"""The toy evaluation suite: generate a fixed set of prompts over several seeds, read every image back with
the evaluator, and report accuracy per category, next to a no-optimisation baseline: the random start of each
seed, the toy VQGAN's decoding of the random latent codes a run of that seed starts from when it has no start colour
(:func:`random_start`; the toy preset's runs start from a flat colour instead).

Verdicts (all judged on the scene the evaluator reads from the image):

- single object, position, background, two objects, relation, counting, colour attribution: the prompt's
  meaning holds (:func:`pixgen.toy.captions.holds`); e.g. "three orange squares" needs exactly three orange
  squares, "a green cross above a pink circle" needs a green cross in a higher grid row than a pink circle,
  "a red circle on a black background" needs the red circle and the black background.
- colour: some object has the prompt's colour (the shape is not judged).

The colour-attribution prompts come in swapped pairs ("a red square and a blue circle" and "a blue square
and a red circle"), so a generator that ignores which colour goes with which shape scores at most 0.5.

A stray object does not fail these verdicts: "a red circle" passes if any of several red objects reads as a
circle, so strays are extra chances. The "nothing extra" column (``exact_pass``) takes the same reading and asks
as well that it hold no object the prompt does not name.

Every image is also read by the strict, hand-written reader (:mod:`pixgen.toy.strict`: exact world colours,
outlines fitted to the four shapes), and passes strictly only if it shows what the prompt names and nothing
else (no blobs, no extra objects, few specks). That column says how the pictures fare under a checker of
rendered colours and shapes rather than the learned evaluator, which was trained to forgive the decoder's
soft rendering.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pixgen import machine, shipped
from pixgen.errors import Interrupted, PixgenError
from pixgen.factory import torch_threads
from pixgen.output import atomic_write, png_bytes
from pixgen.toy.captions import (
    RELATIONS, CaptionError, Ref, Spec, holds, random_position, read_caption, sample_spec, spec_text,
)
from pixgen.toy.strict import StrictReading, names_exactly, strict_pass, strict_read
from pixgen.toy.world import BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, Scene

__all__ = ["SuiteItem", "suite", "judge", "judge_exact", "run_suite", "category_of", "item_from_prompt",
           "items_from_prompts", "held_out", "held_out_source", "CATEGORIES", "TOY_PRESET"]

TOY_PRESET = shipped.PRESET_DIR / "toy.yaml"
CATEGORIES = ("single object", "colour", "position", "background", "two objects", "relation", "counting",
              "colour attribution")
# Only prompts from outside the fixed suite (``--prompts``, ``--held-out``) fall in these.
EXTRA_CATEGORIES = ("three or four objects",)


@dataclass(frozen=True)
class SuiteItem:
    category: str
    spec: Spec
    text: str | None = None  # the prompt as written; None: the canonical wording of ``spec``

    @property
    def prompt(self) -> str:
        return self.text if self.text is not None else spec_text(self.spec)


def _r(colour: str, shape: str, col: int | None = None, row: int | None = None) -> Ref:
    return Ref(colour, shape, None, col, row)


def suite() -> list[SuiteItem]:
    """The fixed prompt suite (58 prompts, every colour, shape and background used)."""
    items: list[SuiteItem] = []
    add = lambda cat, spec: items.append(SuiteItem(cat, spec))  # noqa: E731
    for colour, shape in [("red", "circle"), ("blue", "square"), ("yellow", "triangle"), ("green", "cross"),
                          ("purple", "circle"), ("orange", "square"), ("cyan", "triangle"), ("pink", "cross")]:
        add("single object", Spec("objects", (_r(colour, shape),)))
    for colour, shape in [("red", "square"), ("green", "circle"), ("blue", "triangle"), ("yellow", "cross"),
                          ("purple", "square"), ("orange", "circle"), ("cyan", "cross"), ("pink", "triangle")]:
        add("colour", Spec("objects", (_r(colour, shape),)))
    for colour, shape, col, row in [("red", "square", 0, None), ("blue", "circle", 2, None),
                                    ("green", "triangle", None, 0), ("yellow", "circle", None, 2),
                                    ("purple", "cross", 0, 0), ("orange", "triangle", 2, 2),
                                    ("cyan", "square", 1, 1), ("pink", "circle", 2, 0)]:
        add("position", Spec("objects", (_r(colour, shape, col, row),)))
    for colour, shape, bg in [("red", "circle", "black"), ("blue", "square", "white"), ("yellow", "cross", "gray"),
                              ("green", "triangle", "black"), ("pink", "square", "white"),
                              ("orange", "circle", "gray")]:
        add("background", Spec("objects", (_r(colour, shape),), background=bg))
    for a, b in [(("blue", "square"), ("yellow", "triangle")), (("red", "circle"), ("green", "cross")),
                 (("purple", "triangle"), ("orange", "circle")), (("cyan", "cross"), ("pink", "square")),
                 (("yellow", "circle"), ("blue", "cross")), (("green", "square"), ("red", "triangle"))]:
        add("two objects", Spec("objects", (_r(*a), _r(*b))))
    for a, rel, b in [(("green", "cross"), "above", ("pink", "circle")),
                      (("red", "square"), "above", ("blue", "triangle")),
                      (("yellow", "circle"), "below", ("purple", "square")),
                      (("cyan", "triangle"), "below", ("orange", "cross")),
                      (("blue", "circle"), "left of", ("red", "cross")),
                      (("pink", "square"), "left of", ("green", "triangle")),
                      (("orange", "triangle"), "right of", ("cyan", "circle")),
                      (("purple", "cross"), "right of", ("yellow", "square"))]:
        add("relation", Spec("relation", (_r(*a), _r(*b)), relation=rel))
    for n, colour, shape in [(2, "red", "circle"), (3, "orange", "square"), (4, "blue", "triangle"),
                             (2, "green", "cross"), (3, "yellow", "circle"), (4, "purple", "square")]:
        add("counting", Spec("count", (_r(colour, shape),), count=n))
    for (c1, s1), (c2, s2) in [(("red", "square"), ("blue", "circle")), (("green", "triangle"), ("pink", "cross")),
                               (("yellow", "circle"), ("purple", "triangle")), (("orange", "cross"), ("cyan", "square"))]:
        add("colour attribution", Spec("objects", (_r(c1, s1), _r(c2, s2))))
        add("colour attribution", Spec("objects", (_r(c2, s1), _r(c1, s2))))
    return items


def category_of(spec: Spec) -> str:
    """The suite category a caption meaning belongs to (for prompts that are not in the fixed suite).

    Every such prompt is judged on its whole meaning, so none is put under "colour" (which judges the colour
    alone) or "colour attribution" (a property of the suite's swapped pairs, not of one prompt).
    """
    if spec.kind == "count":
        return "counting"
    if spec.kind == "relation":
        return "relation"
    if len(spec.refs) == 2:
        return "two objects"
    if len(spec.refs) > 2:
        return "three or four objects"
    ref = spec.refs[0]
    if ref.col is not None or ref.row is not None:
        return "position"
    if spec.background is not None:
        return "background"
    return "single object"


def item_from_prompt(text: str) -> SuiteItem:
    """The suite item for one prompt written in the toy world's grammar, or in words :func:`read_caption` puts in
    it (as generation does), judged on its whole meaning; the item keeps the text as written.

    Raises :class:`pixgen.toy.captions.CaptionError` saying what part of the prompt cannot be read.
    """
    spec = read_caption(text)[0]
    return SuiteItem(category_of(spec), spec, " ".join(text.split()))


def items_from_prompts(prompts: list[str], where: list[str] | None = None) -> list[SuiteItem]:
    """:func:`item_from_prompt` for each prompt; the CaptionError names the first one that cannot be read, by its
    entry in ``where`` (e.g. ``mine.txt line 6``, where the user will look for it), else as ``prompt N``."""
    items = []
    for number, text in enumerate(prompts, 1):
        try:
            items.append(item_from_prompt(text))
        except CaptionError as e:
            name = where[number - 1] if where is not None else f"prompt {number}"
            raise CaptionError(f"{name} ({text.strip()!r}): {e.message}", e.hint) from None
    return items


# Kinds of grammar-drawn held-out prompt, weighted so that each suite category gets a fair share.
HELD_OUT_KINDS = {"single": 0.2, "position": 0.15, "two": 0.2, "relation": 0.2, "count": 0.15, "multi": 0.1}
HELD_OUT_STYLES = ("suite", "grammar")


def _distinct_refs(rng: np.random.Generator, n: int) -> list[Ref]:
    """``n`` refs with colour and shape but no size or place, no two sharing a colour or a shape (as in the suite)."""
    colours = rng.choice(len(COLOUR_NAMES), size=n, replace=False)
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    return [_r(COLOUR_NAMES[int(c)], SHAPES[int(s)]) for c, s in zip(colours, shapes)]


def _like_suite(rng: np.random.Generator, category: str) -> list[Spec]:
    """A new prompt of the same form as the suite's prompts of ``category`` (two for colour attribution: the
    prompt and its swapped twin, as the suite has them)."""
    if category in ("single object", "colour"):
        return [Spec("objects", tuple(_distinct_refs(rng, 1)))]
    if category == "position":
        return [Spec("objects", (random_position(rng, _distinct_refs(rng, 1)[0]),))]
    if category == "background":
        bg = BACKGROUND_NAMES[int(rng.integers(len(BACKGROUND_NAMES)))]
        return [Spec("objects", tuple(_distinct_refs(rng, 1)), background=bg)]
    if category == "two objects":
        return [Spec("objects", tuple(_distinct_refs(rng, 2)))]
    if category == "relation":
        return [Spec("relation", tuple(_distinct_refs(rng, 2)), relation=RELATIONS[int(rng.integers(4))])]
    if category == "counting":
        return [Spec("count", tuple(_distinct_refs(rng, 1)), count=int(rng.integers(2, 5)))]
    if category == "colour attribution":
        a, b = _distinct_refs(rng, 2)
        return [Spec("objects", (a, b)), Spec("objects", (replace(a, colour=b.colour), replace(b, colour=a.colour)))]
    raise ValueError(f"unknown category {category!r}")


def held_out(n: int, seed: int = 0, style: str = "suite") -> list[SuiteItem]:
    """``n`` random prompts none of which is in the fixed suite: a check that the suite's numbers are not a
    product of choosing settings on its prompts.

    ``style="suite"``: prompts of the suite's own forms and categories, in its proportions and canonical
    wording, with other colours, shapes, places and counts, so each category compares column for column.
    ``style="grammar"``: prompts drawn from the training grammar (sizes, backgrounds, three or four objects),
    paraphrased as in training, filed by :func:`category_of`.
    """
    if style not in HELD_OUT_STYLES:
        raise ValueError(f"unknown held-out style {style!r}; choose from {', '.join(HELD_OUT_STYLES)}")
    if seed < 0:
        raise ValueError(f"the held-out prompt seed must be 0 or more, got {seed}")
    rng = np.random.default_rng(seed)
    seen = {it.spec for it in suite()}
    items: list[SuiteItem] = []
    misses = 0

    def new(category: str, specs: list[Spec]) -> bool:
        nonlocal misses
        if any(sp in seen for sp in specs):
            misses += 1
            if misses > 10_000:
                raise PixgenError(f"the toy world has too few new {category!r} prompts for {n} held-out prompts",
                                  "ask for fewer (--held-out), or use --held-out-style grammar")
            return False
        misses = 0
        seen.update(specs)
        return True

    if style == "suite":
        order = [it.category for it in suite()]
        while len(items) < n:
            i = 0
            while i < len(order) and len(items) < n:
                specs = _like_suite(rng, order[i])
                if new(order[i], specs):
                    items += [SuiteItem(order[i], sp) for sp in specs[: n - len(items)]]
                    i += len(specs)
        return items
    names = list(HELD_OUT_KINDS)
    probs = np.array([HELD_OUT_KINDS[k] for k in names])
    while len(items) < n:
        spec = sample_spec(rng, names[int(rng.choice(len(names), p=probs / probs.sum()))])
        category = category_of(spec)
        if new(category, [spec]):
            items.append(SuiteItem(category, spec, spec_text(spec, rng)))
    return items


def held_out_source(n: int, seed: int, style: str = "suite") -> str:
    """How a :func:`held_out` set is named in ``results.json``: the ``pixgen eval`` options that draw it."""
    return f"--held-out {n} --held-out-style {style} --prompt-seed {seed}"


def judge(item: SuiteItem, scene: Scene) -> bool:
    """Whether the scene read from an image satisfies the suite item."""
    if item.category == "colour":
        return any(o.colour == item.spec.refs[0].colour for o in scene.objects)
    return holds(item.spec, scene)


def judge_exact(item: SuiteItem, scene: Scene) -> bool:
    """:func:`judge`, and the scene holds nothing but what the prompt names: a stray object fails it, where
    :func:`judge` takes it as one more chance to find the named object."""
    return judge(item, scene) and names_exactly(item.spec, scene)


def verdicts(item: SuiteItem, got: Scene, strict: StrictReading) -> dict[str, bool]:
    """The eval's three verdicts on one picture: the evaluator's reading ``got`` (``pass``), the same with nothing
    the prompt does not name (``exact_pass``), and the strict reading (``strict_pass``)."""
    return {"pass": judge(item, got), "exact_pass": judge_exact(item, got),
            "strict_pass": strict_pass(item.spec, strict, holds_for=lambda scene: judge(item, scene))}


def readings(got: Scene, strict: StrictReading) -> dict:
    """What the two readers saw, as the eval's rows keep it."""
    return {"read": describe(got), "strict_read": describe(strict.scene),
            # what the strict reader counted: every object it found (strays included) and how many were blobs
            "strict_objects": len(strict.scene.objects), "strict_blobs": strict.blobs}


def describe(scene: Scene) -> str:
    """A short reading of a scene: ``black: large red circle@LT, small blue square@CM`` (size, colour, shape and
    grid cell, column then row; the size is read too, and a prompt that names one is judged on it)."""
    cols, rows = "LCR", "TMB"
    objs = ", ".join(f"{o.size} {o.colour} {o.shape}@{cols[o.col]}{rows[o.row]}" for o in scene.objects)
    return f"{scene.background}: {objs or '(nothing)'}"


def _image_name(index: int, seed: int) -> str:
    """Every generated image is kept as its own PNG, named by its row (``images/000_s0.png``), so that any other
    checker can judge the same pictures; each row of ``results.json`` names its file."""
    return f"images/{index:03d}_s{seed}.png"


# Under the contact sheet: what the small picture beside each one is.
SHEET_LEGEND = ("Beside each picture, small: the random start (no optimisation) of its seed, the toy VQGAN's decoding "
                "of random latent codes; it is the baseline, whose verdict is base:P or base:F. The run itself starts "
                "from a flat colour.")


def _contact_sheet(rows: list[dict], images: list, baselines: list, path: Path, tile: int = 128) -> None:
    """Every image at ``tile`` pixels with its whole prompt and its verdicts under it, and the random start it was
    judged against (the baseline) as a small thumbnail beside it (not over it: objects in the top right corner stay
    in view); a legend under the sheet says what the thumbnails are."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    per_row = 6
    line_h = 12
    thumb = tile // 4
    cell_w = tile + 4 + thumb + 12
    w = per_row * cell_w + 8
    prompts = [_wrap(row["prompt"], cell_w - 8, lambda t: measure(t, font=font)) for row in rows]
    text_h = max(52, line_h * (max(map(len, prompts), default=0) + 1) + 16)  # the longest prompt, whole
    legend = _wrap(SHEET_LEGEND, w - 16, lambda t: measure(t, font=font))
    n_rows = (len(rows) + per_row - 1) // per_row
    legend_y = n_rows * (tile + text_h + 8) + 8
    sheet = Image.new("RGB", (w, legend_y + line_h * len(legend) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (row, img, base, prompt) in enumerate(zip(rows, images, baselines, prompts)):
        x = 8 + (i % per_row) * cell_w
        y = 8 + (i // per_row) * (tile + text_h + 8)
        sheet.paste(img.resize((tile, tile), Image.NEAREST), (x, y))
        sheet.paste(base.resize((thumb, thumb), Image.NEAREST), (x + tile + 4, y))
        for j, word in enumerate(("random", "start")):
            draw.text((x + tile + 4, y + thumb + 2 + line_h * j), word, fill=(110, 110, 110), font=font)
        ok = row["pass"]
        colour = (0, 140, 0) if ok else (200, 0, 0)
        verdict = f"s{row['seed']} {'PASS' if ok else 'FAIL'} base:{'P' if row['baseline_pass'] else 'F'}"
        if "strict_pass" in row:
            verdict += f" strict:{'P' if row['strict_pass'] else 'F'}"
        lines = [*prompt, verdict]
        for j, line in enumerate(lines):
            draw.text((x, y + tile + 2 + line_h * j), line, fill=colour if j == len(lines) - 1 else (0, 0, 0),
                      font=font)
        draw.rectangle([x - 2, y - 2, x + tile + 1, y + tile + 1], outline=colour, width=2)
    for j, line in enumerate(legend):
        draw.text((8, legend_y + line_h * j), line, fill=(110, 110, 110), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def _wrap(text: str, width: float, length: Callable[[str], float] = len) -> list[str]:
    """``text`` in lines no longer than ``width`` as ``length`` measures them (a word longer than that on its own
    line): every word kept."""
    lines, cur = [], ""
    for word in text.split():
        if cur and length(f"{cur} {word}") > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def table(summary: dict) -> str:
    """A Markdown table per category: images, accuracy with optimisation, baseline accuracy (the random start,
    :func:`random_start`), and the two stricter readings of the same images (nothing extra; the strict reader)."""
    lines = ["| category | images | pixgen | baseline (random start, no optimisation) | pixgen, nothing extra "
             "| pixgen, strict reader |",
             "|---|---:|---:|---:|---:|---:|"]
    for cat in [*CATEGORIES, *EXTRA_CATEGORIES, "overall"]:
        s = summary.get(cat)
        if s:
            exact, strict = (f"{s[k]:.3f}" if k in s else "-" for k in ("exact", "strict"))
            lines.append(f"| {cat} | {s['n']} | {s['accuracy']:.3f} | {s['baseline']:.3f} | {exact} | {strict} |")
    per_image = summary.get("overall", {}).get("strict_objects_per_image")
    if per_image is not None:
        lines += ["", f"Objects per image, strays included, as the strict reader counts them: {per_image:.2f}"]
    return "\n".join(lines)


def timing_line(timing: dict) -> str:
    """How ``pixgen eval`` sums up a report's ``timing``: the mean CPU of each image's search, over every image, and
    the session's CPU and wall time in all, over the images it judged (when resumed, not those judged before)."""
    t = timing
    images, resumed = t["images"], t.get("images_resumed", 0)
    at_once = f"({t['jobs']} at once, {t['torch_threads']} thread(s) each)"
    if not resumed:
        return (f"{images} images, {t['cpu_s_per_image_mean']:.2f} s CPU per image (mean), "
                f"{t['wall_s_total']:.0f} s wall in all {at_once}")
    now = t.get("images_this_session", images - resumed)
    return (f"{images} images, {t['cpu_s_per_image_mean']:.2f} s CPU per image (mean over all {images}); the "
            f"session that resumed the eval judged {now} of them in {t['cpu_s_total']:.1f} s CPU and "
            f"{t['wall_s_total']:.0f} s wall in all {at_once}, the other {resumed} were judged before it")


def summarize(rows: list[dict]) -> dict:
    """Per category and overall: images, and the share passing each verdict (accuracy is the evaluator's)."""
    summary: dict = {}
    for cat in [*CATEGORIES, *EXTRA_CATEGORIES, "overall"]:
        sel = [r for r in rows if cat == "overall" or r["category"] == cat]
        if sel:
            summary[cat] = {"n": len(sel), "accuracy": float(np.mean([r["pass"] for r in sel])),
                            "baseline": float(np.mean([r["baseline_pass"] for r in sel])),
                            "exact": float(np.mean([r["exact_pass"] for r in sel])),
                            "strict": float(np.mean([r["strict_pass"] for r in sel]))}
    return summary


PROGRESS_NAME = "progress.jsonl"


def _weights_digest() -> str:
    """One SHA-256 over the toy weights and configs the run reads: a resumed eval must judge with the same."""
    from pixgen.factory import TOY_DIR

    digest = hashlib.sha256()
    for path in sorted(TOY_DIR.glob("*")):
        if path.suffix in (".pt", ".ckpt", ".safetensors", ".yaml", ".json"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _fingerprint(items: list[SuiteItem], seeds, iterations, size, config, overrides, threads: int) -> dict:
    """What decides the images and verdicts of an eval: an unfinished one is resumed only if this is unchanged.
    (The thread count is in it because another one may round differently, and so draw another picture.)"""
    config_path = Path(config) if config else None
    return {
        "threads": threads,
        "prompts": [[it.category, it.prompt] for it in items], "seeds": list(seeds), "iterations": iterations,
        # the config by its name and content, not where it lies: a moved or fresh checkout resumes the same eval
        "size": list(size), "config": config_path.name if config_path is not None else None,
        "config_sha256": (hashlib.sha256(config_path.read_bytes()).hexdigest()
                          if config_path is not None and config_path.is_file() else None),
        "overrides": json.loads(json.dumps(overrides, sort_keys=True, default=str)),
        "weights_sha256": _weights_digest(),
    }


def _config_label(config: str | Path | None) -> str | None:
    """How the report names the config: relative to the checkout for one of its own (``configs/toy.yaml``),
    otherwise as given."""
    if not config:
        return None
    try:
        return Path(config).resolve().relative_to(TOY_PRESET.parents[1]).as_posix()
    except ValueError:
        return str(config)


def _read_progress(path: Path) -> tuple[dict | None, list[dict]]:
    """The header and the rows of an unfinished eval's ``progress.jsonl``; a line cut short by a crash is dropped."""
    header, rows = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "fingerprint" in record:
            header = record
        elif "row" in record:
            rows.append(record["row"])
    return header, rows


def _append_line(path: Path, record: dict) -> None:
    """One JSON line, flushed to disk before the next image starts (so an interruption loses at most that one)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _finished_report(out: Path, fingerprint: dict) -> dict | None:
    """The report in ``out/results.json`` if an eval with these settings completed there, else None."""
    try:
        report = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return None
    settings = report.get("settings", {})
    # a report written before 2026-12-06 digested the config's path as it was given, which its settings keep
    digests = {_digest(fingerprint), _digest({**fingerprint, "config": settings.get("config")})}
    if settings.get("fingerprint_sha256") not in digests:
        return None
    report["complete_already"] = True  # not saved: tells the caller that nothing was run
    return report


def _differences(old: dict, new: dict) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def judged_prompts(rows: list[dict], seeds: list) -> list[list]:
    """The prompts a report's ``rows`` judged, each as [category, prompt], in order: what its fingerprint keeps, for
    a report written before it kept one (each prompt has a row per seed)."""
    ordered = sorted(rows, key=lambda r: r.get("index", 0))
    return [[r.get("category"), r.get("prompt")] for r in ordered[::len(seeds)]]


def _report_differences(report: dict, fingerprint: dict) -> list[str]:
    """What the finished eval of ``report`` was run with other than ``fingerprint``."""
    settings = report.get("settings") or {}
    if isinstance(settings.get("fingerprint"), dict):
        return _differences(settings["fingerprint"], fingerprint)
    # a report written before 2026-12-07 kept only the digest: what its settings, rows and timing still say
    config = settings.get("config")
    known = {"threads": (report.get("timing") or {}).get("torch_threads"),
             "prompts": judged_prompts(report.get("rows") or [], settings.get("seeds") or [0]),
             "seeds": settings.get("seeds"), "iterations": settings.get("iterations"), "size": settings.get("size"),
             "config": Path(config).name if config else None,
             "overrides": json.loads(json.dumps(settings.get("overrides") or {}, sort_keys=True, default=str))}
    return [key for key, value in known.items() if value != fingerprint.get(key)] or [
        "config_sha256 or weights_sha256"]


def _eval_images(out: Path) -> list[Path]:
    """The images an eval wrote in ``out/images`` (named as :func:`_image_name` names them), and no other file."""
    folder = out / "images"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"\d{3,}_s-?\d+\.png", p.name) and p.is_file())


EVAL_FILES = ("results.json", "table.md", "contact_sheet.png", PROGRESS_NAME)


def _remove_eval(out: Path) -> None:
    """Remove the eval in ``out`` (finished or not) for a new one (``overwrite``): the files an eval writes, and its
    images; other files stay."""
    try:
        for path in [*(out / name for name in EVAL_FILES), *_eval_images(out)]:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise PixgenError(f"cannot remove the earlier eval in {out}: {exc.strerror or exc}",
                          "give another --out") from None


def _earlier_eval(out: Path, progress_path: Path, fingerprint: dict, resume: bool) -> dict | None:
    """Before an eval starts afresh in ``out`` (none unfinished there to resume): the report of the finished eval
    of these settings there where ``resume`` asks for it. A finished eval, or images no record there names, are
    not written over or left beside the new eval's: refused (``overwrite`` removes them first)."""
    replace_it = "--overwrite to replace it (its results and images are removed), or give another --out"
    if (out / "results.json").exists():
        finished = _finished_report(out, fingerprint)
        if finished is not None:
            if resume:
                return finished
            raise PixgenError(f"{out} holds the finished eval of these settings ({len(finished['rows'])} images)",
                              f"add --resume to print its report, {replace_it}")
        try:
            report = json.loads((out / "results.json").read_text())
            changed = _report_differences(report, fingerprint)
            images = len(report["rows"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            raise PixgenError(f"{out} holds a results.json that pixgen cannot read as an eval's report",
                              replace_it) from None
        raise PixgenError(f"{out} holds a finished eval ({images} images) run with other settings "
                          f"(differs in: {', '.join(changed)})",
                          f"give the options it was run with (its results.json says them) and --resume to print its "
                          f"report, {replace_it}")
    stray = _eval_images(out)
    if stray and progress_path.exists():
        # the eval started here made them but judged none of them (stopped between the image and its row)
        for path in stray:
            path.unlink(missing_ok=True)
    elif stray:
        raise PixgenError(f"{out / 'images'} holds images of an earlier eval ({len(stray)}) that {out} has no "
                          "record of",
                          "--overwrite to remove them and start afresh, or give another --out")
    return None


def _prepare_out(out: Path) -> Path:
    """Make ``out`` and ``out/images`` (or say why not); the path of the progress file."""
    if out.exists() and not out.is_dir():
        raise PixgenError(f"--out {out} is a file, not a directory", "give --out a directory (it is created)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "images").mkdir(exist_ok=True)
    except OSError as exc:
        raise PixgenError(f"cannot write the eval to {out}: {exc.strerror or exc}",
                          "give --out a directory that can be created and written") from None
    return out / PROGRESS_NAME


def _kept_rows(out: Path, progress_path: Path, fingerprint: dict, resume: bool, size) -> dict | None:
    """What an unfinished eval in ``out`` kept, by index: (row, image, start), for ``resume`` with the same
    settings; None where nothing was judged there. Refuses to go on without ``resume``, or with other settings."""
    header, rows = _read_progress(progress_path) if progress_path.exists() else (None, [])
    if not rows:
        return None
    if not resume:
        raise PixgenError(f"{out} holds an unfinished eval ({len(rows)} of its images judged)",
                          "add --resume to judge the rest, --overwrite to start over (its images are removed), "
                          "or give another --out")
    started = dict(header["fingerprint"]) if header else None
    if started and started.get("config"):  # evals started before 2026-12-06 recorded the config's whole path
        started["config"] = Path(started["config"]).name
    if started != fingerprint:
        changed = _differences(started, fingerprint) if started else ["(no header)"]
        raise PixgenError(f"the unfinished eval in {out} was started with other settings "
                          f"(differs in: {', '.join(changed)})",
                          "resume it with the options it was started with, or give another --out")
    from PIL import Image

    kept = {}
    for row in rows:
        try:
            with Image.open(out / row["image"]) as im:
                image = im.convert("RGB")
        except OSError:  # its image is gone or damaged: judge it again
            continue
        kept[row["index"]] = (row, image, random_start(row["seed"], size))
    return kept


@lru_cache(maxsize=1)
def _evaluator():
    from pixgen.toy.evaluator import load_evaluator

    return load_evaluator()


def _judge_job(task: tuple) -> tuple[int, dict, object, object, dict[str, str]]:
    """Generate one image of the suite, read it with the evaluator and the strict reader: (index, row, image,
    no-optimisation start, PNG text chunks). Runs in the calling process or in a worker of ``--jobs``."""
    import pixgen
    from pixgen.config import to_yaml
    from pixgen.output import META_PREFIX, metadata_for

    index, item, seed, size, config, options = task
    evaluator = _evaluator()
    c0, w0 = time.process_time(), time.time()
    result = pixgen.generate(item.prompt, config=str(config) if config else None, model="toy", seed=seed,
                             size=list(size), write=False, progress=False, echo=False, **options)
    cpu, wall = time.process_time() - c0, time.time() - w0
    if result.interrupted:  # Ctrl-C stopped the search early: its picture is not this prompt's verdict
        raise KeyboardInterrupt
    start = random_start(seed, size)
    got, base = evaluator.read([result.image, start])
    strict = strict_read(result.image)
    row = {
        "category": item.category, "prompt": item.prompt, "seed": seed,
        **verdicts(item, got, strict), "baseline_pass": judge(item, base),
        **readings(got, strict), "baseline_read": describe(base),
        "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
        "final_loss": result.losses[-1]["loss"] if result.losses else None,
        "messages": list(result.messages),  # e.g. which start colour the run chose
    }
    # as pixgen generate writes them, so that `pixgen generate --from-image` makes this picture again
    made_by = metadata_for(item.prompt, seed, to_yaml(result.config, without_location=True), pixgen.__version__,
                           result.weights)
    meta = {"prompt": item.prompt, "seed": str(seed), **{META_PREFIX + k: v for k, v in made_by.items()}}
    return index, row, result.image, start, meta


def _worker_init(threads: int) -> None:
    """A ``--jobs`` worker: Ctrl-C is the parent's to handle (it stops the workers), and torch gets ``threads``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _in_workers(job: Callable[[tuple], tuple], todo: list[tuple], jobs: int, threads: int,
                keep: Callable[..., None], died: Callable[[], PixgenError]) -> None:
    """``job`` of each of ``todo`` in ``jobs`` spawned worker processes with ``threads`` torch threads each, each
    result handed to ``keep(*result)`` as it comes, in any order. A worker that dies (killed, most often by the
    system for memory) raises ``died()``, where a ``multiprocessing.Pool`` would wait for its image forever; Ctrl-C
    or an error stops every worker at once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked copy of a process that has run torch's thread pools can hang
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(threads,))
    try:
        for future in as_completed([pool.submit(job, task) for task in todo]):
            keep(*future.result())
    except BrokenProcessPool:
        raise died() from None
    finally:
        for worker in list((getattr(pool, "_processes", None) or {}).values()):  # not left to finish their images
            worker.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_died(judged: int, total: int, out: Path | None) -> PixgenError:
    where = f"; those are kept in {out}" if out is not None else ""
    return PixgenError(f"a --jobs worker process died before finishing its image (the system may have stopped it "
                       f"for want of memory), after {judged} of {total} images{where}",
                       "run the same command with --resume and fewer --jobs (e.g. --jobs 1)" if out is not None
                       else "run it again with fewer jobs (e.g. jobs=1)")


def _children_cpu() -> float:
    """CPU seconds of this process's finished child processes (the ``--jobs`` workers, once joined)."""
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(
    seeds: list[int] = (0, 1, 2),  # type: ignore[assignment]
    iterations: int | None = None,
    size: tuple[int, int] = (64, 64),
    out: str | Path | None = "outputs/toy_eval",
    categories: list[str] | None = None,
    max_per_category: int | None = None,
    config: str | Path | None = TOY_PRESET,
    progress: bool = True,
    items: list[SuiteItem] | None = None,
    source: str | None = None,
    jobs: int | None = 1,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **overrides,
) -> dict:
    """Generate every suite prompt for every seed, judge it, and write ``results.json``, ``table.md``,
    ``contact_sheet.png`` and every image under ``images/``.

    ``items`` replaces the fixed suite with other prompts (:func:`items_from_prompts`, :func:`held_out`);
    ``source`` says where they came from, for the record.

    ``jobs`` above 1 makes that many images at once, each in its own worker process with ``threads`` torch
    threads (default 1): the images and verdicts are those of ``jobs=1`` with one thread, in the same order.
    ``jobs=None`` picks the number with :func:`auto_jobs`. The
    workers are spawned, so they import the calling script: call from under ``if __name__ == "__main__":``.

    With ``out``, each image and its row are written to ``out`` as soon as it is judged (rows in
    ``progress.jsonl`` until the eval is complete), so an interrupted eval keeps them: run it again with
    ``resume=True`` and the same settings to judge only the rest (where that eval had completed, its report is
    returned as it is, with ``complete_already``). Ctrl-C raises :class:`Interrupted`. An eval is not started
    afresh where ``out`` holds one, finished or not (or images no record there names): ``overwrite=True`` removes
    it first.

    Returns a dict with ``summary`` (per category accuracy and baseline), ``rows`` (one per image) and
    ``timing``.
    """
    if jobs is not None and jobs < 1:
        raise PixgenError(f"jobs must be at least 1, not {jobs}", "e.g. --jobs 2 on a machine with two cores")
    if threads is not None and threads < 1:
        raise PixgenError(f"threads must be at least 1, not {threads}", "e.g. --threads 1")
    if iterations is not None and iterations < 1:
        raise PixgenError(f"iterations must be at least 1, not {iterations}", "e.g. --iterations 100")
    if resume and overwrite:
        raise PixgenError("--resume goes on with the eval in --out and --overwrite removes it; give one of them")
    factor = _toy_vqgan().factor
    if any(side < factor or side % factor for side in size):
        near = round(max(size) / factor) * factor
        raise PixgenError(f"image size {size[0]}x{size[1]} is not a positive multiple of the toy VQGAN's factor "
                          f"{factor}", f"e.g. --size {near if near >= 32 else 64}")
    if source is None:
        source = "the fixed suite" if items is None else "given by the caller"
    items = [it for it in (suite() if items is None else items) if categories is None or it.category in categories]
    if max_per_category is not None:
        kept: dict[str, int] = {}
        chosen = []
        for it in items:
            if kept.get(it.category, 0) < max_per_category:
                kept[it.category] = kept.get(it.category, 0) + 1
                chosen.append(it)
        items = chosen
    options = dict(overrides)
    if iterations is not None:
        options["iterations"] = iterations
    per_job_threads = threads if threads is not None else (torch.get_num_threads() if jobs == 1 else 1)
    options["threads"] = per_job_threads  # the eval's choice over the preset's, recorded with each image
    tasks = [(i, it, s, tuple(size), config, options) for i, (it, s) in enumerate((it, s) for it in items for s in seeds)]
    done: dict[int, tuple[dict, object, object]] = {}
    progress_path, fingerprint = None, None
    if out is not None:
        out = Path(out)
        fingerprint = _fingerprint(items, seeds, iterations, size, config, overrides, per_job_threads)
        progress_path = _prepare_out(out)
        if overwrite:
            _remove_eval(out)
        kept = _kept_rows(out, progress_path, fingerprint, resume, size)
        if kept is None:  # a fresh eval (one that stopped before its first image had nothing to keep)
            finished = _earlier_eval(out, progress_path, fingerprint, resume)
            if finished is not None:
                return finished
            atomic_write(progress_path, (json.dumps({"fingerprint": fingerprint}) + "\n").encode())
        done.update(kept or {})
    resumed = len(done)
    todo = [t for t in tasks if t[0] not in done]
    if jobs is None:
        jobs = auto_jobs(len(todo), str(options.get("device", "auto")))
    cpu0, wall0, children0 = time.process_time(), time.time(), _children_cpu()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), initial=resumed, desc="toy eval", unit="img")

    def keep(index: int, row: dict, image, start, meta: dict[str, str]) -> None:
        row["index"] = index
        if out is not None:
            row["image"] = _image_name(index, row["seed"])
            atomic_write(out / row["image"], png_bytes(image, meta))
            _append_line(progress_path, {"row": row})
        done[index] = (row, image, start)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(acc=f"{np.mean([r['pass'] for r, _, _ in done.values()]):.2f}")

    try:
        if jobs == 1 or len(todo) <= 1:
            with torch_threads(per_job_threads):
                for task in todo:
                    keep(*_judge_job(task))
        else:
            _in_workers(_judge_job, todo, min(jobs, len(todo)), per_job_threads, keep,
                        lambda: _worker_died(len(done), len(tasks), out))
    except PixgenError:
        if bar is not None:
            bar.close()  # the error's message on a line of its own
        raise
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = f"; they are kept in {out}" if out is not None else ""
        stopped = Interrupted(f"eval interrupted after {len(done)} of {len(tasks)} images{where}",
                              "run the same command with --resume to judge the rest" if out is not None else None)
        stopped.summary = summarize([done[i][0] for i in sorted(done)])  # the table so far
        raise stopped from None
    if bar is not None:
        bar.close()
    rows = [done[i][0] for i in range(len(tasks))]
    images = [done[i][1] for i in range(len(tasks))]
    baselines = [done[i][2] for i in range(len(tasks))]
    summary = summarize(rows)
    timing = {
        # the totals are this session's (the CPU of this process and of its --jobs workers), over the images it
        # judged: all of them, or when resumed those that the sessions before it had not; the per-image numbers
        # are every image's own search
        "images": len(rows), "images_resumed": resumed, "images_this_session": len(rows) - resumed,
        "cpu_s_total": round(time.process_time() - cpu0 + _children_cpu() - children0, 1),
        "wall_s_total": round(time.time() - wall0, 1),
        "cpu_s_per_image_mean": round(float(np.mean([r["cpu_s"] for r in rows])), 3) if rows else None,
        "cpu_s_per_image_max": round(float(np.max([r["cpu_s"] for r in rows])), 3) if rows else None,
        "wall_s_per_image_mean": round(float(np.mean([r["wall_s"] for r in rows])), 3) if rows else None,
        "jobs": jobs, "torch_threads": per_job_threads,
    }
    if rows:  # strays show here before they cost passes
        summary["overall"]["strict_objects_per_image"] = round(float(np.mean([r["strict_objects"] for r in rows])), 3)
    report = {
        "summary": summary, "timing": timing, "rows": rows,
        "settings": {"prompts": source,
                     "seeds": list(seeds), "iterations": iterations, "size": list(size),
                     "config": _config_label(config), "overrides": overrides,
                     # what --resume compares: the prompts, seeds, settings, weights and thread count
                     "fingerprint_sha256": _digest(fingerprint) if fingerprint is not None else None,
                     "fingerprint": fingerprint},  # so that a refusal can name what differs
        "machine": machine.machine_record(),
    }
    if out is not None:
        atomic_write(out / "results.json", (json.dumps(report, indent=2) + "\n").encode())
        atomic_write(out / "table.md", (table(summary) + "\n").encode())
        if rows:
            _contact_sheet(rows, images, baselines, out / "contact_sheet.png")
        progress_path.unlink()  # complete: results.json holds every row
    return report


@lru_cache(maxsize=1)
def _toy_vqgan():
    from pixgen.factory import TOY_DIR
    from pixgen.toy.training import load_toy_vqgan

    return load_toy_vqgan(TOY_DIR)


def random_start(seed: int, size: tuple[int, int]):
    """The toy VQGAN's decoding of the random codes a generation with ``seed`` starts from when it has no
    init image or colour: the no-optimisation baseline. (The toy preset itself starts from a flat background,
    which the evaluator reads as an empty scene.)"""
    from pixgen.generators.vqgan import VQGANGenerator
    from pixgen.output import to_pil

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # as build_session seeds just before it makes the generator
        generator = VQGANGenerator(_toy_vqgan(), size[0], size[1])
        with torch.no_grad():
            return to_pil(generator())


JOB_MEMORY_BYTES = 1.2e9  # resident memory of one --jobs worker with the toy models (about 1 GB, measured)


def auto_jobs(images: int, device: str = "auto", meminfo: Path = Path("/proc/meminfo")) -> int:
    """How many images ``pixgen eval`` makes at once by default: one per CPU core, as many as the free memory holds
    (``JOB_MEMORY_BYTES`` each) and no more than there are images; one on a GPU, which a single process keeps busy."""
    from pixgen.factory import resolve_device

    if resolve_device(device).type != "cpu":
        return 1
    jobs = machine.cpu_count() or 1
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                jobs = min(jobs, int(int(line.split()[1]) * 1024 // JOB_MEMORY_BYTES))
    except (OSError, ValueError, IndexError):  # not Linux: cores only
        pass
    return max(1, min(jobs, images))


