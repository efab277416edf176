"""Read pictures that already exist with the eval's two readers, and judge them against a toy-world prompt.

``pixgen eval`` makes its own pictures; this is for any other: a ``pixgen generate`` result, a frame of its
progress, an image from another tool. Each picture is read by the learned evaluator and by the strict reader
(:mod:`pixgen.toy.strict`); with a prompt (given, or the one a pixgen PNG carries) it gets the eval's three
verdicts: the evaluator's, "nothing extra" and strict.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.toy.captions import CaptionError

PROMPT_KEYS = ("pixgen:prompt", "prompt")  # where pixgen's PNGs keep the prompt (generate; eval writes both)


@dataclass
class Reading:
    """What the readers made of one picture, and the verdicts where there was a prompt to judge it by."""
    path: str
    prompt: str | None  # the toy-world prompt it was judged by; None: read only
    prompt_from: str  # "--prompt", "the image", or why there is no prompt
    row: dict  # the eval's row keys: read, strict_read, strict_objects, strict_blobs, (pass, exact_pass, strict_pass)


def stored_prompt(path: str | Path) -> str | None:
    """The prompt a pixgen PNG carries in its text chunks, if any."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, SyntaxError, ValueError):
        return None  # load_image names the problem
    return next((text[k] for k in PROMPT_KEYS if text.get(k)), None)


def read_images(paths: list[str | Path], prompt: str | None = None) -> list[Reading]:
    """Read each picture with the evaluator and the strict reader and, where a prompt is known, judge it.

    ``prompt`` judges every picture; without it, each pixgen PNG is judged by the prompt it carries when that is a
    toy-world caption (a prompt with weights or story phases is not), and other pictures are read only. A given
    ``prompt`` that the toy grammar cannot read raises :class:`CaptionError` naming the part it does not know.
    """
    from pixgen.output import load_image, to_pil
    from pixgen.toy.evaluate import _evaluator, item_from_prompt, readings, verdicts
    from pixgen.toy.strict import strict_read

    if not paths:
        raise PixgenError("no image given", "e.g. pixgen toy read outputs/RUN/image.png")
    given = None
    if prompt is not None:
        try:
            given = item_from_prompt(prompt)
        except CaptionError as exc:
            raise CaptionError(f"--prompt {prompt!r}: {exc.message}", exc.hint) from None
    pictures = [to_pil(load_image(p)) for p in paths]  # every path checked before any model is loaded
    scenes = _evaluator().read(pictures)
    out = []
    for path, picture, got in zip(paths, pictures, scenes):
        strict = strict_read(picture)
        row = readings(got, strict)
        item, source = given, "--prompt"
        if item is None:
            text = stored_prompt(path)
            if text is None:
                source = "no prompt given or stored in the image"
            else:
                try:
                    item, source = item_from_prompt(text), "the image"
                except CaptionError as exc:
                    source = f"the image's prompt {text!r} is not a toy-world caption ({exc.message})"
        if item is not None:
            row.update(verdicts(item, got, strict))
        out.append(Reading(str(path), item.prompt if item is not None else None, source, row))
    return out


def report(readings: list[Reading]) -> str:
    """The readings as text, one block per picture."""
    def verdict(ok: bool) -> str:
        return "pass" if ok else "fail"

    blocks = []
    for r in readings:
        row = r.row
        head = f"{r.path}: " + (f"{r.prompt!r} (prompt from {r.prompt_from})" if r.prompt else r.prompt_from)
        ev = f"  evaluator: {row['read']}"
        blobs = (f" ({row['strict_blobs']} of its {row['strict_objects']} objects fit no shape)"
                 if row["strict_blobs"] else "")
        st = f"  strict:    {row['strict_read']}{blobs}"
        if r.prompt:
            ev += f" -> {verdict(row['pass'])}; nothing extra: {verdict(row['exact_pass'])}"
            st += f" -> {verdict(row['strict_pass'])}"
        blocks.append("\n".join([head, ev, st]))
    return "\n".join(blocks)
