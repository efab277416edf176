import math

import pytest

from pixgen.errors import PromptError
from pixgen.prompts import Prompt, parse_prompt, parse_story


def test_weights_and_stops_parse_from_the_right():
    terms = parse_prompt("a castle | fog:0.5 | blurry:-1 | gold:1:0.3")
    assert terms == [Prompt("a castle", 1.0, -math.inf), Prompt("fog", 0.5, -math.inf),
                     Prompt("blurry", -1.0, -math.inf), Prompt("gold", 1.0, 0.3)]


def test_colons_inside_text_stay_text():
    assert parse_prompt("a photo: dusk")[0] == Prompt("a photo: dusk")
    assert parse_prompt("ratio: 3 cats:2")[0] == Prompt("ratio: 3 cats", 2.0)


def test_windows_paths_keep_their_drive_colon():
    assert parse_prompt(r"C:\images\cat.png:0.5")[0] == Prompt(r"C:\images\cat.png", 0.5)
    assert parse_prompt(r"C:\images\cat.png")[0] == Prompt(r"C:\images\cat.png")


def test_story_phases_split_on_caret():
    phases = parse_story("a seed ^ a tree:2")
    assert [[t.text for t in p] for p in phases] == [["a seed"], ["a tree"]]
    assert phases[1][0].weight == 2.0


@pytest.mark.parametrize("source, fragment", [
    ("fog:0.5x", "weight '0.5x' is not a number"),
    ("gold:1:0.3y", "stop '0.3y' is not a number"),
    ("gold:1:high", "stop 'high' is not a number"),
    ("fog:", "weight '' is not a number"),
    ("fog:nan", "not a finite number"),
    ("a | | b", "empty term"),
    (":0.5", "no text"),
])
def test_malformed_terms_point_at_the_bad_part(source, fragment):
    with pytest.raises(PromptError) as info:
        parse_prompt(source)
    message = str(info.value)
    assert fragment in message
    lines = message.splitlines()
    pointer = next(line for line in lines if set(line.strip()) == {"^"})
    assert source in lines[lines.index(pointer) - 1]


def test_pointer_marks_the_offending_term():
    with pytest.raises(PromptError) as info:
        parse_prompt("a cat | fog:0.5x | sky")
    lines = str(info.value).splitlines()
    src, pointer = lines[1], lines[2]
    start = pointer.index("^")
    assert src[start:start + 4] == "0.5x"


@pytest.mark.parametrize("source", ["", "   ", "|", " | | ", "^", "a ^ "])
def test_empty_and_separator_only_prompts_are_refused(source):
    with pytest.raises(PromptError):
        parse_story(source)
