"""EDM2's UNet + preconditioning against NVlabs/edm2's own `Precond` (tools/fixtures/edm2_unet.py).

The fixture (in nnx-backbones/tests/fixtures) is a tiny Precond with seeded random weights (the
zero-initialised gains re-randomised) saved as `Precond.state_dict()` — the released networks'
key layout — with its outputs D(x; σ, y) on fixed inputs (conditional and unconditional, σ from
0.01 to 60). `convert.edm2.load_edm2` takes the file as is and `EDMInterface(EDM2UNet,
x_sigma=0.5).denoise` must reproduce D to rel 1e-4, σ by σ; the export is the file again.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.convert.edm2 import LOGVAR_KEYS, export_edm2, load_edm2
from nnx_backbones.edm2_unet import EDM2Config, EDM2UNet
from nnx_backbones.weights.io import read_state_dict
from nnx_interfaces.edm import EDMInterface

FIX = Path(__file__).resolve().parents[2] / "nnx-backbones" / "tests" / "fixtures"
REF = np.load(FIX / "edm2_precond.npz")
META = json.loads(str(REF["meta"]))
CFG = META["config"]


def _net():
    names = ("img_resolution", "img_channels", "model_channels", "num_blocks", "channels_per_head")
    cfg = EDM2Config(
        **{k: CFG[k] for k in names},
        num_classes=CFG["label_dim"],
        channel_mult=tuple(CFG["channel_mult"]),
        attn_resolutions=tuple(CFG["attn_resolutions"]),
    )
    return EDM2UNet(cfg, rngs=nnx.Rngs(5))


def test_release_layout_loads_and_reproduces_edm2_precond():
    state = read_state_dict(FIX / "edm2_precond.safetensors")
    net = load_edm2(_net(), state)
    itf = EDMInterface(net, x_sigma=META["sigma_data"], rngs=nnx.Rngs(0))
    x = jnp.asarray(REF["x"].transpose(0, 2, 3, 1))  # NCHW → NHWC
    labels = REF["labels"]
    y = jnp.asarray(np.where(labels < 0, CFG["label_dim"], labels))  # −1 → the null label
    denoise = nnx.jit(lambda m, x, s, y: m.denoise(x, s, y=y))
    d = np.asarray(denoise(itf, x, jnp.asarray(REF["sigma"]), y)).transpose(0, 3, 1, 2)
    ref = REF["denoised"]
    for i in range(ref.shape[0]):  # per σ: D ranges from ≈ x (σ = 0.01) to ≈ E[x] (σ = 60)
        err = np.abs(d[i] - ref[i]).max()
        assert err <= 1e-4 * np.abs(ref[i]).max(), (i, float(REF["sigma"][i]), err)
    # the network part alone (c_skip·x removed, divided by c_out) matches too
    s, sd2 = REF["sigma"][:, None, None, None], META["sigma_data"] ** 2
    c_skip, c_out = sd2 / (s**2 + sd2), s * np.sqrt(sd2) / np.sqrt(s**2 + sd2)
    f_ours, f_ref = (d - c_skip * REF["x"]) / c_out, (ref - c_skip * REF["x"]) / c_out
    np.testing.assert_allclose(f_ours, f_ref, atol=1e-4 * np.abs(f_ref).max())
    # export gives the release file back (without the logvar head)
    exported = export_edm2(net)
    assert set(exported) == set(state) - set(LOGVAR_KEYS)
    for k, v in exported.items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
