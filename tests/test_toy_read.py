"""pixgen toy read: pictures that already exist, read by the evaluator and the strict reader and judged."""
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from typer.testing import CliRunner

from pixgen.cli import app
from pixgen.toy.world import Obj, Scene, render

TOY = Path(__file__).resolve().parent.parent / "checkpoints" / "toy"
pytestmark = pytest.mark.skipif(not (TOY / "evaluator.safetensors").exists(), reason="toy weights not present")
runner = CliRunner()
# a clean render of "a red circle above a blue square": both readers read it exactly
SCENE = Scene("gray", [Obj("circle", "red", "large", 1, 0, 32.0, 11.0, 20.0),
                       Obj("square", "blue", "large", 1, 2, 32.0, 52.0, 20.0)])


def _png(path: Path, text: dict[str, str] | None = None, scale: int = 1) -> Path:
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    image = Image.fromarray(render(SCENE))
    image.resize((64 * scale, 64 * scale), Image.NEAREST).save(path, pnginfo=info)
    return path


def _read(*args: str):
    result = runner.invoke(app, ["toy", "read", *args, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_picture_is_judged_by_the_prompt_it_carries_or_the_one_given(tmp_path):
    carried = _png(tmp_path / "a.png", {"pixgen:prompt": "a red circle above a blue square"})
    [got] = _read(str(carried))
    assert got["prompt"] == "a red circle above a blue square" and got["prompt_from"] == "the image"
    assert got["row"]["read"] == got["row"]["strict_read"] == "gray: large red circle@CT, large blue square@CB"
    assert got["row"]["pass"] and got["row"]["exact_pass"] and got["row"]["strict_pass"]
    # a given prompt wins over the stored one; the picture does not show a green circle
    [wrong] = _read(str(carried), "--prompt", "a green circle above a blue square")
    assert wrong["prompt_from"] == "--prompt"
    assert not (wrong["row"]["pass"] or wrong["row"]["exact_pass"] or wrong["row"]["strict_pass"])
    # "a red circle" holds, but the blue square is an object the prompt does not name
    # the size is read and shown, so a fail for the size says why
    [small] = _read(str(carried), "--prompt", "a small red circle above a blue square")
    assert not small["row"]["pass"] and "large red circle" in small["row"]["read"]
    [loose] = _read(str(carried), "--prompt", "a red circle")
    assert loose["row"]["pass"] and not loose["row"]["exact_pass"] and not loose["row"]["strict_pass"]


def test_pictures_of_any_size_are_read_at_the_canvas_size(tmp_path):
    [got] = _read(str(_png(tmp_path / "big.png", scale=2)), "-p", "a blue square below a red circle")
    assert got["row"]["strict_read"] == "gray: large red circle@CT, large blue square@CB" and got["row"]["strict_pass"]


def test_a_picture_that_is_not_square_is_padded_not_squashed(tmp_path):
    # what the toy model makes at 128x64: a 64x32 composition at the world's scale, scaled up twice; squashed to
    # 64x64, its shapes came out as blobs
    band = Scene("gray", [Obj("circle", "red", "small", 0, 1, 12.0, 32.0, 12.0),
                          Obj("square", "blue", "small", 2, 1, 52.0, 32.0, 12.0)])
    composed = Image.fromarray(render(band)).crop((0, 16, 64, 48))
    composed.resize((128, 64), Image.NEAREST).save(tmp_path / "wide.png")
    [got] = _read(str(tmp_path / "wide.png"), "-p", "a small red circle to the left of a small blue square")
    assert got["row"]["strict_blobs"] == 0 and got["row"]["strict_pass"] and got["row"]["pass"]


def test_without_a_toy_prompt_a_picture_is_read_but_not_judged(tmp_path):
    bare = _png(tmp_path / "bare.png")
    weighted = _png(tmp_path / "w.png", {"pixgen:prompt": "a red circle | blurry:-1"})
    got = _read(str(bare), str(weighted))
    assert [g["prompt"] for g in got] == [None, None]
    assert got[0]["prompt_from"] == "no prompt given or stored in the image"
    assert "is not a toy-world caption" in got[1]["prompt_from"]
    assert all("pass" not in g["row"] and g["row"]["strict_objects"] == 2 for g in got)
    text = runner.invoke(app, ["toy", "read", str(bare)])
    assert text.exit_code == 0 and "large red circle@CT" in text.stdout and "->" not in text.stdout


@pytest.mark.parametrize("args, fragment", [
    (["{png}", "--prompt", "a red dragon"], "--prompt 'a red dragon'"),
    (["{dir}/missing.png"], "not found"),
    (["{dir}/notes.txt"], "is not an image pixgen can read"),
])
def test_bad_input_fails_clearly(tmp_path, args, fragment):
    png = _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    result = runner.invoke(app, ["toy", "read", *(a.format(png=png, dir=tmp_path) for a in args)])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_render_draws_scenes_the_caption_describes_that_both_readers_pass(tmp_path):
    caption = "two small yellow triangles on a black background"
    result = runner.invoke(app, ["toy", "render", caption, "-o", str(tmp_path / "s.png"), "-n", "3", "-s", "4"])
    assert result.exit_code == 0, result.output
    paths = [tmp_path / f"s_{i}.png" for i in range(3)]
    assert result.stdout.split() == [str(p) for p in paths]
    got = _read(*map(str, paths))  # judged by the caption each carries
    assert all(g["prompt"] == caption and g["row"]["strict_pass"] and g["row"]["exact_pass"] for g in got)
    layouts = {Image.open(p).tobytes() for p in paths}
    assert len(layouts) == 3  # three different scenes
    again = runner.invoke(app, ["toy", "render", caption, "-o", str(tmp_path / "t.png"), "-n", "3", "-s", "4"])
    assert again.exit_code == 0 and {Image.open(tmp_path / f"t_{i}.png").tobytes() for i in range(3)} == layouts
    with Image.open(paths[0]) as image:
        assert image.size == (64, 64) and image.getpixel((0, 0)) == (20, 20, 20)
        # what was drawn, for the record, with the size a prompt may name
        assert re.fullmatch(r"black: small yellow triangle@[LCR][TMB], small yellow triangle@[LCR][TMB]",
                            image.text["pixgen:scene"])


def test_render_scales_by_nearest_pixel_and_refuses_what_no_scene_can_hold(tmp_path):
    one = runner.invoke(app, ["toy", "render", "a big red circle", "-o", str(tmp_path / "r.png"), "--scale", "2"])
    assert one.exit_code == 0, one.output
    assert "read 'a big red circle' as 'a large red circle'" in one.stderr
    with Image.open(tmp_path / "r.png") as image:
        colours = {colour for _, colour in image.getcolors()}  # nearest pixel: the world's exact colours only
        assert image.size == (128, 128) and (220, 30, 30) in colours and len(colours) == 2
    crowded = runner.invoke(app, ["toy", "render", "four large red circles in the top left corner",
                                  "-o", str(tmp_path / "c.png")])
    assert crowded.exit_code == 2 and "no toy-world scene fits" in crowded.output
    assert not (tmp_path / "c.png").exists()
    wrong = runner.invoke(app, ["toy", "render", "a red circle", "-o", str(tmp_path / "c.jpg")])
    assert wrong.exit_code == 2 and "must end in .png" in wrong.output
    (tmp_path / "afile").write_text("x")
    under_file = runner.invoke(app, ["toy", "render", "a red circle", "-o", str(tmp_path / "afile" / "c.png")])
    assert under_file.exit_code == 2 and "lies under" in under_file.output and "which is a file" in under_file.output
