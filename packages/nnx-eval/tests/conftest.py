"""Shared fixtures, all independent of `nnx_eval.inception`:

- the key layout of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, written out by hand:
  every BasicConv2d of torchvision's Inception3 (no AuxLogits) with its (in, out, kh, kw), plus
  `fc` (1008-way), and random weights in that layout;
- a float64 NumPy forward of pytorch-fid's FID Inception (the parity reference without torch).
"""

import functools
import hashlib

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


def sha256_arrays(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over (key, dtype, shape, bytes) in key order: pins weights recreated elsewhere
    (tools/fixtures/gen_inception.py records it for `random_state_dict(0)`)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def fid_layout() -> dict[str, tuple[int, ...]]:
    return layout()


@pytest.fixture(scope="session")
def fid_state_dict() -> dict[str, np.ndarray]:
    return random_state_dict(0)


@pytest.fixture(scope="session")
def fid_state_dict_sha256(fid_state_dict) -> str:
    return sha256_arrays(fid_state_dict)


@pytest.fixture(scope="session")
def numpy_inception():
    return numpy_fid_inception


# ---------------------------------------------------------------------------------------------
# An independent NumPy forward of pytorch-fid's FID Inception (NCHW, PyTorch weight layout,
# float64), written from pytorch-fid's `inception.py`: the parity reference for CI (no torch).
# ---------------------------------------------------------------------------------------------
def _np_conv(x, w, stride=1, pad=(0, 0)):
    """x [B, C, H, W], w [O, C, kh, kw] → [B, O, H', W'] (cross-correlation, like torch)."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,ocij->bohw", win, w, optimize=True)


def _np_basic(sd, name, x, stride=1, pad=(0, 0)):
    """BasicConv2d: conv (no bias) → BatchNorm(eps=0.001, running stats) → ReLU."""
    y = _np_conv(x, sd[f"{name}.conv.weight"], stride, pad)
    g, b = sd[f"{name}.bn.weight"], sd[f"{name}.bn.bias"]
    m, v = sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"]
    y = (y - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-3) * g[:, None, None]
    return np.maximum(y + b[:, None, None], 0.0)


def _np_avg_pool_no_pad_count(x):
    """F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)."""
    from numpy.lib.stride_tricks import sliding_window_view

    pad = ((0, 0), (0, 0), (1, 1), (1, 1))
    s = sliding_window_view(np.pad(x, pad), (3, 3), axis=(2, 3)).sum((-1, -2))
    ones = np.pad(np.ones(x.shape[2:]), 1)
    return s / sliding_window_view(ones, (3, 3)).sum((-1, -2))


def _np_max_pool(x, stride, pad):
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::stride, ::stride].max((-1, -2))


def numpy_fid_inception(sd: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """`x: [B, 3, H, W]` in [−1, 1] → pool [B, 2048], spatial [B, h·w·7], logits [B, 1008]."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    c = functools.partial(_np_basic, sd)
    x = c("Conv2d_1a_3x3", x, 2)
    x = c("Conv2d_2b_3x3", c("Conv2d_2a_3x3", x), pad=(1, 1))
    x = _np_max_pool(x, 2, 0)
    x = c("Conv2d_4a_3x3", c("Conv2d_3b_1x1", x))
    x = _np_max_pool(x, 2, 0)
    for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):  # FIDInceptionA
        b1 = c(f"{n}.branch1x1", x)
        b5 = c(f"{n}.branch5x5_2", c(f"{n}.branch5x5_1", x), pad=(2, 2))
        b3 = c(f"{n}.branch3x3dbl_2", c(f"{n}.branch3x3dbl_1", x), pad=(1, 1))
        b3 = c(f"{n}.branch3x3dbl_3", b3, pad=(1, 1))
        bp = c(f"{n}.branch_pool", _np_avg_pool_no_pad_count(x))
        x = np.concatenate([b1, b5, b3, bp], 1)
    n = "Mixed_6a"  # InceptionB
    b3 = c(f"{n}.branch3x3", x, 2)
    bd = c(f"{n}.branch3x3dbl_2", c(f"{n}.branch3x3dbl_1", x), pad=(1, 1))
    x = np.concatenate([b3, c(f"{n}.branch3x3dbl_3", bd, 2), _np_max_pool(x, 2, 0)], 1)
    for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):  # FIDInceptionC
        b1 = c(f"{n}.branch1x1", x)
        if n == "Mixed_6d":
            spatial = b1
        b7 = c(f"{n}.branch7x7_2", c(f"{n}.branch7x7_1", x), pad=(0, 3))
        b7 = c(f"{n}.branch7x7_3", b7, pad=(3, 0))
        bd = c(f"{n}.branch7x7dbl_1", x)
        for i, p in ((2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))):
            bd = c(f"{n}.branch7x7dbl_{i}", bd, pad=p)
        bp = c(f"{n}.branch_pool", _np_avg_pool_no_pad_count(x))
        x = np.concatenate([b1, b7, bd, bp], 1)
    n = "Mixed_7a"  # InceptionD
    b3 = c(f"{n}.branch3x3_2", c(f"{n}.branch3x3_1", x), 2)
    b7 = c(f"{n}.branch7x7x3_2", c(f"{n}.branch7x7x3_1", x), pad=(0, 3))
    b7 = c(f"{n}.branch7x7x3_4", c(f"{n}.branch7x7x3_3", b7, pad=(3, 0)), 2)
    x = np.concatenate([b3, b7, _np_max_pool(x, 2, 0)], 1)
    for n, pool in (("Mixed_7b", "avg"), ("Mixed_7c", "max")):  # FIDInceptionE_1 / E_2
        b1 = c(f"{n}.branch1x1", x)
        b3 = c(f"{n}.branch3x3_1", x)
        b3 = np.concatenate(
            [c(f"{n}.branch3x3_2a", b3, pad=(0, 1)), c(f"{n}.branch3x3_2b", b3, pad=(1, 0))], 1
        )
        bd = c(f"{n}.branch3x3dbl_2", c(f"{n}.branch3x3dbl_1", x), pad=(1, 1))
        bd = np.concatenate(
            [c(f"{n}.branch3x3dbl_3a", bd, pad=(0, 1)), c(f"{n}.branch3x3dbl_3b", bd, pad=(1, 0))],
            1,
        )
        pooled = _np_avg_pool_no_pad_count(x) if pool == "avg" else _np_max_pool(x, 1, 1)
        x = np.concatenate([b1, b3, bd, c(f"{n}.branch_pool", pooled)], 1)
    pool = x.mean((2, 3))
    spatial = spatial[:, :7].transpose(0, 2, 3, 1).reshape(x.shape[0], -1)  # ADM: (h, w, c)
    return {"pool": pool, "spatial": spatial, "logits": pool @ sd["fc.weight"].T + sd["fc.bias"]}
