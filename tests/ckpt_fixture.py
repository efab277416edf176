"""Tiny synthetic VQGAN checkpoints written in each real-world format (Lightning VQModel, GumbelVQ, Net2Net)."""
from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from pixgen.models.vqgan import VQGAN, VQGANConfig

TINY = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32, z_channels=8,
                   embed_dim=8, n_embed=16)
TINY_GUMBEL = replace(TINY, gumbel=True)


def tiny_vqgan(cfg: VQGANConfig = TINY, seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    model = VQGAN(cfg)
    for p in model.parameters():  # make every tensor distinct from a fresh init, so a load is observable
        p.data.normal_(0, 0.1)
    return model.eval()


def write_yaml(path: Path, cfg: VQGANConfig = TINY, *, net2net: bool = False) -> Path:
    taming = cfg.to_taming()
    if net2net:
        taming = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": {
            "cond_stage_key": "coord",
            "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT",
                                   "params": {"vocab_size": cfg.n_embed, "block_size": 16, "n_layer": 1}},
            "first_stage_config": taming["model"],
            "cond_stage_config": {"target": "taming.modules.misc.coord.CoordStage"},
        }}}
    path.write_text(yaml.safe_dump(taming))
    return path


@contextlib.contextmanager
def fake_lightning():
    """Make ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` importable while saving."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/rec_loss"

    ModelCheckpoint.__module__ = names[-1]
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mods[names[-1]].ModelCheckpoint = ModelCheckpoint
    sys.modules.update(mods)
    try:
        yield ModelCheckpoint
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def lightning_checkpoint(state: dict, *, callback_cls=None) -> dict:
    """Wrap a state dict the way taming's Lightning trainer saved it (with loss weights and metadata)."""
    import numpy as np

    state = dict(state)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    state["loss.logvar"] = torch.zeros(())
    ckpt = {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "1.0.8",
        "state_dict": state,
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0, 1]}]}],
        "lr_schedulers": [],
    }
    if callback_cls is not None:
        ckpt["callbacks"] = {callback_cls: {"best_model_score": np.float64(0.25), "best_model_path": "last.ckpt"}}
        ckpt["checkpoint_callback"] = callback_cls()
    return ckpt


def save_checkpoint(path: Path, model: VQGAN, fmt: str = "lightning", *, legacy: bool = False) -> Path:
    """Write ``model`` as ``fmt``: lightning | net2net | state_dict | bare."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with fake_lightning() as callback_cls:
        if fmt == "lightning":
            obj = lightning_checkpoint(sd, callback_cls=callback_cls)
        elif fmt == "net2net":
            full = {f"first_stage_model.{k}": v for k, v in sd.items()}
            full["transformer.tok_emb.weight"] = torch.randn(16, 4)
            full["transformer.blocks.0.attn.key.weight"] = torch.randn(4, 4)
            full["cond_stage_model.encoder.conv_in.weight"] = torch.randn(32, 3, 3, 3)  # sflckr-like second VQGAN
            obj = lightning_checkpoint(full, callback_cls=callback_cls)
            del obj["state_dict"]["loss.logvar"]  # Net2Net files carry no first-stage loss
            del obj["state_dict"]["loss.discriminator.main.0.weight"]
        elif fmt == "state_dict":
            obj = {"state_dict": sd}
        elif fmt == "bare":
            obj = sd
        else:
            raise ValueError(fmt)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def malicious_checkpoint(path: Path, model: VQGAN, marker: Path, *, legacy: bool = False) -> Path:
    """A valid-looking Lightning checkpoint with a code-running object tucked into its metadata."""
    obj = lightning_checkpoint({k: v.clone() for k, v in model.state_dict().items()})
    obj["hyper_parameters"] = {"lr": 1e-4, "note": Payload(marker)}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path
