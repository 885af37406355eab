"""The names the app adds to nnx-train's plug-in registry, and `register_plugins()`.

Kept apart from `plugins` (which holds the builders and imports flax) so that registering the
names and checking a config's `model.name` / `interface.name` against them imports no jax.
Targets are "module:attribute" strings resolved lazily by `nnx_train.registry`.
"""

from nnx_train import registry

APP_ENTRIES: dict[str, dict[str, str]] = {
    "model": {
        "lightning_ddt": "nnx_backbones.ddt:LightningDDT",
    },
    "interface": {
        "ddpm": "nnx_interfaces.ddpm:DDPMInterface",
    },
    "sampler": {
        "denoise_renoise": "nnx_samplers.jump:DenoiseRenoise",
    },
}


# The app's own builders, under names of their own (always registered, never shadowing the
# trainer's entries of the same objective, which take objects rather than flat config values).
APP_BUILDERS: dict[str, dict[str, str]] = {
    "model": {"imagenet.edm2_unet": "nnx_imagenet.plugins:build_edm2_unet"},
    "interface": {
        "imagenet.lsd": "nnx_imagenet.plugins:build_lsd",
        "imagenet.repa": "nnx_imagenet.plugins:build_repa",
        "imagenet.scd": "nnx_imagenet.plugins:build_scd",
        "imagenet.dmd": "nnx_imagenet.plugins:build_dmd",
        "imagenet.self_forcing": "nnx_imagenet.plugins:build_self_forcing",
    },
}


def register_plugins() -> None:
    """Add the app's entries the trainer lacks, and the app's builders (idempotent)."""
    for kind, table in APP_ENTRIES.items():
        have = set(registry.names(kind))
        for name, target in table.items():
            if name not in have:
                registry.register(kind, name, target)
    for kind, table in APP_BUILDERS.items():
        for name, target in table.items():
            registry.register(kind, name, target)
