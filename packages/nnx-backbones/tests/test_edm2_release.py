"""`convert.edm2` on NVlabs/edm2's `Precond.state_dict()` layout (tools/fixtures/edm2_unet.py).

The fixture is a tiny Precond with seeded random weights saved with the released networks' keys.
Here: the mapping covers exactly those keys (only the logvar head ignored) and bad files are
refused with every problem listed. The forward parity with edm2's Precond, through
`EDMInterface`, and the export round trip are in nnx-interfaces/tests/test_edm2_precond.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.edm2 import LOGVAR_KEYS, edm2_mapping, load_edm2
from nnx_backbones.edm2_unet import EDM2Config, EDM2UNet
from nnx_backbones.errors import WeightsError
from nnx_backbones.weights.io import read_state_dict

FIX = Path(__file__).parent / "fixtures"
REF = np.load(FIX / "edm2_precond.npz")
META = json.loads(str(REF["meta"]))
CFG = META["config"]


def _config(**kw) -> EDM2Config:
    names = ("img_resolution", "img_channels", "model_channels", "num_blocks", "channels_per_head")
    base = {k: CFG[k] for k in names}
    base |= dict(
        num_classes=CFG["label_dim"],
        channel_mult=tuple(CFG["channel_mult"]),
        attn_resolutions=tuple(CFG["attn_resolutions"]),
    )
    return EDM2Config(**(base | kw))


def _abstract(**kw):  # shapes only: enough for the strict checks, cheap to build
    return nnx.eval_shape(lambda: EDM2UNet(_config(**kw), rngs=nnx.Rngs(5)))


def test_mapping_is_exactly_the_release_keys():
    state = read_state_dict(FIX / "edm2_precond.safetensors")
    mapping = edm2_mapping(_abstract())
    assert set(mapping) == set(state)  # logvar_* are the only keys not loaded
    assert all(k in mapping for k in LOGVAR_KEYS)


def test_wrong_configuration_or_foreign_keys_are_rejected_with_every_problem():
    state = read_state_dict(FIX / "edm2_precond.safetensors")
    bad = dict(state)
    bad.pop("unet.out_gain")
    bad["unet.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=r"(?s)unknown key.*unet\.extra\.weight") as e:
        load_edm2(_abstract(), bad)
    assert "unet.out_gain" in str(e.value)
    wide = _abstract(model_channels=2 * CFG["model_channels"])
    with pytest.raises(WeightsError, match="mis-shaped"):
        load_edm2(wide, state)
