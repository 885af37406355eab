"""Shared fixtures: the key layout of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.

Independent of `nnx_eval.inception`: every BasicConv2d of torchvision's Inception3 (no AuxLogits)
with its (in, out, kh, kw) from the architecture tables, in file order, plus `fc` (1008-way).
"""

import numpy as np
import pytest

STEM = [
    ("Conv2d_1a_3x3", 3, 32, 3, 3),
    ("Conv2d_2a_3x3", 32, 32, 3, 3),
    ("Conv2d_2b_3x3", 32, 64, 3, 3),
    ("Conv2d_3b_1x1", 64, 80, 1, 1),
    ("Conv2d_4a_3x3", 80, 192, 3, 3),
]


def _a(name, cin, pool):
    return [
        (f"{name}.branch1x1", cin, 64, 1, 1),
        (f"{name}.branch5x5_1", cin, 48, 1, 1),
        (f"{name}.branch5x5_2", 48, 64, 5, 5),
        (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
        (f"{name}.branch3x3dbl_2", 64, 96, 3, 3),
        (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
        (f"{name}.branch_pool", cin, pool, 1, 1),
    ]


def _c(name, c7):
    return [
        (f"{name}.branch1x1", 768, 192, 1, 1),
        (f"{name}.branch7x7_1", 768, c7, 1, 1),
        (f"{name}.branch7x7_2", c7, c7, 1, 7),
        (f"{name}.branch7x7_3", c7, 192, 7, 1),
        (f"{name}.branch7x7dbl_1", 768, c7, 1, 1),
        (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
        (f"{name}.branch7x7dbl_3", c7, c7, 1, 7),
        (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
        (f"{name}.branch7x7dbl_5", c7, 192, 1, 7),
        (f"{name}.branch_pool", 768, 192, 1, 1),
    ]


def _e(name, cin):
    return [
        (f"{name}.branch1x1", cin, 320, 1, 1),
        (f"{name}.branch3x3_1", cin, 384, 1, 1),
        (f"{name}.branch3x3_2a", 384, 384, 1, 3),
        (f"{name}.branch3x3_2b", 384, 384, 3, 1),
        (f"{name}.branch3x3dbl_1", cin, 448, 1, 1),
        (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
        (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3),
        (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
        (f"{name}.branch_pool", cin, 192, 1, 1),
    ]


CONVS = (
    STEM
    + _a("Mixed_5b", 192, 32)
    + _a("Mixed_5c", 256, 64)
    + _a("Mixed_5d", 288, 64)
    + [
        ("Mixed_6a.branch3x3", 288, 384, 3, 3),
        ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
        ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3),
        ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3),
    ]
    + _c("Mixed_6b", 128)
    + _c("Mixed_6c", 160)
    + _c("Mixed_6d", 160)
    + _c("Mixed_6e", 192)
    + [
        ("Mixed_7a.branch3x3_1", 768, 192, 1, 1),
        ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
        ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1),
        ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
        ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
        ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3),
    ]
    + _e("Mixed_7b", 1280)
    + _e("Mixed_7c", 2048)
)


def layout() -> dict[str, tuple[int, ...]]:
    """`{key: shape}` of the released file (472 tensors)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in CONVS:
        out[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.bn.{leaf}"] = (cout,)
    out["fc.weight"] = (1008, 2048)
    out["fc.bias"] = (1008,)
    return out


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights in the released layout, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in layout().items():
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif key.endswith("running_var") or key.endswith("bn.weight"):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


@pytest.fixture(scope="session")
def fid_layout() -> dict[str, tuple[int, ...]]:
    return layout()


@pytest.fixture(scope="session")
def fid_state_dict() -> dict[str, np.ndarray]:
    return random_state_dict(0)
