"""Parsing of the prompt syntax users know from VQGAN+CLIP: ``"a castle | fog:0.5 | blurry:-1 | gold:1:0.3"``.

Terms are separated by ``|``; each term is ``TEXT[:WEIGHT[:STOP]]`` where WEIGHT and STOP are read as numbers
only from the right, so colons inside the text (``"a photo: dusk"``) and Windows paths (``C:\\img.png:0.5``) stay
text. ``^`` separates story phases, which the run moves through in order.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pixgen.errors import PromptError

# A tail that was clearly meant as a number (starts like one) but does not parse is an error, not text.
# A tail of one word that starts like a number (or is empty) was meant as one; "3 cats" is text.
_NUMBERISH = re.compile(r"[-+]?([\d.][\w.+-]*)?")


@dataclass(frozen=True)
class Prompt:
    """One weighted term: ``text`` (or an image path / noise seed), its ``weight``, and its ``stop``."""

    text: str
    weight: float = 1.0
    stop: float = float("-inf")


def _pointer(source: str, start: int, end: int) -> str:
    return f"  {source}\n  {' ' * start}{'^' * max(1, end - start)}"


def _fail(source: str, start: int, end: int, what: str, hint: str) -> PromptError:
    return PromptError(f"bad prompt: {what}\n{_pointer(source, start, end)}", hint)


def _parse_term(source: str, start: int, term: str) -> Prompt:
    numbers: list[float] = []
    text = term
    while len(numbers) < 2 and ":" in text:
        head, tail = text.rsplit(":", 1)
        tail_start = start + len(head) + 1
        try:
            value = float(tail)
        except ValueError:
            # A tail right after a number is the stop. "TEXT:1:oops" meant one: a lone word there is not text.
            after_number = not numbers and _looks_numeric(head)
            meant_as_stop = after_number and tail.strip() and " " not in tail.strip()
            if _NUMBERISH.fullmatch(tail.strip()) or meant_as_stop:
                label = "stop" if after_number else "weight"
                raise _fail(
                    source, tail_start, tail_start + len(tail),
                    f"{label} {tail.strip()!r} is not a number",
                    "write TEXT:WEIGHT or TEXT:WEIGHT:STOP with plain numbers, e.g. 'fog:0.5' or 'gold:1:0.3'",
                ) from None
            break
        if not math.isfinite(value):
            raise _fail(source, tail_start, tail_start + len(tail), f"{tail.strip()!r} is not a finite number",
                        "weights and stops must be ordinary numbers such as 0.5 or -1")
        numbers.insert(0, value)
        text = head
    text = text.strip()
    if not text:
        raise _fail(source, start, start + max(1, len(term)), "a term has no text",
                    "every term between '|' needs text before its :weight, e.g. 'a red circle:0.5'")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else float("-inf")
    return Prompt(text, weight, stop)


def _looks_numeric(head: str) -> bool:
    try:
        float(head.rsplit(":", 1)[1])
        return True
    except (ValueError, IndexError):
        return False


def parse_prompt(source: str) -> list[Prompt]:
    """Parse one phase, ``"a | b:0.5 | c:-1 | d:1:0.3"``, into its terms."""
    if not source or not source.strip():
        raise PromptError("the prompt is empty", "give a text prompt, e.g. pixgen generate \"a red circle\"")
    if not source.replace("|", "").replace("^", "").strip():
        raise PromptError(f"the prompt {source!r} has only separators and no text",
                          "put text between the '|' separators, e.g. \"a castle | fog:0.5\"")
    terms: list[Prompt] = []
    pos = 0
    for piece in source.split("|"):
        if not piece.strip():
            raise _fail(source, pos, pos + max(1, len(piece)), "an empty term between '|' separators",
                        "remove the extra '|' or put text between them")
        terms.append(_parse_term(source, pos, piece))
        pos += len(piece) + 1
    return terms


def parse_story(source: str) -> list[list[Prompt]]:
    """Split on ``^`` into story phases and parse each; a prompt without ``^`` is a single phase."""
    if not source or not source.strip():
        raise PromptError("the prompt is empty", "give a text prompt, e.g. pixgen generate \"a red circle\"")
    phases = source.split("^")
    if len(phases) > 1 and any(not p.strip() for p in phases):
        raise PromptError(f"the prompt {source!r} has an empty story phase",
                          "write phases as \"first scene ^ second scene\" with text on both sides of '^'")
    return [parse_prompt(p) for p in phases]
