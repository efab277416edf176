"""Two toy evals side by side, image by image: which setting passes more, and could chance explain the gap?

Each image of one eval is paired with the image of the other made from the same prompt and seed. Counting the
passes alone hides how noisy a gap is; the pairs show it. Where the two settings disagree on an image, each such
image is a coin toss if neither setting is better, so the two-sided sign test over those images says how often a gap
at least this large would come by chance.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.toy.evaluate import CATEGORIES, EXTRA_CATEGORIES, PROGRESS_NAME, judged_prompts

VERDICTS = (("pass", "evaluator"), ("exact_pass", "nothing extra"), ("strict_pass", "strict reader"))


def sign_test(only_a: int, only_b: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven among ``only_a + only_b`` fair coin
    tosses (1.0 when nothing differs)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@dataclass
class Tally:
    """One verdict over a set of paired images."""

    images: int = 0
    a: int = 0
    b: int = 0
    only_a: int = 0
    only_b: int = 0

    def add(self, a: bool, b: bool) -> None:
        self.images += 1
        self.a += a
        self.b += b
        self.only_a += a and not b
        self.only_b += b and not a

    @property
    def p(self) -> float:
        return sign_test(self.only_a, self.only_b)


def _prompt_set(settings: object, rows: list[dict]) -> str:
    """What an eval's prompt set is known by when evals are pooled: its prompts, each with its category, in order
    (as its fingerprint keeps them), so that the same prompts pair however the --prompts file's path was written;
    for a report written before it kept its fingerprint, the same list from its rows, given its seeds; failing
    that, the prompt set as its settings name it (e.g. "--held-out 58 --held-out-style suite --prompt-seed 98")."""
    settings = settings if isinstance(settings, dict) else {}
    fingerprint = settings.get("fingerprint")
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("prompts"), list):
        return json.dumps(fingerprint["prompts"])
    seeds = settings.get("seeds")
    if isinstance(seeds, list) and seeds and rows and all(isinstance(r.get("index"), int) for r in rows):
        return json.dumps(judged_prompts(rows, seeds))
    return json.dumps(settings.get("prompts"))


def load_eval(path: str | Path) -> tuple[Path, str, list[dict]]:
    """An eval's ``results.json`` (given as the file or its directory): the file, the prompt set it judged
    (:func:`_prompt_set`) and its rows."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if path.is_dir() and (path / PROGRESS_NAME).is_file() and not file.exists():
        raise PixgenError(f"{path} holds an unfinished eval ({PROGRESS_NAME}, no results.json yet)", RESUME_HINT)
    if not file.is_file():
        raise PixgenError(f"{path} holds no results.json", "give the --out directory of a finished `pixgen eval`, "
                          "or a directory of such directories")
    try:
        data = json.loads(file.read_text())
        rows = data["rows"]
        if not all(isinstance(r, dict) and {"prompt", "seed", "category"} <= r.keys() for r in rows):
            raise KeyError("a row that is not an object with its prompt, seed and category")
        prompt_set = _prompt_set(data.get("settings"), rows)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PixgenError(f"{file} is not the results.json of a pixgen eval ({type(exc).__name__}: {exc})",
                          "give the --out directory of a finished `pixgen eval`") from None
    return file, prompt_set, rows


RESUME_HINT = "finish it with the `pixgen eval` command that started it, adding --resume"


def _is_pool(path: Path) -> bool:
    return path.is_dir() and not (path / "results.json").exists() and not (path / PROGRESS_NAME).exists()


def left_out(path: str | Path) -> list[tuple[str, str]]:
    """The subdirectories of a directory of evals that :func:`load_evals` does not pool, each named with why: an
    eval not finished yet, or no eval at all. (Empty for a single eval.)"""
    path = Path(path)
    if not _is_pool(path):
        return []
    why = []
    for d in sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")):
        if (d / "results.json").is_file():
            continue
        why.append((d.name, f"unfinished: only its {PROGRESS_NAME}; {RESUME_HINT}" if (d / PROGRESS_NAME).is_file()
                    else "no results.json"))
    return why


def load_evals(path: str | Path) -> list[tuple[Path, str, list[dict]]]:
    """The evals at ``path`` (as :func:`load_eval` reads each): one eval, or a directory of evals, one per
    subdirectory (e.g. the same setting judged on several prompt seeds); :func:`left_out` names the subdirectories
    that hold none. Two evals of one prompt set are refused: which one to pair would be a guess."""
    path = Path(path)
    if _is_pool(path):
        inner = sorted(d for d in path.iterdir() if (d / "results.json").is_file())
        unfinished = [name for name, why in left_out(path) if why.startswith("unfinished")]
        if not inner and unfinished:
            raise PixgenError(f"{path} holds no finished eval: {', '.join(unfinished)} "
                              f"{'is' if len(unfinished) == 1 else 'are'} unfinished (only {PROGRESS_NAME})",
                              RESUME_HINT.replace("it", "each", 1) if len(unfinished) > 1 else RESUME_HINT)
        if inner:
            evals = [load_eval(d) for d in inner]
            first: dict[str, Path] = {}
            for file, prompt_set, _ in evals:
                if prompt_set in first:
                    raise PixgenError(f"{path} holds two evals of the same prompts: {first[prompt_set].parent.name} "
                                      f"and {file.parent.name}", "keep one eval per prompt set in the directory")
                first[prompt_set] = file
            return evals
    return [load_eval(path)]


def pooled_rows(a: list[tuple[Path, str, list[dict]]],
                b: list[tuple[Path, str, list[dict]]]) -> tuple[list[dict], list[dict]]:
    """Each side's evals (:func:`load_evals`) as one list of rows for :func:`compare`. Where a side holds several
    evals, every row is marked with its eval's prompt set, so that an image pairs only with the image of the same
    prompt set, prompt and seed; two single evals pair as they are, whatever prompt sets they name."""
    if len(a) == 1 and len(b) == 1:
        return a[0][2], b[0][2]
    return tuple([{**r, "_prompt_set": prompt_set} for _, prompt_set, rows in side for r in rows]  # type: ignore
                 for side in (a, b))


def _keyed(rows: list[dict]) -> list[tuple[tuple, dict]]:
    """Each row keyed by prompt set (when pooled), prompt, seed and which time that comes up: a prompt file may hold
    a line twice."""
    seen: dict[tuple, int] = {}
    keyed = []
    for r in rows:
        key = (r.get("_prompt_set"), r["prompt"], r["seed"])
        seen[key] = seen.get(key, 0) + 1
        keyed.append(((*key, seen[key]), r))
    return keyed


def compare(a_rows: list[dict], b_rows: list[dict]) -> dict:
    """Per category and verdict, the tallies over the images both evals made (paired by prompt and seed; a prompt
    that comes up twice, by its first and second time in each), and how many images only one of them made."""
    b_by = dict(_keyed(b_rows))
    paired = [(r, b_by[key]) for key, r in _keyed(a_rows) if key in b_by]
    if not paired:
        raise PixgenError("the two evals share no image (no prompt made with the same seed in both)",
                          "compare evals of the same prompts and seeds, e.g. the same --held-out and --prompt-seed")
    tallies: dict[str, dict[str, Tally]] = {}
    for ra, rb in paired:
        for category in (ra["category"], "overall"):
            by_verdict = tallies.setdefault(category, {key: Tally() for key, _ in VERDICTS})
            for key, _ in VERDICTS:
                if key in ra and key in rb:
                    by_verdict[key].add(bool(ra[key]), bool(rb[key]))
    order = [*CATEGORIES, *EXTRA_CATEGORIES, "overall"]
    tallies = {c: tallies[c] for c in sorted(tallies, key=lambda c: (c == "overall", order.index(c) if c in order else 0))}
    return {"tallies": tallies, "paired": len(paired), "only_in_a": len(a_rows) - len(paired),
            "only_in_b": len(b_rows) - len(paired)}


def _p(p: float) -> str:
    return "1" if p >= 0.9995 else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def report(result: dict, a_name: str, b_name: str) -> str:
    """Markdown: one table per verdict, each category's passes in A and B, the images only one passes, and p."""
    lines = [f"A: {a_name}", f"B: {b_name}", f"{result['paired']} images paired by prompt and seed"
             + (f" ({result['only_in_a']} only in A and {result['only_in_b']} only in B left out)"
                if result["only_in_a"] or result["only_in_b"] else "")]
    for key, label in VERDICTS:
        rows = [(c, t[key]) for c, t in result["tallies"].items() if t[key].images]
        if not rows:
            continue
        lines += ["", f"{label}:", "", "| category | images | A | B | only A | only B | sign test p |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {c} | {t.images} | {t.a} | {t.b} | {t.only_a} | {t.only_b} | {_p(t.p)} |" for c, t in rows]
    lines += ["", "p: the chance that a split of the images only one passes at least this uneven comes about if "
              "neither setting is better (two-sided sign test)."]
    return "\n".join(lines)
