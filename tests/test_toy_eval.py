"""The toy eval suite: fixed prompts, verdicts from scene readings, and its outputs (small smoke run)."""
import json
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from pixgen.toy import evaluate
from pixgen.toy.captions import Ref, Spec
from pixgen.toy.evaluate import CATEGORIES, SuiteItem, judge, judge_exact, suite
from pixgen.toy.world import Obj, Scene

TOY = Path(__file__).resolve().parents[1] / "checkpoints" / "toy"


def test_suite_covers_every_category_and_attribution_prompts_come_in_swapped_pairs():
    items = suite()
    assert {it.category for it in items} == set(CATEGORIES)
    assert len({it.prompt for it in items}) == len(items)
    attrib = [it.spec for it in items if it.category == "colour attribution"]
    for a, b in zip(attrib[::2], attrib[1::2]):
        assert (a.refs[0].shape, a.refs[1].shape) == (b.refs[0].shape, b.refs[1].shape)
        assert (a.refs[0].colour, a.refs[1].colour) == (b.refs[1].colour, b.refs[0].colour)


def test_judge_colour_ignores_shape_but_single_object_does_not():
    scene = Scene("white", [Obj("circle", "red", "small", 0, 0, 11.0, 11.0, 12.0)])
    spec = Spec("objects", (Ref("red", "square"),))
    assert judge(SuiteItem("colour", spec), scene)
    assert not judge(SuiteItem("single object", spec), scene)


def test_exact_judge_fails_a_stray_that_the_judge_takes_as_another_chance():
    red_blob_as_cross = Obj("cross", "red", "small", 0, 0, 11.0, 11.0, 12.0)
    red_circle = Obj("circle", "red", "small", 2, 2, 52.0, 52.0, 12.0)
    item = SuiteItem("single object", Spec("objects", (Ref("red", "circle"),)))
    alone, with_stray = Scene("gray", [red_circle]), Scene("gray", [red_blob_as_cross, red_circle])
    assert judge(item, alone) and judge_exact(item, alone)
    assert judge(item, with_stray) and not judge_exact(item, with_stray)
    three = [Obj("square", "orange", "small", c, 1, 11.0 + 20 * c, 32.0, 12.0) for c in range(3)]
    count = SuiteItem("counting", Spec("count", (Ref("orange", "square"),), count=3))
    assert judge_exact(count, Scene("black", three))
    extra = Scene("black", [*three, Obj("circle", "blue", "small", 1, 0, 32.0, 11.0, 12.0)])
    assert judge(count, extra) and not judge_exact(count, extra)  # the count holds; the blue circle is extra


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_eval_smoke_run_writes_table_json_and_contact_sheet(tmp_path):
    from pixgen.toy.evaluate import run_suite

    report = run_suite(seeds=[0], iterations=2, out=tmp_path, categories=["single object", "relation"],
                       max_per_category=1, progress=False)
    assert report["summary"]["overall"]["n"] == 2
    data = json.loads((tmp_path / "results.json").read_text())
    assert {"summary", "timing", "rows", "machine"} <= set(data)
    assert data["settings"]["prompts"] == "the fixed suite"
    assert data["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # which kernels ran
    assert data["machine"]["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert (tmp_path / "contact_sheet.png").stat().st_size > 0
    assert "| single object | 1 |" in (tmp_path / "table.md").read_text()
    assert "strict reader" in (tmp_path / "table.md").read_text()
    assert "nothing extra" in (tmp_path / "table.md").read_text()
    for row in data["rows"]:  # nothing extra is the same reading as the verdict, with strays failing it
        assert row["exact_pass"] <= row["pass"]
    for row in data["rows"]:  # two steps from a flat canvas draw nothing: the strict reader sees no object
        assert row["strict_pass"] is False and row["strict_read"].endswith("(nothing)")
        assert row["strict_objects"] == 0 and row["strict_blobs"] == 0
    assert report["summary"]["overall"]["strict"] == 0.0
    assert report["summary"]["overall"]["strict_objects_per_image"] == 0.0
    assert "Objects per image, strays included, as the strict reader counts them: 0.00" in (tmp_path / "table.md").read_text()
    from PIL import Image

    for row in data["rows"]:  # every image is kept, named in its row, and reads back as the run's picture
        with Image.open(tmp_path / row["image"]) as im:
            assert im.size == (64, 64) and im.info["prompt"] == row["prompt"]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    documented = readme[readme.index("What `OUT/results.json` holds"):]
    for part in (data, data["rows"][0], data["summary"]["overall"], data["timing"], data["settings"], data["machine"]):
        assert not [key for key in part if f"`{key}`" not in documented]  # the README says what each field is


def test_eval_command_refuses_other_models():
    from pixgen.errors import PixgenError
    from pixgen.toy.cli import eval_command

    with pytest.raises(PixgenError):
        eval_command(model="imagenet_f16_16384", seeds=1, iterations=None, size=64, out=Path("x"), quick=True,
                     category=None)


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
def test_baseline_is_the_random_start_a_generation_without_a_start_colour_begins_from():
    import numpy as np

    import pixgen
    from pixgen.toy.evaluate import random_start

    result = pixgen.generate("a red circle", model="toy", seed=3, iterations=1, overrides=["init_color=null"], write=False,
                             progress=False)
    start = np.asarray(random_start(3, (64, 64)))
    assert np.array_equal(start, np.asarray(result.initial_image))
    assert not np.array_equal(start, np.asarray(random_start(4, (64, 64))))
    assert start.std() > 20  # random codes, not the preset's flat gray


def test_cpu_model_reads_the_first_processor_of_cpuinfo(tmp_path):
    from pixgen.machine import cpu_model as _cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n"
                    "model name\t: Other\n")
    assert _cpu_model(info) == "AMD EPYC (family 25, model 1)"
    info.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert _cpu_model(info) == "Some ARM core"
    assert _cpu_model(tmp_path / "missing") is None


def test_own_prompts_become_items_judged_on_their_whole_meaning():
    from pixgen.toy.evaluate import items_from_prompts

    items = items_from_prompts(["two  red circles", "a blue square on the left", "a red square and a blue circle",
                                "a green cross above a pink circle", "a red circle on a black background",
                                "a cyan disc, a pink box and a red triangle"])
    assert [it.category for it in items] == ["counting", "position", "two objects", "relation", "background",
                                             "three or four objects"]
    assert items[0].prompt == "two red circles"  # generated as written, spaces tidied
    red_square = Scene("white", [Obj("square", "red", "small", 0, 1, 11.0, 32.0, 12.0)])
    assert judge(items_from_prompts(["a red box"])[0], red_square)
    assert not judge(items_from_prompts(["a red square on the right"])[0], red_square)


def test_a_bad_prompt_in_a_file_is_named_by_its_line_number(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.errors import PromptError
    from pixgen.toy.evaluate import items_from_prompts

    with pytest.raises(PromptError, match=r"prompt 2 \('a red hexagon'\)"):  # a list: named by its place in it
        items_from_prompts(["a red circle", "a red hexagon"])
    prompts = tmp_path / "mine.txt"  # the second prompt, on the file's sixth line
    prompts.write_text("# my prompts\n\na red circle  # one\n# and\n\n  a red hexagon\n")
    result = CliRunner().invoke(app, ["eval", "--prompts", str(prompts), "-o", str(tmp_path / "ev")])
    assert result.exit_code != 0 and f"{prompts} line 6 ('a red hexagon')" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "ev").exists()


def test_held_out_prompts_like_the_suite_are_new_reproducible_and_in_its_proportions():
    from collections import Counter

    from pixgen.toy.evaluate import held_out

    items, fixed = held_out(58, seed=4), suite()
    assert [it.prompt for it in items] == [it.prompt for it in held_out(58, seed=4)]
    assert [it.prompt for it in items] != [it.prompt for it in held_out(58, seed=5)]
    assert Counter(it.category for it in items) == Counter(it.category for it in fixed)
    assert len({it.spec for it in items}) == 58 and not {it.spec for it in items} & {it.spec for it in fixed}
    attrib = [it.spec for it in items if it.category == "colour attribution"]
    for a, b in zip(attrib[::2], attrib[1::2]):  # swapped twins, as in the suite
        assert [r.shape for r in a.refs] == [r.shape for r in b.refs]
        assert [r.colour for r in a.refs] == [r.colour for r in b.refs][::-1]
    for it in items:  # the suite's forms: no sizes, distinct colours and shapes, places only under position
        assert all(r.size is None for r in it.spec.refs)
        assert len({r.colour for r in it.spec.refs}) == len({r.shape for r in it.spec.refs}) == len(it.spec.refs)
        assert any(r.col is not None or r.row is not None for r in it.spec.refs) == (it.category == "position")
        assert (it.spec.background is not None) == (it.category == "background")


def test_held_out_prompts_from_the_grammar_are_paraphrased_and_filed_by_their_form():
    from pixgen.toy.captions import parse_caption, spec_text
    from pixgen.toy.evaluate import category_of, held_out

    items = held_out(60, seed=4, style="grammar")
    assert {"counting", "relation", "two objects", "position", "three or four objects"} <= {it.category for it in items}
    assert not {it.spec for it in items} & {it.spec for it in suite()}
    assert sum(it.prompt != spec_text(it.spec) for it in items) > 20  # paraphrased, as in training
    assert all(parse_caption(it.prompt) == it.spec and category_of(it.spec) == it.category for it in items)


def test_held_out_says_when_the_world_has_too_few_new_prompts():
    from pixgen.errors import PixgenError
    from pixgen.toy.evaluate import held_out

    with pytest.raises(PixgenError, match="too few new"):
        held_out(80)  # only 16 colour-shape pairs are left for the 16 single-object and colour prompts
    with pytest.raises(ValueError, match="style"):
        held_out(3, style="other")
    with pytest.raises(ValueError, match="prompt seed must be 0 or more"):
        held_out(3, seed=-1)  # not numpy's "expected non-negative integer"


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_eval_command_judges_a_prompt_file(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    prompts = tmp_path / "mine.txt"
    prompts.write_text("# three of my own\na small pink cross below a cyan disc\n\nthree yellow boxes  # counting\n"
                       "The big red circle is on top of the blue square.\n")
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["eval", "--prompts", str(prompts), "--seeds", "1", "-i", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [r["prompt"] for r in data["rows"]] == ["a small pink cross below a cyan disc", "three yellow boxes",
                                                   "The big red circle is on top of the blue square."]
    assert [r["category"] for r in data["rows"]] == ["relation", "counting", "relation"]
    assert data["settings"]["prompts"] == f"--prompts {prompts}"
    assert "| relation | 2 |" in result.output
    # the third is judged, and was generated, in the toy world's own words, and both say so
    assert "1 of the 3 prompts are read in the toy world's own words" in result.output
    assert any("as 'a large red circle above a blue square'" in m for m in data["rows"][2]["messages"])


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
@pytest.mark.parametrize("args", [["--set", "sparsity.weight=3"], ["--config", "toy-sparse"]])
def test_eval_command_judges_an_option_over_the_toy_preset(tmp_path, args):
    import yaml
    from PIL import Image
    from typer.testing import CliRunner

    from pixgen.cli import app

    prompts = tmp_path / "one.txt"
    prompts.write_text("a red circle\n")
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["eval", "--prompts", str(prompts), "--seeds", "1", "-i", "2", *args,
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "results.json").read_text())["rows"][0]
    with Image.open(out / row["image"]) as image:
        stored = yaml.safe_load(image.info["pixgen:config"])
    assert stored["sparsity"]["weight"] == 3.0  # the option reached the image
    assert stored["border"]["weight"] == 5.0 and stored["model"] == "toy"  # over the toy preset, not instead of it


@pytest.mark.parametrize("args, says", [
    (["--prompts", "missing.txt"], "not found"),
    (["--prompts", "."], "is a directory"),
    (["--held-out", "0"], "at least 1"),
    (["--size", "0"], "--size must be at least 1"),
    (["--held-out", "3", "--prompt-seed", "-1"], "greater than or equal to"),
    (["--held-out", "3", "--prompts", "x.txt"], "give one of them"),
    (["--held-out", "3", "--held-out-style", "other"], "unknown --held-out-style"),
    (["--category", "three or four objects"], "no prompt to judge"),
    (["--jobs", "0"], "not a number of processes"),
    (["--set", "sparsity.weight=-1"], "sparsity.weight must be"),
    (["--set", "threads=2"], "give --threads instead"),
    (["--set", "no.such=1"], "unknown config key"),
    (["--config", "no-such-preset"], "not found"),
    (["--held-out", "40", "--quick"], "--quick thins the fixed suite only"),
])
def test_eval_command_refuses_bad_prompt_options_before_generating(tmp_path, args, says):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["eval", *args, "-o", str(tmp_path / "ev")])
    assert result.exit_code != 0 and says in result.output
    assert not (tmp_path / "ev").exists()


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
@pytest.mark.parametrize("args, says", [
    (["--size", "5"], "give a larger --size (--size 8 or more), or turn the term off with --set border.weight=0"),
    (["--size", "12", "--set", "border.width=6"], "give a larger --size (--size 16 or more)"),  # a multiple of 4
])
def test_eval_too_small_for_the_border_term_hints_a_size_the_eval_takes(tmp_path, args, says):
    from typer.testing import CliRunner

    from pixgen.cli import app

    result = CliRunner().invoke(app, ["eval", "--quick", *args, "-o", str(tmp_path / "ev")])
    text = " ".join(result.output.split())
    assert result.exit_code != 0 and "too small for the border term" in text and says in text
    assert not re.search(r"\d+x\d+", text.split("hint:")[1])  # not generate's "7x7", which eval's --size refuses


def test_eval_command_refuses_quick_with_a_prompt_file_rather_than_drop_its_prompts(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    prompts = tmp_path / "mine.txt"
    prompts.write_text("a red circle\na blue square\na green cross\n")  # three of one category
    result = CliRunner().invoke(app, ["eval", "--prompts", str(prompts), "--quick", "-o", str(tmp_path / "ev")])
    assert result.exit_code != 0 and "--quick thins the fixed suite only" in result.output
    assert "drop --quick" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ev").exists()


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_toy_generation_warns_about_words_outside_the_toy_world_and_goes_on():
    import pixgen

    result = pixgen.generate("a castle at dusk | a red circle:0.5", model="toy", iterations=1, write=False,
                             progress=False, echo=False)
    warned = [m for m in result.messages if "not a caption of the toy world" in m]
    assert len(warned) == 1 and "'a castle at dusk'" in warned[0] and "'castle'" in warned[0]
    assert result.image is not None
    quiet = pixgen.generate("a red circle above a blue square", model="toy", iterations=1, write=False,
                            progress=False, echo=False)
    assert not [m for m in quiet.messages if "toy world" in m]



@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_toy_generation_reads_synonyms_in_the_toy_worlds_words_unless_told_not_to():
    import numpy as np

    import pixgen

    def run(prompt, **options):
        return pixgen.generate(prompt, model="toy", iterations=3, write=False, progress=False, echo=False, **options)

    said, meant = run("A big red circle on top of a blue square!"), run("a large red circle above a blue square")
    assert [m for m in said.messages if m.startswith("read ")] == [
        "read 'A big red circle on top of a blue square!' as 'a large red circle above a blue square', in the toy "
        "world's own words, which are the only ones the toy CLIP was trained on (--set toy_reword=false encodes it "
        "as written)"]
    assert not [m for m in said.messages if "not a caption" in m]
    # the CLIP was given the reworded text: the same targets, so the same picture
    assert np.array_equal(np.asarray(said.image), np.asarray(meant.image))
    as_written = run("A big red circle on top of a blue square!", toy_reword=False)
    assert [m for m in as_written.messages if "not a caption of the toy world" in m]
    assert not np.array_equal(np.asarray(as_written.image), np.asarray(meant.image))


def test_eval_prompts_may_use_the_synonyms_generation_rewords():
    from pixgen.toy.captions import CaptionError
    from pixgen.toy.evaluate import item_from_prompt

    item = item_from_prompt("the big red circle is on top of the blue square")
    assert item.spec == item_from_prompt("a large red circle above a blue square").spec
    assert item.text == "the big red circle is on top of the blue square"  # generated as written (and reworded)
    with pytest.raises(CaptionError, match="next to"):
        item_from_prompt("a red circle next to a blue square")


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_a_batch_prints_each_warning_once_and_each_runs_own_start(tmp_path, capsys):
    import pixgen

    results = pixgen.generate_many(["a castle at dusk", "a red circle"], count=2, model="toy", iterations=1,
                                   progress=False, output_dir=str(tmp_path))
    assert len(results) == 4
    err = capsys.readouterr().err
    assert err.count("not a caption of the toy world") == 1
    # the start colour is chosen per run (its losses depend on the seed's cutouts), so each run still says it
    assert err.count("started from flat") == 4

def _smoke_items():
    return [it for it in suite() if it.category in ("single object", "relation")][:2]


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_an_interrupted_eval_keeps_what_it_judged_and_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from pixgen.errors import Interrupted, PixgenError
    from pixgen.toy import evaluate

    settings = dict(seeds=[0, 1], iterations=3, items=_smoke_items(), progress=False, threads=1)
    whole = evaluate.run_suite(out=tmp_path / "whole", **settings)

    real, calls, stop_at = evaluate._judge_job, [], [3]

    def stopped_on_the_third(task):
        calls.append(task[0])
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt  # Ctrl-C while the third image is made
        return real(task)

    monkeypatch.setattr(evaluate, "_judge_job", stopped_on_the_third)
    out = tmp_path / "cut"
    with pytest.raises(Interrupted, match="after 2 of 4 images") as stopped:
        evaluate.run_suite(out=out, **settings)
    assert stopped.value.summary["overall"]["n"] == 2  # the table so far
    stop_at[0] = None
    kept = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["row"]["index"] for r in kept[1:]] == [0, 1]
    assert all((out / r["row"]["image"]).is_file() for r in kept[1:])
    assert not (out / "results.json").exists()

    with pytest.raises(PixgenError, match="unfinished eval"):  # not silently overwritten
        evaluate.run_suite(out=out, **settings)
    with pytest.raises(PixgenError, match="differs in: iterations"):
        evaluate.run_suite(out=out, resume=True, **{**settings, "iterations": 4})
    (out / kept[2]["row"]["image"]).unlink()  # a kept row whose image is gone is judged again
    calls.clear()
    report = evaluate.run_suite(out=out, resume=True, **settings)
    assert calls == [1, 2, 3]  # only the images it lacked
    assert report["timing"]["images_resumed"] == 1 and report["timing"]["images_this_session"] == 3
    assert not (out / "progress.jsonl").exists()
    calls.clear()
    again = evaluate.run_suite(out=out, resume=True, **settings)  # complete already: nothing to run
    assert calls == [] and again["complete_already"] and again["rows"] == json.loads((out / "results.json").read_text())["rows"]
    fields = ("prompt", "seed", "read", "strict_read", "final_loss", "pass", "image")
    assert [[r[k] for k in fields] for r in report["rows"]] == [[r[k] for k in fields] for r in whole["rows"]]
    saved = json.loads((out / "results.json").read_text())
    assert [r["index"] for r in saved["rows"]] == [0, 1, 2, 3]
    for row in whole["rows"]:
        assert (out / row["image"]).read_bytes() == (tmp_path / "whole" / row["image"]).read_bytes()


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_a_finished_eval_is_neither_made_again_nor_replaced_unless_overwrite_asks(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy import evaluate

    prompts = tmp_path / "two.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "ev"

    def run(*args):
        return CliRunner().invoke(app, ["eval", "--prompts", str(prompts), "--jobs", "1", "-o", str(out), *args])

    assert run("--seeds", "2", "-i", "2").exit_code == 0
    report = (out / "results.json").read_bytes()
    images = sorted(p.name for p in (out / "images").iterdir())
    real = evaluate._judge_job

    def must_not_run(task):
        raise AssertionError(f"image {task[0]} made again")

    monkeypatch.setattr(evaluate, "_judge_job", must_not_run)
    for args, says in [(["-i", "3", "--resume"], "finished eval (4 images) run with other settings (differs in: "
                                                  "iterations)"),
                       (["-i", "3"], "(differs in: iterations)"),
                       (["-i", "2"], "holds the finished eval of these settings (4 images)")]:
        result = run("--seeds", "2", *args)
        assert result.exit_code != 0 and says in result.output and "--overwrite" in result.output, result.output
    assert (out / "results.json").read_bytes() == report
    assert sorted(p.name for p in (out / "images").iterdir()) == images
    assert run("--seeds", "2", "-i", "2", "--resume").exit_code == 0  # the same settings: its report, as it is
    assert (out / "results.json").read_bytes() == report

    # a report written before it kept its whole fingerprint: the refusal names what its settings still say
    saved = json.loads(report)
    del saved["settings"]["fingerprint"]
    (out / "results.json").write_text(json.dumps(saved))
    assert "(differs in: seeds)" in run("--seeds", "1", "-i", "2", "--resume").output

    monkeypatch.setattr(evaluate, "_judge_job", real)
    (out / "images" / "mine.png").write_bytes(b"not the eval's")
    assert "give one of them" in run("--seeds", "1", "-i", "2", "--resume", "--overwrite").output
    assert run("--seeds", "1", "-i", "2", "--overwrite").exit_code == 0  # asked for: the earlier eval goes
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 2 and sorted(p.name for p in (out / "images").iterdir()) == sorted(
        ["mine.png", *(Path(r["image"]).name for r in rows)])  # its images only, the user's file kept

    # images no record names (the eval that made them is gone) are not left beside a new eval's
    (out / "results.json").unlink()
    result = run("--seeds", "1", "-i", "2")
    assert result.exit_code != 0 and "holds images of an earlier eval (2)" in result.output


def test_a_search_stopped_by_ctrl_c_is_not_judged_as_if_it_had_finished(monkeypatch):
    import pixgen
    from pixgen.toy import evaluate

    class Stopped:
        interrupted = True

    monkeypatch.setattr(pixgen, "generate", lambda *a, **k: Stopped())
    with pytest.raises(KeyboardInterrupt):
        evaluate._judge_job((0, _smoke_items()[0], 0, (64, 64), None, {}))


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_eval_jobs_make_the_same_images_and_verdicts_as_one_process_with_one_thread(tmp_path):
    from pixgen.toy.evaluate import run_suite

    settings = dict(seeds=[0], iterations=3, items=_smoke_items() + suite()[-1:], progress=False)
    serial = run_suite(out=tmp_path / "one", threads=1, **settings)
    parallel = run_suite(out=tmp_path / "two", jobs=2, **settings)
    assert parallel["timing"]["jobs"] == 2 and parallel["timing"]["torch_threads"] == 1
    fields = ("prompt", "seed", "read", "strict_read", "final_loss", "pass", "image")
    assert [[r[k] for k in fields] for r in parallel["rows"]] == [[r[k] for k in fields] for r in serial["rows"]]
    for row in serial["rows"]:
        assert (tmp_path / "one" / row["image"]).read_bytes() == (tmp_path / "two" / row["image"]).read_bytes()
    assert parallel["timing"]["cpu_s_total"] >= sum(r["cpu_s"] for r in parallel["rows"]) - 0.5  # workers counted


def test_errors_keep_their_hint_across_processes():
    import pickle

    from pixgen.errors import ModelError

    error = pickle.loads(pickle.dumps(ModelError("weights not found", "download them first")))
    assert type(error) is ModelError and error.hint == "download them first"


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
@pytest.mark.parametrize("options, says", [
    (dict(size=(50, 50)), "not a positive multiple of the toy VQGAN's factor 4"),
    (dict(size=(0, 0)), "not a positive multiple"),
    (dict(iterations=0), "iterations must be at least 1"),
    (dict(jobs=0), "jobs must be at least 1"),
])
def test_eval_refuses_bad_settings_before_it_makes_anything(tmp_path, options, says):
    from pixgen.errors import PixgenError
    from pixgen.toy.evaluate import run_suite

    with pytest.raises(PixgenError, match=says):
        run_suite(seeds=[0], out=tmp_path / "ev", items=_smoke_items(), progress=False, **options)
    assert not (tmp_path / "ev").exists()


@pytest.mark.skipif(not (TOY / "vqgan.ckpt").exists(), reason="toy weights not present")
def test_eval_says_when_out_cannot_be_its_directory(tmp_path):
    from pixgen.errors import PixgenError
    from pixgen.toy.evaluate import run_suite

    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    with pytest.raises(PixgenError, match="is a file, not a directory"):
        run_suite(seeds=[0], iterations=1, out=a_file, items=_smoke_items(), progress=False)
    with pytest.raises(PixgenError, match="cannot write the eval to"):
        run_suite(seeds=[0], iterations=1, out=a_file / "below", items=_smoke_items(), progress=False)


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_an_eval_image_carries_its_config_and_generate_from_image_makes_it_again(tmp_path):
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy.evaluate import run_suite

    report = run_suite(seeds=[1], iterations=3, out=tmp_path / "ev", items=_smoke_items()[:1], progress=False,
                       threads=2)
    made = tmp_path / "ev" / report["rows"][0]["image"]
    with Image.open(made) as a:
        stored = a.info["pixgen:config"]
    assert "threads: 2" in stored.splitlines()  # the eval's thread count, over the preset's 1
    result = CliRunner().invoke(app, ["generate", "--from-image", str(made), "--quiet", "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = next((tmp_path / "again").glob("*/image.png"))
    with Image.open(made) as a, Image.open(again) as b:
        assert a.info["pixgen:seed"] == "1" and a.info["prompt"] == report["rows"][0]["prompt"]
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_eval_makes_one_image_per_core_by_default_as_far_as_memory_and_the_images_go(tmp_path, monkeypatch):
    import pixgen.factory
    from pixgen.toy import evaluate

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemAvailable:    3000000 kB\n")  # about 3.1 GB free
    monkeypatch.setattr(evaluate.machine, "cpu_count", lambda: 8)
    assert evaluate.auto_jobs(100, "cpu", meminfo) == 2  # 1.2 GB a job
    assert evaluate.auto_jobs(1, "cpu", meminfo) == 1
    meminfo.write_text("MemAvailable:   64000000 kB\n")
    assert evaluate.auto_jobs(100, "cpu", meminfo) == 8
    assert evaluate.auto_jobs(100, "cpu", tmp_path / "missing") == 8  # no meminfo: cores only
    monkeypatch.setattr(pixgen.factory, "resolve_device", lambda name: torch.device("cuda"))
    assert evaluate.auto_jobs(100, "auto", meminfo) == 1  # a GPU is kept busy by one process


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_eval_command_stopped_by_ctrl_c_prints_the_table_so_far_and_how_to_go_on(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy import evaluate

    real, calls = evaluate._judge_job, []

    def stopped_on_the_second(task):
        calls.append(task)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(evaluate, "_judge_job", stopped_on_the_second)
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["eval", "--quick", "-i", "1", "--jobs", "1", "-o", str(out)])
    assert result.exit_code == 130
    assert "The images judged so far" in result.output and "| overall | 1 |" in result.output
    assert "interrupted after 1 of 16 images" in result.output and "--resume" in result.output


@pytest.mark.parametrize("args, seeds, per_category", [
    (["--quick"], [0], 2),
    (["--quick", "--seeds", "2"], [0, 1], 2),  # --seeds is heard with --quick, not silently dropped
    ([], [0, 1, 2], None),
])
def test_eval_command_passes_the_seeds_asked_for(tmp_path, monkeypatch, args, seeds, per_category):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.errors import PixgenError
    from pixgen.toy import evaluate

    seen = {}

    def capture(**kwargs):
        seen.update(kwargs)
        raise PixgenError("stopped by the test")

    monkeypatch.setattr(evaluate, "run_suite", capture)
    result = CliRunner().invoke(app, ["eval", *args, "-o", str(tmp_path / "ev")])
    assert "stopped by the test" in result.output
    assert seen["seeds"] == seeds and seen["max_per_category"] == per_category


@pytest.mark.parametrize("complete_already", [False, True])
def test_eval_command_says_which_images_its_times_cover_and_what_it_wrote(tmp_path, monkeypatch, complete_already):
    from typer.testing import CliRunner

    from pixgen.cli import app
    from pixgen.toy import evaluate

    timing = {"images": 8, "images_resumed": 4, "images_this_session": 4, "cpu_s_total": 9.9, "wall_s_total": 10.2,
              "cpu_s_per_image_mean": 2.47, "cpu_s_per_image_max": 3.0, "wall_s_per_image_mean": 2.5, "jobs": 1,
              "torch_threads": 1}
    summary = {"overall": {"n": 8, "accuracy": 0.5, "baseline": 0.0, "exact": 0.5, "strict": 0.25}}

    def resumed(**kwargs):
        return {"summary": summary, "timing": timing, "rows": [], **({"complete_already": True} if complete_already
                                                                      else {})}

    monkeypatch.setattr(evaluate, "run_suite", resumed)
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["eval", "--quick", "--resume", "-o", str(out)])
    assert result.exit_code == 0, result.output
    # the mean is over every image; the totals over the 4 this session judged, and said to be
    assert ("8 images, 2.47 s CPU per image (mean over all 8); the session that resumed the eval judged 4 of them in "
            "9.9 s CPU and 10 s wall in all (1 at once, 1 thread(s) each), the other 4 were judged before it"
            in " ".join(result.output.split()))
    files = f"{out / 'results.json'}, {out / 'table.md'}, {out / 'contact_sheet.png'}, {out / 'images'}/"
    if complete_already:  # nothing was judged, nor any file written
        assert f"left {files} as they are" in result.output and "wrote" not in result.output
    else:
        assert f"wrote {files}" in result.output
    del timing["images_this_session"]  # a report written before it was kept: the same line
    result = CliRunner().invoke(app, ["eval", "--quick", "--resume", "-o", str(out)])
    assert "judged 4 of them in 9.9 s CPU" in result.output


@pytest.mark.skipif(not (TOY / "clip.pt").exists(), reason="toy weights not present")
def test_an_unfinished_eval_resumes_from_a_moved_checkout_but_not_with_another_config(tmp_path, monkeypatch):
    import shutil

    from pixgen.errors import Interrupted, PixgenError
    from pixgen.toy import evaluate

    old_home, new_home = tmp_path / "old" / "configs", tmp_path / "new" / "configs"
    for home in (old_home, new_home):
        home.mkdir(parents=True)
        shutil.copy(evaluate.TOY_PRESET, home / "toy.yaml")
    settings = dict(seeds=[0], iterations=2, items=_smoke_items(), progress=False, threads=1)
    real, calls = evaluate._judge_job, []

    def stopped_on_the_second(task):
        calls.append(task[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(evaluate, "_judge_job", stopped_on_the_second)
    out = tmp_path / "eval"
    with pytest.raises(Interrupted):
        evaluate.run_suite(out=out, config=old_home / "toy.yaml", **settings)
    monkeypatch.setattr(evaluate, "_judge_job", real)
    # an eval started by an earlier version recorded the config's whole path; that alone does not block it
    lines = (out / "progress.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["fingerprint"]["config"] == "toy.yaml"
    header["fingerprint"]["config"] = str(old_home / "toy.yaml")
    (out / "progress.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")

    (new_home / "toy.yaml").write_text((new_home / "toy.yaml").read_text() + "iterations: 7\n")
    with pytest.raises(PixgenError, match="differs in: config_sha256"):
        evaluate.run_suite(out=out, resume=True, config=new_home / "toy.yaml", **settings)
    shutil.copy(evaluate.TOY_PRESET, new_home / "toy.yaml")  # the same preset in another place
    report = evaluate.run_suite(out=out, resume=True, config=new_home / "toy.yaml", **settings)
    assert report["timing"]["images_resumed"] == 1 and len(report["rows"]) == 2

    # a complete eval whose report an earlier version wrote (its digest taken over the config's whole path) is
    # found complete, not made again
    saved = json.loads((out / "results.json").read_text())
    fingerprint = evaluate._fingerprint(settings["items"], [0], 2, (64, 64), new_home / "toy.yaml", {}, 1)
    saved["settings"]["config"] = str(old_home / "toy.yaml")
    saved["settings"]["fingerprint_sha256"] = evaluate._digest({**fingerprint, "config": str(old_home / "toy.yaml")})
    (out / "results.json").write_text(json.dumps(saved))
    def must_not_run(task):
        raise AssertionError(f"image {task[0]} made again")

    monkeypatch.setattr(evaluate, "_judge_job", must_not_run)
    again = evaluate.run_suite(out=out, resume=True, config=new_home / "toy.yaml", **settings)
    assert again.get("complete_already") and again["rows"] == saved["rows"]


def test_the_report_names_the_checkouts_own_config_relative_to_it(tmp_path):
    from pixgen.toy import evaluate

    assert evaluate._config_label(evaluate.TOY_PRESET) == "configs/toy.yaml"
    assert evaluate._config_label(tmp_path / "mine.yaml") == str(tmp_path / "mine.yaml")
    assert evaluate._config_label(None) is None


def test_the_contact_sheet_shows_every_picture_whole_with_its_start_beside_it(tmp_path):
    from PIL import Image

    from pixgen.toy import evaluate

    red, blue = Image.new("RGB", (64, 64), (220, 30, 30)), Image.new("RGB", (64, 64), (30, 70, 220))
    rows = [{"prompt": "a red square", "seed": s, "pass": s == 0, "baseline_pass": False, "strict_pass": False}
            for s in (0, 1)]
    evaluate._contact_sheet(rows, [red, red], [blue, blue], tmp_path / "sheet.png", tile=64)
    sheet = Image.open(tmp_path / "sheet.png").convert("RGB")
    for i in range(2):
        x, y = 8 + i * (64 + 4 + 16 + 12), 8
        # the picture's own top-right corner is not covered by the start's thumbnail, which sits to its right
        assert sheet.getpixel((x + 60, y + 3)) == (220, 30, 30) and sheet.getpixel((x + 3, y + 60)) == (220, 30, 30)
        assert sheet.getpixel((x + 64 + 4 + 8, y + 8)) == (30, 70, 220)
    assert sheet.getpixel((7, 7)) != (255, 255, 255)  # framed: green for a pass


def _drawn_text(monkeypatch) -> list[tuple[tuple, str]]:
    """Every (position, text) the contact sheet draws, recorded as it draws it."""
    from PIL import ImageDraw

    drawn, real = [], ImageDraw.ImageDraw.text

    def text(self, xy, content, *args, **kwargs):
        drawn.append((tuple(xy), content))
        return real(self, xy, content, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    return drawn


def test_the_contact_sheet_shows_each_prompt_whole_however_long(tmp_path, monkeypatch):
    from PIL import Image

    from pixgen.toy import evaluate

    long = ("a small red circle in the top left corner, a large blue square in the bottom right corner, "
            "a green cross and a pink triangle on a white background")
    rows = [{"prompt": p, "seed": 0, "pass": False, "baseline_pass": False} for p in (long, "a red circle")]
    picture = Image.new("RGB", (64, 64), (220, 30, 30))
    drawn = _drawn_text(monkeypatch)
    evaluate._contact_sheet(rows, [picture] * 2, [picture] * 2, tmp_path / "sheet.png")
    under = sorted((y, text) for (x, y), text in drawn if x == 8 and 8 + 128 < y)  # under the first picture
    verdict = [text for _, text in under].index("s0 FAIL base:F")
    prompt_lines = [text for _, text in under[:verdict]]
    assert " ".join(prompt_lines) == long and len(prompt_lines) > 2  # every word, on as many lines as it takes
    with Image.open(tmp_path / "sheet.png") as sheet:  # tall enough that the verdict under it is on the sheet
        assert sheet.height > under[verdict][0] + 10


def test_the_baseline_is_labelled_as_the_random_start_not_as_the_runs_start(tmp_path, monkeypatch):
    from PIL import Image

    from pixgen.toy import evaluate

    rows = [{"prompt": "a red circle", "seed": 0, "pass": True, "baseline_pass": False}]
    picture = Image.new("RGB", (64, 64), (220, 30, 30))
    drawn = _drawn_text(monkeypatch)
    evaluate._contact_sheet(rows, [picture], [picture], tmp_path / "sheet.png")
    beside = [text for (x, y), text in drawn if x == 8 + 128 + 4]  # under the thumbnail beside the picture
    assert beside == ["random", "start"]  # the run itself starts from a flat colour: "start" alone misnamed it
    legend = " ".join(text for (x, y), text in drawn if y > 8 + 128 + 52)
    assert "the random start (no optimisation) of its seed" in legend and "random latent codes" in legend
    assert "The run itself starts from a flat colour." in legend
    summary = {"overall": {"n": 1, "accuracy": 1.0, "baseline": 0.0, "exact": 1.0, "strict": 0.0}}
    assert "| baseline (random start, no optimisation) |" in evaluate.table(summary)


def _double_or_die(task):
    """A --jobs job for the worker test: the task's number and its double, or, for task 2, the worker's death
    (as when the system kills it for memory)."""
    if task[0] == 2:
        os._exit(9)
    return task[0], task[0] * 2


@contextmanager
def _deadline(seconds: int):
    """Raise in the block after ``seconds``, so that a hang fails the test instead of stalling the suite."""
    def give_up(*_):
        raise TimeoutError(f"still waiting after {seconds} s")

    before = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="the deadline needs SIGALRM")
def test_a_worker_that_dies_stops_the_eval_with_a_clear_error_instead_of_a_hang():
    import multiprocessing

    from pixgen.errors import PixgenError

    got = {}
    with _deadline(120):
        evaluate._in_workers(_double_or_die, [(0,), (1,), (3,)], 2, 1, got.__setitem__, lambda: PixgenError("never"))
    assert got == {0: 0, 1: 2, 3: 6}  # every result, whatever order they came in
    with pytest.raises(PixgenError, match="worker died"), _deadline(120):
        evaluate._in_workers(_double_or_die, [(0,), (1,), (2,), (3,), (4,)], 2, 1, got.__setitem__,
                             lambda: PixgenError("a worker died"))
    assert not multiprocessing.active_children()  # none left running
    message = evaluate._worker_died(4, 16, Path("runs/x"))
    assert "after 4 of 16 images; those are kept in runs/x" in message.message and "--resume" in message.hint
