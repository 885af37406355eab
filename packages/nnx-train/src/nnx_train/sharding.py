"""Mesh, parameter shardings (replicate / FSDP / regex rules) and multi-host helpers.

- `build_mesh(data, fsdp, tensor)`: a `jax.sharding.Mesh` with axes ("data", "fsdp", "tensor").
- `param_specs(tree, ...)`: a `PartitionSpec` per array. FSDP shards each large array along its
  largest axis divisible by the fsdp axis size (as in the shortcut-models / big_vision FSDP);
  arrays with fewer than `min_size` elements are replicated; `rules` ((regex, spec), ...) matched
  against the "/"-joined parameter path override both (first match wins).
- `follow_specs(tree, param_tree, param_specs)`: optimizer / EMA states take the spec of the
  parameter at the end of their own path (same shape), everything else is replicated.
- Batches are split over ("data", "fsdp") jointly; `global_batch` assembles process-local batches
  into global arrays with `jax.make_array_from_process_local_data`.
"""

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnx_train.errors import ShardingError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """`jax.distributed.initialize`: explicit coordinator if given, else auto-detect (TPU pods,
    SLURM, ...). Call before any other jax call touches devices."""
    kwargs: dict[str, Any] = {}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes > 0:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)


def build_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A mesh (data, fsdp, tensor) over `devices` (default: all); one size may be −1 (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ShardingError(
            f"mesh sizes (data={data}, fsdp={fsdp}, tensor={tensor}) must be positive, with at "
            f"most one −1 (= the remaining devices)."
        )
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ShardingError(
                f"{len(devices)} devices cannot be split into a mesh with fixed sizes "
                f"{dict(zip(AXES, sizes, strict=True))}; make the product of the fixed sizes "
                f"divide {len(devices)}."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ShardingError(
            f"mesh {dict(zip(AXES, sizes, strict=True))} needs {int(np.prod(sizes))} devices; "
            f"there are {len(devices)}. Set one axis to −1 to use the rest."
        )
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, AXES)


def path_str(path: Sequence[Any]) -> str:
    """A jax key path as "a/b/0/kernel"."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def fsdp_spec(shape: Sequence[int], axis_size: int, min_size: int, axis: str = "fsdp") -> tuple:
    """Spec tuple sharding the largest axis divisible by `axis_size`; () (replicated) if none."""
    if axis_size <= 1 or int(np.prod(shape)) < min_size:
        return ()
    for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[dim] % axis_size == 0:
            spec: list[Any] = [None] * len(shape)
            spec[dim] = axis
            return tuple(spec)
    return ()


def param_specs(
    tree: Any,
    mesh: Mesh,
    strategy: str = "fsdp",
    min_size: int = 2**12,
    rules: Sequence[tuple[str, Sequence[Any]]] = (),
) -> Any:
    """A `PartitionSpec` per leaf of `tree` (arrays or ShapeDtypeStructs)."""
    if strategy not in ("replicate", "fsdp"):
        raise ShardingError(f"sharding strategy {strategy!r}; expected 'replicate' or 'fsdp'.")
    compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]

    def one(path, leaf):
        name, shape = path_str(path), tuple(np.shape(leaf))
        for pattern, spec in compiled:
            if pattern.search(name):
                _check_rule(name, shape, spec, mesh)
                return PartitionSpec(*spec)
        if strategy == "fsdp":
            return PartitionSpec(*fsdp_spec(shape, mesh.shape["fsdp"], min_size))
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(one, tree)


def follow_specs(tree: Any, params: Any, specs: Any) -> Any:
    """Specs for a state tree (optimizer / EMA) following the parameters: a leaf whose key path
    ends with a parameter's path and has its shape gets its spec; others are replicated."""
    by_path = {}
    for (path, leaf), spec in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(specs), strict=True
    ):
        by_path[path_str(path)] = (tuple(np.shape(leaf)), spec)

    def one(path, leaf):
        name, shape = path_str(path), tuple(np.shape(leaf))
        parts = name.split("/")
        for i in range(len(parts)):
            hit = by_path.get("/".join(parts[i:]))
            if hit is not None and hit[0] == shape:
                return hit[1]
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(one, tree)


def named(mesh: Mesh, specs: Any) -> Any:
    """PartitionSpecs → NamedShardings on `mesh`."""
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ("data", "fsdp")."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_size_per_process(global_batch_size: int, mesh: Mesh) -> int:
    """Rows of the global batch each process loads; checks divisibility by the batch shards."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch_size % shards:
        raise ShardingError(
            f"global batch {global_batch_size} is not divisible by data×fsdp = {shards} devices; "
            f"pick a batch size that is a multiple of {shards}."
        )
    return global_batch_size // jax.process_count()


def global_batch(local: Any, mesh: Mesh) -> Any:
    """Process-local numpy batch (rows of this process) → global `jax.Array`s on `mesh`."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def _check_rule(name: str, shape: tuple, spec: tuple, mesh: Mesh) -> None:
    if len(spec) > len(shape):
        raise ShardingError(f"rule spec {spec} has more entries than {name} has axes {shape}.")
    for dim, axis in enumerate(spec):
        if axis is None:
            continue
        axes = axis if isinstance(axis, tuple) else (axis,)
        size = int(np.prod([mesh.shape[a] for a in axes]))
        if shape[dim] % size:
            raise ShardingError(
                f"rule spec {spec} shards axis {dim} of {name} (shape {shape}) over {axes} of "
                f"size {size}, which does not divide {shape[dim]}."
            )
