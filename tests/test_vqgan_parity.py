"""Our VQGAN encoder/decoder against taming-transformers' reference modules on the same random weights.

The reference package is installed with ``--no-deps`` into a cache folder for the test run only; pixgen itself
never imports it.
"""
import pytest
import torch

from pixgen.models.vqgan import VQGAN, VQGANConfig
from reference_pkgs import import_from, install

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def reference():
    folder = install("taming-transformers==0.0.1", "taming/modules/diffusionmodules/model.py")
    return import_from(folder, "taming.modules.diffusionmodules.model")


CONFIGS = {
    "f16": VQGANConfig(ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(4,), resolution=64,
                       z_channels=16, embed_dim=8, n_embed=32),
    "f8": VQGANConfig(ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(16, 8), resolution=64,
                      z_channels=32, embed_dim=16, n_embed=64),
    "f4-double-z": VQGANConfig(ch=64, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
                               z_channels=8, double_z=True, embed_dim=8, n_embed=16),
}


def _ddconfig(cfg: VQGANConfig) -> dict:
    return cfg.to_taming()["model"]["params"]["ddconfig"]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.2


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_and_decoder_match_the_reference(reference, name):
    cfg = CONFIGS[name]
    ours = VQGAN(cfg).eval()
    ref_enc = reference.Encoder(**_ddconfig(cfg)).eval()
    ref_dec = reference.Decoder(**_ddconfig(cfg)).eval()
    _randomise(ref_enc, 1)
    _randomise(ref_dec, 2)
    # Same parameter names: the reference weights load into ours strictly.
    ours.encoder.load_state_dict(ref_enc.state_dict(), strict=True)
    ours.decoder.load_state_dict(ref_dec.state_dict(), strict=True)

    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        assert (ours.encoder(x) - ref_enc(x)).abs().max().item() < 1e-5
        z = torch.randn(2, cfg.z_channels, 64 // cfg.factor, 48 // cfg.factor, generator=torch.Generator().manual_seed(4))
        assert (ours.decoder(z) - ref_dec(z)).abs().max().item() < 1e-5


def test_gumbel_and_plain_quantizer_keys_follow_taming():
    plain = VQGAN(CONFIGS["f8"]).state_dict()
    gumbel = VQGAN(VQGANConfig(**{**CONFIGS["f8"].__dict__, "gumbel": True})).state_dict()
    assert "quantize.embedding.weight" in plain and "quantize.proj.weight" not in plain
    assert {"quantize.embed.weight", "quantize.proj.weight", "quantize.proj.bias"} <= set(gumbel)
    assert "quant_conv.weight" in plain and "post_quant_conv.weight" in plain
