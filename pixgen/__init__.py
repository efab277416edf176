"""pixgen: text-to-image art with VQGAN+CLIP.

Public API::

    import pixgen
    result = pixgen.generate("a red circle above a blue square", model="toy", size=[128, 128])
    result.image.save("out.png")
"""
__version__ = "0.1.0"

from pixgen.errors import PixgenError  # noqa: E402

_API_NAMES = ("Result", "generate", "generate_many", "resume")


def __getattr__(name: str):
    """``generate``, ``generate_many``, ``resume`` and ``Result`` come from :mod:`pixgen.api`, imported on first
    use, so that the command line answers ``--help`` and reports bad options without first importing torch and
    open_clip."""
    if name in _API_NAMES:
        from pixgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'pixgen' has no attribute {name!r}")


def load_vqgan(config_path, checkpoint_path, device="cpu"):
    """Load a taming-format VQGAN (YAML + .ckpt); returns a module with encode/quantize/decode/codebook."""
    from pixgen.checkpoints import load_vqgan as _load

    return _load(config_path, checkpoint_path, device=device)


def load_perceptor(spec, device="cpu"):
    """Load a CLIP model by ``"MODEL:PRETRAINED[:WEIGHT]"`` (pretrained may be a local weights file)."""
    from pixgen.perceptor import load_perceptor as _load

    return _load(spec, device)


def release_models():
    """Drop the models the latest run kept loaded. Runs in one process reuse the previous run's VQGAN and CLIP
    models when they name the same unchanged weights, so a second image skips the loading; call this to free
    their memory (a GPU's too) once no more runs will follow."""
    from pixgen.factory import release_models as _release

    _release()


__all__ = ["generate", "resume", "Result", "load_vqgan", "load_perceptor", "release_models", "PixgenError",
           "__version__"]
