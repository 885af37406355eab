"""Registry of public weights with a verified download cache.

A `WeightsSpec` names one released file: where it comes from (`url`), its sha256, the file name
it gets in the cache, and its key layout (which converter reads it). `fetch` turns a name into a
local path that is guaranteed to hold exactly those bytes:

1. `path=...` given: that file is used as is (users on TPU pods pre-stage weights). It must
   exist; its sha256 is checked when the spec has one.
2. Otherwise `<cache_dir>/<filename>` is used if present, after checking its sha256; a file
   with the wrong hash is moved aside (renamed `*.bad-<hash>`) and an error is raised.
3. Otherwise, with `download=True`, the file is streamed from `url` into a temporary file in the
   cache dir, its sha256 checked, then renamed into place atomically.

Anything else (offline, HTTP error, `download=False`) raises `WeightsNotFoundError` naming the
file, every place looked in, the URL, the sha256 and the commands to place the file by hand.
Nothing here ever falls back to random weights.

The cache dir is `cache_dir=` if given, else `$NNX_DIFFUSION_CACHE`, else
`~/.cache/nnx-diffusion`.

Unverified entries: a spec registered with `sha256=""` (no published hash was available to us)
is refused from the cache or a download unless the caller passes `allow_unverified=True`; the
error prints the actual hash of the file so it can be pinned. A file given by `path=` is the
caller's own choice and is accepted without a hash.

`fetch_converted` adds "convert once": it runs a converter on the raw file and caches the result
as `<cache_dir>/<name>.<raw sha256[:16]>[.<tag>].safetensors`, so a new release (new hash) or a
new converter (`tag`) never reuses a stale conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnx_backbones.errors import WeightsError, WeightsNotFoundError

CACHE_ENV_VAR = "NNX_DIFFUSION_CACHE"
_CHUNK = 1 << 20  # 1 MiB per read while hashing / downloading


@dataclass(frozen=True)
class WeightsSpec:
    """One released weights file.

    Attributes:
      name: registry key, e.g. `"dinov2-vitb14-reg"`.
      url: direct download URL (HTTP(S)).
      sha256: lowercase hex sha256 of the file; `""` when no published hash is known (then
        `fetch` needs `allow_unverified=True`).
      filename: file name in the cache dir (unique across the registry).
      layout: key layout of the file, e.g. `"diffusers-autoencoderkl"`, `"hf-dinov2"`.
      description: one line for humans.
    """

    name: str
    url: str
    sha256: str
    filename: str
    layout: str
    description: str = ""


_REGISTRY: dict[str, WeightsSpec] = {}


def register(spec: WeightsSpec) -> None:
    """Add `spec` to the registry (idempotent for an identical spec).

    Raises `WeightsError` if the name is taken by a different spec, if another spec already
    uses the same cache `filename`, or if `sha256` is neither empty nor 64 hex digits.
    """
    sha = spec.sha256
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise WeightsError(
            f"WeightsSpec {spec.name!r}: sha256 must be 64 lowercase hex digits or '' (unknown); "
            f"got {sha!r}."
        )
    old = _REGISTRY.get(spec.name)
    if old is not None:
        if old == spec:
            return
        raise WeightsError(
            f"Weights name {spec.name!r} is already registered with a different spec:\n"
            f"  registered: {old}\n  new:        {spec}\n"
            "Pick another name, or pass the WeightsSpec object to fetch() directly."
        )
    for other in _REGISTRY.values():
        if other.filename == spec.filename:
            raise WeightsError(
                f"WeightsSpec {spec.name!r} uses cache filename {spec.filename!r}, already used "
                f"by {other.name!r}; filenames share one cache dir and must be unique."
            )
    _REGISTRY[spec.name] = spec


def registered_names() -> list[str]:
    """Sorted names of every registered spec."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> WeightsSpec:
    """The spec registered under `name`; unknown names raise `WeightsError` listing the known."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(registered_names()) or "(none)"
        raise WeightsError(
            f"No weights registered under {name!r}. Registered names: {known}. "
            "Register your own with nnx_backbones.weights.registry.register(WeightsSpec(...))."
        ) from None


def default_cache_dir() -> Path:
    """`$NNX_DIFFUSION_CACHE` if set (and non-empty), else `~/.cache/nnx-diffusion`."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "nnx-diffusion"


def sha256_file(path: str | os.PathLike) -> str:
    """Lowercase hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _manual_steps(spec: WeightsSpec, cache_dir: Path) -> str:
    target = cache_dir / spec.filename
    check = (
        f"  then check:  echo '{spec.sha256}  {target}' | sha256sum -c -\n" if spec.sha256 else ""
    )
    return (
        "To place it by hand:\n"
        f"  mkdir -p {cache_dir} && curl -L {spec.url} -o {target}\n"
        f"{check}"
        f"or pass path=/where/you/put/{spec.filename} to fetch(), or point ${CACHE_ENV_VAR} (or "
        "cache_dir=) at a directory that holds it."
    )


def _describe(spec: WeightsSpec) -> str:
    sha = spec.sha256 or "(none published; pass allow_unverified=True to accept any file)"
    return f"  name:   {spec.name}\n  url:    {spec.url}\n  sha256: {sha}\n"


def _check_hash(spec: WeightsSpec, file: Path, *, move_aside: bool, allow_unverified: bool) -> str:
    """Verify `file` against `spec.sha256`; return its actual sha256."""
    actual = sha256_file(file)
    if not spec.sha256:
        if allow_unverified:
            return actual
        raise WeightsError(
            f"Weights {spec.name!r} have no registered sha256, so {file} cannot be verified "
            f"(its sha256 is {actual}). Pass allow_unverified=True to use it anyway, or register "
            "a spec with the published sha256."
        )
    if actual == spec.sha256:
        return actual
    where = ""
    if move_aside:
        bad = file.with_name(f"{file.name}.bad-{actual[:12]}")
        os.replace(file, bad)
        where = f"It was moved aside to {bad}; delete it. "
    else:
        where = "Delete or replace it (it was left in place because you passed it as path=). "
    raise WeightsError(
        f"sha256 mismatch for weights {spec.name!r} in {file}:\n"
        f"  expected {spec.sha256}\n  actual   {actual}\n"
        f"{where}The file is corrupt, truncated or a different release; download it again "
        f"from {spec.url}."
    )


def _download(spec: WeightsSpec, target: Path, timeout: float) -> str:
    """Stream `spec.url` into `target` (atomically); return the sha256 of what was received."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(spec.url, headers={"User-Agent": "nnx-diffusion"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        actual = h.hexdigest()
        if spec.sha256 and actual != spec.sha256:
            raise WeightsError(
                f"sha256 mismatch for weights {spec.name!r} downloaded from {spec.url}:\n"
                f"  expected {spec.sha256}\n  actual   {actual}\n"
                f"The download was discarded (nothing was written to {target}). The server sent "
                "a different file; check the URL or place the right file by hand."
            )
        os.replace(tmp, target)
        return actual
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _resolve(name_or_spec: str | WeightsSpec) -> WeightsSpec:
    if isinstance(name_or_spec, WeightsSpec):
        return name_or_spec
    return get_spec(name_or_spec)


def fetch(
    name_or_spec: str | WeightsSpec,
    *,
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    download: bool = True,
    allow_unverified: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Local path of verified weights, downloading them once into the cache if needed.

    Args:
      name_or_spec: a registered name or a `WeightsSpec`.
      cache_dir: cache directory (default `default_cache_dir()`).
      path: use this file instead of the cache (must exist; hash checked if the spec has one).
      download: whether a missing file may be downloaded.
      allow_unverified: accept a cached/downloaded file for a spec with no sha256.
      timeout: socket timeout in seconds for the download.
    Returns:
      Path of the file.
    Raises:
      WeightsNotFoundError: missing and not downloadable (message says how to place it).
      WeightsError: hash mismatch, or an unverifiable file without `allow_unverified`.
    """
    spec = _resolve(name_or_spec)
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise WeightsNotFoundError(
                f"Weights file for {spec.name!r} not found at path={file} (given explicitly, so "
                f"the cache was not searched).\n{_describe(spec)}"
                f"Check the path, or drop path= to use the cache.\n"
                f"{_manual_steps(spec, file.parent)}"
            )
        if spec.sha256:
            _check_hash(spec, file, move_aside=False, allow_unverified=True)
        return file

    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cdir / spec.filename
    if target.is_file():
        _check_hash(spec, target, move_aside=True, allow_unverified=allow_unverified)
        return target

    source = "cache_dir argument" if cache_dir is not None else f"${CACHE_ENV_VAR} or default"
    looked = f"  looked in: {target}  ({source})\n"
    if not download:
        raise WeightsNotFoundError(
            f"Weights file {spec.filename!r} for {spec.name!r} is not in the cache and "
            f"download=False.\n{looked}{_describe(spec)}{_manual_steps(spec, cdir)}"
        )
    if not spec.sha256 and not allow_unverified:
        raise WeightsError(
            f"Weights {spec.name!r} have no registered sha256; refusing to download an "
            f"unverifiable file from {spec.url}. Pass allow_unverified=True to download it "
            "anyway (its actual hash will be printed in later errors), or register a spec with "
            "the published sha256."
        )
    try:
        _download(spec, target, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsNotFoundError(
            f"Weights file {spec.filename!r} for {spec.name!r} is not in the cache and could not "
            f"be downloaded ({type(e).__name__}: {e}).\n{looked}"
            f"  tried download: {spec.url}\n{_describe(spec)}{_manual_steps(spec, cdir)}"
        ) from e
    return target


def fetch_converted(
    name_or_spec: str | WeightsSpec,
    convert: Callable[[Path], Mapping[str, np.ndarray]],
    *,
    tag: str = "",
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    download: bool = True,
    allow_unverified: bool = False,
) -> Path:
    """Fetch raw weights, convert them once, and cache the converted flat dict.

    Args:
      name_or_spec, cache_dir, path, download, allow_unverified: as in `fetch`.
      convert: raw file path → flat `{key: array}` dict (e.g. renamed/transposed for NNX).
      tag: converter version; change it when `convert` changes to invalidate old results.
    Returns:
      Path of `<cache_dir>/<name>.<raw sha256[:16]>[.<tag>].safetensors` (always in the cache
      dir, also when `path=` points at a read-only raw file).
    """
    from safetensors.numpy import save_file

    spec = _resolve(name_or_spec)
    raw = fetch(
        spec, cache_dir=cache_dir, path=path, download=download, allow_unverified=allow_unverified
    )
    raw_sha = spec.sha256 or sha256_file(raw)
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    suffix = f".{tag}" if tag else ""
    out = cdir / f"{spec.name}.{raw_sha[:16]}{suffix}.safetensors"
    if out.is_file():
        return out
    tensors = convert(raw)
    if not isinstance(tensors, Mapping) or not tensors:
        raise WeightsError(
            f"Converter for {spec.name!r} returned {type(tensors).__name__} with no tensors; "
            "it must return a non-empty dict[str, np.ndarray]."
        )
    cdir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=cdir)
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp_name)
        os.replace(tmp_name, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return out


# ---------------------------------------------------------------------------------------------
# Public entries. sha256 values are the Git LFS object ids of the files on the Hugging Face Hub;
# "" marks an entry whose hash we could not confirm (fetch then needs allow_unverified=True).
# ---------------------------------------------------------------------------------------------
_HF = "https://huggingface.co"

_SD_VAE = {
    # name: (repo, sha256)
    "sd-vae-ft-ema": ("stabilityai/sd-vae-ft-ema", ""),
    "sd-vae-ft-mse": ("stabilityai/sd-vae-ft-mse", ""),
}
_DINOV2 = {
    # name: (repo, sha256)
    "dinov2-vits14": ("facebook/dinov2-small", ""),
    "dinov2-vitb14": ("facebook/dinov2-base", ""),
    "dinov2-vitl14": ("facebook/dinov2-large", ""),
    "dinov2-vitg14": ("facebook/dinov2-giant", ""),
    "dinov2-vits14-reg": ("facebook/dinov2-with-registers-small", ""),
    "dinov2-vitb14-reg": ("facebook/dinov2-with-registers-base", ""),
    "dinov2-vitl14-reg": ("facebook/dinov2-with-registers-large", ""),
    "dinov2-vitg14-reg": ("facebook/dinov2-with-registers-giant", ""),
}

for _name, (_repo, _sha) in _SD_VAE.items():
    register(
        WeightsSpec(
            name=_name,
            url=f"{_HF}/{_repo}/resolve/main/diffusion_pytorch_model.safetensors",
            sha256=_sha,
            filename=f"{_name}.safetensors",
            layout="diffusers-autoencoderkl",
            description=f"SD VAE kl-f8 decoder fine-tune ({_repo}), diffusers layout.",
        )
    )
for _name, (_repo, _sha) in _DINOV2.items():
    register(
        WeightsSpec(
            name=_name,
            url=f"{_HF}/{_repo}/resolve/main/model.safetensors",
            sha256=_sha,
            filename=f"{_name}.safetensors",
            layout="hf-dinov2-registers" if _name.endswith("-reg") else "hf-dinov2",
            description=f"DINOv2 ViT ({_repo}), HF transformers layout.",
        )
    )
del _name, _repo, _sha
