"""Contrast terms: ask the picture to match its prompt *rather than* the prompts that differ from it in one word.

A prompt term pulls the picture towards its text embedding. Much of that pull goes into what the prompt shares
with its near misses ("a red circle" and "a red square" both want red), so the search can raise the prompt's
score without ever deciding what tells it apart. A contrast term scores each cutout against the prompt and its
near misses together and takes the cross-entropy of the prompt among them, softmax over the CLIP's own logits:
its gradient is the prompt's pull minus the near misses' pulls weighted by how likely the CLIP thinks each one
is, so what they share cancels, and the term fades once the prompt clearly wins.

The near misses are written from the prompt by word classes (``contrast.swaps``): each class lists meanings,
each meaning its words, first word preferred, e.g. ``[[circle, disc], [square, box], [triangle]]``. From every
word of a class found in the prompt, one near miss per other meaning of that class; and where two words of one
class with different meanings appear, the prompt with the two exchanged ("a red square and a blue circle" ->
"a blue square and a red circle").
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from pixgen.errors import ConfigError

__all__ = ["near_misses", "contrast_loss", "check_swaps"]


def check_swaps(swaps) -> list[list[list[str]]]:
    """``swaps`` as a list of classes of meanings of words, each non-empty; a clear error for anything else."""
    hint = ("write contrast.swaps as a list of word classes, each a list of meanings, each a list of words, "
            "e.g. [[[red], [blue]], [[circle, disc], [square, box]]]")
    if swaps is None:
        return []
    out = []
    for i, group in enumerate(swaps):
        if isinstance(group, str) or not hasattr(group, "__iter__"):
            raise ConfigError(f"contrast.swaps[{i}] is {group!r}, not a list of meanings", hint)
        meanings = []
        for meaning in group:
            words = [meaning] if isinstance(meaning, str) else list(meaning)
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError(f"contrast.swaps[{i}] has a meaning with no words or a non-text word: {meaning!r}",
                                  hint)
            meanings.append([w.strip() for w in words])
        if len(meanings) < 2:
            raise ConfigError(f"contrast.swaps[{i}] has {len(meanings)} meaning; a class needs two or more to swap",
                              hint)
        out.append(meanings)
    return out


_ARTICLE = re.compile(r"\b(an?)(\s+)$", re.IGNORECASE)


def _replace(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each (start, end) span replaced by its word, an "a"/"an" right before it agreeing with it."""
    for start, end, word in sorted(edits, reverse=True):
        head = text[:start]
        article = _ARTICLE.search(head)
        if article is not None:
            agreed = "an" if word[:1].lower() in "aeiou" else "a"
            if article.group(1)[0].isupper():
                agreed = agreed.capitalize()
            head = head[:article.start(1)] + agreed + article.group(2)
        text = head + word + text[end:]
    return text


def near_misses(text: str, swaps: list[list[list[str]]]) -> list[str]:
    """The prompts that differ from ``text`` in one word of a class, or by two words of a class exchanged.

    Words match whole and case-insensitively (longest first, so "plus sign" before "plus"); the result keeps
    ``text``'s other characters, but for an "a" or "an" right before a changed word, which is made to agree with
    it ("a red box" -> "an orange box"). It has no duplicates and never contains ``text`` itself.
    """
    out: list[str] = []
    for meanings in swaps:
        meaning_of = {w.lower(): m for m, words in enumerate(meanings) for w in words}
        pattern = r"\b(" + "|".join(re.escape(w) for w in sorted(meaning_of, key=len, reverse=True)) + r")\b"
        found = [(m.start(), m.end(), meaning_of[m.group(1).lower()])
                 for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
        for start, end, m in found:
            for other, words in enumerate(meanings):
                if other != m:
                    out.append(_replace(text, [(start, end, words[0])]))
        for i, (s1, e1, m1) in enumerate(found):
            for s2, e2, m2 in found[i + 1:]:
                if m1 != m2:
                    out.append(_replace(text, [(s1, e1, text[s2:e2]), (s2, e2, text[s1:e1])]))
    seen = {text.strip().lower()}
    unique = []
    for t in out:
        key = t.strip().lower()
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def contrast_loss(embeds: torch.Tensor, target: torch.Tensor, others: torch.Tensor, scale: float,
                  weight: float) -> torch.Tensor:
    """``weight`` x the mean cross-entropy of ``target`` among ``[target, *others]`` for each cutout, in units of
    cosine similarity (divided by ``scale``, so that ``weight`` 1 pulls about as hard as a prompt term).

    Shape: embeds (N, D), target (D,), others (K, D) -> a scalar.
    """
    texts = F.normalize(torch.cat([target.unsqueeze(0), others]), dim=-1)
    logits = scale * F.normalize(embeds, dim=-1) @ texts.T
    labels = torch.zeros(len(embeds), dtype=torch.long, device=embeds.device)
    return weight * F.cross_entropy(logits, labels) / scale
