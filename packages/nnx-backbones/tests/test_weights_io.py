"""weights.io: every format round-trips exactly; wrappers are unwrapped; errors say what to do."""

import builtins

import numpy as np
import pytest
from jax import numpy as jnp

from nnx_backbones.errors import WeightsError, WeightsNotFoundError
from nnx_backbones.weights.io import read_state_dict, write_state_dict


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "a.bias": rng.standard_normal((3,)).astype(np.float16),
        "b.0.idx": np.arange(5, dtype=np.int64),
        "half": rng.standard_normal((2, 2)).astype(jnp.bfloat16),
    }


def _assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_exact(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    write_state_dict(path, _tensors())
    _assert_same(read_state_dict(path), _tensors())


def test_torch_round_trip_and_wrappers(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.pt"
    write_state_dict(path, _tensors())
    _assert_same(read_state_dict(path), _tensors())
    # A training checkpoint: {"model", "ema", "opt", "args"}; "model" is taken unless key="ema".
    sd = {k: torch.from_numpy(v.astype(np.float32)) for k, v in _tensors().items() if k != "half"}
    ema = {k: v + 1 for k, v in sd.items()}
    torch.save({"model": sd, "ema": ema, "opt": {"step": 3}, "args": "x"}, tmp_path / "c.pt")
    got = read_state_dict(tmp_path / "c.pt")
    np.testing.assert_array_equal(got["a.weight"], sd["a.weight"].numpy())
    got = read_state_dict(tmp_path / "c.pt", key="ema")
    np.testing.assert_array_equal(got["a.weight"], sd["a.weight"].numpy() + 1)
    # DDP prefix.
    torch.save({"module.x": torch.ones(2)}, tmp_path / "d.pth")
    assert list(read_state_dict(tmp_path / "d.pth", strip_prefix="module.")) == ["x"]


def test_npz_wrapper_key(tmp_path):
    np.savez(tmp_path / "w.npz", **{"x": np.ones(2)})
    with pytest.raises(WeightsError, match="no entry 'ema'"):
        read_state_dict(tmp_path / "w.npz", key="ema")


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="No weights file"):
        read_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="Unsupported weights file"):
        read_state_dict(tmp_path / "w.h5")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="Could not read"):
        read_state_dict(tmp_path / "junk.safetensors")


def test_torch_missing_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "w.pt").write_bytes(b"\x80")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(WeightsError, match=r"download\.pytorch\.org/whl/cpu"):
        read_state_dict(tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="safetensors"):
        write_state_dict(tmp_path / "o.pt", {"x": np.ones(2)})
