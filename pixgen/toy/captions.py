"""Captions of the toy world: a structured meaning (:class:`Spec`), its truth on a scene, English text with
paraphrases, and hard negatives that change exactly one thing.

The same :func:`holds` that decides whether a caption is true of a rendered scene is used to pick hard
negatives for CLIP training and to judge generated images in the evaluation suite (there, on the scene the
evaluator reads back from the image).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from itertools import permutations

import numpy as np

from pixgen.errors import PromptError
from pixgen.toy.world import (
    BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, SIZE_NAMES, Obj, Scene, place_object,
)

__all__ = ["Ref", "Spec", "holds", "scene_for", "spec_text", "parse_caption", "read_caption", "reword_caption", "CaptionError",
           "hard_negative", "sample_pair", "sample_spec", "random_position", "KINDS", "RELATIONS", "PAIR_KINDS",
           "PAIR_KIND_NAMES"]

RELATIONS = ("above", "below", "left of", "right of")
_OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
KINDS = ("objects", "relation", "count")


@dataclass(frozen=True)
class Ref:
    """A description of one kind of object; ``None`` fields are unconstrained."""

    colour: str | None
    shape: str
    size: str | None = None
    col: int | None = None
    row: int | None = None

    def matches(self, o: Obj) -> bool:
        return (
            o.shape == self.shape
            and (self.colour is None or o.colour == self.colour)
            and (self.size is None or o.size == self.size)
            and (self.col is None or o.col == self.col)
            and (self.row is None or o.row == self.row)
        )


@dataclass(frozen=True)
class Spec:
    """What a caption claims.

    ``kind`` is ``objects`` (each ref is a distinct object present), ``relation`` (refs[0] is ``relation``
    refs[1]) or ``count`` (exactly ``count`` objects match refs[0]). ``background`` is optional.
    """

    kind: str
    refs: tuple[Ref, ...]
    relation: str | None = None
    count: int | None = None
    background: str | None = None


def _related(a: Obj, b: Obj, relation: str) -> bool:
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    if relation == "left of":
        return a.col < b.col
    if relation == "right of":
        return a.col > b.col
    raise ValueError(f"unknown relation {relation!r}")


def holds(spec: Spec, scene: Scene) -> bool:
    """Whether the caption meaning ``spec`` is true of ``scene``."""
    if spec.background is not None and scene.background != spec.background:
        return False
    objs = scene.objects
    if spec.kind == "count":
        return sum(spec.refs[0].matches(o) for o in objs) == spec.count
    if spec.kind == "relation":
        a_ref, b_ref = spec.refs
        return any(
            a is not b and a_ref.matches(a) and b_ref.matches(b) and _related(a, b, spec.relation or "")
            for a in objs for b in objs
        )
    if spec.kind == "objects":
        if len(spec.refs) > len(objs):
            return False
        for chosen in permutations(objs, len(spec.refs)):
            if all(r.matches(o) for r, o in zip(spec.refs, chosen)):
                return True
        return False
    raise ValueError(f"unknown caption kind {spec.kind!r}")


# ----------------------------------------------------------------------------------------------- text

_SHAPE_WORDS = {
    "circle": ("circle", "circle", "disc"),
    "square": ("square", "square", "box"),
    "triangle": ("triangle",),
    "cross": ("cross", "cross", "plus sign"),
}
_PLURAL = {"circle": "circles", "disc": "discs", "square": "squares", "box": "boxes", "triangle": "triangles",
           "cross": "crosses", "plus sign": "plus signs"}
_COLOUR_WORDS = {c: (c,) for c in COLOUR_NAMES}
_BG_WORDS = {"white": ("white",), "black": ("black",), "gray": ("gray", "grey")}
_NUMBERS = {1: ("one",), 2: ("two", "2"), 3: ("three", "3"), 4: ("four", "4")}
_REL_WORDS = {
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
}
_COL_WORDS = {0: ("on the left", "on the left side", "at the left"), 2: ("on the right", "on the right side", "at the right")}
_ROW_WORDS = {0: ("at the top", "near the top", "at the top of the image"),
              2: ("at the bottom", "near the bottom", "at the bottom of the image")}
_CORNER_ROW = {0: ("top", "upper"), 2: ("bottom", "lower")}
_CORNER_COL = {0: "left", 2: "right"}
_CENTRE_WORDS = ("in the centre", "in the center", "in the middle")
_BG_TEMPLATES = ("on a {} background", "against a {} background", "on {}", "with a {} background")


class _Chooser:
    """Picks paraphrases: the first option when canonical, else a random one."""

    def __init__(self, rng: np.random.Generator | None):
        self.rng = rng

    def __call__(self, options):
        if self.rng is None or len(options) == 1:
            return options[0]
        return options[int(self.rng.integers(len(options)))]


def _position_text(ref: Ref, pick: _Chooser) -> str:
    c, r = ref.col, ref.row
    if c is None and r is None:
        return ""
    if c == 1 and r == 1:
        return pick(_CENTRE_WORDS)
    if c is not None and r is not None and c != 1 and r != 1:
        form = pick((0, 1, 2))
        rw, cw = _CORNER_ROW[r][0 if form != 2 else 1], _CORNER_COL[c]
        return (f"in the {rw} {cw} corner", f"in the {rw} {cw}", f"in the {rw} {cw} corner")[form]
    if r is None or r == 1:
        if c is None or c == 1:
            return ""
        return pick(_COL_WORDS[c])
    if c is None or c == 1:
        return pick(_ROW_WORDS[r])
    return ""


def _noun(ref: Ref, pick: _Chooser, plural: bool = False) -> str:
    shape = pick(_SHAPE_WORDS[ref.shape])
    words = []
    if ref.size is not None:
        words.append(ref.size)
    if ref.colour is not None:
        words.append(pick(_COLOUR_WORDS[ref.colour]))
    words.append(_PLURAL[shape] if plural else shape)
    return " ".join(words)


def _with_article(text: str) -> str:
    """``text`` after "a", or "an" before a vowel: "an orange circle"."""
    return ("an " if text[:1] in tuple("aeiou") else "a ") + text


def _np(ref: Ref, pick: _Chooser) -> str:
    text = _with_article(_noun(ref, pick))
    pos = _position_text(ref, pick)
    return f"{text} {pos}" if pos else text


def spec_text(spec: Spec, rng: np.random.Generator | None = None) -> str:
    """English for ``spec``; canonical wording without ``rng``, a random paraphrase with one."""
    pick = _Chooser(rng)
    if spec.kind == "count":
        text = f"{pick(_NUMBERS[spec.count or 1])} {_noun(spec.refs[0], pick, plural=(spec.count or 1) > 1)}"
        pos = _position_text(spec.refs[0], pick)
        text = f"{text} {pos}" if pos else text
    elif spec.kind == "relation":
        a, b = spec.refs
        text = f"{_np(a, pick)} {pick(_REL_WORDS[spec.relation or 'above'])} {_np(b, pick)}"
    else:
        parts = [_np(r, pick) for r in spec.refs]
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if spec.background is not None:
        text += " " + pick(_BG_TEMPLATES).format(pick(_BG_WORDS[spec.background]))
    return text


# ----------------------------------------------------------------------------------------- reading

# Words people use that the grammar does not, and the grammar's word for each: the toy CLIP was trained on the
# grammar's words alone, so an error or warning names the word to use instead. The synonyms mean the same thing in the
# toy world and are also read in its words when a prompt is reworded (:func:`reword_caption`); "rectangle", "dot" and
# "ball" would change the picture asked for, so they are only named.
_SYNONYMS = {"big": "large", "huge": "large", "little": "small", "tiny": "small", "violet": "purple",
             "magenta": "pink", "turquoise": "cyan", "upper": "top", "lower": "bottom", "underneath": "beneath",
             "disk": "disc", "disks": "discs", "backdrop": "background"}
_INSTEAD = {**_SYNONYMS, "rectangle": "square", "dot": "circle", "ball": "circle"}
_OTHER_WORDS = {"a", "an", "and", "on", "with", "against", "background"}  # the place phrases add the rest


def _phrase_table() -> dict[str, tuple[int | None, int | None]]:
    """Every place phrase :func:`_position_text` writes, mapped to (col, row)."""
    table: dict[str, tuple[int | None, int | None]] = {w: (1, 1) for w in _CENTRE_WORDS}
    for col, words in _COL_WORDS.items():
        table.update({w: (col, None) for w in words})
    for row, words in _ROW_WORDS.items():
        table.update({w: (None, row) for w in words})
    for row, (plain, other) in _CORNER_ROW.items():
        for col, col_word in _CORNER_COL.items():
            table[f"in the {plain} {col_word} corner"] = (col, row)
            table[f"in the {plain} {col_word}"] = (col, row)
            table[f"in the {other} {col_word} corner"] = (col, row)
    return table


_PLACES = _phrase_table()
# The same phrases, written for people: "a / b" is one word or the other, "[x]" may be left out. A test expands it
# and checks that it names exactly the phrases of _PLACES.
_PLACE_HINT = ("in the centre / center / middle; on the left / right [side]; at the left / right; at / near the "
               "top / bottom; at the top / bottom of the image; in the top / bottom left / right [corner]; in the "
               "upper / lower left / right corner")
_SHAPE_OF = {w: s for s, ws in _SHAPE_WORDS.items() for w in ws}
_SHAPE_OF.update({_PLURAL[w]: s for w, s in list(_SHAPE_OF.items())})
_COLOUR_OF = {w: c for c, ws in _COLOUR_WORDS.items() for w in ws}
_BG_OF = {w: b for b, ws in _BG_WORDS.items() for w in ws}
_COUNT_OF = {w: n for n, ws in _NUMBERS.items() for w in ws}
_MOST_OBJECTS = max(_NUMBERS)  # the largest count the grammar writes: a toy-world scene holds at most that many
_TOO_MANY = {"five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"}
_REL_OF = {w: r for r, ws in _REL_WORDS.items() for w in ws}
_SHAPE_PATTERN = "|".join(sorted(_SHAPE_OF, key=len, reverse=True))  # longest first: "circles" before "circle"
_BACKGROUND_RE = re.compile(
    r"(?:^|\s+)(?:on|against|with)\s+(?:an?\s+)?(" + "|".join(_BG_OF) + r")(?:\s+background)?$")
_NOUN_RE = re.compile(
    r"^(?:an?\s+)?(?:(" + "|".join(SIZE_NAMES) + r")\s+)?(?:(" + "|".join(_COLOUR_OF) + r")\s+)?("
    + _SHAPE_PATTERN + r")(?:\s+(.+))?$")
_BG_COLOUR_OBJECT_RE = re.compile(
    r"^(?:an?\s+|\w+\s+)?(?:(?:" + "|".join(SIZE_NAMES) + r")\s+)?(" + "|".join(_BG_OF) + r")\s+(?:"
    + _SHAPE_PATTERN + r")\b")
_RELATION_RE = re.compile(
    r"\s(" + "|".join(sorted(_REL_OF, key=len, reverse=True)) + r")\s")
_VOCABULARY = (set(SIZE_NAMES) | set(_COLOUR_OF) | set(_BG_OF) | set(_COUNT_OF) | _OTHER_WORDS
               | {w for k in list(_SHAPE_OF) + list(_REL_OF) + list(_PLACES) for w in k.split()})
_EXAMPLES = ('"a red circle", "two blue squares", "a green cross above a pink circle", '
             '"a yellow triangle in the top left corner on a black background"')


class CaptionError(PromptError):
    """Text that the toy world's grammar cannot read; the message says which part and why."""


def _vocabulary_hint(words: list[str]) -> str:
    unknown = [w for w in words if w not in _VOCABULARY]
    if unknown:
        instead = f" (it says {_INSTEAD[unknown[0]]!r})" if unknown[0] in _INSTEAD else ""
        return (f"the toy world does not know the word {unknown[0]!r}{instead}: its colours are "
                f"{', '.join(COLOUR_NAMES)}; its shapes {', '.join(SHAPES)}; its sizes {', '.join(SIZE_NAMES)}; "
                f"its backgrounds {', '.join(BACKGROUND_NAMES)}")
    return f"write it the way the toy world's captions are written, e.g. {_EXAMPLES}"


_LIST_SEP = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")  # between the objects of a list: ", ", " and ", ", and "
_SIDE_UNSAID = re.compile(r"^(next to|beside|near|close to|by)\s+(.+)$")
_SINGULAR = {plural: word for word, plural in _PLURAL.items()}


def _count_and_more(whole: str, first: str, n: int, counted: str, more: str) -> CaptionError:
    """The error for a count with another object after it ("two blue squares and a red circle"), with the same
    scene asked for in the grammar's words where it fits in a toy-world scene (at most 4 objects)."""
    hint = f"ask for the count alone (\"{first} {counted}\")"
    if n + 1 + more.count(" and ") + more.count(",") <= _MOST_OBJECTS:
        m = _NOUN_RE.match(counted)
        one = _with_article(counted[:m.start(3)] + _SINGULAR.get(m.group(3), m.group(3)) + counted[m.end(3):])
        hint += f", or name every object: \"{', '.join([one] * n)} and {more}\""
    return CaptionError(f"{whole!r} counts one kind of object and names another; a toy-world count names one kind "
                        "alone", hint)


def _read_ref(text: str, plural: bool | None, whole: str) -> Ref:
    m = _NOUN_RE.match(text)
    if m is None:
        where = "" if text == whole else f" (in {whole!r})"
        painted = _BG_COLOUR_OBJECT_RE.match(text)
        if painted is not None:  # "a white circle": a background colour asked of an object
            raise CaptionError(f"{painted.group(1)!r} in {whole!r} is a background colour of the toy world, not an "
                               "object's", f"its objects are {', '.join(COLOUR_NAMES)}; its backgrounds "
                               f"{', '.join(BACKGROUND_NAMES)} (e.g. \"a red circle on a {painted.group(1)} "
                               "background\")")
        raise CaptionError(f"cannot read {text!r}{where} as one kind of object, written "
                           f"[a/an] [small/large] [colour] shape [place]", _vocabulary_hint(text.split()))
    size, colour, shape_word, place = m.groups()
    if plural is False and shape_word in _PLURAL.values():
        asked = "the caption asks for one" if re.match(r"(?:an?|one)\s", text) else "no count is given"
        raise CaptionError(f"{shape_word!r} in {whole!r} is plural, but {asked}",
                           f"write a number first (e.g. \"two {colour or 'red'} {shape_word}\") or use the singular")
    col = row = None
    if place is not None:
        if place not in _PLACES:
            side = _SIDE_UNSAID.match(place)
            if side is not None and _NOUN_RE.match(side.group(2)):  # "next to a blue square"
                raise CaptionError(f"{side.group(1)!r} in {whole!r} does not say which side",
                                   "the toy world's relations are above, below, left of and right of, e.g. "
                                   "\"a red circle left of a blue square\"")
            raise CaptionError(f"cannot read the place {place!r} in {whole!r}",
                               f"the toy world's places: {_PLACE_HINT}")
        col, row = _PLACES[place]
    return Ref(_COLOUR_OF[colour] if colour else None, _SHAPE_OF[shape_word], size, col, row)


def _plain(text: str) -> str:
    """``text`` as the grammar reads it: lower case, single spaces, no full stop or spaces at either end."""
    return " ".join(text.lower().split()).strip(" .")


def parse_caption(text: str) -> Spec:
    """The meaning of a toy-world caption: the inverse of :func:`spec_text`, paraphrases included, and only the
    grammar's own words (the toy CLIP knows no others; common synonyms are refused with the word to use).

    Reads single objects with size, colour and place ("a large red circle on the left"), lists of objects
    ("a blue square and a yellow triangle"), relations ("a green cross above a pink circle"), counts
    ("three orange squares") and a trailing background ("on a black background"). Raises :class:`CaptionError`
    naming the part it cannot read.
    """
    whole = _plain(text)
    if not whole:
        raise CaptionError("the caption is empty", f"write one, e.g. {_EXAMPLES}")
    if "|" in whole or "^" in whole or re.search(r":\s*-?[\d.]", whole):
        raise CaptionError(f"{whole!r} holds prompt syntax ('|', ':WEIGHT' or '^'), which is no part of a toy-world "
                           "caption", "give one caption, e.g. \"a red circle above a blue square\"; weights and story "
                           "phases work in pixgen generate, but the toy eval and readers judge one caption")
    colour_bg = re.search(r"\b(?:on|against) (?:an? )?(" + "|".join(COLOUR_NAMES) + r") background$", whole)
    if colour_bg is not None:
        raise CaptionError(f"{whole!r} asks for a {colour_bg.group(1)} background; toy-world backgrounds are "
                           f"{', '.join(BACKGROUND_NAMES[:-1])} or {BACKGROUND_NAMES[-1]}",
                           "e.g. \"a red circle on a black background\"")
    body, background = whole, None
    m = _BACKGROUND_RE.search(body)
    if m is not None:
        body, background = body[: m.start()].strip(), _BG_OF[m.group(1)]
        if not body:
            raise CaptionError(f"{whole!r} names a background but no object", "e.g. \"a red circle on a black background\"")
    first, _, rest = body.partition(" ")
    if first in _TOO_MANY or (first.isdigit() and int(first) > _MOST_OBJECTS):
        raise CaptionError(f"{whole!r} counts {first} objects; a toy-world scene holds at most {_MOST_OBJECTS}",
                           "ask for two, three or four, e.g. \"three red circles\"")
    counted, *more = _LIST_SEP.split(rest, maxsplit=1)
    if _COUNT_OF.get(first) == 1:  # "one red circle [and / above ...]" reads as "a red circle ..."
        first, body = "", _with_article(rest)
    if first in _COUNT_OF:
        n = _COUNT_OF[first]
        if more and _NOUN_RE.match(counted):  # "two blue squares and a red circle"
            raise _count_and_more(whole, first, n, counted, more[0])
        return Spec("count", (_read_ref(rest, True, whole),), count=n, background=background)
    m = _RELATION_RE.search(body)
    if m is not None:
        sides = body[: m.start()].strip(), body[m.end():].strip()
        for side in sides:  # "a red circle above a blue square and a green triangle"
            listed = [p for p in _LIST_SEP.split(side) if p]
            if len(listed) > 1 and all(_NOUN_RE.match(p) for p in listed):
                raise CaptionError(f"{whole!r} puts {len(listed)} objects on one side of {m.group(1)!r}; a toy-world "
                                   "relation names one object on each side",
                                   f"e.g. \"a red circle {m.group(1)} a blue square\", or name the objects as a list "
                                   "without a relation: \"a red circle, a blue square and a green triangle\"")
        a = _read_ref(sides[0], False, whole)
        b = _read_ref(sides[1], False, whole)
        return Spec("relation", (a, b), relation=_REL_OF[m.group(1)], background=background)
    parts = [p for p in _LIST_SEP.split(body) if p]
    if len(parts) > _MOST_OBJECTS:
        raise CaptionError(f"{whole!r} names {len(parts)} objects; a toy-world scene holds at most {_MOST_OBJECTS}",
                           "name fewer objects")
    return Spec("objects", tuple(_read_ref(p, False, whole) for p in parts), background=background)


# Common ways of saying what a toy-world caption says, each with the grammar's way (the synonyms above among them),
# applied in this order to the lower-cased text by :func:`reword_caption`.
_REL_PATTERN = "|".join(sorted(_REL_OF, key=len, reverse=True))
_REWORDINGS = (
    (re.compile(r"[\s.!?;:,]+$"), ""),  # closing punctuation
    # CLIP's prompt templates: "a photo of a red circle", "an image of two blue squares"
    (re.compile(r"^(?:an?|the)\s+(?:(?:close-up|simple|flat)\s+)?(?:photo|photograph|picture|image|drawing|painting|"
                r"illustration|render|rendering|sketch)\s+(?:of|showing|with)\s+"), ""),
    (re.compile(r"(?<=[a-z])-(?=[a-z])"), " "),  # "top-left"
    (re.compile(r"\b(" + "|".join(_SYNONYMS) + r")\b"), lambda m: _SYNONYMS[m.group(1)]),
    # the place before the object: "a top-left red circle", "a small centred blue square" -> after it
    (re.compile(r"\b(an?|one)\s+((?:small|large)\s+)?(?:(top|bottom) (left|right)|(cent(?:ere|re)d))\s+("
                r"(?:(?:small|large)\s+)?(?:(?:" + "|".join(COLOUR_NAMES) + r")\s+)?(?:" + _SHAPE_PATTERN + r"))\b"),
     lambda m: f"{m.group(1)} {m.group(2) or ''}{m.group(6)} "
               + ("in the centre" if m.group(5) else f"in the {m.group(3)} {m.group(4)} corner")),
    (re.compile(r"\b(" + "|".join(_BG_OF) + r")\s+canvas\b"), r"\1 background"),  # "on a white canvas"
    # the background first: "a black background with a red circle" -> "a red circle on a black background"
    (re.compile(r"^(?:an?\s+)?(" + "|".join(_BG_OF) + r")\s+background\s+(?:with|showing|holding|and)\s+(.+)$"),
     r"\2 on a \1 background"),
    # the background before the rest: "a red circle on a black background in the centre" -> the grammar's order
    (re.compile(r"^(.+?)\s+((?:on|against)\s+(?:an?\s+)?(?:" + "|".join(_BG_OF) + r")\s+background)\s+(.+)$"),
     r"\1 \3 \2"),
    (re.compile(r"\ba pair of\b"), "two"),
    (re.compile(r"\bplus\b(?!\s+signs?\b)"), "plus sign"),
    (re.compile(r"\bpluses\b"), "plus signs"),
    (re.compile(r"\b(?:on top of|atop)\b"), "above"),
    (re.compile(r"\bin front of (?=an? (?:" + "|".join(_BG_OF) + r") background\b)"), "on "),
    # "a red square with a blue circle"; "with a black background" stays the background
    (re.compile(r"\bwith\s+(?=(?:an?|one)\s+(?!(?:" + "|".join(_BG_OF) + r")\s+background\b))"), "and "),
    (re.compile(r"\bof the (?:picture|canvas|frame)\b"), "of the image"),
    (re.compile(r"(?<!\btop)(?<!\bbottom) of the image\b"), ""),  # the grammar has "at the top of the image"
    (re.compile(r",?\s+cent(?:ere|re)d\b"), " in the centre"),
    (re.compile(r"\b(?:at|on) the (top|bottom) (left|right)\b(?: corner)?"), r"in the \1 \2 corner"),
    (re.compile(r"(?<!the )\b(?:in )?(top|bottom) (left|right)\b(?: corner)?"), r"in the \1 \2 corner"),  # bare
    (re.compile(r"\b(?:on the|at) (top|bottom)\b"), r"at the \1"),
    (re.compile(r",\s*(?=(?:in|at|on) the (?:top|bottom|left|right|centre|center|middle)\b)"), " "),  # "..., top-left"
    (re.compile(r"\bat the (left|right) side\b"), r"on the \1 side"),
    (re.compile(r"\bat the (centre|center|middle)\b"), r"in the \1"),
    # the relation, not the place "on the left [side]"
    (re.compile(r"\b(?:on|at|to) the (left|right)(?: hand)?(?: side)? of\b"), r"to the \1 of"),
    # "in the middle of a black background": the place, then the background
    (re.compile(r"\bin the (centre|center|middle) of (?=an? (?:" + "|".join(_BG_OF) + r") background$)"), r"in the \1 on "),
    (re.compile(r"\b(?:directly|just|immediately|straight)\s+(?=(?:" + _REL_PATTERN + r")\s)"), ""),
    # "the red circle is above ...", "a red circle which is above ..."
    (re.compile(r"\s+(?:(?:which|that)\s+)?(?:is|are)\s+(?=(?:" + _REL_PATTERN + r")\s)"), " "),
    (re.compile(r"\b(?:a single|just one|only one)\b"), "one"),
    (re.compile(r"\b(?:exactly|precisely|just|only)\s+(?=(?:" + "|".join(w for ws in _NUMBERS.values() for w in ws)
                + r")\b)"), ""),
    (re.compile(r"(^|\s)the\s+(?=(?:(?:small|large)\s+)?(?:(?:" + "|".join(COLOUR_NAMES) + r")\s+)?(?:"
                + _SHAPE_PATTERN + r")\b)"), r"\1a "),
    (re.compile(r"\b(?:a|an)\s+(?=(\w))"), lambda m: "an " if m.group(1) in "aeiou" else "a "),
)


def reword_caption(text: str) -> str | None:
    """``text`` said in the toy world's own words, when it is not a caption as written but only common synonyms and
    forms keep it from being one ("a big red circle" -> "a large red circle", "a red circle on top of a blue square"
    -> "a red circle above a blue square", "the green cross is left of the pink circle", "a blue square at the
    bottom right", "a red circle in the middle of the image", "a photo of a red circle", "A red circle!");
    ``None`` when ``text`` is a caption already, or when rewording does not make it one. The toy CLIP was trained on
    its grammar's words alone and reads other words poorly, so generation with the toy model encodes the reworded
    text (and says so); the meaning judged is the same.
    """
    try:
        return read_caption(text)[1]
    except CaptionError:
        return None


def read_caption(text: str) -> tuple[Spec, str | None]:
    """The meaning of ``text`` and, when it is a caption only in the toy world's own words, those words
    (:func:`reword_caption`); else ``None``. Raises :class:`CaptionError` for text that is no caption either way,
    saying what part cannot be read once the synonyms are put in the world's words (so "a big red circle next to a
    box" is refused for "next to", not for "big")."""
    try:
        spec = parse_caption(text)
        # read without its closing full stop, which the toy CLIP never saw and would encode
        return spec, (_plain(text) if text.strip().endswith(".") else None)
    except CaptionError as e:
        error = e
    words = plain = _plain(text)
    for pattern, replacement in _REWORDINGS:
        words = pattern.sub(replacement, words)
    try:
        return parse_caption(words), words
    except CaptionError as e:
        if words == plain:  # nothing was reworded: the error as written says it best
            raise error from None
        raise CaptionError(f"even in the toy world's own words ({words!r}): {e.message}", e.hint) from None


# -------------------------------------------------------------------------------------- hard negatives

def _other(rng: np.random.Generator, options, current):
    choices = [o for o in options if o != current]
    return choices[int(rng.integers(len(choices)))]


def _change_ref(rng: np.random.Generator, ref: Ref, what: str) -> Ref | None:
    if what == "colour" and ref.colour is not None:
        return replace(ref, colour=_other(rng, COLOUR_NAMES, ref.colour))
    if what == "shape":
        return replace(ref, shape=_other(rng, SHAPES, ref.shape))
    if what == "size" and ref.size is not None:
        return replace(ref, size=_other(rng, SIZE_NAMES, ref.size))
    if what == "position" and (ref.col is not None or ref.row is not None):
        col, row = ref.col, ref.row
        if col is not None and row is not None:  # move to another named cell (corner or centre)
            cells = [(0, 0), (2, 0), (0, 2), (2, 2), (1, 1)]
            col, row = _other(rng, cells, (col, row))
        elif col is not None:
            col = 2 - col
        else:
            row = 2 - (row or 0)
        return replace(ref, col=col, row=row)
    return None


def hard_negative(spec: Spec, scene: Scene, rng: np.random.Generator, tries: int = 12) -> tuple[Spec, str] | None:
    """A caption meaning that differs from ``spec`` in one attribute and is false of ``scene``.

    Returns (negative spec, what changed) or None when no such change is found.
    """
    for _ in range(tries):
        options = ["colour", "shape"]
        if spec.background is not None:
            options.append("background")
        if spec.kind == "relation":
            options += ["relation"] * 3
        if spec.kind == "count":
            options += ["count"] * 3
        if spec.kind == "objects" and len(spec.refs) >= 2:
            options += ["swap colours"] * 2
        if any(r.size is not None for r in spec.refs):
            options.append("size")
        if any(r.col is not None or r.row is not None for r in spec.refs):
            options += ["position"] * 2
        what = options[int(rng.integers(len(options)))]
        neg: Spec | None = None
        if what == "background":
            neg = replace(spec, background=_other(rng, BACKGROUND_NAMES, spec.background))
        elif what == "relation":
            neg = replace(spec, relation=_OPPOSITE[spec.relation or "above"])
        elif what == "count":
            neg = replace(spec, count=_other(rng, (1, 2, 3, 4), spec.count))
        elif what == "swap colours":
            i, j = rng.choice(len(spec.refs), size=2, replace=False)
            a, b = spec.refs[i], spec.refs[j]
            if a.colour != b.colour:
                refs = list(spec.refs)
                refs[i], refs[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
                neg = replace(spec, refs=tuple(refs))
        else:
            i = int(rng.integers(len(spec.refs)))
            new = _change_ref(rng, spec.refs[i], what)
            if new is not None:
                refs = list(spec.refs)
                refs[i] = new
                neg = replace(spec, refs=tuple(refs))
        if neg is not None and neg != spec and not holds(neg, scene):
            return neg, what
    return None


# ------------------------------------------------------------------------------ scenes with captions

_CELLS = [(c, r) for r in range(3) for c in range(3)]


def _random_ref(rng: np.random.Generator, size_p: float = 0.3) -> Ref:
    return Ref(
        colour=COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))],
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        size=SIZE_NAMES[int(rng.integers(2))] if rng.random() < size_p else None,
    )


def random_position(rng: np.random.Generator, ref: Ref) -> Ref:
    """``ref`` with a random named place: a column, a row, a corner or the centre."""
    kind = int(rng.integers(4))
    if kind == 0:
        return replace(ref, col=int(rng.choice([0, 2])))
    if kind == 1:
        return replace(ref, row=int(rng.choice([0, 2])))
    if kind == 2:
        return replace(ref, col=int(rng.choice([0, 2])), row=int(rng.choice([0, 2])))
    return replace(ref, col=1, row=1)


def build_scene(rng: np.random.Generator, refs: list[Ref], background: str, p_large: float) -> Scene | None:
    """Place one object per ref (cells consistent with its position; a size or colour it leaves open drawn, large
    with chance ``p_large``) on ``background``, or None if they do not fit. Whether the result satisfies a caption's
    relations is not checked: :func:`scene_for` does that."""
    objs: list[Obj] = []
    used: set[tuple[int, int]] = set()
    for ref in refs:
        cells = [cr for cr in _CELLS if cr not in used
                 and (ref.col is None or cr[0] == ref.col) and (ref.row is None or cr[1] == ref.row)]
        if not cells:
            return None
        col, row = cells[int(rng.integers(len(cells)))]
        size = ref.size or ("large" if rng.random() < p_large else "small")
        colour = ref.colour or COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
        obj = place_object(rng, ref.shape, colour, size, col, row, objs)
        if obj is None and ref.size is None and size == "large":
            obj = place_object(rng, ref.shape, colour, "small", col, row, objs)
        if obj is None:
            return None
        objs.append(obj)
        used.add((col, row))
    order = rng.permutation(len(objs))
    return Scene(background, [objs[i] for i in order])


def sample_spec(rng: np.random.Generator, kind: str) -> Spec:
    """A random caption meaning of one kind (a key of ``PAIR_KINDS`` or "position")."""
    bg = BACKGROUND_NAMES[int(rng.integers(3))] if rng.random() < 0.35 else None
    if kind == "single":
        ref = _random_ref(rng)
        if rng.random() < 0.4:
            ref = random_position(rng, ref)
        return Spec("objects", (ref,), background=bg)
    if kind == "position":  # a single object that always has a position (only drawn when asked for)
        return Spec("objects", (random_position(rng, _random_ref(rng)),), background=bg)
    if kind in ("two", "multi"):
        n = 2 if kind == "two" else int(rng.integers(3, 5))
        refs: list[Ref] = []
        while len(refs) < n:
            r = _random_ref(rng, size_p=0.15 if n == 2 else 0.0)
            if all((r.colour, r.shape) != (q.colour, q.shape) for q in refs):
                refs.append(r)
        return Spec("objects", tuple(refs), background=bg)
    if kind == "relation":
        a = _random_ref(rng, size_p=0.1)
        b = _random_ref(rng, size_p=0.1)
        while (b.colour, b.shape) == (a.colour, a.shape):
            b = _random_ref(rng, size_p=0.1)
        return Spec("relation", (a, b), relation=RELATIONS[int(rng.integers(4))], background=bg)
    if kind == "count":
        ref = _random_ref(rng, size_p=0.1)
        return Spec("count", (ref,), count=int(rng.integers(2, 5)), background=bg)
    raise ValueError(kind)


PAIR_KINDS = {"single": 0.3, "two": 0.2, "relation": 0.22, "count": 0.18, "multi": 0.1}
# Kinds a training run may weigh in (``pixgen toy train clip --kinds``); "position" is a single object whose
# caption always names its place, and is not in the default mix.
PAIR_KIND_NAMES = (*PAIR_KINDS, "position")


def sample_pair(rng: np.random.Generator, kind: str | None = None,
                weights: dict[str, float] | None = None) -> tuple[Scene, Spec]:
    """A random scene and a true caption meaning for it (kinds weighted by ``weights``, default ``PAIR_KINDS``)."""
    table = PAIR_KINDS if weights is None else weights
    names = list(table)
    probs = np.array([table[k] for k in names], dtype=float)
    while True:
        k = kind or names[int(rng.choice(len(names), p=probs / probs.sum()))]
        spec = sample_spec(rng, k)
        scene = scene_for(spec, rng)
        if scene is not None:
            return scene, spec


def scene_for(spec: Spec, rng: np.random.Generator, tries: int = 30) -> Scene | None:
    """A random scene of which ``spec`` is true and which holds only what it names (the background drawn when it
    names none, unnamed sizes mostly small), or None when ``tries`` random layouts all fail (too many large objects
    for their places, say)."""
    background = spec.background or BACKGROUND_NAMES[int(rng.integers(3))]
    if spec.kind == "count":
        refs = [replace(spec.refs[0]) for _ in range(spec.count or 1)]
        p_large = 0.15
    elif spec.kind == "relation":
        refs = list(spec.refs)
        p_large = 0.3
    else:
        refs = list(spec.refs)
        p_large = 0.4 if len(refs) == 1 else 0.25
    for _ in range(tries):
        scene = build_scene(rng, refs, background, p_large)
        if scene is not None and holds(spec, scene):
            return scene
    return None
