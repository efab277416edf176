"""``pixgen models ...``: list, download, verify and locate model weights (registered by pixgen.cli)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from pixgen.cli_util import friendly

app = typer.Typer(help="List, download, verify and locate model weights.", no_args_is_help=True,
                  add_completion=False)

_HOME_HELP = "Cache directory for weights (default: $PIXGEN_HOME, else the checkout's checkpoints/, else ~/.cache/pixgen)."


_friendly = friendly(aborted="aborted (a partial download is kept and resumes next time)")


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@app.command("list")
@_friendly
def list_cmd(
    home: Optional[Path] = typer.Option(None, "--home", help=_HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the listing as JSON."),
) -> None:
    """Show the named VQGAN models (kind, size, downloaded or not, where) and the CLIP weights on disk."""
    from pixgen.checkpoints import list_models

    info = list_models(home)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"VQGAN models (cache: {info['home']}; * = default)")
    header = ("", "NAME", "KIND", "CODES", "F", "SIZE", "STATUS", "PATH")
    rows = [header]
    for r in info["vqgan"]:
        size = _human(r["size"]) if r["size"] is not None else (f"~{r['approx_size']}" if r["approx_size"] else "?")
        rows.append(("*" if r["default"] else "", r["name"], r["kind"], str(r["codes"] or "?"),
                     str(r["factor"] or "?"), size, r["state"], r["path"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    typer.echo("")
    clip_dir = Path(info["home"]) / "clip"
    typer.echo(f"CLIP weights available locally (in {clip_dir}):")
    if not info["clip"]:
        typer.echo("  none yet: open_clip downloads weights there on first use of --clip MODEL:PRETRAINED")
    for c in info["clip"]:
        typer.echo(f"  {c['name']}  {c['path']}")


@app.command("download")
@_friendly
def download_cmd(
    name: str = typer.Argument(..., help="Registry name (see `pixgen models list`)."),
    url: Optional[List[str]] = typer.Option(
        None, "--url", help="Download from this URL instead of the registry's hosts (repeat for mirrors)."),
    home: Optional[Path] = typer.Option(None, "--home", help=_HOME_HELP),
    retries: int = typer.Option(3, "--retries", min=0, help="Extra attempts per URL for transient failures."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds to wait for the server."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download a named VQGAN checkpoint into the cache (resumes a partial download)."""
    from pixgen.checkpoints import download_model, get_entry, pixgen_home, toy_files

    if name == "toy":
        typer.echo(f"toy is built in: its weights ship with pixgen in {toy_files()['vqgan.ckpt'].parent}")
        return
    entry = get_entry(name, home)
    dest = entry.checkpoint_path(pixgen_home(home))
    if dest.is_file():
        typer.echo(f"{entry.name} is already downloaded: {dest}")
        return
    path = download_model(entry.name, home, urls=url or None, progress=not quiet, retries=retries, timeout=timeout)
    typer.echo(f"downloaded {entry.name}: {path}")


@app.command("verify")
@_friendly
def verify_cmd(
    name: str = typer.Argument(..., help="Registry name of a downloaded model."),
    home: Optional[Path] = typer.Option(None, "--home", help=_HOME_HELP),
) -> None:
    """Check a downloaded checkpoint (size, checksum when known, loadable and matching its architecture)."""
    from pixgen.checkpoints import verify_model, verify_toy

    report = verify_toy() if name == "toy" else verify_model(name, home)
    typer.echo(f"{report['name']}: OK")
    typer.echo(f"  file:       {report['path']} ({_human(report['size'])})")
    if "sha256" in report:
        typer.echo(f"  sha256:     {report['sha256']} ({report['checksum']})")
    typer.echo(f"  weights:    {report['tensors']} tensors, {report['parameters']:,} parameters, "
               f"{report['n_embed']} codes")
    if report.get("safetensors_copy"):
        typer.echo(f"  safetensors copy: {report['safetensors_copy']}")


@app.command("path")
@_friendly
def path_cmd(
    name: str = typer.Argument(..., help="Registry name."),
    home: Optional[Path] = typer.Option(None, "--home", help=_HOME_HELP),
    config: bool = typer.Option(False, "--config", help="Print the architecture YAML's path instead."),
) -> None:
    """Print where a model's checkpoint is (or will be) kept; exit status 1 if it is not downloaded yet."""
    from pixgen.checkpoints import get_entry, pixgen_home, toy_files

    if name == "toy":  # built in: shipped with pixgen, never downloaded
        typer.echo(str(toy_files()["vqgan.yaml" if config else "vqgan.ckpt"]))
        return
    home_dir = pixgen_home(home)
    entry = get_entry(name, home_dir)
    if config:
        typer.echo(str(entry.config))
        return
    ckpt, copy = entry.checkpoint_path(home_dir), entry.safetensors_path(home_dir)
    present = ckpt if ckpt.is_file() else copy if copy.is_file() else None
    typer.echo(str(present or ckpt))
    if present is None:
        typer.echo(f"not downloaded yet: `pixgen models download {entry.name}`", err=True)
        raise typer.Exit(1)
