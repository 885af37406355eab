"""RAE decoder against golden outputs of the RAE release's own code (bytetriper/RAE commit
a4d18c4: `stage1/decoders/decoder.py` GeneralDecoder and `stage1/rae.py` RAE.decode), imported
from the released decoder / stat.pt layout with `convert.rae.load_rae_decoder`. No torch.

`fixtures/rae/` (tools/fixtures/rae.py): a tiny ViT-MAE decoder (latents 4×4×8, width 16, 2
layers, patch 2, exact GELU, LayerNorm eps 1e-12) with every weight random (LayerNorm scales
1 + noise, the zero-initialised cls token re-drawn), per-position statistics, decode outputs.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.rae import export_rae_decoder, load_rae_decoder
from nnx_backbones.dinov2 import DINOv2Config
from nnx_backbones.errors import WeightsError
from nnx_backbones.rae import RAE, RAEDecoderConfig
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "rae"
ENC = DINOv2Config(hidden_size=8, depth=1, num_heads=2, image_size=28, patch_size=7)
DEC = RAEDecoderConfig(hidden_size=16, depth=2, num_heads=2, mlp_ratio=40 / 16, patch_size=2)


def tiny_rae(**kw) -> RAE:
    dec = RAEDecoderConfig(**{**DEC.__dict__, **kw})
    return nnx.eval_shape(lambda: RAE(ENC, dec, encoder_input_size=28, rngs=nnx.Rngs(0)))


def test_decode_matches_the_release_code():
    rae = load_rae_decoder(
        tiny_rae(), FIXTURES / "decoder.safetensors", stats=FIXTURES / "stat.safetensors"
    )
    ref = np.load(FIXTURES / "decode.npz")
    z_hat = jnp.asarray(np.moveaxis(ref["z_hat"], 1, -1))  # [B, h, w, C]
    got = rae.decode(z_hat)  # images in [−1, 1]; the release returns [0, 1]
    want = 2 * np.moveaxis(ref["images01"], 1, -1) - 1
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The raw decoder (before statistics and ImageNet de-normalisation) too.
    tokens = jnp.asarray(ref["decoder_tokens"].reshape(-1, 4, 4, 8))
    out = np.asarray(rae.decoder(tokens))  # [B, h·p, w·p, 3] → patches [B, h·w, p·p·3]
    patches = out.reshape(-1, 4, 2, 4, 2, 3).transpose(0, 1, 3, 2, 4, 5)
    logits = ref["decoder_logits"]
    np.testing.assert_allclose(
        patches.reshape(logits.shape), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max()
    )
    sd = read_state_dict(FIXTURES / "decoder.safetensors")
    exported = export_rae_decoder(rae)
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k], atol=1e-6)


def test_a_mismatched_decoder_is_rejected_with_every_problem_listed():
    with pytest.raises(WeightsError, match=r"decoder_layers\.1"):
        load_rae_decoder(tiny_rae(depth=1), FIXTURES / "decoder.safetensors")
