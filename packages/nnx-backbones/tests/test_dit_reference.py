"""DiT against golden outputs of facebookresearch/DiT's own `models.py` (commit ed81ce2).

`fixtures/dit/` was written by `tools/fixtures/dit.py` (see tools/fixtures/README.md): a tiny DiT
(8×8×4 latents, patch 2, width 32, depth 2, 10 classes, learn_sigma) with every weight random
and non-zero, saved as the release's state_dict; its forward outputs on fixed inputs. No torch.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.convert.dit import export_dit, load_dit
from nnx_backbones.dit import DiT
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "dit"


def tiny_release_dit() -> DiT:
    model = nnx.eval_shape(
        lambda: DiT(
            input_size=8, patch_size=2, in_channels=4, hidden_size=16, depth=2, num_heads=2,
            num_classes=10, learn_sigma=True, rngs=nnx.Rngs(0),
        )
    )  # fmt: skip
    return load_dit(model, FIXTURES / "dit_tiny.safetensors")


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1)


def test_forward_matches_the_release_code():
    ref = np.load(FIXTURES / "dit_forward.npz")
    model = tiny_release_dit()
    # The release's integer step n is t = n / 1000 here.
    t = jnp.asarray(ref["t"] / 1000.0, jnp.float32)
    got = model(jnp.asarray(nhwc(ref["x"])), t, y=jnp.asarray(ref["y"]), full_output=True)
    want = nhwc(ref["out"])
    assert np.abs(want).mean() > 0.1  # not a vacuous comparison
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The default call returns the first C channels (ε), the rest is the learned variance.
    np.testing.assert_array_equal(
        model(jnp.asarray(nhwc(ref["x"])), t, y=jnp.asarray(ref["y"])), got[..., :4]
    )


def test_export_gives_back_the_release_state_dict():
    sd = read_state_dict(FIXTURES / "dit_tiny.safetensors")
    exported = export_dit(tiny_release_dit())
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k], atol=1e-6 if k == "pos_embed" else 0)
