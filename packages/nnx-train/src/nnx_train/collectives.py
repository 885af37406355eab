"""The collectives of a compiled XLA program, read from its HLO text.

`collectives(hlo)` lists every all-reduce, all-gather, reduce-scatter, all-to-all and
collective-permute (async `-start` forms included, `-done` halves skipped) with its output
shapes, output bytes and replica groups (device ids, in the three forms XLA prints: explicit
`{{0,1},{2,3}}`, iota `[G,S]<=[dims]T(perm)` and `mesh['axis_0'=4,...] {'axis_0'}`).
`over_axis(c, mesh, "tensor")` tells whether a collective's groups span a mesh axis, so tests and
bench/ can say "no weight is gathered over tensor" without guessing from shapes.
"""

import dataclasses
import re

import numpy as np
from jax.sharding import Mesh

OPS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s64": 8, "s32": 4, "u32": 4, "s8": 1,
          "u8": 1, "pred": 1, "s16": 2, "u16": 2, "u64": 8}  # fmt: skip
_LINE = re.compile(rf"= (.*?) ({'|'.join(OPS)})(-start)?\(")


@dataclasses.dataclass(frozen=True)
class Collective:
    op: str
    shapes: tuple[tuple[int, ...], ...]
    nbytes: int
    groups: tuple[tuple[int, ...], ...]  # () when XLA printed none (e.g. collective-permute)


def collectives(hlo: str) -> list[Collective]:
    """Every collective of an HLO module's text (`compiled.as_text()`), in program order."""
    found = []
    for line in hlo.splitlines():
        m = _LINE.search(line)
        if m is None:
            continue
        arrays = [
            (tuple(int(d) for d in dims.split(",") if d), _BYTES.get(dtype, 4))
            for dtype, dims in re.findall(r"([a-z]+\d*)\[([\d,]*)\]", m.group(1))
        ]
        if m.group(3) and m.group(2) in ("all-gather", "collective-permute") and len(arrays) > 1:
            arrays = arrays[1:2]  # async start: (operand, result, context...) → the result
        shapes = tuple(shape for shape, _ in arrays)
        nbytes = sum(int(np.prod(shape)) * size for shape, size in arrays)
        found.append(Collective(m.group(2), shapes, nbytes, _groups(line)))
    return found


def counts(found: list[Collective]) -> dict[str, int]:
    """{op: how many} over `OPS`."""
    return {op: sum(c.op == op for c in found) for op in OPS}


def over_axis(c: Collective, mesh: Mesh, axis: str) -> bool:
    """Whether some replica group of `c` holds devices that differ along mesh `axis` (device
    ids are positions in `mesh.devices`, as for meshes built by `sharding.build_mesh`)."""
    ids = {int(d.id): i for i, d in enumerate(mesh.devices.flat)}
    dim = mesh.axis_names.index(axis)
    for group in c.groups:
        coords = {np.unravel_index(ids.get(g, g), mesh.devices.shape)[dim] for g in group}
        if len(coords) > 1:
            return True
    return False


def _groups(line: str) -> tuple[tuple[int, ...], ...]:
    m = re.search(r"replica_groups=(\{\{[\d,{}]*\}\})", line)
    if m:
        return tuple(
            tuple(int(x) for x in g.split(",") if x) for g in re.findall(r"\{([\d,]*)\}", m[1])
        )
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", line)
    if m:
        dims = [int(d) for d in m[3].split(",")]
        ids = np.arange(int(np.prod(dims))).reshape(dims)
        if m[4]:
            ids = ids.transpose([int(p) for p in m[4].split(",")])
        return tuple(tuple(int(i) for i in g) for g in ids.reshape(int(m[1]), int(m[2])))
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if m:
        sizes = {k: int(v) for k, v in re.findall(r"'(\w+)'=(\d+)", m[1])}
        names, inner = list(sizes), re.findall(r"'(\w+)'", m[2])
        ids = np.arange(int(np.prod(list(sizes.values())))).reshape(list(sizes.values()))
        outer = [n for n in names if n not in inner]
        order = [names.index(n) for n in outer + inner]
        size = int(np.prod([sizes[n] for n in inner])) if inner else 1
        return tuple(tuple(int(i) for i in g) for g in ids.transpose(order).reshape(-1, size))
    return ()
