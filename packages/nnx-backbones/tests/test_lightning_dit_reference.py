"""LightningDiT against golden outputs of hustvl/LightningDiT's own `models/lightningdit.py`
(commit 2725fed), imported from the release's state_dict layout with `convert.dit.load_dit`.

`fixtures/lightning_dit/` was written by `tools/fixtures/lightning_dit.py`: tiny networks with
every weight random (RMSNorm scales 1 + noise, zero-initialised adaLN / final layers re-drawn),
"release" = the paper's options (RMSNorm, SwiGLU, RoPE), "qknorm_woshift" adds RMS qk-norm and
shift-free adaLN (and learn_sigma). No torch.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.dit import export_dit, load_dit
from nnx_backbones.lightning_dit import LightningDiT
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "lightning_dit"
CONFIGS = {
    "release": dict(
        input_size=4, patch_size=1, in_channels=8, learn_sigma=False, qk_norm=None,
        wo_shift=False,
    ),
    "qknorm_woshift": dict(
        input_size=8, patch_size=2, in_channels=4, learn_sigma=True, qk_norm="rms",
        wo_shift=True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_the_release_code(name):
    model = nnx.eval_shape(
        lambda: LightningDiT(
            hidden_size=16, depth=2, num_heads=2, num_classes=10, use_rmsnorm=True,
            use_swiglu=True, use_rope=True, rngs=nnx.Rngs(0), **CONFIGS[name],
        )
    )  # fmt: skip
    load_dit(model, FIXTURES / f"{name}.safetensors")  # RoPE tables and pos_embed are checked
    ref = np.load(FIXTURES / f"{name}.npz")
    x = jnp.asarray(np.moveaxis(ref["x"], 1, -1))
    # The release feeds its flow time unscaled; this backbone's embedding multiplies by 1000.
    got = model(x, jnp.asarray(ref["t"] / 1000.0, jnp.float32), y=jnp.asarray(ref["y"]))
    want = np.moveaxis(ref["out"], 1, -1)  # the release returns the first C channels
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    sd = read_state_dict(FIXTURES / f"{name}.safetensors")
    exported = export_dit(model)
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k], atol=1e-4 if "feat_rope" in k else 1e-6)
