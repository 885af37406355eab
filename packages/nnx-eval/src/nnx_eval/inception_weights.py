"""Load the FID Inception weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.

The file is registered in `nnx_backbones.weights.registry` as `"inception-2015-12-05-fid"`
(URL and sha256 below), so `fetch` gives the usual cache / offline error. Keys are pytorch-fid's
(= torchvision's `Inception3` without `AuxLogits`, `num_classes=1008`):

- per `BasicConv2d` `P` (94 of them): `P.conv.weight [O, I, kh, kw]`, `P.bn.weight`,
  `P.bn.bias`, `P.bn.running_mean`, `P.bn.running_var` (`[O]` each);
- `fc.weight [1008, 2048]`, `fc.bias [1008]`;

472 tensors, 23.9 M floats. A `*.bn.num_batches_tracked` entry (present when a state dict is
re-saved from a torch module) is accepted and ignored. Our own converted form is the same flat
dict in `.safetensors` or `.npz` (`save_inception_weights`), readable without torch.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from flax import nnx

from nnx_backbones.weights.assign import CONV2D, IGNORE, LINEAR, StateMapping, assign_state
from nnx_backbones.weights.assign import variables as module_variables
from nnx_backbones.weights.io import read_state_dict, write_state_dict
from nnx_backbones.weights.registry import WeightsSpec, fetch_converted, get_spec, register
from nnx_eval.inception import InceptionV3FID

WEIGHTS_NAME = "inception-2015-12-05-fid"
INCEPTION_SPEC = WeightsSpec(
    name=WEIGHTS_NAME,
    url=(
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth"
    ),
    # sha256 of the 95,628,359-byte file; its first 8 hex digits are the `6726825d` that
    # torch.hub naming puts in the file name. Published alongside the identical torch-fidelity
    # re-upload (weights-inception-2015-12-05-6726825d.pth).
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    filename="pt_inception-2015-12-05-6726825d.pth",
    layout="pytorch-fid-inception",
    description="FID Inception-v3 (TF inception-2015-12-05 graph ported by pytorch-fid).",
)

_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def register_inception_weights() -> WeightsSpec:
    """Register `INCEPTION_SPEC` (idempotent) and return it."""
    register(INCEPTION_SPEC)
    return get_spec(WEIGHTS_NAME)


def inception_mapping(model: InceptionV3FID) -> StateMapping:
    """`{pytorch-fid key: NNX path (+ transform)}` for every variable of `model`.

    Derived from the module tree: each `…conv.kernel` ↔ `…conv.weight` (`CONV2D`), each
    `…bn.{scale,bias,mean,var}` ↔ `…bn.{weight,bias,running_mean,running_var}`,
    `fc.kernel` ↔ `fc.weight` (`LINEAR`), `fc.bias` ↔ `fc.bias`.
    """
    inverse_bn = {v: k for k, v in _BN.items()}
    mapping: dict = {}
    for path in module_variables(model, nnx.Variable):
        *parent, leaf = path.split(".")
        prefix = ".".join(parent)
        if parent[-1] == "conv" and leaf == "kernel":
            mapping[f"{prefix}.weight"] = (path, CONV2D)
        elif parent[-1] == "bn" and leaf in inverse_bn:
            mapping[f"{prefix}.{inverse_bn[leaf]}"] = path
            if leaf == "scale":
                mapping[f"{prefix}.num_batches_tracked"] = IGNORE
        elif path == "fc.kernel":
            mapping["fc.weight"] = (path, LINEAR)
        elif path == "fc.bias":
            mapping["fc.bias"] = path
        else:  # pragma: no cover - only reached if the architecture gains a new variable kind
            raise AssertionError(f"no pytorch-fid key for Inception variable {path}")
    return mapping


@functools.cache
def _abstract_inception() -> tuple[nnx.GraphDef, nnx.State]:
    """Graph and shape-only state of `InceptionV3FID` (traced once per process, no init)."""
    return nnx.split(nnx.eval_shape(lambda: InceptionV3FID(rngs=nnx.Rngs(0))))


def inception_from_state_dict(tensors: dict, *, source: str = "state dict") -> InceptionV3FID:
    """Build an `InceptionV3FID` holding `tensors` (pytorch-fid keys), strictly.

    The module is created abstractly (`nnx.eval_shape`, no random init) and every variable is
    filled from `tensors`; unknown, missing or mis-shaped keys raise one `WeightsError`
    listing all of them.
    """
    model = nnx.merge(*_abstract_inception())
    assign_state(model, tensors, inception_mapping(model), filter=nnx.Variable, source=source)
    return model


def _to_safetensors_dict(raw: Path) -> dict:
    """Converter for `fetch_converted`: the raw file's tensors, pytorch-fid keys kept."""
    tensors = read_state_dict(raw)
    return {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}


def load_inception(
    weights: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    spec: WeightsSpec | None = None,
) -> InceptionV3FID:
    """The FID Inception with the reference weights.

    Args:
      weights: `None` → the registered pytorch-fid file from the cache (downloaded once, sha256
        checked, converted once to `<name>.<sha>.pytorch-fid-keys.safetensors` next to it so that
        later loads need no torch); a path → that file as is, not hash-checked (`.pth` needs
        torch; `.safetensors`/`.npz` written by `save_inception_weights` do not).
      cache_dir: cache directory (default `$NNX_DIFFUSION_CACHE` or `~/.cache/nnx-diffusion`).
      download: allow downloading a missing file.
      spec: another `WeightsSpec` for the same layout (e.g. a mirror URL); default
        `INCEPTION_SPEC`.
    Raises:
      nnx_backbones.errors.WeightsNotFoundError: file missing and not downloadable (the message
        names the places searched, the URL and the sha256).
      nnx_backbones.errors.WeightsError: bad hash, or keys not matching the layout.
    """
    spec = spec or register_inception_weights()
    if weights is None:
        path = fetch_converted(
            spec,
            _to_safetensors_dict,
            tag="pytorch-fid-keys",
            cache_dir=cache_dir,
            download=download,
        )
    else:
        path = Path(weights).expanduser()
    return inception_from_state_dict(read_state_dict(path), source=str(path))


def save_inception_weights(model: InceptionV3FID, path: str | os.PathLike) -> None:
    """Write `model`'s weights with pytorch-fid keys (`.safetensors`/`.npz`; `.pth` needs torch)."""
    from nnx_backbones.weights.assign import export_state

    write_state_dict(path, export_state(model, inception_mapping(model)))
