"""Caption grammar, truth of captions on scenes, and hard negatives that change exactly one thing."""
from dataclasses import fields

import numpy as np
import pytest

from pixgen.toy.captions import CaptionError, Ref, Spec, hard_negative, holds, sample_pair, spec_text
from pixgen.toy.world import Obj, Scene


def _obj(colour, shape, col, row, size="small"):
    return Obj(shape, colour, size, col, row, 11.0 + 21 * col, 11.0 + 21 * row, 12.0)


def test_canonical_texts():
    assert spec_text(Spec("objects", (Ref("red", "circle"),))) == "a red circle"
    rel = Spec("relation", (Ref("green", "cross"), Ref("pink", "circle")), relation="above")
    assert spec_text(rel) == "a green cross above a pink circle"
    assert spec_text(Spec("count", (Ref("orange", "square"),), count=3)) == "three orange squares"
    pos = Spec("objects", (Ref("blue", "triangle", None, 2, 2),), background="black")
    assert spec_text(pos) == "a blue triangle in the bottom right corner on a black background"
    two = Spec("objects", (Ref("blue", "square"), Ref("yellow", "triangle")))
    assert spec_text(two) == "a blue square and a yellow triangle"


def test_holds_relation_count_and_binding():
    scene = Scene("white", [_obj("green", "cross", 1, 0), _obj("pink", "circle", 1, 2), _obj("pink", "circle", 0, 1)])
    above = Spec("relation", (Ref("green", "cross"), Ref("pink", "circle")), relation="above")
    assert holds(above, scene)
    assert not holds(Spec("relation", above.refs, relation="below"), scene)
    assert holds(Spec("count", (Ref("pink", "circle"),), count=2), scene)
    assert not holds(Spec("count", (Ref("pink", "circle"),), count=3), scene)
    assert holds(Spec("objects", (Ref("green", "cross"), Ref("pink", "circle"))), scene)
    assert not holds(Spec("objects", (Ref("pink", "cross"), Ref("green", "circle"))), scene)
    assert not holds(Spec("objects", (Ref("green", "cross"),), background="black"), scene)
    assert holds(Spec("objects", (Ref("green", "cross", None, None, 0),)), scene)
    assert not holds(Spec("objects", (Ref("green", "cross", None, 0, None),)), scene)


def _differences(a: Spec, b: Spec) -> int:
    n = sum(getattr(a, f.name) != getattr(b, f.name) for f in fields(Spec) if f.name != "refs")
    def attrs(r: Ref) -> tuple:  # colour, shape, size, position (one attribute: the named place)
        return (r.colour, r.shape, r.size, (r.col, r.row))

    ref_diffs = [sum(u != v for u, v in zip(attrs(x), attrs(y))) for x, y in zip(a.refs, b.refs)]
    changed = [d for d in ref_diffs if d]
    if len(changed) == 2 and all(x.colour != y.colour for x, y in zip(a.refs, b.refs) if x != y):
        return n + 1  # two colours swapped: one change of attribution
    return n + sum(changed)


def test_pairs_are_true_and_hard_negatives_false_and_one_change_away():
    rng = np.random.default_rng(0)
    kinds_seen = set()
    for _ in range(400):
        scene, spec = sample_pair(rng)
        assert holds(spec, scene)
        assert 1 <= len(scene.objects) <= 4
        neg = hard_negative(spec, scene, rng)
        if neg is None:
            continue
        neg_spec, what = neg
        kinds_seen.add(what)
        assert not holds(neg_spec, scene)
        assert _differences(spec, neg_spec) == 1, (spec, neg_spec, what)
    assert {"colour", "shape", "relation", "count", "swap colours", "position", "background"} <= kinds_seen


def test_paraphrases_keep_the_meaning_words():
    rng = np.random.default_rng(3)
    spec = Spec("relation", (Ref("green", "cross"), Ref("pink", "circle")), relation="left of")
    texts = {spec_text(spec, rng) for _ in range(30)}
    assert len(texts) > 1
    assert all("green" in t and "pink" in t and "left" in t for t in texts)


def test_kind_weights_choose_which_captions_are_drawn():
    rng = np.random.default_rng(3)
    for _ in range(40):
        scene, spec = sample_pair(rng, weights={"position": 1.0})
        assert spec.kind == "objects" and len(spec.refs) == 1
        assert spec.refs[0].col is not None or spec.refs[0].row is not None  # always names a place
        assert holds(spec, scene)
    counts = [sample_pair(rng, weights={"count": 0.0, "relation": 2.0})[1].kind for _ in range(30)]
    assert set(counts) == {"relation"}


def test_make_batch_draws_its_random_pairs_with_the_kind_weights():
    from pixgen.toy.train_clip import make_batch

    _, _, texts, specs, owners = make_batch(np.random.default_rng(0), 12, 1, kinds={"count": 1.0})
    assert all(s.kind == "count" for s in specs[:12])
    assert len(texts) == len(specs) == len(owners)


def test_kinds_option_is_checked_and_overrides_only_the_named_kinds():
    from pixgen.errors import PixgenError
    from pixgen.toy.captions import PAIR_KINDS
    from pixgen.toy.cli import parse_kinds

    weights = parse_kinds("relation=0.5, position=0.25")
    assert weights["relation"] == 0.5 and weights["position"] == 0.25 and weights["count"] == PAIR_KINDS["count"]
    for bad, says in (("colour=1", "unknown caption kind"), ("relation=lots", "no numeric weight"),
                      ("relation=-1", ">= 0"),
                      ("single=0,two=0,relation=0,count=0,multi=0", "every caption kind has weight 0")):
        with pytest.raises(PixgenError, match=says):
            parse_kinds(bad)


def test_parse_caption_inverts_every_paraphrase_the_grammar_writes():
    from pixgen.toy.captions import PAIR_KIND_NAMES, parse_caption, sample_spec

    rng = np.random.default_rng(11)
    for i in range(1200):
        spec = sample_spec(rng, PAIR_KIND_NAMES[i % len(PAIR_KIND_NAMES)])
        text = spec_text(spec, rng if i % 3 else None)
        assert parse_caption(text) == spec, text


def test_parse_caption_reads_the_grammars_words_and_only_those():
    from pixgen.toy.captions import _PLACES, _Chooser, _position_text, parse_caption

    assert parse_caption("  A large Cyan box in the upper right corner against a grey background. ") == Spec(
        "objects", (Ref("cyan", "square", "large", 2, 0),), background="gray")
    assert parse_caption("4 purple plus signs") == Spec("count", (Ref("purple", "cross"),), count=4)
    assert parse_caption("a pink cross beneath a small cyan circle") == Spec(
        "relation", (Ref("pink", "cross"), Ref("cyan", "circle", "small")), relation="below")
    assert parse_caption("a red circle, a blue square and a green triangle").refs == (
        Ref("red", "circle"), Ref("blue", "square"), Ref("green", "triangle"))
    # the place phrases it reads are exactly those the grammar writes: the toy CLIP knows no others
    rng, written = np.random.default_rng(0), set()
    for col in (0, 1, 2, None):
        for row in (0, 1, 2, None):
            written |= {_position_text(Ref("red", "circle", None, col, row), _Chooser(rng)) for _ in range(60)}
    assert set(_PLACES) == written - {""}


def test_parse_caption_says_which_part_it_cannot_read_and_how_to_write_it():
    from pixgen.errors import PromptError
    from pixgen.toy.captions import parse_caption

    cases = {"a red hexagon": "'hexagon'", "a red circle somewhere": "place 'somewhere'",
             "a big red circle": "'big' (it says 'large')", "a red circle in the upper left": "place",
             "a red circles": "plural", "on a black background": "no object", "": "empty",
             "a red circle, a blue circle, a red square, a cyan cross and a pink disc": "at most 4"}
    for text, says in cases.items():
        try:
            parse_caption(text)
        except PromptError as e:
            assert says in str(e), (text, str(e))
            assert e.hint, text  # every refusal comes with a way to fix it
        else:
            raise AssertionError(f"{text!r} was read")


def test_the_place_hint_names_exactly_the_places_the_grammar_reads():
    from itertools import product

    from pixgen.toy.captions import _PLACE_HINT, _PLACES

    def expand(phrase: str) -> set[str]:  # "a / b" is one word or the other; "[x]" may be left out
        slots, words = [], phrase.split()
        while words:
            w = words.pop(0)
            if w.startswith("["):
                slots.append([w.strip("[]"), ""])
                continue
            options = [w]
            while words[:1] == ["/"]:
                options.append(words[1])
                words = words[2:]
            slots.append(options)
        return {" ".join(w for w in choice if w) for choice in product(*slots)}

    named = set().union(*(expand(p.strip()) for p in _PLACE_HINT.split(";")))
    assert named == set(_PLACES)


def test_reword_caption_leaves_every_caption_the_grammar_writes_alone():
    from pixgen.toy.captions import PAIR_KIND_NAMES, reword_caption, sample_spec

    rng = np.random.default_rng(12)
    for i in range(600):
        text = spec_text(sample_spec(rng, PAIR_KIND_NAMES[i % len(PAIR_KIND_NAMES)]), rng if i % 3 else None)
        assert reword_caption(text) is None, text
        assert reword_caption(text.upper()) is None, text  # a caption already, as written (CLIP lower-cases)
        assert reword_caption(text.upper() + ".") == text, text  # read without the stop the CLIP would encode


def test_reword_caption_puts_common_synonyms_and_forms_in_the_grammars_words():
    from pixgen.toy.captions import parse_caption, reword_caption

    cases = {
        "a big red circle": "a large red circle",
        "A tiny violet square on the right!": "a small purple square on the right",
        "two huge magenta pluses": "two large pink plus signs",
        "a little turquoise plus sign": "a small cyan plus sign",
        "a red circle on top of a blue square": "a red circle above a blue square",
        "the green cross is to the left of the orange circle": "a green cross to the left of an orange circle",
        "the orange box is underneath the big yellow disc": "an orange box beneath a large yellow disc",
        "a red circle at the bottom right": "a red circle in the bottom right corner",
        "A red circle.": "a red circle",  # the toy CLIP never saw a full stop
        # the place said before the object, or after a comma
        "a top-left red circle": "a red circle in the top left corner",
        "a small bottom-right blue square": "a small blue square in the bottom right corner",
        "a centered red circle": "a red circle in the centre",
        "a centred big green cross on a black background": "a large green cross in the centre on a black background",
        "a red circle, top-left": "a red circle in the top left corner",
        "a red circle in the top-left corner": "a red circle in the top left corner",
        "a red circle in the upper right": "a red circle in the top right",
        "a pink triangle at the lower-left on a black background": "a pink triangle in the bottom left corner on a black background",
        "the big red circle on the left": "a large red circle on the left",
        "a red circle in the middle of the image": "a red circle in the middle",
        "a big red circle at the top of the picture": "a large red circle at the top of the image",
        "a tiny red square at the bottom of the image": "a small red square at the bottom of the image",
        "a red circle, centered": "a red circle in the centre",
        "two red circles on the bottom": "two red circles at the bottom",
        "a red circle at the left side": "a red circle on the left side",
        "a red circle at the centre": "a red circle in the centre",
        "a blue disk top right": "a blue disc in the top right corner",
        "two red circles in bottom left": "two red circles in the bottom left corner",
        "a red circle on the left of a blue square": "a red circle to the left of a blue square",
        "the red circle which is directly above the blue square": "a red circle above a blue square",
        "a red circle that is just right of a blue square": "a red circle right of a blue square",
        "a single red circle": "one red circle",
        "exactly three green crosses at the top": "three green crosses at the top",
        "a red square with a blue circle": "a red square and a blue circle",
        "a red circle on a white backdrop": "a red circle on a white background",
        "a red circle in front of a black background": "a red circle on a black background",
        "a photo of a red circle": "a red circle",
        "An image of two big blue squares.": "two large blue squares",
        "a simple drawing of a green cross above a pink circle": "a green cross above a pink circle",
        "a red circle on a white canvas": "a red circle on a white background",
        "a pair of red circles": "two red circles",
        "a red circle at the left of a blue square": "a red circle to the left of a blue square",
        "a red circle to the right hand side of a blue square": "a red circle to the right of a blue square",
        "a red circle on the left side of a blue square": "a red circle to the left of a blue square",
        "a red circle on the left side of the image": "a red circle on the left side",
        "a large green triangle in the middle of a black background":
            "a large green triangle in the middle on a black background",
        "a white background with a red circle": "a red circle on a white background",
        "a black backdrop showing two blue squares": "two blue squares on a black background",
        "a pink circle on a gray background in the centre": "a pink circle in the centre on a gray background",
        "a red circle on a white background above a blue square":
            "a red circle above a blue square on a white background",
        "a red circle on a black background and a blue square": "a red circle and a blue square on a black background",
    }
    for text, words in cases.items():
        assert reword_caption(text) == words, text
        assert parse_caption(words)  # a caption of the grammar


def test_reword_caption_gives_up_where_no_rewording_makes_a_caption():
    from pixgen.toy.captions import reword_caption

    # no world word for "next to", a rectangle is no square, and a castle is not in the world at all
    for text in ("a red circle next to a blue square", "a red rectangle", "a castle at dusk", "a big red hexagon",
                 "", "two red circles and a blue square", "a red circle in the top middle", "a red circle on the top of"):
        assert reword_caption(text) is None, text


def test_a_count_above_four_says_the_world_holds_at_most_four():
    from pixgen.toy.captions import CaptionError, read_caption

    for text in ("5 red circles", "five red circles", "a photo of twelve blue squares"):
        with pytest.raises(CaptionError, match="holds at most 4") as info:
            read_caption(text)
        assert "three" in info.value.hint


def test_read_caption_names_what_is_still_wrong_once_synonyms_are_in_the_worlds_words():
    from pixgen.toy.captions import CaptionError, read_caption

    assert read_caption("a red circle") == (Spec("objects", (Ref("red", "circle"),)), None)
    spec, words = read_caption("A big red circle!")
    assert words == "a large red circle" and spec.refs == (Ref("red", "circle", "large"),)
    # "big" would be fine; "next to" is what no rewording mends, and the error says so
    with pytest.raises(CaptionError, match="own words .'a large red circle next to a blue square'.*'next to' in"
                                           ".* does not say which side") as info:
        read_caption("a big red circle next to a blue square")
    assert "left of" in info.value.hint
    with pytest.raises(CaptionError, match="the word 'castle'") as info:  # nothing reworded: the plain error
        read_caption("a castle")
    assert "own words" not in str(info.value)


def test_a_background_after_with_stays_the_background_and_one_reads_as_a():
    from pixgen.toy.captions import parse_caption, read_caption

    assert read_caption("a red circle with a black background") == (
        Spec("objects", (Ref("red", "circle"),), background="black"), None)
    assert parse_caption("one red circle and a blue square").refs == (Ref("red", "circle"), Ref("blue", "square"))
    assert parse_caption("one orange cross above a blue square") == Spec(
        "relation", (Ref("orange", "cross"), Ref("blue", "square")), relation="above")


def test_a_count_with_another_object_says_so_and_offers_the_same_scene_in_the_grammars_words():
    from pixgen.toy.captions import CaptionError, parse_caption

    with pytest.raises(CaptionError, match="counts one kind of object and names another") as info:
        parse_caption("two orange squares, a blue circle")
    offered = info.value.hint.split('name every object: "')[1].rstrip('"')
    assert offered == "an orange square, an orange square and a blue circle"
    assert parse_caption(offered).refs == (Ref("orange", "square"),) * 2 + (Ref("blue", "circle"),)
    with pytest.raises(CaptionError) as info:  # a place after the counted shape stays with each of them
        parse_caption("two blue squares at the top and a red circle")
    offered = info.value.hint.split('name every object: "')[1].rstrip('"')
    assert parse_caption(offered).refs == (Ref("blue", "square", None, None, 0),) * 2 + (Ref("red", "circle"),)
    with pytest.raises(CaptionError) as info:  # five objects do not fit a scene: only the count alone is offered
        parse_caption("four red circles and a blue square")
    assert '"four red circles"' in info.value.hint and "every object" not in info.value.hint


def test_a_background_colour_asked_of_an_object_is_named_as_such():
    from pixgen.toy.captions import CaptionError, read_caption

    for text, word in (("a white circle", "white"), ("two grey crosses", "grey"),
                       ("a red circle above a large black square", "black")):
        with pytest.raises(CaptionError, match=f"'{word}' in .* is a background colour") as info:
            read_caption(text)
        assert "red, green" in info.value.hint
    with pytest.raises(CaptionError, match="does not know the word 'whiteish'"):  # not a world word at all
        read_caption("a whiteish circle")


def test_a_relation_with_a_list_on_one_side_says_a_relation_names_one_object_each_side():
    from pixgen.toy.captions import CaptionError, read_caption

    for text in ("a red circle above a blue square and a green triangle",
                 "a red circle and a yellow cross left of a blue square"):
        with pytest.raises(CaptionError, match="2 objects on one side of") as info:
            read_caption(text)
        assert "without a relation" in info.value.hint
    assert read_caption("a red circle in the top left corner above a blue square")[0].kind == "relation"


@pytest.mark.parametrize("caption, says", [
    ("a red circle on a purple background", "toy-world backgrounds are white, black or gray"),
    ("a red circle | a blue square:0.5", "prompt syntax"),
    ("a red circle:2", "prompt syntax"),
])
def test_captions_outside_the_world_say_what_is_outside_it(caption, says):
    from pixgen.toy.captions import read_caption

    with pytest.raises(CaptionError, match=says):
        read_caption(caption)
