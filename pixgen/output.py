"""Everything a run writes: the run directory, PNGs with metadata, frames, the MP4, log.jsonl and state.

Each file is written to a temporary name in the same directory and renamed into place, so a crash or Ctrl-C
never leaves a half-written file under the real name.
"""
from __future__ import annotations

import io
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin

from pixgen.atomic import atomic_path, atomic_torch_save, atomic_write
from pixgen.engine import StepState
from pixgen.errors import ConfigError, InputImageError, PixgenError

IMAGE_NAME = "image.png"
STATE_NAME = "state.pt"
CONFIG_NAME = "run.yaml"
LOG_NAME = "log.jsonl"
VIDEO_NAME = "progress.mp4"
FRAMES_DIR = "frames"
META_PREFIX = "pixgen:"


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> RGB PIL image (rounded to nearest 8-bit value)."""
    array = image.detach().float().squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def png_bytes(image: Image.Image, metadata: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_itxt(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """The pixgen text chunks of a PNG written by pixgen, without the ``pixgen:`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"image {str(path)!r} not found", "give the path of a PNG written by pixgen")
    try:
        with Image.open(path) as img:
            img.load()
            text = dict(getattr(img, "text", {}) or {})
    except (OSError, SyntaxError) as exc:
        raise InputImageError(f"cannot read {str(path)!r} as an image: {exc}", "give a PNG written by pixgen") from None
    meta = {k[len(META_PREFIX):]: v for k, v in text.items() if k.startswith(META_PREFIX)}
    if "config" not in meta:
        raise InputImageError(f"{str(path)!r} carries no pixgen config",
                              "only PNGs written by pixgen (its image.png or frames) can be re-run")
    return meta


def load_image(path: str | Path, size: tuple[int, int] | None = None, what: str = "image") -> torch.Tensor:
    """Read an RGB image as (1, 3, H, W) in [0, 1], resized to ``size`` (width, height) if given."""
    path = Path(str(path)).expanduser()
    if not path.exists():
        raise InputImageError(f"{what} {str(path)!r} not found", "check the path")
    if path.is_dir():
        raise InputImageError(f"{what} {str(path)!r} is a directory, not an image file", "give an image file")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = _as_rgb(ImageOps.exif_transpose(img))
    except Image.UnidentifiedImageError:
        raise InputImageError(f"{what} {str(path)!r} is not an image pixgen can read",
                              "use a PNG, JPEG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{what} {str(path)!r} is damaged or truncated ({exc})",
                              "re-export or re-download the image") from None
    if size is not None and rgb.size != tuple(size):
        rgb = rgb.resize(tuple(size), Image.LANCZOS)
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _as_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB. PIL's own conversion clips the 16- and 32-bit integer modes (a 16-bit gray PNG) at 255 instead
    of scaling them, so a mid gray would come out white: those are scaled from their full range here."""
    wide = img.mode.startswith("I;16")
    if img.mode == "I":  # 32-bit integers: some readers give 16-bit PNGs this mode; values up to 255 are 8-bit
        wide = int(np.asarray(img).max(initial=0)) > 255
    if wide:
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) <= 65535 else float(2 ** 32 - 1)
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return img.convert("RGB")


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return slug[:limit].strip("-") or "run"


def make_run_dir(output_dir: str | Path, name: str | None, prompt: str) -> Path:
    """Create a fresh run directory under ``output_dir`` (named by time and prompt unless ``name`` is given)."""
    root = Path(output_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".pixgen-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise ConfigError(f"output directory {str(root)!r} is not writable ({exc.strerror or exc})",
                          "choose another with --output-dir, or fix its permissions") from None
    base = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(prompt)}"
    run_dir = root / base
    n = 2
    while True:
        try:
            run_dir.mkdir(parents=False, exist_ok=False)
            break
        except FileExistsError:
            run_dir = root / f"{base}-{n}"
            n += 1
    (run_dir / FRAMES_DIR).mkdir()
    return run_dir


class RunWriter:
    """The callback that writes a run: image.png, frames, log.jsonl, state.pt and (optionally) the MP4.

    Args:
        run_dir: the run's directory (exists).
        metadata: text chunks (without prefix) put into every PNG: prompt, seed, config, version.
        save_every: steps between frames/snapshots.
        state_fn: returns the resumable state dict (latent, optimizer, RNG) for ``state.pt``.
        video: whether to write ``progress.mp4`` from the frames at the end.
    """

    def __init__(self, run_dir: Path, metadata: dict[str, str], save_every: int, state_fn, video: bool = False,
                 fps: int = 20):
        self.run_dir, self.metadata, self.save_every = run_dir, metadata, save_every
        self.state_fn, self.video, self.fps = state_fn, video, fps
        self.last_saved = -1

    def _meta(self, step: int) -> dict[str, str]:
        return {META_PREFIX + k: v for k, v in {**self.metadata, "step": str(step)}.items()}

    def save_frame(self, step: int, image: torch.Tensor) -> bytes:
        data = png_bytes(to_pil(image), self._meta(step))
        atomic_write(self.run_dir / FRAMES_DIR / f"{step:06d}.png", data)
        return data

    def snapshot(self, state: StepState) -> None:
        """Save the frame, image.png and state.pt for the current step."""
        if self.last_saved == state.step:
            return
        data = self.save_frame(state.step, state.image())
        atomic_write(self.run_dir / IMAGE_NAME, data)
        atomic_torch_save(self.state_fn(state.step), self.run_dir / STATE_NAME)
        self.last_saved = state.step

    def on_step(self, state: StepState) -> None:
        if state.step % self.save_every == 0:
            self.snapshot(state)

    def on_log(self, state: StepState) -> None:
        with open(self.run_dir / LOG_NAME, "a", encoding="utf-8") as f:
            for record in state.records:
                f.write(json.dumps(record) + "\n")

    def on_end(self, state: StepState, reason: str) -> None:
        self.snapshot(state)
        if self.video:
            write_video(self.run_dir / FRAMES_DIR, self.run_dir / VIDEO_NAME, self.fps)


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log records after ``last_step`` (used when resuming from a snapshot)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    atomic_write(path, ("\n".join(keep) + "\n" if keep else "").encode())


def frame_paths(frames_dir: Path) -> list[Path]:
    return sorted(p for p in frames_dir.glob("*.png") if p.stem.isdigit())


def write_video(frames_dir: Path, dest: Path, fps: int = 20) -> Path:
    """Encode the frames (in step order) as an H.264 MP4 with imageio-ffmpeg's bundled ffmpeg."""
    import imageio.v2 as imageio

    frames = frame_paths(frames_dir)
    if not frames:
        raise PixgenError(f"no frames in {frames_dir} to make a video from", "run with a smaller --save-every")
    with atomic_path(dest, suffix=".tmp.mp4") as tmp:  # ffmpeg picks the container from the name's end
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                macro_block_size=1, ffmpeg_log_level="error",
                                output_params=["-pix_fmt", "yuv420p"] if _even(frames[0]) else None) as writer:
            for path in frames:
                writer.append_data(np.asarray(Image.open(path).convert("RGB")))
    return dest


def _even(path: Path) -> bool:
    with Image.open(path) as img:
        return img.width % 2 == 0 and img.height % 2 == 0


def metadata_for(prompt: str, seed: int, config_yaml: str, version: str,
                 weights: dict[str, str] | None = None) -> dict[str, Any]:
    """PNG text chunks: the prompt, seed and config that made the image, and which weights files it used."""
    meta = {"prompt": prompt, "seed": str(seed), "config": config_yaml, "version": version}
    if weights:
        meta["weights"] = json.dumps(weights, sort_keys=True)
    return meta
