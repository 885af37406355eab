"""LightningDDT (DiT^DH) against golden outputs of RAE's own `stage2/models/DDT.py` DiTwDDTHead
(bytetriper/RAE commit a4d18c4), imported from the release layout with `convert.ddt.load_rae_ddt`.

`fixtures/rae/ddt_*` (tools/fixtures/rae.py): tiny networks, every weight random (RMSNorm
scales 1 + noise, zero-initialised modulations re-drawn), Gaussian Fourier W as drawn by the
release; "ddt_wide" has a wider head (s_projector), "ddt_equal" equal widths and RMS qk-norm.
Fails on the former LightningDDT (DiT's time embedding, no SiLU inside the modulations, a
position table on the head tokens). No torch.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.ddt import export_rae_ddt, load_rae_ddt
from nnx_backbones.ddt import LightningDDT
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "rae"
CONFIGS = {
    "ddt_wide": dict(hidden_size=(16, 24), depth=(2, 1), qk_norm=None),
    "ddt_equal": dict(hidden_size=(16, 16), depth=(1, 2), qk_norm="rms"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_the_release_code(name):
    model = nnx.eval_shape(
        lambda: LightningDDT(
            input_size=4, patch_size=1, in_channels=8, num_heads=(2, 2), num_classes=10,
            rngs=nnx.Rngs(0), **CONFIGS[name],
        )
    )  # fmt: skip
    load_rae_ddt(model, FIXTURES / f"{name}.safetensors")
    ref = np.load(FIXTURES / f"{name}.npz")
    x = jnp.asarray(np.moveaxis(ref["x"], 1, -1))
    got = model(x, jnp.asarray(ref["t"]), y=jnp.asarray(ref["y"]))  # flow time, unscaled
    want = np.moveaxis(ref["out"], 1, -1)
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    sd = read_state_dict(FIXTURES / f"{name}.safetensors")
    exported = export_rae_ddt(model)
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k], atol=1e-4 if "rope" in k else 1e-6)


def test_generic_form_is_refused_by_the_rae_importer():
    model = nnx.eval_shape(
        lambda: LightningDDT(
            input_size=4, patch_size=1, in_channels=8, hidden_size=(16, 24), depth=(2, 1),
            num_heads=(2, 2), num_classes=10, time_embedding="sinusoidal", rngs=nnx.Rngs(0),
        )
    )  # fmt: skip
    with pytest.raises(ValueError, match="gaussian_fourier"):
        load_rae_ddt(model, FIXTURES / "ddt_wide.safetensors")
