"""Command line of the toy world: ``pixgen toy train vqgan|clip|evaluator`` and ``pixgen eval``."""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from pixgen.cli_util import check_output_file, parse_colours, read_prompt_lines, set_threads
from pixgen.errors import ConfigError, Interrupted, PixgenError

toy_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="The offline toy world: train its VQGAN, CLIP and evaluator; draw, read and compare pictures.")
train_app = typer.Typer(no_args_is_help=True, help="Train one toy model from a seed (resumable, logged).")
toy_app.add_typer(train_app, name="train")

_OUT = typer.Option(Path("checkpoints/toy"), "--out", "-o", help="Directory for weights, state and log.")
_SEED = typer.Option(0, "--seed", "-s", min=0, help="Seed for weights and data.")
_RESUME = typer.Option(False, "--resume", help="Continue from OUT/state/ where a run stopped.")
_DEVICE = typer.Option(None, "--device", help="cpu, cuda (cuda:N) or auto (default: cuda when present).")
_THREADS = typer.Option(1, "--threads", help="CPU threads for torch (default 1: lean and repeatable; 2 or more may be faster).")


def _parse_pair(text: str, flag: str, example: str) -> tuple[float, float]:
    """``"LO,HI"`` -> (LO, HI) as floats, or a clear error naming ``flag``; the caller checks the bounds."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise PixgenError(f"{flag} {text!r} is not two numbers LO,HI", f"use e.g. {flag} {example}") from None
    return lo, hi


def _check_numbers(options: dict[str, float | None], rates: dict[str, str] | None = None) -> None:
    """Refuse, before any training starts, an infinite or NaN value of the float ``options`` (flag -> value;
    typer's min and max let infinity through, and torch takes it without a word) and a learning rate (``rates``:
    flag -> example) that is not above 0, which torch refuses only once the model is built, with a traceback."""
    for flag, value in options.items():
        if value is not None and not math.isfinite(value):
            raise PixgenError(f"{flag} {value} is not a finite number",
                              f"give a number, or leave {flag} out for its default")
    for flag, example in (rates or {}).items():
        rate = options[flag]
        if rate is not None and not rate > 0:
            raise PixgenError(f"{flag} {rate:g} is not a learning rate",
                              f"give a number above 0, e.g. {flag} {example}")


@contextmanager
def _ctrl_c_saves():
    """For the trainers: the first Ctrl-C saves after the current step and stops (--resume goes on). A --resume
    of a finished run is said to have nothing to do, and the command goes on to print what that run made."""
    from pixgen.interrupt import ctrl_c_stops_after_step
    from pixgen.toy.training import STOP_NOTICE, RunComplete

    with ctrl_c_stops_after_step(STOP_NOTICE) as stop:
        try:
            yield stop
        except RunComplete as done:
            typer.echo(f"pixgen: {done.message}", err=True)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PixgenError(f"--out {out} is a file, not a directory", "give a directory for the weights and logs")
    missing = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PixgenError(f"cannot create --out {out}: {exc.strerror or exc}",
                          "give a directory that can be created and written") from None
    for path in missing:  # only a check: the trainer makes them when it starts, after the other options pass
        path.rmdir()


def _keep_clip_in_place(out: Path, init: Optional[Path], resume: bool) -> None:
    """Refuse a fresh `train clip` run whose OUT/clip.pt would replace its own --init, or the shipped toy CLIP: the
    shipped one comes from a recipe of several stages (benchmarks/toy_results.md), not from one run of this command,
    and --out defaults to the shipped folder."""
    from pixgen.shipped import TOY_DIR
    from pixgen.toy.train_clip import split_tower

    dest = (out / "clip.pt").resolve()
    if resume or not dest.exists():
        return
    base = split_tower(init)[0] if init is not None else None
    if base is not None and base.resolve() == dest:
        raise PixgenError(f"--out {out} holds the --init {base}, which the run would write over",
                          "write the new weights to another directory, e.g. --out runs/clip-finetune")
    if dest == (TOY_DIR / "clip.pt").resolve():
        raise PixgenError(f"--out {out} is the shipped toy CLIP's folder, and a run would write over its clip.pt",
                          "give --out DIR for the new weights (the shipped CLIP comes from several stages of "
                          "training; benchmarks/toy_results.md has the recipe)")


@train_app.command("vqgan")
def train_vqgan_cmd(out: Path = _OUT,
                    steps: int = typer.Option(1400, "--steps", min=1,
                                              help="Training steps; 1400, with seed 0, is the shipped model's recipe."),
                    seed: int = _SEED,
                    batch: int = typer.Option(32, "--batch", min=1), resume: bool = _RESUME,
                    device: Optional[str] = _DEVICE, threads: int = _THREADS,
                    factor: int = typer.Option(4, "--factor", help="Pixels per latent cell along each side: 2, 4 "
                                               "(the shipped model) or 8."),
                    n_embed: int = typer.Option(512, "--n-embed", help="Codebook size.")) -> None:
    """Train the toy VQGAN; writes OUT/vqgan.ckpt, OUT/vqgan.yaml and OUT/vqgan.log.jsonl."""
    from pixgen.toy.train_vqgan import FACTORS, train_vqgan

    _check_out(out)
    if factor not in FACTORS:
        raise PixgenError(f"--factor {factor} is not supported", f"use --factor {', '.join(map(str, FACTORS))}")
    if n_embed < 2:
        raise PixgenError(f"--n-embed {n_embed} is too small", "use a codebook of 2 codes or more, e.g. 512")
    try:
        with _ctrl_c_saves() as stop:
            train_vqgan(out, steps=steps, seed=seed, batch=batch, resume=resume, device=device, threads=threads,
                        factor=factor, n_embed=n_embed, stop=stop)
    except ValueError as e:
        raise PixgenError(str(e), "see `pixgen toy train vqgan --help`") from None
    typer.echo(str(out / "vqgan.ckpt"))


@train_app.command("decoder")
def train_decoder_cmd(init: Optional[Path] = typer.Option(
                          None, "--init", help="Directory with the vqgan.yaml + vqgan.ckpt to start from (default: the "
                          "shipped toy VQGAN)."),
                      out: Path = typer.Option(..., "--out", "-o", help="Directory for the new VQGAN, state and log."),
                      steps: int = typer.Option(900, "--steps", min=1), seed: int = _SEED,
                      batch: int = typer.Option(16, "--batch", min=1), lr: float = typer.Option(1e-4, "--lr"),
                      gan_weight: float = typer.Option(0.5, "--gan-weight", min=0.0,
                                                       help="Weight of the critic's term (times the adaptive weight)."),
                      scramble: str = typer.Option("0.05,0.3", "--scramble",
                                                   help="LO,HI: share of code cells swapped in the scrambled grids."),
                      critic_warmup: int = typer.Option(100, "--critic-warmup", min=0,
                                                        help="Steps in which only the critic learns."),
                      critic_lr: Optional[float] = typer.Option(None, "--critic-lr", min=0.0,
                                                                help="The critic's learning rate (default: --lr)."),
                      resume: bool = _RESUME, device: Optional[str] = _DEVICE, threads: int = _THREADS) -> None:
    """Fine-tune the toy VQGAN's decoder against a patch critic (encoder and codebook kept, so latents keep their
    meaning); writes OUT/vqgan.ckpt, OUT/vqgan.yaml and OUT/vqgan_gan.log.jsonl."""
    from pixgen.shipped import TOY_DIR
    from pixgen.toy.train_vqgan import train_decoder_gan

    init = TOY_DIR if init is None else init
    _check_numbers({"--lr": lr, "--gan-weight": gan_weight, "--critic-lr": critic_lr},
                   rates={"--lr": "1e-4", "--critic-lr": "4e-4"})
    _check_out(out)
    if out.resolve() == init.resolve():
        raise PixgenError(f"--out {out} is the --init directory", "write the fine-tuned VQGAN to another directory")
    for name in ("vqgan.yaml", "vqgan.ckpt"):
        if not (init / name).is_file():
            raise PixgenError(f"--init {init} has no {name}", "give the directory of a `pixgen toy train vqgan` run")
    lo, hi = _parse_pair(scramble, "--scramble", "0.05,0.3")
    if not 0 <= lo <= hi <= 1:
        raise PixgenError(f"--scramble {scramble!r} needs 0 <= LO <= HI <= 1", "use e.g. --scramble 0.05,0.3")
    if critic_warmup >= steps:
        raise PixgenError(f"--critic-warmup {critic_warmup} leaves none of the {steps} steps to the decoder, which "
                          "would be written out as --init gave it", f"give --steps above {critic_warmup}, or e.g. "
                          f"--critic-warmup {steps // 10}")
    with _ctrl_c_saves() as stop:
        train_decoder_gan(init, out, steps=steps, seed=seed, batch=batch, lr=lr, gan_weight=gan_weight,
                          scramble=(lo, hi), critic_warmup=critic_warmup, critic_lr=critic_lr, resume=resume,
                          device=device, threads=threads, stop=stop)
    typer.echo(str(out / "vqgan.ckpt"))


def parse_weights(text: str, flag: str, names: tuple[str, ...], defaults: dict[str, float], what: str,
                  example: str) -> dict[str, float]:
    """``"a=0.4,b=0.2"`` -> ``defaults`` with those weights replaced or added; each name must be one of ``names``."""
    weights = dict(defaults)
    label = what.split()[-1].upper()
    hint = f"write {label}=WEIGHT pairs separated by commas, {label} one of {', '.join(names)}, e.g. {flag} {example}"
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in names:
            raise PixgenError(f"{flag}: unknown {what} {name!r}", hint)
        try:
            weight = float(value)
        except ValueError:
            raise PixgenError(f"{flag}: {item.strip()!r} has no numeric weight", hint) from None
        if not (math.isfinite(weight) and weight >= 0):
            raise PixgenError(f"{flag}: the weight of {name} must be a finite number >= 0, not {value.strip()}", hint)
        weights[name] = weight
    if sum(weights.values()) <= 0:
        raise PixgenError(f"{flag}: every {what} has weight 0", f"give at least one {what} a positive weight")
    return weights


def parse_kinds(text: str) -> dict[str, float]:
    """``"relation=0.4,position=0.2"`` -> the default caption-kind weights with those replaced."""
    from pixgen.toy.captions import PAIR_KIND_NAMES, PAIR_KINDS

    return parse_weights(text, "--kinds", PAIR_KIND_NAMES, PAIR_KINDS, "caption kind", "relation=0.4")


ALIGN_KINDS = ("faded", "bent", "both")


def parse_align_mix(text: str) -> tuple[float, float, float]:
    """``"bent=3"`` -> weights of the (faded, bent, both) spoilt kinds of --align, each 1 unless given."""
    weights = parse_weights(text, "--align-mix", ALIGN_KINDS, dict.fromkeys(ALIGN_KINDS, 1.0), "kind", "bent=3")
    return tuple(weights[k] for k in ALIGN_KINDS)


@train_app.command("clip")
def train_clip_cmd(out: Path = _OUT, steps: int = typer.Option(2000, "--steps", min=1), seed: int = _SEED,
                   batch: int = typer.Option(96, "--batch", min=1),
                   negatives: int = typer.Option(3, "--negatives", min=0, help="Hard-negative captions per scene."),
                   resume: bool = _RESUME, device: Optional[str] = _DEVICE, threads: int = _THREADS,
                   lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule)."),
                   warmup: int = typer.Option(150, "--warmup", min=0, help="Linear warm-up steps (0: none)."),
                   hard_weight: float = typer.Option(1.0, "--hard-weight", min=0.0,
                                                     help="Weight of the hard-negative term."),
                   init: Optional[Path] = typer.Option(
                       None, "--init", help="Start from the weights in this clip.pt (fine-tune) instead of random; "
                                            "CLIP.pt+TOWER.safetensors puts an image tower file on it first."),
                   chains: int = typer.Option(
                       0, "--chains", min=0, help="Generations run against the CLIP while it trains; their images are negatives."),
                   chain_weight: float = typer.Option(1.0, "--chain-weight", min=0.0,
                                                      help="Weight of the chain term."),
                   chain_flat: float = typer.Option(
                       0.0, "--chain-flat", help="Share of chains starting from a flat canvas (see --chain-flat-colours), not random codes."),
                   roundtrip: float = typer.Option(
                       0.0, "--roundtrip", help="Share of training images replaced by their VQGAN reconstruction."),
                   chain_cutouts: int = typer.Option(
                       1, "--chain-cutouts", min=1, help="Random crops each chain is scored on per step (generation uses 8)."),
                   chain_flat_colours: Optional[str] = typer.Option(
                       None, "--chain-flat-colours",
                       help="Colours of the flat chain starts, R,G,B;R,G,B;... (default: the gray 128,128,128)."),
                   cut: float = typer.Option(
                       0.0, "--cut", help="Share of scenes also shown with a named object half over the canvas edge, "
                                          "as a negative for their caption."),
                   stray: float = typer.Option(
                       0.0, "--stray", help="Share of scenes also shown with one more object in a free cell, as a "
                                            "negative for their caption (so that it prefers nothing extra)."),
                   near_miss: float = typer.Option(
                       0.0, "--near-miss", help="Share of scenes also shown changed in one way that makes their "
                                                "caption false (a named object in another shape, two named objects' "
                                                "colours or places swapped, one fewer of a count), as a negative "
                                                "for their caption."),
                   kinds: Optional[str] = typer.Option(
                       None, "--kinds", help="Weights of the caption kinds in each batch, KIND=W,... over the default "
                                             "mix (single=0.3,two=0.2,relation=0.22,count=0.18,multi=0.1); "
                                             "position=W adds single objects whose caption names their place."),
                   aux_layout: float = typer.Option(
                       0.0, "--aux-layout", min=0.0,
                       help="Weight of training-only heads that read each grid cell's colour and shape from the image "
                            "embedding, and the named place, relation and the colour and shape of each named object "
                            "(in order) from the caption embedding (teaches the CLIP layout and binding)."),
                   aux_relation: float = typer.Option(
                       0.0, "--aux-relation", min=0.0,
                       help="Weight of a training-only head that reads from the image embedding which of each two "
                            "colours is above / left of the other (teaches the comparisons relation captions ask)."),
                   lock_image: bool = typer.Option(
                       False, "--lock-image",
                       help="Freeze the image tower and train only the text side (needs --init): aligns the captions "
                            "with what the image embedding already holds. Give it again when resuming."),
                   lock_text: bool = typer.Option(
                       False, "--lock-text",
                       help="Freeze the text side and train only the image tower (needs --init): captions keep their "
                            "embeddings while the image side learns, e.g. against --chains. Give it again when resuming."),
                   chain_render: float = typer.Option(
                       0.0, "--chain-render",
                       help="Share of chains starting from the clean render of their own caption's scene: the CLIP "
                            "learns that nothing the search drifts to from a right answer beats it."),
                   fade: float = typer.Option(
                       0.0, "--fade",
                       help="Share of scenes also shown faded towards their background (8-60% contrast): faint right "
                            "objects must beat faint wrong ones on the caption, and lose to full contrast."),
                   robust: float = typer.Option(
                       0.0, "--robust", min=0.0, max=1.0,
                       help="Share of scenes shown as their worst case within a small L2 ball (adversarial "
                            "training), so that the image tower's gradients point at objects, not pixel noise."),
                   robust_eps: float = typer.Option(
                       1.0, "--robust-eps", min=0.0,
                       help="L2 radius of those perturbations, per image at the CLIP's input size, in [0, 1] units."),
                   robust_steps: int = typer.Option(2, "--robust-steps", min=1,
                                                    help="Gradient steps that find each worst case."),
                   warp: float = typer.Option(
                       0.0, "--warp", min=0.0, max=1.0,
                       help="Share of scenes also shown bent into blobs (same colours and places, shapes lost), "
                            "mildly and twice as far: the caption must rank clean > mild > strong."),
                   warp_amplitude: str = typer.Option(
                       "1.0,2.5", "--warp-amplitude",
                       help="LO,HI: RMS displacement of the mild blobs in pixels, drawn between LO and HI."),
                   align: float = typer.Option(
                       0.0, "--align", min=0.0, max=1.0,
                       help="Share of scenes also shown faded and/or bent into blobs, whose caption's gradient "
                            "must point at the clean render (perceptually aligned gradients; a second backward)."),
                   align_weight: float = typer.Option(1.0, "--align-weight", min=0.0,
                                                      help="Weight of that alignment term."),
                   align_clutter: float = typer.Option(
                       0.0, "--align-clutter", min=0.0, max=1.0,
                       help="Share of those spoilt scenes shown instead with stray objects pasted on the "
                            "background, whose gradient must paint them out."),
                   align_clutter_spoilt: bool = typer.Option(
                       False, "--align-clutter-spoilt",
                       help="Paste those strays on the spoilt scene instead of the clean one, so the caption's own "
                            "objects are faint or bent too and the gradient must keep them while painting strays out."),
                   align_mix: Optional[str] = typer.Option(
                       None, "--align-mix",
                       help="Weights of the spoilt kinds --align shows, KIND=W,... with KIND faded, bent or both "
                            "(default equal thirds), e.g. bent=3 to train the way from a blob to its shape harder."),
                   align_latent: bool = typer.Option(
                       False, "--align-latent",
                       help="Show the --align pictures through the VQGAN and compare the two directions in its "
                            "latent, as the search moves, not in pixels (needs OUT/vqgan.ckpt)."),
                   keep_every: int = typer.Option(
                       0, "--keep-every", min=0,
                       help="Also keep the weights every N steps as OUT/snapshots/clip_stepN.pt, to judge each on "
                            "the generation suite afterwards (0: only the last)."),
                   vqgan: Optional[Path] = typer.Option(
                       None, "--vqgan",
                       help="Directory with the toy VQGAN (vqgan.yaml + vqgan.ckpt) for junk images, --chains, "
                            "--roundtrip and --align-latent; default OUT (checkpoints/toy holds the shipped one)."),
                   ) -> None:
    """Train the toy CLIP with hard negatives; writes OUT/clip.pt and OUT/clip.log.jsonl (with --init,
    OUT/clip_finetune.log.jsonl).

    Uses the toy VQGAN in --vqgan DIR (default OUT) for the random-code "junk" images (if present) and for
    --chains, --roundtrip and --align-latent (required there), so train the VQGAN first or point at one.
    """
    from pixgen.toy.train_clip import train_clip

    _check_numbers({"--lr": lr, "--hard-weight": hard_weight, "--chain-weight": chain_weight,
                    "--aux-layout": aux_layout, "--aux-relation": aux_relation, "--robust-eps": robust_eps,
                    "--align-weight": align_weight}, rates={"--lr": "1e-3"})
    _check_out(out)
    if init is not None:
        from pixgen.toy.train_clip import split_tower

        tower_hint = ("the part after '+' must be an image tower .safetensors file written by `pixgen toy "
                      "image-tower`, e.g. checkpoints/toy/clip.pt+checkpoints/toy/clip_early_visual.safetensors")
        base, tower = split_tower(init)
        before, plus, after = str(init).rpartition("+")
        if tower is None and plus and not init.is_file() and Path(before).expanduser().is_file():
            raise PixgenError(f"--init {init}: {after} is not an image tower file", tower_hint)
        for part in (p for p in (base, tower) if p is not None):
            if part.is_dir():
                inside = f", e.g. --init {part / 'clip.pt'}" if (part / "clip.pt").is_file() else ""
                raise PixgenError(f"--init {init}: {part} is a folder, not a weights file",
                                  tower_hint if part is tower else f"give the clip.pt file of an earlier `pixgen toy "
                                  f"train clip` run{inside}")
            if not part.is_file():
                raise PixgenError(f"--init {init}: {part} not found",
                                  "give the clip.pt of an earlier `pixgen toy train clip` run, or CLIP.pt+TOWER."
                                  "safetensors (e.g. checkpoints/toy/clip.pt+checkpoints/toy/clip_early_visual."
                                  "safetensors)")
    if lock_image and lock_text:
        raise PixgenError("--lock-image and --lock-text together leave nothing to train", "give one of them")
    for flag, locked in (("--lock-image", lock_image), ("--lock-text", lock_text)):
        if locked and init is None:
            raise PixgenError(f"{flag} freezes a tower that would start from random weights",
                              "give --init with the clip.pt of an earlier `pixgen toy train clip` run")
    _keep_clip_in_place(out, init, resume)
    vq_dir = vqgan if vqgan is not None else out
    if vqgan is not None and not vqgan.is_dir():
        raise PixgenError(f"--vqgan {vqgan} is not a directory",
                          "give the directory holding vqgan.yaml and vqgan.ckpt, e.g. --vqgan checkpoints/toy")
    missing = [vq_dir / name for name in ("vqgan.yaml", "vqgan.ckpt") if not (vq_dir / name).is_file()]
    if vqgan is not None and missing:  # asked for, so not to be passed over as OUT's absent VQGAN is
        raise PixgenError(f"--vqgan {vqgan} holds no toy VQGAN: {missing[0]} does not exist",
                          "give the directory of a `pixgen toy train vqgan` run, e.g. --vqgan checkpoints/toy")
    if (chains or roundtrip or (align and align_latent)) and missing:
        raise PixgenError(f"--chains, --roundtrip and --align-latent need the toy VQGAN, and {missing[0]} "
                          "does not exist", f"run `pixgen toy train vqgan --out {vq_dir}` first, or give "
                          "--vqgan checkpoints/toy to use the shipped one")
    for flag, share in (("--roundtrip", roundtrip), ("--chain-flat", chain_flat), ("--cut", cut), ("--stray", stray),
                        ("--near-miss", near_miss),
                        ("--chain-render", chain_render), ("--fade", fade)):
        if not 0.0 <= share <= 1.0:
            raise PixgenError(f"{flag} {share} is not a share between 0 and 1", f"use e.g. {flag} 0.3")
    amp_lo, amp_hi = _parse_pair(warp_amplitude, "--warp-amplitude", "1.0,2.5")
    if not 0 < amp_lo <= amp_hi < math.inf:
        raise PixgenError(f"--warp-amplitude {warp_amplitude!r} needs 0 < LO <= HI, both finite",
                          "use e.g. --warp-amplitude 1.0,2.5")
    mix = parse_align_mix(align_mix) if align_mix is not None else None
    for flag, given, example in (("--align-clutter", align_clutter, "--align-clutter 0.3"),
                                 ("--align-mix", mix is not None, "--align-mix bent=3"),
                                 ("--align-latent", align_latent, "--align-latent")):
        if given and not align:
            raise PixgenError(f"{flag} changes the scenes that --align spoils, and --align is 0",
                              f"give --align too, e.g. --align 0.5 {example}")
    if align_clutter_spoilt and not align_clutter:
        raise PixgenError("--align-clutter-spoilt says where the strays of --align-clutter go, and --align-clutter is 0",
                          "give --align-clutter too, e.g. --align 0.2 --align-clutter 0.35 --align-clutter-spoilt")
    colours = parse_colours(chain_flat_colours, "--chain-flat-colours") if chain_flat_colours else None
    kind_weights = parse_kinds(kinds) if kinds else None
    with _ctrl_c_saves() as stop:
        train_clip(out, steps=steps, seed=seed, batch=batch, negatives=negatives, resume=resume, device=device,
                   threads=threads, lr=lr, warmup=warmup,
                   hard_weight=hard_weight, init=init, chains=chains, chain_weight=chain_weight, chain_flat=chain_flat,
                   roundtrip_p=roundtrip, chain_cutouts=chain_cutouts, cut_p=cut, stray_p=stray, near_miss_p=near_miss,
                   chain_flat_colours=colours, kinds=kind_weights, aux_layout=aux_layout,
                   aux_relation=aux_relation, lock_image=lock_image, lock_text=lock_text, chain_render=chain_render,
                   fade=fade, robust=robust, robust_eps=robust_eps, robust_steps=robust_steps,
                   warp=warp, warp_amplitude=(amp_lo, amp_hi), align=align, align_weight=align_weight,
                   align_clutter=align_clutter, align_mix=mix, align_latent=align_latent,
                   align_clutter_spoilt=align_clutter_spoilt, keep_every=keep_every, vqgan=vq_dir, stop=stop)
    typer.echo(str(out / "clip.pt"))


@toy_app.command("image-tower")
def image_tower_cmd(src: Path = typer.Argument(..., help="clip.pt of a run trained with --init BASE --lock-text."),
                    base: Path = typer.Option(..., "--base", help="The clip.pt whose text tower SRC kept."),
                    out: Path = typer.Option(..., "--out", "-o", help="The .safetensors file to write.")) -> None:
    """Write SRC's image tower alone (1.7 MB for the toy CLIP), to load as MODEL:BASE+TOWER."""
    from pixgen.toy.train_clip import export_image_tower

    for flag, path in (("SRC", src), ("--base", base)):
        if not path.is_file():
            raise PixgenError(f"{flag} {path} not found", "give the clip.pt files of `pixgen toy train clip` runs")
    check_output_file(out, "--out", ".safetensors", "late_visual.safetensors")
    typer.echo(str(export_image_tower(src, base, out)))


@toy_app.command("export-clip")
def export_clip_cmd(out: Path = typer.Option(..., "--out", "-o", help="The .pt file to write."),
                    tower: Optional[Path] = typer.Option(
                        None, "--tower", help="An image tower to put in place of BASE's own, e.g. "
                        "checkpoints/toy/clip_early_visual.safetensors."),
                    base: Optional[Path] = typer.Option(
                        None, "--base",
                        help="The toy CLIP's weights, a clip.pt state dict (default: the shipped one)."),
                    torchscript: bool = typer.Option(
                        False, "--torchscript", help="Write a TorchScript archive, the form OpenAI ships CLIP in, "
                        "which OpenAI's clip.load(path) reads; without it a plain state dict (open_clip, OpenAI's "
                        "build_model).")) -> None:
    """Write the toy CLIP, with another image tower if --tower is given, as one OpenAI-format file for other tools
    (pixgen itself loads BASE+TOWER)."""
    from pixgen.perceptor import clip_state_with_tower, merge_image_tower
    from pixgen.shipped import TOY_DIR

    base = TOY_DIR / "clip.pt" if base is None else base
    for flag, path in (("--tower", tower), ("--base", base)):
        if path is not None and not path.is_file():
            raise PixgenError(f"{flag} {path} not found", "give the toy CLIP's clip.pt and, if you like, one of its "
                              "image tower files, e.g. --tower checkpoints/toy/clip_early_visual.safetensors")
    check_output_file(out, "--out", ".pt", "clip_early.pt")
    if not torchscript:
        if tower is None:
            raise PixgenError("nothing to export: without --tower the plain state dict is --base itself",
                              "give --tower FILE, or --torchscript for BASE as a TorchScript archive")
        typer.echo(str(merge_image_tower(base, tower, out)))
        return
    from pixgen.models.clip import lean_config, save_torchscript
    from pixgen.perceptor import CONFIG_DIR

    state = clip_state_with_tower(base, tower)
    try:
        written = save_torchscript(lean_config(CONFIG_DIR / "pixgen-toy-clip.json"), state, out)
    except RuntimeError as exc:
        raise PixgenError(f"{base} is not the toy CLIP's weights: {str(exc).splitlines()[0][:200]}",
                          "give a clip.pt written by `pixgen toy train clip` (checkpoints/toy/clip.pt)") from None
    typer.echo(str(written))


@toy_app.command("compare")
def compare_cmd(a: Path = typer.Argument(..., help="One eval's --out directory (or its results.json), or a "
                                                   "directory of evals, one per subdirectory, pooled."),
                b: Path = typer.Argument(..., help="The other's, made from the same prompts and seeds.")) -> None:
    """Two `pixgen eval` results image by image: passes per category and verdict, the images only one of them
    passes, and a sign test of that split. Give two directories of evals (e.g. one per prompt seed) to pool them:
    their evals are paired by the prompts they judged, and a subdirectory without a finished eval is named as left
    out."""
    from pixgen.toy.compare import compare, left_out, load_evals, pooled_rows, report

    a_evals, b_evals = load_evals(a), load_evals(b)
    a_rows, b_rows = pooled_rows(a_evals, b_evals)
    typer.echo(report(compare(a_rows, b_rows), _evals_name(a, a_evals, left_out(a)),
                      _evals_name(b, b_evals, left_out(b))))


def _evals_name(path: Path, evals: list, left: list[tuple[str, str]]) -> str:
    """How the comparison names one side: its eval, or its directory and the evals pooled from it, and under it each
    subdirectory left out, with why."""
    pooled = ", ".join(file.parent.name for file, _, _ in evals)
    name = str(evals[0][0]) if len(evals) == 1 and not left else \
        f"{path} ({len(evals)} eval{'s' if len(evals) != 1 else ''}: {pooled})"
    return name + "".join(f"\n   left out: {sub} ({why})" for sub, why in left)


_RENDER_TRIES = 300  # random layouts per scene before a caption is refused as one no scene can hold


@toy_app.command("render")
def render_cmd(caption: str = typer.Argument(..., help="A toy-world caption, e.g. \"a red circle above a blue "
                                                       "square\"."),
               out: Path = typer.Option(Path("scene.png"), "--out", "-o", help="The PNG to write; with --count N, "
                                        "NAME_0.png to NAME_<N-1>.png beside it."),
               count: int = typer.Option(1, "--count", "-n", min=1, max=10000, help="How many different scenes."),
               seed: int = typer.Option(0, "--seed", "-s", min=0, help="Which random layouts: the same seed draws "
                                        "the same scenes."),
               scale: int = typer.Option(1, "--scale", min=1, max=16, help="Enlarge by nearest pixel (2: 128x128).")
               ) -> None:
    """Draw scenes of the toy world that a caption describes, in its exact colours and shapes: what a right picture
    for that prompt looks like. Each PNG carries its caption, so `pixgen toy read` judges it by that caption; one
    can also start a run (--init-image) or guide it (--image-prompt)."""
    import numpy as np
    from PIL import Image

    from pixgen.output import META_PREFIX, atomic_write, png_bytes
    from pixgen.toy.captions import read_caption, scene_for
    from pixgen.toy.evaluate import describe
    from pixgen.toy.world import CANVAS, render

    spec, words = read_caption(caption)
    if words is not None:
        typer.echo(f"pixgen: read {caption!r} as {words!r}, in the toy world's own words", err=True)
    check_output_file(out, "--out", ".png", "scene.png")
    rng = np.random.default_rng(seed)
    paths = [out] if count == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]
    for i, path in enumerate(paths):
        scene = scene_for(spec, rng, tries=_RENDER_TRIES)
        if scene is None:
            raise PixgenError(f"no toy-world scene fits {caption!r}: {_RENDER_TRIES} random layouts were tried",
                              "ask for fewer or smaller objects, or fewer of them in one place")
        image = Image.fromarray(render(scene)).resize((CANVAS * scale,) * 2, Image.NEAREST)
        meta = {"prompt": caption, "seed": str(seed), "index": str(i), "scene": describe(scene)}
        atomic_write(path, png_bytes(image, {META_PREFIX + key: value for key, value in meta.items()}))
        typer.echo(str(path))


@toy_app.command("read")
def read_cmd(images: List[Path] = typer.Argument(..., help="Pictures to read: PNG, JPEG or WebP, any size (read "
                                                           "at 64x64; one that is not square is first padded to a "
                                                           "square with its edge colours)."),
             prompt: Optional[str] = typer.Option(
                 None, "--prompt", "-p", help="Judge every picture by this toy-world caption (default: the prompt a "
                 "pixgen PNG carries, if it is one)."),
             as_json: bool = typer.Option(False, "--json", help="One JSON object per picture instead of text.")) -> None:
    """Read pictures with the evaluator and the strict reader, and judge them against a prompt as pixgen eval
    does: the evaluator's verdict, nothing extra, strict."""
    from dataclasses import asdict

    from pixgen.toy.read import read_images, report

    found = read_images(list(images), prompt)
    if as_json:
        for r in found:
            typer.echo(json.dumps(asdict(r)))
    else:
        typer.echo(report(found))


@train_app.command("evaluator")
def train_evaluator_cmd(out: Path = _OUT, steps: int = typer.Option(600, "--steps", min=1), seed: int = _SEED,
                        batch: int = typer.Option(32, "--batch", min=1), resume: bool = _RESUME,
                        device: Optional[str] = _DEVICE, threads: int = _THREADS) -> None:
    """Train the evaluator and print its held-out accuracy; writes OUT/evaluator.safetensors (+ .json)."""
    from pixgen.toy.train_evaluator import train_evaluator

    _check_out(out)
    with _ctrl_c_saves() as stop:
        train_evaluator(out, steps=steps, seed=seed, batch=batch, resume=resume, device=device, threads=threads,
                        stop=stop)
    typer.echo((out / "evaluator_heldout.json").read_text())


@train_app.command("prior")
def train_prior_cmd(out: Path = _OUT, steps: int = typer.Option(2500, "--steps", min=1), seed: int = _SEED,
                    batch: int = typer.Option(32, "--batch", min=1),
                    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (cosine schedule)."),
                    roundtrip: float = typer.Option(
                        0.3, "--roundtrip", min=0.0, max=1.0,
                        help="Share of spoilt scenes also passed through OUT/vqgan.ckpt, as generated images are."),
                    resume: bool = _RESUME, device: Optional[str] = _DEVICE, threads: int = _THREADS) -> None:
    """Train the scene prior (a restorer from spoilt scenes to clean renders) that pulls generated images towards
    flat-coloured shapes; writes OUT/prior.safetensors and OUT/prior.log.jsonl and prints its held-out error."""
    import json

    from safetensors import safe_open

    from pixgen.toy.prior import train_prior

    _check_numbers({"--lr": lr}, rates={"--lr": "2e-3"})
    _check_out(out)
    with _ctrl_c_saves() as stop:
        train_prior(out, steps=steps, seed=seed, batch=batch, lr=lr, roundtrip=roundtrip, resume=resume,
                    device=device, threads=threads, stop=stop)
    with safe_open(str(out / "prior.safetensors"), "pt") as f:
        typer.echo(json.dumps(json.loads(f.metadata()["meta"]), indent=2))


# Keys the eval sets itself for every image: --set may not change them, or its images would not be the eval's.
_EVAL_OWN_KEYS = {"model": "pixgen eval judges the toy model only", "threads": "give --threads instead",
                  "size": "give --size instead", "iterations": "give --iterations instead",
                  "seed": "the eval's seeds are 0..--seeds-1", "prompt": "give --prompts or --held-out instead"}


def _eval_config(config: str | None, dotted: list[str], size: int) -> Path | None:
    """Check ``--config`` and ``--set`` for the eval before any image is made: none of the keys may be one the
    eval sets itself, the file or preset must exist, and the config built from them over the toy preset must be
    valid (``_build_config`` parses the overrides and validates every key and value). Returns the config file's
    path (None without ``--config``)."""
    from pixgen.config import resolve_preset

    for item in dotted:
        key = item.split("=", 1)[0].strip()
        top = key.split(".", 1)[0]
        if top in _EVAL_OWN_KEYS:
            raise PixgenError(f"--set {item}: the eval sets {key!r} itself", _EVAL_OWN_KEYS[top])
    path = resolve_preset(config) if config is not None else None
    from pixgen import api  # torch and open_clip: only once the checks above have passed

    try:
        api._build_config("a red circle", str(path) if path else None, {"model": "toy", "size": [size, size]},
                          dotted or None)
    except ConfigError as exc:
        smallest = getattr(exc, "smallest_side", None)
        if smallest is None:
            raise
        # the eval's --size is one side, and a multiple of the toy VQGAN's factor (generate's hint says "7x7")
        from pixgen.toy.evaluate import _toy_vqgan

        factor = _toy_vqgan().factor
        raise ConfigError(exc.message, f"give a larger --size (--size {-(-smallest // factor) * factor} or more), "
                          "or turn the term off with --set border.weight=0") from None
    return path


def eval_command(
    model: str = typer.Option("toy", "--model", "-m", help="Only 'toy' can be judged (the evaluator knows its world)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per prompt (0..N-1); default 3, or 1 with --quick."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-i", help="Steps per image (default: the toy preset)."),
    size: int = typer.Option(64, "--size", help="Square image side in pixels."),
    out: Path = typer.Option(Path("outputs/toy_eval"), "--out", "-o", help="Directory for results.json, table.md, contact_sheet.png, images/."),
    quick: bool = typer.Option(False, "--quick", help="Two prompts per category of the fixed suite and one seed "
                               "unless --seeds says otherwise (a smoke test). Not with --prompts or --held-out, "
                               "whose prompts are all judged: give fewer there."),
    category: Optional[List[str]] = typer.Option(None, "--category", help="Only these categories (repeat)."),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", help="Judge your own prompts instead of the fixed suite: a text file, one toy-world "
        "caption per line ('#' starts a comment), e.g. 'a small pink cross below a cyan disc'."),
    held_out: Optional[int] = typer.Option(
        None, "--held-out", help="Judge N random prompts, none of them in the fixed suite, instead of the suite "
        "(a check that its numbers hold on prompts they were not tuned on; see --held-out-style)."),
    held_out_style: str = typer.Option(
        "suite", "--held-out-style", help="suite: new prompts of the fixed suite's forms and categories, in its "
        "proportions (compares column for column; at most 58, as only 16 colour-shape pairs are not in the "
        "suite already); grammar: prompts drawn from the training grammar, paraphrased "
        "(sizes, backgrounds, three or four objects)."),
    prompt_seed: int = typer.Option(0, "--prompt-seed", min=0, help="Which random prompts --held-out draws."),
    threads: int = typer.Option(
        1, "--threads", help="CPU threads for torch in each job. One (the default) spends the least CPU on a 64x64 "
        "image, and gives the same images on machines with any number of cores."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", help="Make this many images at once, each in its own process (default: one per CPU "
        "core, as many as the free memory holds at about 1 GB each; one on a GPU). Any --jobs gives the same "
        "images."),
    resume: bool = typer.Option(
        False, "--resume", help="Go on with the unfinished eval in --out (interrupted, e.g. by Ctrl-C): judge only "
        "the images it lacks. Give the options it was started with."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start afresh in an --out that holds an eval, finished or not: its results and "
        "images are removed first. Without it such an --out is refused, not written over."),
    config: Optional[str] = typer.Option(
        None, "--config", "-c", help="A YAML file or preset name applied over the toy preset for every image, "
        "e.g. toy-sparse or toy-contrast, to judge that option."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", help="Dotted override KEY=VALUE for every image (repeat), e.g. sparsity.weight=3."),
) -> None:
    """Generate the fixed toy prompt suite (or your own prompts), judge each image with the evaluator, print
    accuracy per category. Each image is kept in --out as soon as it is judged; an interrupted eval goes on
    with --resume. An --out that holds an eval already is not written over without --overwrite."""
    from pixgen.toy.captions import reword_caption
    from pixgen.toy.evaluate import CATEGORIES, EXTRA_CATEGORIES, HELD_OUT_STYLES, items_from_prompts
    from pixgen.toy.evaluate import held_out as draw_held_out
    from pixgen.toy.evaluate import held_out_source
    from pixgen.toy.evaluate import run_suite, suite, table, timing_line

    if model != "toy":
        raise PixgenError(f"pixgen eval judges the toy world only, not model {model!r}",
                          "run `pixgen eval --model toy`")
    set_threads(threads)
    if seeds is None:
        seeds = 1 if quick else 3
    if seeds < 1:
        raise PixgenError("--seeds must be at least 1", "e.g. --seeds 3")
    if size < 1:
        raise PixgenError(f"--size must be at least 1, got {size}", "e.g. --size 64 (the toy world's own size) or 128")
    if jobs is not None and jobs < 1:
        raise PixgenError(f"--jobs {jobs} is not a number of processes", "give 1 or more, e.g. --jobs 2 on two cores")
    if category:
        known = (*CATEGORIES, *EXTRA_CATEGORIES)
        unknown = [c for c in category if c not in known]
        if unknown:
            raise PixgenError(f"unknown category {unknown[0]!r}", f"choose from: {', '.join(known)}")
    if prompts is not None and held_out is not None:
        raise PixgenError("--prompts and --held-out both replace the fixed suite; give one of them")
    if quick and (prompts is not None or held_out is not None):
        # it would judge two prompts of each category and silently leave out the rest of those asked for
        given = f"--prompts {prompts}" if prompts is not None else f"--held-out {held_out}"
        raise PixgenError(f"--quick thins the fixed suite only; with {given} every prompt given is judged",
                          "drop --quick (--seeds 1 makes one image per prompt)"
                          + (", or write fewer lines in the file" if prompts is not None
                             else ", or ask for fewer prompts with --held-out"))
    items, source = None, None
    if prompts is not None:
        source = f"--prompts {prompts}"
        lines = read_prompt_lines(prompts, comments_after=True)
        items = items_from_prompts([text for _, text in lines], [f"{prompts} line {number}" for number, _ in lines])
        reworded = [(it.text, other) for it in items if (other := reword_caption(it.text)) is not None]
        if reworded:
            typer.echo(f"pixgen: {len(reworded)} of the {len(items)} prompts are read in the toy world's own words, "
                       f"e.g. {reworded[0][0]!r} as {reworded[0][1]!r} (generated so too, unless --set "
                       "toy_reword=false)", err=True)
    elif held_out is not None:
        if held_out < 1:
            raise PixgenError("--held-out must be at least 1", "e.g. --held-out 40")
        if held_out_style not in HELD_OUT_STYLES:
            raise PixgenError(f"unknown --held-out-style {held_out_style!r}", f"choose from: {', '.join(HELD_OUT_STYLES)}")
        items = draw_held_out(held_out, prompt_seed, held_out_style)
        source = held_out_source(held_out, prompt_seed, held_out_style)
    config_file = _eval_config(config, set_ or [], size)
    if category and not any(it.category in category for it in (suite() if items is None else items)):
        raise PixgenError(f"no prompt to judge is in the categories {', '.join(category)}",
                          "drop --category or choose another one")
    try:
        report = run_suite(seeds=list(range(seeds)), iterations=iterations, size=(size, size),
                           out=out, categories=category, max_per_category=2 if quick else None, items=items,
                           source=source, jobs=jobs, threads=threads, resume=resume, overwrite=overwrite,
                           **({"config": config_file} if config_file else {}),
                           **({"overrides": list(set_)} if set_ else {}))
    except Interrupted as exc:
        if getattr(exc, "summary", None):
            typer.echo(f"The images judged so far:\n\n{table(exc.summary)}\n")
        typer.echo(f"{exc.message}\n  {exc.hint}" if exc.hint else exc.message, err=True)
        raise typer.Exit(130) from None
    if report.get("complete_already"):
        typer.echo(f"nothing to resume: {out} holds the complete eval of these settings", err=True)
    typer.echo(table(report["summary"]))
    typer.echo(f"\n{timing_line(report['timing'])}")
    files = f"{out / 'results.json'}, {out / 'table.md'}, {out / 'contact_sheet.png'}, {out / 'images'}/"
    typer.echo(f"left {files} as they are" if report.get("complete_already") else f"wrote {files}")
