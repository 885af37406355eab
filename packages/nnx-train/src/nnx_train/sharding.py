"""Mesh, parameter shardings (replicate / FSDP / tensor / regex rules) and multi-host helpers.

- `build_mesh(data, fsdp, tensor, context=)`: a `jax.sharding.Mesh` with DESIGN.md's axes
  ("data", "fsdp", "tensor", "context").
- `param_specs(tree, ...)`: a `PartitionSpec` per array. Tensor parallelism (Megatron-LM): an
  array whose path matches `TENSOR_RULES` is split over "tensor" along the axis the rule names
  (column-parallel layers by output unit or head, row-parallel ones by input unit; the backbone
  layers pin their activations to match, `nnx_backbones.layers.parallel`). FSDP then shards each
  large array along its largest remaining axis divisible by the fsdp axis size (as in the
  shortcut-models / big_vision FSDP); arrays with fewer than `min_size` elements are not
  FSDP-sharded; `rules` ((regex, spec), ...) matched against the "/"-joined parameter path
  override all of this (first match wins). The rules apply per parameter tree, whatever the
  tree (one network, or a generator and a critic).
- `check_model_parallel(module, mesh)`: head and token counts divisible by the tensor and context
  axes, and a context-parallel attention chosen, checked before anything is compiled.
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
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnx_train.errors import ShardingError

AXES = ("data", "fsdp", "tensor", "context")
BATCH_AXES = ("data", "fsdp")
CONTEXT_ATTENTION = ("ring", "ulysses")

# (path regex, axis split over "tensor") for the backbones' layers (nnx_backbones.layers, vit).
# Column-parallel (split the outputs): qkv [D, 3, D] by heads, fc1 / w12 [D, 2, H] by hidden unit,
# adaLN modulations and the time embedder's first Linear by output feature (their small
# [B, k·D] outputs are gathered). Row-parallel (split the inputs): proj, fc2, w3, linear_2.
TENSOR_RULES: tuple[tuple[str, int], ...] = (
    (r"attn/qkv/kernel$", 2),
    (r"attn/qkv/bias$", 1),
    (r"attn/proj/kernel$", 0),
    (r"mlp/(fc1|w12)/kernel$", -1),
    (r"mlp/(fc1|w12)/bias$", -1),
    (r"mlp/(fc2|w3|weights_out)/kernel$", 0),
    (r"adaLN_modulation/kernel$", 1),
    (r"adaLN_modulation/bias$", 0),
    (r"_embedder/linear_1/kernel$", 1),
    (r"_embedder/linear_1/bias$", 0),
    (r"_embedder/linear_2/kernel$", 0),
    (r"attention/attention/(query|key|value)/kernel$", 1),
    (r"attention/attention/(query|key|value)/bias$", 0),
    (r"attention/output/dense/kernel$", 0),
)


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


def build_mesh(
    data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None, *, context: int = 1
) -> Mesh:
    """A mesh (data, fsdp, tensor, context) over `devices` (default: all); one size may be −1
    (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor, context]
    if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ShardingError(
            f"mesh sizes (data={data}, fsdp={fsdp}, tensor={tensor}, context={context}) must be "
            f"positive, with at most one −1 (= the remaining devices)."
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
    tensor_rules: Sequence[tuple[str, int]] = TENSOR_RULES,
) -> Any:
    """A `PartitionSpec` per leaf of `tree` (arrays or ShapeDtypeStructs): `rules` first, else
    the "tensor" axis from `tensor_rules` (when the mesh has tensor > 1) and FSDP on the largest
    other divisible axis (module docstring)."""
    if strategy not in ("replicate", "fsdp"):
        raise ShardingError(f"sharding strategy {strategy!r}; expected 'replicate' or 'fsdp'.")
    compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]
    tensor = [(re.compile(pattern), dim) for pattern, dim in tensor_rules]
    tp = mesh.shape.get("tensor", 1)

    def one(path, leaf):
        name, shape = path_str(path), tuple(np.shape(leaf))
        for pattern, spec in compiled:
            if pattern.search(name):
                _check_rule(name, shape, spec, mesh)
                return PartitionSpec(*spec)
        spec: list[Any] = [None] * len(shape)
        if tp > 1:
            for pattern, dim in tensor:
                if pattern.search(name):
                    spec[dim] = "tensor"
                    _check_rule(name, shape, tuple(spec), mesh, "tensor parallelism")
                    break
        if strategy == "fsdp":
            free = [i for i, s in enumerate(spec) if s is None]
            sub = fsdp_spec([shape[i] for i in free], mesh.shape["fsdp"], min_size)
            for i, axis in zip(free, sub, strict=False):
                spec[i] = axis
        return PartitionSpec(*spec) if any(spec) else PartitionSpec()

    return jax.tree_util.tree_map_with_path(one, tree)


def check_model_parallel(module: Any, mesh: Mesh) -> None:
    """Raise `ShardingError` unless every attention layer of `module` (an nnx module, abstract or
    not) fits the mesh: heads divisible by tensor, tokens by context, a context-parallel
    attention ("ring" / "ulysses") when context > 1, and for Ulysses the heads per tensor shard
    divisible by context. Layers are found by their attributes (`num_heads`, `implementation`;
    a network's token `grid`), so any backbone built from `nnx_backbones.layers` is covered."""
    tp, cp = mesh.shape.get("tensor", 1), mesh.shape.get("context", 1)
    errors = []
    for path, node in nnx.iter_graph(module):
        where = "/".join(str(p) for p in path) or type(node).__name__
        heads = getattr(node, "num_heads", None)
        if isinstance(heads, int) and hasattr(node, "head_dim"):
            impl = getattr(node, "implementation", None)
            if heads % tp:
                errors.append(
                    f"{where}: {heads} attention heads are not divisible by mesh.tensor = {tp}; "
                    f"pick a tensor size that divides the head count."
                )
            elif cp > 1 and impl not in CONTEXT_ATTENTION:
                errors.append(
                    f"{where}: mesh.context = {cp} needs a context-parallel attention; set "
                    f"model.attn_implementation to one of {CONTEXT_ATTENTION} (got {impl!r})."
                )
            elif cp > 1 and impl == "ulysses" and (heads // tp) % cp:
                errors.append(
                    f"{where}: Ulysses attention needs the heads per tensor shard "
                    f"({heads} / {tp} = {heads // tp}) divisible by mesh.context = {cp}; use "
                    f"attn_implementation='ring' or change num_heads / mesh sizes."
                )
        grid = getattr(node, "grid", None)
        if cp > 1 and isinstance(grid, tuple) and all(isinstance(g, int) for g in grid):
            tokens = int(np.prod(grid))
            if tokens % cp:
                errors.append(
                    f"{where}: {tokens} tokens (grid {grid}) are not divisible by mesh.context "
                    f"= {cp}; change the input size, the patch size or mesh.context."
                )
    if errors:
        raise ShardingError(
            "The model does not fit the mesh "
            + str(dict(mesh.shape))
            + ":\n  "
            + "\n  ".join(dict.fromkeys(errors))
        )


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


def _check_rule(name: str, shape: tuple, spec: tuple, mesh: Mesh, what: str = "rule") -> None:
    if len(spec) > len(shape):
        raise ShardingError(f"rule spec {spec} has more entries than {name} has axes {shape}.")
    for dim, axis in enumerate(spec):
        if axis is None:
            continue
        axes = axis if isinstance(axis, tuple) else (axis,)
        size = int(np.prod([mesh.shape[a] for a in axes]))
        if shape[dim] % size:
            raise ShardingError(
                f"{what}: spec {spec} shards axis {dim} of {name} (shape {shape}) over {axes} "
                f"of size {size}, which does not divide {shape[dim]}. Change the mesh sizes "
                f"or the layer widths (or add a sharding.rules entry for this parameter)."
            )
