"""Plug-ins by name: config names → backbone / interface / sampler constructors.

`config.model.name = "dit"` picks `nnx_backbones.dit.DiT`; every other key of `config.model` is a
keyword argument of that constructor (checked against its signature before anything is built).
Targets are "module:attribute" strings imported lazily, so a registry entry costs nothing until it
is used and an app can add its own with `register("model", "my_net", "my_pkg.nets:MyNet")` or with
the class itself.
"""

import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from nnx_train.errors import RegistryError

KINDS = ("model", "interface", "sampler")

_REGISTRY: dict[str, dict[str, str | Callable[..., Any]]] = {
    "model": {
        "mlp": "nnx_backbones.mlp:MLP",
        "dit": "nnx_backbones.dit:DiT",
        "lightning_dit": "nnx_backbones.lightning_dit:LightningDiT",
        "lightning_ddt": "nnx_backbones.ddt:LightningDDT",
        "edm2_unet": "nnx_backbones.edm2_unet:EDM2UNet",
        "video_dit": "nnx_backbones.video_dit:VideoDiT",
    },
    "interface": {
        "sit": "nnx_interfaces.sit:SiTInterface",
        "edm": "nnx_interfaces.edm:EDMInterface",
        "meanflow": "nnx_interfaces.meanflow:MeanFlowInterface",
        "ddpm": "nnx_interfaces.ddpm:DDPMInterface",
        "shortcut": "nnx_interfaces.shortcut:Shortcut",
        "sct": "nnx_interfaces.consistency:SCT",
        "flow_matching": "nnx_interfaces.flowmaps.flow:FlowMatching",
        "mean_flow_map": "nnx_interfaces.flowmaps.mf:MeanFlowMap",
        "lsd": "nnx_interfaces.flowmaps.lsd:LagrangianSelfDistillation",
        "esd": "nnx_interfaces.flowmaps.esd:EulerianSelfDistillation",
        "psd": "nnx_interfaces.flowmaps.psd:ProgressiveSelfDistillation",
        "ctm": "nnx_interfaces.flowmaps.ctm:ConsistencyTrajectoryModel",
        "diffusion_forcing": "nnx_train.wrappers:diffusion_forcing",
    },
    "sampler": {
        "euler": "nnx_samplers.ode:Euler",
        "heun": "nnx_samplers.ode:Heun",
        "dpm_solver_pp": "nnx_samplers.dpm:DPMSolverPP",
        "ddim": "nnx_samplers.dpm:DDIM",
        "ddpm": "nnx_samplers.ancestral:DDPMAncestral",
        "edm": "nnx_samplers.edm:EDMSampler",
        "euler_maruyama": "nnx_samplers.sde:EulerMaruyama",
        "jump": "nnx_samplers.jump:Jump",
        "denoise_renoise": "nnx_samplers.jump:DenoiseRenoise",
    },
}

# Arguments the trainer passes itself; never taken from the config.
INJECTED = {
    "model": ("rngs",),
    "interface": ("network", "rngs"),
    "sampler": (),
}


def register(kind: str, name: str, target: str | Callable[..., Any]) -> None:
    """Add (or replace) a constructor: `target` is a callable or a "module:attribute" string."""
    _check_kind(kind)
    _REGISTRY[kind][name] = target


def names(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    _check_kind(kind)
    return sorted(_REGISTRY[kind])


def check_name(kind: str, name: str) -> None:
    """Raise `RegistryError` (with close matches) unless `name` is registered; imports nothing."""
    _check_kind(kind)
    table = _REGISTRY[kind]
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise RegistryError(
            f"Unknown {kind} name {name!r}.{hint} Registered: {', '.join(sorted(table))}. "
            f"Add your own with nnx_train.registry.register({kind!r}, {name!r}, 'module:Class')."
        )


def resolve(kind: str, name: str) -> Callable[..., Any]:
    """The constructor registered under `name`; raises `RegistryError` with close matches."""
    check_name(kind, name)
    target = _REGISTRY[kind][name]
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RegistryError(
            f"{kind} {name!r} maps to {target!r}, but module {module_name!r} cannot be imported "
            f"({err}). Is the package that provides it installed and up to date?"
        ) from err
    if not hasattr(module, attr):
        raise RegistryError(f"{kind} {name!r}: module {module_name!r} has no attribute {attr!r}.")
    return getattr(module, attr)


def accepted_kwargs(kind: str, name: str) -> dict[str, inspect.Parameter] | None:
    """Keyword arguments the constructor accepts from a config (None if it takes **kwargs)."""
    ctor = resolve(kind, name)
    try:  # classes: their __init__ (metaclasses such as nnx.Module's hide it from signature())
        target = ctor.__init__ if inspect.isclass(ctor) else ctor
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {
        k: p
        for k, p in params.items()
        if k not in INJECTED[kind]
        and k != "self"
        and p.kind is not inspect.Parameter.VAR_POSITIONAL
    }


def build(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the constructor registered under `name`."""
    return resolve(kind, name)(*args, **kwargs)


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise RegistryError(f"Unknown registry kind {kind!r}; expected one of {KINDS}.")
