"""Weights registry: verified downloads from a local HTTP server, cache, overrides, errors."""

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from nnx_backbones.errors import WeightsError, WeightsNotFoundError
from nnx_backbones.weights import registry
from nnx_backbones.weights.registry import (
    WeightsSpec,
    default_cache_dir,
    fetch,
    fetch_converted,
    get_spec,
    register,
)

PAYLOAD = bytes(range(256)) * 4000 + b"tail"  # ~1 MB: several download chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serve a directory holding `w.bin` (PAYLOAD) on 127.0.0.1; yield the base URL."""
    root = tmp_path_factory.mktemp("srv")
    (root / "w.bin").write_bytes(PAYLOAD)
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


def _spec(url, sha=PAYLOAD_SHA, name="toy"):
    return WeightsSpec(name=name, url=url, sha256=sha, filename=f"{name}.bin", layout="raw")


def test_download_verifies_and_caches(server, tmp_path):
    spec = _spec(f"{server}/w.bin")
    got = fetch(spec, cache_dir=tmp_path)
    assert got == tmp_path / "toy.bin"
    assert got.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["toy.bin"]  # no temp file left behind
    # Second call: served from the cache even with downloads off and the server unreachable.
    offline = _spec(f"http://127.0.0.1:{_dead_port()}/w.bin")
    assert fetch(offline, cache_dir=tmp_path, download=False) == got


def test_download_with_wrong_hash_is_discarded(server, tmp_path):
    spec = _spec(f"{server}/w.bin", sha="0" * 64)
    with pytest.raises(WeightsError) as e:
        fetch(spec, cache_dir=tmp_path)
    msg = str(e.value)
    assert "0" * 64 in msg and PAYLOAD_SHA in msg
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_file_is_moved_aside(tmp_path):
    (tmp_path / "toy.bin").write_bytes(b"truncated")
    spec = _spec("http://127.0.0.1:1/never-used")
    with pytest.raises(WeightsError) as e:
        fetch(spec, cache_dir=tmp_path, download=False)
    bad_sha = hashlib.sha256(b"truncated").hexdigest()
    msg = str(e.value)
    assert PAYLOAD_SHA in msg and bad_sha in msg and "moved aside" in msg
    assert not (tmp_path / "toy.bin").exists()
    assert (tmp_path / f"toy.bin.bad-{bad_sha[:12]}").read_bytes() == b"truncated"


def test_offline_error_says_where_and_how(tmp_path):
    url = f"http://127.0.0.1:{_dead_port()}/w.bin"
    with pytest.raises(WeightsNotFoundError) as e:
        fetch(_spec(url), cache_dir=tmp_path, timeout=5)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for needed in ("toy.bin", str(tmp_path / "toy.bin"), url, PAYLOAD_SHA):
        assert needed in msg
    assert f"mkdir -p {tmp_path} && curl -L {url} -o {tmp_path / 'toy.bin'}" in msg
    assert "path=" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_false_names_the_cache(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="download=False") as e:
        fetch(_spec("http://example.invalid/w.bin"), cache_dir=tmp_path, download=False)
    assert str(tmp_path / "toy.bin") in str(e.value)


def test_env_var_sets_the_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NNX_DIFFUSION_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    got = fetch(_spec(f"{server}/w.bin"))
    assert got == tmp_path / "env-cache" / "toy.bin" and got.read_bytes() == PAYLOAD
    monkeypatch.delenv("NNX_DIFFUSION_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "nnx-diffusion"


def test_path_override(tmp_path):
    staged = tmp_path / "staged.bin"
    staged.write_bytes(PAYLOAD)
    spec = _spec("http://127.0.0.1:1/never-used")
    assert fetch(spec, path=staged, cache_dir=tmp_path / "c") == staged
    assert not (tmp_path / "c").exists()  # nothing downloaded or copied
    staged.write_bytes(b"other")
    with pytest.raises(WeightsError, match="mismatch") as e:
        fetch(spec, path=staged)
    assert staged.exists()  # the caller's file is never moved
    assert "left in place" in str(e.value)
    with pytest.raises(WeightsNotFoundError, match=r"missing\.bin"):
        fetch(spec, path=tmp_path / "missing.bin")


def test_unverified_specs_need_explicit_consent(server, tmp_path):
    spec = _spec(f"{server}/w.bin", sha="")
    with pytest.raises(WeightsError, match="allow_unverified"):
        fetch(spec, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    got = fetch(spec, cache_dir=tmp_path, allow_unverified=True)
    assert got.read_bytes() == PAYLOAD
    with pytest.raises(WeightsError, match=PAYLOAD_SHA):  # cached but still unverifiable
        fetch(spec, cache_dir=tmp_path)


def test_fetch_converted_runs_once_and_keys_by_hash(tmp_path):
    staged = tmp_path / "raw.bin"
    staged.write_bytes(PAYLOAD)
    calls = []

    def convert(p: Path) -> dict[str, np.ndarray]:
        calls.append(p)
        return {"w": np.frombuffer(p.read_bytes()[:16], np.uint8).astype(np.float32)}

    spec = _spec("http://127.0.0.1:1/never-used")
    out = fetch_converted(spec, convert, path=staged, cache_dir=tmp_path / "c", tag="v1")
    assert out.name == f"toy.{PAYLOAD_SHA[:16]}.v1.safetensors"
    again = fetch_converted(spec, convert, path=staged, cache_dir=tmp_path / "c", tag="v1")
    assert again == out and len(calls) == 1
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(out)["w"], np.arange(16, dtype=np.float32))


def test_register_and_lookup():
    spec = _spec("http://x/w.bin", name="test-registry-entry")
    register(spec)
    register(spec)  # identical: fine
    assert get_spec("test-registry-entry") is spec
    with pytest.raises(WeightsError, match="already registered"):
        register(_spec("http://y/w.bin", name="test-registry-entry"))
    with pytest.raises(WeightsError, match="sha256"):
        register(_spec("http://x/w.bin", sha="ABC", name="bad-sha"))
    with pytest.raises(WeightsError, match="sd-vae-ft-mse") as e:
        get_spec("no-such-weights")
    assert "dinov2-vitb14-reg" in str(e.value)
    registry._REGISTRY.pop("test-registry-entry")


def test_builtin_entries_point_at_the_published_files():
    for name in ("sd-vae-ft-ema", "sd-vae-ft-mse"):
        s = get_spec(name)
        assert s.url == (
            f"https://huggingface.co/stabilityai/{name}/resolve/main/"
            "diffusion_pytorch_model.safetensors"
        )
        assert s.layout == "diffusers-autoencoderkl"
    sizes = {"s": "small", "b": "base", "l": "large", "g": "giant"}
    for k, size in sizes.items():
        assert get_spec(f"dinov2-vit{k}14").url.endswith(
            f"facebook/dinov2-{size}/resolve/main/model.safetensors"
        )
        assert get_spec(f"dinov2-vit{k}14-reg").url.endswith(
            f"facebook/dinov2-with-registers-{size}/resolve/main/model.safetensors"
        )
