"""pixgen toy compare: two evals paired image by image, with a sign test of the images only one passes."""
import json

import pytest

from pixgen.errors import PixgenError
from pixgen.toy.compare import compare, report, sign_test


def _row(prompt, seed, category, passed, exact=None, strict=None):
    row = {"prompt": prompt, "seed": seed, "category": category, "pass": passed}
    if exact is not None:
        row["exact_pass"] = exact
    if strict is not None:
        row["strict_pass"] = strict
    return row


def test_sign_test_is_the_two_sided_binomial_tail():
    assert sign_test(0, 0) == 1.0
    assert sign_test(4, 8) == pytest.approx(2 * (1 + 12 + 66 + 220 + 495) / 2 ** 12)  # 0.388
    assert sign_test(8, 4) == sign_test(4, 8)
    assert sign_test(0, 10) == pytest.approx(2 / 2 ** 10)
    assert sign_test(5, 5) == 1.0  # an even split is capped at 1


def test_images_are_paired_by_prompt_and_seed_not_by_order():
    a = [_row("a red circle", 0, "single object", True, True, False),
         _row("a red circle", 1, "single object", False, False, False),
         _row("two red circles", 0, "counting", True, False, True),
         _row("a blue cross", 0, "colour", True, True, True)]  # B did not make this one
    b = [_row("two red circles", 0, "counting", False, False, False),
         _row("a red circle", 1, "single object", True, True, False),
         _row("a red circle", 0, "single object", True, False, False),
         _row("a pink square", 0, "colour", False, False, False)]  # nor A this one
    result = compare(a, b)
    assert result["paired"] == 3 and result["only_in_a"] == 1 and result["only_in_b"] == 1
    assert list(result["tallies"]) == ["single object", "counting", "overall"]
    single = result["tallies"]["single object"]["pass"]
    assert (single.images, single.a, single.b, single.only_a, single.only_b) == (2, 1, 2, 0, 1)
    overall = result["tallies"]["overall"]
    assert (overall["pass"].only_a, overall["pass"].only_b) == (1, 1)
    assert (overall["exact_pass"].a, overall["exact_pass"].b, overall["exact_pass"].only_a) == (1, 1, 1)
    assert (overall["strict_pass"].a, overall["strict_pass"].b) == (1, 0)
    text = report(result, "A", "B")
    assert "3 images paired by prompt and seed (1 only in A and 1 only in B left out)" in text
    assert "| overall | 3 | 2 | 2 | 1 | 1 | 1 |" in text



def test_a_prompt_that_comes_up_twice_is_paired_by_its_first_and_second_time():
    # a prompt file may hold a line twice; each eval then makes that image twice, in the file's order
    a = [_row("a red circle", 0, "single object", True), _row("a blue cross", 0, "colour", False),
         _row("a red circle", 0, "single object", False)]
    b = [_row("a red circle", 0, "single object", True), _row("a red circle", 0, "single object", True)]
    result = compare(a, b)
    assert result["paired"] == 2 and result["only_in_a"] == 1 and result["only_in_b"] == 0
    single = result["tallies"]["single object"]["pass"]
    assert (single.a, single.b, single.only_a, single.only_b) == (1, 2, 0, 1)

def test_a_verdict_that_older_records_lack_gets_no_table():
    a = [_row("a red circle", 0, "single object", True)]
    b = [_row("a red circle", 0, "single object", False, True, True)]
    text = report(compare(a, b), "A", "B")
    assert "evaluator:" in text and "nothing extra:" not in text and "strict reader:" not in text


def test_evals_of_other_prompts_cannot_be_compared():
    with pytest.raises(PixgenError, match="share no image"):
        compare([_row("a red circle", 0, "single object", True)], [_row("a red circle", 1, "single object", True)])


def test_compare_command_reads_two_eval_directories_and_refuses_what_is_not_one(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    for name, passes in (("a", [True, True, False]), ("b", [False, True, False])):
        (tmp_path / name).mkdir()
        rows = [_row("a red circle", s, "single object", p, p, False) for s, p in enumerate(passes)]
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": rows}))
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "| overall | 3 | 2 | 1 | 1 | 0 | 1 |" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "a"), str(tmp_path / "empty")])
    assert result.exit_code == 2 and "holds no results.json" in result.output
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text('{"summary": {}}')
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert result.exit_code == 2 and "is not the results.json of a pixgen eval" in result.output
    for rows in ('[1, 2]', '[{"prompt": "a red circle", "seed": 0}]'):  # rows that are not rows, or lack a key
        (tmp_path / "c" / "results.json").write_text('{"rows": %s}' % rows)
        result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "a"), str(tmp_path / "c")])
        assert result.exit_code == 2 and "is not the results.json of a pixgen eval" in result.output, rows


def _eval_dir(path, prompt_set, passes):
    path.mkdir(parents=True)
    rows = [_row(p, s, "single object", ok, ok, False) for (p, s), ok in passes.items()]
    (path / "results.json").write_text(json.dumps({"settings": {"prompts": prompt_set}, "rows": rows}))


def test_directories_of_evals_are_pooled_pairing_each_eval_with_the_one_of_its_prompt_set(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    # the same prompt and seed comes up in both prompt sets, with other verdicts: pairing across sets would miscount
    _eval_dir(tmp_path / "A" / "ps1", "--held-out 2 --prompt-seed 1", {("a red circle", 0): True, ("a blue cross", 0): True})
    _eval_dir(tmp_path / "A" / "ps2", "--held-out 2 --prompt-seed 2", {("a red circle", 0): False, ("a cyan disc", 0): False})
    _eval_dir(tmp_path / "A" / "ps3", "--held-out 2 --prompt-seed 3", {("a pink box", 0): True})  # B lacks it
    _eval_dir(tmp_path / "B" / "two", "--held-out 2 --prompt-seed 2", {("a red circle", 0): True, ("a cyan disc", 0): True})
    _eval_dir(tmp_path / "B" / "one", "--held-out 2 --prompt-seed 1", {("a red circle", 0): True, ("a blue cross", 0): False})
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "B")])
    assert result.exit_code == 0, result.output
    assert "(3 evals: ps1, ps2, ps3)" in result.output and "(2 evals: one, two)" in result.output
    assert "4 images paired by prompt and seed (1 only in A and 0 only in B left out)" in result.output
    # ps1: A passes both, B one; ps2: A passes neither, B both -> A 2, B 3, only A 1, only B 2
    assert "| overall | 4 | 2 | 3 | 1 | 2 | 1 |" in result.output
    # one eval against a directory: paired with the eval of its own prompt set there
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A" / "ps2"), str(tmp_path / "B")])
    assert result.exit_code == 0 and "| overall | 2 | 0 | 2 | 0 | 2 | 0.500 |" in result.output, result.output
    _eval_dir(tmp_path / "B" / "again", "--held-out 2 --prompt-seed 1", {("a red circle", 0): True})
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "B")])
    assert result.exit_code == 2 and "holds two evals of the same prompts: again and one" in result.output


def _eval_with_fingerprint(path, source, prompts, passes, fingerprint=True):
    """An eval's results.json as pixgen eval writes it: rows in index order, the settings with the prompt source as
    typed and (unless ``fingerprint`` is false, as in reports written before it was kept) the prompt list."""
    path.mkdir(parents=True)
    seeds = [0, 1]
    rows = [{**_row(prompt, seed, category, passes), "index": i * len(seeds) + seed}
            for i, (category, prompt) in enumerate(prompts) for seed in seeds]
    settings = {"prompts": source, "seeds": seeds}
    if fingerprint:
        settings["fingerprint"] = {"prompts": [list(p) for p in prompts], "seeds": seeds}
    (path / "results.json").write_text(json.dumps({"settings": settings, "rows": rows}))


def test_pooled_evals_of_one_prompt_file_pair_whatever_path_it_was_given_by(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    mine = [("single object", "a red circle"), ("counting", "three orange squares")]
    other = [("single object", "a blue cross"), ("single object", "a pink box")]
    _eval_with_fingerprint(tmp_path / "A" / "mine", "--prompts ../x/p.txt", mine, True)
    _eval_with_fingerprint(tmp_path / "A" / "other", "--held-out 2 --prompt-seed 1", other, True)
    _eval_with_fingerprint(tmp_path / "B" / "mine", "--prompts /tmp/x/p.txt", mine, False)
    _eval_with_fingerprint(tmp_path / "B" / "other", "--held-out 2 --prompt-seed 1", other, False)
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "B")])
    assert result.exit_code == 0, result.output
    assert "8 images paired by prompt and seed\n" in result.output  # both evals, each with the other's twin
    # the same prompts in another order, or under other categories, are another prompt set: not paired
    _eval_with_fingerprint(tmp_path / "C" / "mine", "--prompts p.txt", mine[::-1], True)
    _eval_with_fingerprint(tmp_path / "C" / "other", "--held-out 2 --prompt-seed 1", other, True)
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "C")])
    assert "4 images paired by prompt and seed (4 only in A and 4 only in B left out)" in result.output


def test_a_pooled_directory_names_each_subdirectory_it_leaves_out_and_why(tmp_path):
    from typer.testing import CliRunner

    from pixgen.cli import app

    _eval_dir(tmp_path / "A" / "ps1", "--held-out 2 --prompt-seed 1", {("a red circle", 0): True})
    _eval_dir(tmp_path / "B" / "ps1", "--held-out 2 --prompt-seed 1", {("a red circle", 0): False})
    (tmp_path / "B" / "ps2").mkdir()  # interrupted before it finished: rows in progress.jsonl only
    (tmp_path / "B" / "ps2" / "progress.jsonl").write_text('{"fingerprint": {}}\n')
    (tmp_path / "B" / "notes").mkdir()
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "B")])
    assert result.exit_code == 0, result.output
    assert "(1 eval: ps1)\n   left out: notes (no results.json)\n   left out: ps2 (unfinished: only its " \
           "progress.jsonl; finish it with the `pixgen eval` command that started it, adding --resume)" in result.output
    assert f"A: {tmp_path / 'A' / 'ps1' / 'results.json'}\n" in result.output  # nothing left out: named as before
    # an unfinished eval given on its own, or a directory of unfinished evals only, is an error that says so
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "B" / "ps2")])
    assert result.exit_code == 2 and "holds an unfinished eval (progress.jsonl, no results.json yet)" in result.output
    (tmp_path / "B" / "ps1" / "results.json").unlink()
    (tmp_path / "B" / "ps1" / "progress.jsonl").write_text('{"fingerprint": {}}\n')
    result = CliRunner().invoke(app, ["toy", "compare", str(tmp_path / "A"), str(tmp_path / "B")])
    assert result.exit_code == 2 and "holds no finished eval: ps1, ps2 are unfinished" in result.output
    assert "finish each with" in result.output
