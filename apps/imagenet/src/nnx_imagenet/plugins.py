"""Registry entries the app adds to nnx-train's plug-in registry (names the trainer lacks).

Each target is a "module:attribute" string resolved lazily by `nnx_train.registry`, so an entry
costs nothing until a config uses it.
"""

from nnx_train import registry

APP_ENTRIES: dict[str, dict[str, str]] = {
    "model": {},
    "interface": {},
    "sampler": {},
}


def register_plugins() -> None:
    """Add the app's entries that the trainer's registry does not already define (idempotent)."""
    for kind, table in APP_ENTRIES.items():
        have = set(registry.names(kind))
        for name, target in table.items():
            if name not in have:
                registry.register(kind, name, target)
