"""Every file a user keeps is written atomically: a failure or Ctrl-C mid-write leaves the old file whole."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from torch import nn

from pixgen.atomic import NEW_FILE_MODE, atomic_path, atomic_write


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_renames_into_place_with_a_plain_file_mode(tmp_path):
    dest = tmp_path / "out.bin"
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        tmp.write_bytes(b"new")
        assert not dest.exists()  # nothing under the real name until the writer is done
    assert dest.read_bytes() == b"new"
    assert _listing(tmp_path) == ["out.bin"]
    if hasattr(os, "fchmod"):
        assert dest.stat().st_mode & 0o777 == NEW_FILE_MODE


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    dest = tmp_path / "out.bin"
    atomic_write(dest, b"old")
    with pytest.raises(error):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half of the n")
            raise error()
    assert dest.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [None, KeyboardInterrupt])
def test_a_torch_archive_has_the_bytes_a_plain_save_gives_whatever_the_temporary(tmp_path, error):
    # torch names an archive's records after the file it writes: a random temporary name made the same weights
    # differ byte for byte between two saves, and a re-run said the weights had changed
    from pixgen.atomic import atomic_torch_save

    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.save(weights, tmp_path / "a" / "model.pt")
    if error is None:
        atomic_torch_save(weights, tmp_path / "b" / "model.pt")
        assert (tmp_path / "b" / "model.pt").read_bytes() == (tmp_path / "a" / "model.pt").read_bytes()
    else:
        with pytest.raises(error):
            with atomic_path(tmp_path / "b" / "model.pt", same_name=True) as tmp:
                assert tmp.name == "model.pt" and tmp.parent != tmp_path / "b"
                raise error()
    assert _listing(tmp_path / "b") == ([] if error else ["model.pt"])


def _tiny_vqgan():
    from pixgen.models.vqgan import VQGAN
    from pixgen.toy.train_vqgan import TOY_VQGAN

    return VQGAN(dataclasses.replace(TOY_VQGAN, ch=32, ch_mult=(1,), z_channels=4, embed_dim=4, n_embed=8))


class _Clip(nn.Module):  # what the CLIP writers read: a state dict with an image tower under .visual
    def __init__(self):
        super().__init__()
        self.visual = nn.Linear(3, 2)
        self.text = nn.Linear(2, 2)


def _save_taming(folder):
    from pixgen.toy.train_vqgan import save_taming

    save_taming(_tiny_vqgan(), folder, step=3)
    return folder / "vqgan.ckpt"


def _save_clip(folder):
    from pixgen.toy.train_clip import save_clip

    return save_clip(_Clip(), folder / "clip.pt")


def _save_tower(folder):
    from pixgen.perceptor import save_image_tower

    return save_image_tower(_Clip(), folder / "tower.safetensors")


def _save_state(folder):
    from pixgen.toy.training import save_state

    save_state(folder / "state.pt", step=5, weights=torch.ones(3))
    return folder / "state.pt"


def _save_evaluator(folder):
    from pixgen.toy.evaluator import Evaluator, save_evaluator

    return save_evaluator(Evaluator(width=4, hidden=8), folder / "evaluator.safetensors")


@pytest.mark.parametrize("save", [_save_taming, _save_clip, _save_tower, _save_state, _save_evaluator],
                         ids=["vqgan", "clip", "image-tower", "training-state", "evaluator"])
def test_ctrl_c_while_a_trainer_saves_keeps_the_last_good_file(tmp_path, monkeypatch, save):
    import safetensors.torch

    torch.manual_seed(0)
    path = save(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in _listing(tmp_path)}
    assert path.name in before

    def torn(*args, **kwargs):  # writes part of a file under whatever name it was given, then is interrupted
        target = next(a for a in args if isinstance(a, (str, os.PathLike)))
        with open(target, "wb") as f:
            f.write(b"\x80\x02torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path)
    after = {name: (tmp_path / name).read_bytes() for name in _listing(tmp_path)}
    assert after == before  # the old files whole, and no temporary left beside them
