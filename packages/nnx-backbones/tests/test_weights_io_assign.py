"""weights.assign: strict all-or-nothing assignment with every problem listed; exact export."""

import numpy as np
import pytest
from flax import nnx

from nnx_backbones.errors import WeightsError
from nnx_backbones.weights.assign import (
    CONV2D,
    IGNORE,
    LINEAR,
    Buffer,
    assign_state,
    export_state,
    variable_paths,
    variables,
)


class _Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (2, 2), strides=2, padding="VALID", rngs=rngs)
        self.layers = nnx.List([nnx.Linear(4, 5, rngs=rngs), nnx.Linear(5, 2, rngs=rngs)])
        self.rngs = rngs


def Tiny(seed: int = 0) -> _Tiny:
    """Built abstractly (no initialiser runs), parameters then set to zeros."""
    model = nnx.eval_shape(lambda: _Tiny(nnx.Rngs(seed)))
    for var in variables(model).values():
        var.set_value(np.zeros(var.get_value().shape, np.float32))
    return model


POS = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
MAPPING = {
    "conv.weight": ("conv.kernel", CONV2D),
    "conv.bias": "conv.bias",
    "fc.0.weight": ("layers.0.kernel", LINEAR),
    "fc.0.bias": "layers.0.bias",
    "fc.1.weight": ("layers.1.kernel", LINEAR),
    "fc.1.bias": "layers.1.bias",
    "pos_embed": Buffer(POS, check_values=True),
    "step": IGNORE,
}


def _torch_layout() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),  # [O, I, kh, kw]
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.0.weight": rng.standard_normal((5, 4)).astype(np.float32),  # [out, in]
        "fc.0.bias": rng.standard_normal(5).astype(np.float32),
        "fc.1.weight": rng.standard_normal((2, 5)).astype(np.float32),
        "fc.1.bias": rng.standard_normal(2).astype(np.float32),
        "pos_embed": POS.copy(),
        "step": np.array(7),
    }


def test_paths_listed():
    paths = variable_paths(Tiny(0))
    assert paths["conv.kernel"] == (2, 2, 3, 4)
    assert paths["layers.1.kernel"] == (5, 2)
    assert not any(p.startswith("rngs") for p in paths)


def test_assign_matches_torch_semantics_and_round_trips():
    sd = _torch_layout()
    m = Tiny(0)
    assign_state(m, sd, MAPPING)
    # Independent check of the layout conventions: a PyTorch-layout forward pass in NumPy.
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 3)).astype(np.float32)
    patches = x.reshape(1, 2, 2, 2, 2, 3).transpose(0, 1, 3, 5, 2, 4)  # [B, h, w, C, kh, kw]
    h = np.einsum("bhwcij,ocij->bhwo", patches, sd["conv.weight"]) + sd["conv.bias"]
    h = h @ sd["fc.0.weight"].T + sd["fc.0.bias"]
    h = h @ sd["fc.1.weight"].T + sd["fc.1.bias"]
    got = m.layers[1](m.layers[0](m.conv(x)))
    np.testing.assert_allclose(np.asarray(got), h, rtol=1e-5, atol=1e-5)
    out = export_state(m, MAPPING)
    assert sorted(out) == sorted(k for k in sd if k != "step")
    for k in out:
        np.testing.assert_array_equal(out[k], sd[k])
    m2 = Tiny(5)
    assign_state(m2, out, MAPPING)
    for k, v in export_state(m2, MAPPING).items():
        np.testing.assert_array_equal(v, out[k])


def test_every_problem_listed_and_nothing_assigned():
    sd = _torch_layout()
    del sd["fc.0.bias"]  # missing
    sd["fc.2.weight"] = np.zeros((2, 2))  # unknown
    sd["extra"] = np.zeros(1)  # unknown
    sd["fc.1.weight"] = np.zeros((3, 5), np.float32)  # mis-shaped
    sd["pos_embed"] = POS + 1  # wrong buffer values
    m = Tiny(0)
    before = {k: np.asarray(v) for k, v in export_state(m, MAPPING).items()}
    with pytest.raises(WeightsError) as err:
        assign_state(m, sd, MAPPING)
    msg = str(err.value)
    for needle in (
        "fc.2.weight",
        "extra",
        "fc.0.bias",
        "fc.1.weight",
        "(5, 2)",
        "(3, 5)",
        "pos_embed",
        "nothing was assigned",
    ):
        assert needle in msg, needle
    for k, v in export_state(m, MAPPING).items():
        np.testing.assert_array_equal(v, before[k])  # untouched


def test_incomplete_mapping_and_bad_path():
    sd = _torch_layout()
    mapping = {k: v for k, v in MAPPING.items() if k != "conv.bias"}
    mapping["conv.bias"] = "conv.nope"
    with pytest.raises(WeightsError) as err:
        assign_state(Tiny(0), sd, mapping)
    assert "no mapping entry fills" in str(err.value) and "conv.bias" in str(err.value)
    assert "conv.nope" in str(err.value)
    with pytest.raises(WeightsError, match=r"conv\.nope"):
        export_state(Tiny(0), mapping)
