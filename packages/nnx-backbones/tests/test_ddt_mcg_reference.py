"""LightningDDT with `convert.ddt.DDT_OPTIONS` against golden outputs of MCG-NJU/DDT's own
`decoupled_improved_dit.py` (commit 1d1b4d2), imported with `convert.ddt.load_ddt`.

`fixtures/ddt/` (tools/fixtures/ddt.py): a tiny DDT (8×8×4 latents, patch 2, width 16, 2 heads,
2 trunk + 1 head blocks), every weight random (RMSNorm scales 1 + noise, zero-initialised
final layer re-drawn), forward at flow times {0, 0.3, 0.77, 1} with the null label. No torch.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.ddt import DDT_OPTIONS, export_ddt, load_ddt
from nnx_backbones.ddt import LightningDDT
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "ddt"


def tiny(**options) -> LightningDDT:
    return nnx.eval_shape(
        lambda: LightningDDT(
            input_size=8, patch_size=2, in_channels=4, hidden_size=(16, 16), depth=(2, 1),
            num_heads=(2, 2), num_classes=10, rngs=nnx.Rngs(0), **(DDT_OPTIONS | options),
        )
    )  # fmt: skip


def test_forward_matches_the_release_code():
    model = load_ddt(tiny(), FIXTURES / "ddt.safetensors")
    ref = np.load(FIXTURES / "ddt.npz")
    x = jnp.asarray(np.moveaxis(ref["x"], 1, -1))
    got = model(x, jnp.asarray(ref["t"]), y=jnp.asarray(ref["y"]))
    want = np.moveaxis(ref["out"], 1, -1)
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    sd = read_state_dict(FIXTURES / "ddt.safetensors")
    exported = export_ddt(model)
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k], atol=1e-6)


def test_a_network_without_the_ddt_options_is_refused():
    for options in ({"rope_layout": "eva"}, {"final_rmsnorm": True}, {"time_max_period": 1e4}):
        with pytest.raises(ValueError, match=next(iter(options))):
            load_ddt(tiny(**options), FIXTURES / "ddt.safetensors")
