"""The ``pixgen`` command line: a thin typer layer that builds options and calls the library."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from pixgen.cli_util import parse_colours, read_prompt_file
from pixgen.cli_util import friendly as _friendly
from pixgen.errors import ConfigError

app = typer.Typer(
    name="pixgen",
    help="Text-to-image art with VQGAN+CLIP: reproducible, resumable runs from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def parse_size(text: str) -> list[int]:
    """``"256"``, ``"256x192"`` or ``"256,192"`` -> [width, height]."""
    match = re.fullmatch(r"\s*(-?\d+)\s*(?:[x,X ]\s*(-?\d+))?\s*", text)
    if not match:
        raise ConfigError(f"size {text!r} is not WIDTHxHEIGHT", "e.g. --size 256x256, --size 512x288 or --size 256")
    w = int(match.group(1))
    h = int(match.group(2)) if match.group(2) is not None else w
    if w <= 0 or h <= 0:
        raise ConfigError(f"size {text!r} must have a positive width and height", "e.g. --size 256x256")
    return [w, h]


def _stored_weights(stored: dict, image: Path) -> dict[str, str] | None:
    """The weights record in a pixgen PNG (None for images from before pixgen recorded one)."""
    import json

    if "weights" not in stored:
        return None
    try:
        record = json.loads(stored["weights"])
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ConfigError(f"{image}: its stored weights record is not readable",
                          "re-run it with --config and the options it was made with instead of --from-image")
    return {str(k): str(v) for k, v in record.items()}


def _records_threads(config_text: str) -> bool:
    """Whether a stored config names its thread count (PNGs from before pixgen recorded one do not)."""
    import yaml

    try:
        data = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return True  # from_yaml_text has already read it; nothing to add here
    return isinstance(data, dict) and "threads" in data


def _report(result) -> None:
    if result.run_dir is not None:
        image = result.run_dir / "image.png"
        if result.interrupted and not result.resumable:
            typer.echo(f"interrupted while re-making a run that was resumed with other lengths; saved {image}, but "
                       "`pixgen resume` cannot repeat the stops it made: run the same command again to re-make it",
                       err=True)
        elif result.interrupted:
            typer.echo(f"interrupted; saved {image}\nresume with: pixgen resume {result.run_dir}", err=True)
        else:
            typer.echo(str(image))


@app.command()
@_friendly
def generate(
    prompt: Optional[str] = typer.Argument(
        None, help='Text prompt: "a castle | fog:0.5 | blurry:-1 | gold:1:0.3"; TEXT:WEIGHT:STOP per term, '
                   "negative weights repel, '^' separates story phases."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="VQGAN: a registry name (pixgen models list), 'toy' (offline toy world), or 'random-tiny' "
             "(random weights for tests and install checks: its images are noise)."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT in pixels, rounded to the model's factor."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-i", help="Optimisation steps."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Random seed; same seed + config = same image."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam, adamw, adagrad, rmsprop or sgd."),
    cutouts: Optional[int] = typer.Option(None, "--cutouts", help="Cutouts scored by CLIP per step."),
    cut_pow: Optional[float] = typer.Option(None, "--cut-pow", help="Cutout size power (>1 favours small crops)."),
    augment: Optional[List[str]] = typer.Option(
        None, "--augment", help="kornia.augmentation class for cutouts (repeat; replaces the defaults; "
                                "'none' for no augmentation). Arguments go in a --config file."),
    image_prompt: Optional[List[str]] = typer.Option(None, "--image-prompt", help="PATH[:WEIGHT[:STOP]] (repeat)."),
    noise_prompt: Optional[List[str]] = typer.Option(None, "--noise-prompt", help="SEED[:WEIGHT] (repeat)."),
    init_image: Optional[str] = typer.Option(None, "--init-image", help="Start from this image."),
    init_color: Optional[str] = typer.Option(None, "--init-color", help="Start from a flat image of this colour: R,G,B (0-255); several separated by ';' (R,G,B;R,G,B) start from the one the prompt scores best."),
    init_weight: Optional[float] = typer.Option(None, "--init-weight", help="Pull the latent towards the start."),
    init_noise: Optional[float] = typer.Option(
        None, "--init-noise", help="Noise added to the starting latent, from the seed (in units of the codebook's "
        "spread; about 1 keeps a flat start looking flat): different seeds then give more varied pictures."),
    clip: Optional[List[str]] = typer.Option(
        None, "--clip", help="CLIP MODEL:PRETRAINED[:WEIGHT][@START-END] (repeat for an ensemble); pretrained may be a file; "
                                "@0.6-1 lets a model guide only the last 40% of the steps."),
    vqgan_config: Optional[str] = typer.Option(None, "--vqgan-config", help="Local taming YAML (with --vqgan-checkpoint)."),
    vqgan_checkpoint: Optional[str] = typer.Option(None, "--vqgan-checkpoint", help="Local taming .ckpt."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Steps between saved frames and snapshots."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where run directories are created."),
    name: Optional[str] = typer.Option(None, "--name", help="Run directory name (default: time and prompt)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    video: Optional[bool] = typer.Option(None, "--video/--no-video", help="Write progress.mp4 from the frames."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file or preset name (configs/)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Dotted override KEY=VALUE (repeat), e.g. optim.lr=0.2."),
    from_image: Optional[Path] = typer.Option(None, "--from-image", help="Re-run the config stored in a pixgen PNG."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for torch (default: the config's threads; the toy preset uses 1, "
                                "other models torch's own choice, usually one per core). It is recorded with the "
                                "image, which can depend on it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    prompts_file: Optional[Path] = typer.Option(
        None, "--prompts", help="A text file of prompts, one per line ('#' comments and blank lines skipped): a "
                                "run for each, all in one process, so the models load once."),
    count: int = typer.Option(1, "--count", "-n", help="Images per prompt, with seeds SEED, SEED+1, ... (each the "
                                                       "image that seed gives alone)."),
) -> None:
    """Generate an image from a prompt; prints the path of the image (one line per image)."""
    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}", "e.g. --count 4")
    if prompts_file is not None and prompt is not None:
        raise ConfigError("both a prompt and --prompts given", "give the prompt, or put it in the --prompts file")
    prompts = read_prompt_file(prompts_file) if prompts_file is not None else [prompt]
    base, made_with = None, None
    if from_image is not None:
        from pixgen.config import from_yaml_text
        from pixgen.output import read_png_metadata

        stored = read_png_metadata(from_image)
        base = from_yaml_text(stored["config"], str(from_image))
        made_with = _stored_weights(stored, from_image)
        if threads is None and not _records_threads(stored["config"]):
            typer.echo(f"pixgen: {from_image} records no thread count (it was made before pixgen kept one), so this "
                       "re-run uses torch's default. The picture can depend on the count: if it differs from the "
                       "original, give the count that made it, e.g. --threads 1", err=True)
    elif prompt is None and config is None and prompts_file is None and not image_prompt and not noise_prompt:
        raise ConfigError("no prompt given", 'pixgen generate "a red circle above a blue square" --model toy')
    options: dict[str, Any] = {
        "model": model, "iterations": iterations, "seed": seed, "optim.lr": lr, "optim.name": optimizer,
        "cutouts.n": cutouts, "cutouts.pow": cut_pow, "image_prompts": image_prompt, "noise_prompts": noise_prompt,
        "init_image": init_image, "init_weight": init_weight, "init_noise": init_noise, "clip": clip, "vqgan_config": vqgan_config,
        "vqgan_checkpoint": vqgan_checkpoint, "save_every": save_every, "output_dir": output_dir,
        "run_name": name, "device": device, "video": video, "threads": threads,
    }
    if size is not None:
        options["size"] = parse_size(size)
    if init_color is not None:
        colours = parse_colours(init_color, "--init-color")
        options["init_color"] = colours[0] if len(colours) == 1 else colours
    if augment:
        names = [a for a in augment if a.lower() != "none"]
        options["cutouts.augments"] = [{"name": a, "kwargs": {}} for a in names]
    from pixgen import api  # after the options are checked: importing torch takes seconds

    made: list[int] = []

    def report(result) -> None:
        made.append(1)
        _report(result)

    results = api.generate_many(prompts, count=count, config=config, overrides=set_, base=base, progress=not quiet,
                                made_with=made_with, on_result=report, keep=False, **options)
    if results[-1].interrupted:
        _report_unmade(prompts, count, len(made), int(results[-1].config.seed) - (len(made) - 1) % count)
        raise typer.Exit(130)


def _report_unmade(prompts: list[Optional[str]], count: int, made: int, first_seed: int) -> None:
    """After Ctrl-C stopped a batch: which of its images were never started (``made`` runs began, the last one
    interrupted; ``first_seed`` is each prompt's first seed)."""
    left = [(prompt, first_seed + k) for prompt in prompts for k in range(count)][made:]
    if not left:
        return
    shown = "; ".join((repr(p) if p is not None else "the config's prompt") + (f" seed {s}" if count > 1 else "")
                      for p, s in left[:5])
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    typer.echo(f"not started ({len(left)} of {len(prompts) * count}): {shown}{more}", err=True)


@app.command()
@_friendly
def resume(
    run_dir: Path = typer.Argument(..., help="A run directory written by pixgen generate."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-i", help="New total step count."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for torch (default: those the run was started with)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Continue an interrupted run from its last saved state to the requested iteration count."""
    from pixgen import api

    result = api.resume(run_dir, iterations=iterations, threads=threads, progress=not quiet)
    _report(result)
    if result.interrupted:
        raise typer.Exit(130)


def _wrap_commands(typer_app: typer.Typer) -> None:
    """Give every command of a sub-app the same error handling as pixgen's own."""
    for command in typer_app.registered_commands:
        command.callback = _friendly(command.callback)
    for group in typer_app.registered_groups:
        _wrap_commands(group.typer_instance)


def _register_subcommands() -> None:
    from pixgen.models_cli import app as models_app
    from pixgen.toy.cli import eval_command, toy_app

    app.add_typer(models_app, name="models", help="List, download, verify and locate model weights.")
    _wrap_commands(toy_app)
    app.add_typer(toy_app, name="toy", help="The offline toy world: train its VQGAN, CLIP and evaluator.")
    app.command("eval", help="Judge generated toy-world images per category with the toy evaluator.")(
        _friendly(eval_command))


_register_subcommands()


def main() -> None:
    app(prog_name="pixgen")


if __name__ == "__main__":
    sys.exit(main())
