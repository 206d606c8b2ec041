"""Meshes and the one place where logical axis names meet mesh axes.

Model code names logical axes only (`embed`, `heads`, `batch`, ...). The two tables below
map them to the mesh axes `data`, `fsdp` and `tensor`: TRAIN_RULES shards parameters over
fsdp and tensor (ZeRO-3 style, gathered per layer by XLA); SAMPLE_RULES keeps parameters
whole on the fsdp axis so a decode step needs no all-gather. Everything here is a no-op
without a mesh, so the same model code runs on one CPU and on a pod.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Parameter axes: embed, vocab, heads, kv_heads, head_dim, mlp; layers (the scanned stack's).
# Activation axes: batch, length, act_embed, act_heads, act_kv_heads, act_mlp, act_vocab
# (kept apart from parameter axes so that `embed` -> fsdp never collides with the batch).
TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),  # never split: a scan step takes one layer whole
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)

SAMPLE_RULES: Rules = tuple((name, None if name == "embed" else axes) for name, axes in TRAIN_RULES)

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("rlhf_jax_mesh", default=None)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh; one entry may be -1 for all remaining devices. In a
    single process a fully given shape may use fewer devices than there are (the first ones)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = list(shape)
    if len(shape) != 3:
        raise ValueError(f"mesh shape {tuple(shape)}: expected 3 entries for axes {MESH_AXES}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh shape {tuple(shape)}: entries must be positive, with at most one -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"mesh shape {tuple(shape)}: {len(devices)} devices not divisible by {known}")
        shape[shape.index(-1)] = len(devices) // known
    n = math.prod(shape)
    if n > len(devices) or (n < len(devices) and jax.process_count() > 1):
        raise ValueError(f"mesh shape {tuple(shape)} needs {n} devices, have {len(devices)}")
    grid = np.asarray(devices[:n]).reshape(shape)  # a smaller mesh takes the first devices
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(axes: Sequence[str | None], rules: Rules, shape: Sequence[int] | None = None, mesh=None):
    """PartitionSpec for logical `axes`. A mesh axis is used at most once per array, and,
    given `shape` and `mesh`, a dim that the mesh axes do not divide stays replicated."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(axes):
        target = table.get(name) if name is not None else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        names = tuple(n for n in names if n not in used)
        if names and shape is not None and mesh is not None:
            size = math.prod(mesh.shape[n] for n in names)
            if shape[i] % size:
                names = ()
        used.update(names)
        spec.append(names[0] if len(names) == 1 else (names or None))
    return PartitionSpec(*spec)


def tree_shardings(axes_tree, shapes_tree, mesh: Mesh, rules: Rules):
    """NamedShardings for a pytree of logical-axes tuples (leaves) and matching shapes."""
    is_axes = lambda x: isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)  # noqa: E731
    return jax.tree.map(
        lambda axes, sds: NamedSharding(mesh, logical_to_spec(axes, rules, sds.shape, mesh)),
        axes_tree,
        shapes_tree,
        is_leaf=is_axes,
    )


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules: Rules = TRAIN_RULES) -> Iterator[None]:
    """Activate `mesh` and `rules` for `shard` while tracing (a jit traced outside keeps no constraints)."""
    token = _ACTIVE.set((mesh, rules) if mesh is not None else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> tuple[Mesh, Rules] | None:
    return _ACTIVE.get()


def shard(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Constrain an activation's sharding by logical axes; identity without an active mesh."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec = logical_to_spec(axes, rules, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_sharding(mesh: Mesh | None, rules: Rules = TRAIN_RULES, ndim: int = 2, shape: Sequence[int] | None = None):
    """Sharding of a [B, ...] host batch: the batch over the data axes, the rest replicated;
    given its shape, a batch the data axes do not divide stays replicated."""
    if mesh is None:
        return None
    ndim = len(shape) if shape is not None else ndim
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules, shape, mesh))


def put_batch(batch, mesh: Mesh | None, rules: Rules = TRAIN_RULES):
    """Place every leaf of a host batch pytree, the same on every process, with its
    leading axis over the data axes (each process copies only the rows its devices hold)."""
    if mesh is None:
        return batch
    return jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, rules, shape=np.shape(x))), batch)


def process_rows(n: int, mesh: Mesh | None, rules: Rules = TRAIN_RULES) -> slice:
    """The rows of a batch-sharded [n, ...] array that this process's devices hold: all of
    them in a single process or when the batch is replicated, else one contiguous block."""
    if mesh is None or jax.process_count() == 1:
        return slice(0, n)
    held = batch_sharding(mesh, rules, ndim=1, shape=(n,)).addressable_devices_indices_map((n,))
    starts = [index[0].indices(n)[0] for index in held.values()]
    stops = [index[0].indices(n)[1] for index in held.values()]
    lo, hi = min(starts), max(stops)
    if sum(b - a for a, b in sorted(set(zip(starts, stops, strict=True)))) != hi - lo:
        raise ValueError(f"process {jax.process_index()} holds non-contiguous rows of a batch of {n}")
    return slice(lo, hi)


def put_rows(build, rows: np.ndarray, mesh: Mesh | None, rules: Rules = TRAIN_RULES):
    """Global batch arrays for the row indices `rows` (the same on every process):
    `build(local_rows)` makes a host pytree of this process's block of rows only
    (`process_rows`), and `jax.make_array_from_process_local_data` joins the blocks.
    In a single process this is `put_batch(build(rows))`."""
    rows = np.asarray(rows)
    mine = rows[process_rows(len(rows), mesh, rules)]
    local = build(mine)
    if mesh is None:
        return local
    if jax.process_count() == 1:
        return put_batch(local, mesh, rules)

    def place(x):  # a builder may give m examples per row (KTO: 2): the global batch has m * len(rows)
        x = np.asarray(x)
        shape = (x.shape[0] * len(rows) // len(mine),) + x.shape[1:]
        return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, shape=shape), x, shape)

    return jax.tree.map(place, local)


def to_host(x) -> np.ndarray:
    """The whole value of an array as numpy on every process (gathered from the other
    processes when it is sharded across them)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def local_value(x) -> np.ndarray:
    """An array's rows held by this process as numpy (the whole value when it can read it)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.concatenate([np.asarray(s.data) for s in x.addressable_shards])
    return np.asarray(x)


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """`jax.distributed.initialize` when the run spans processes; call before any other JAX
    call. Returns whether it did.

    `auto`: let JAX discover the cluster (a TPU pod slice, SLURM, ...). Otherwise pass all
    three of coordinator "host:port", the number of processes and this one's id (GPU
    hosts, CPU tests); a single process without a coordinator does nothing.
    """
    if auto:
        jax.distributed.initialize()
        return True
    given = {"coordinator": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if coordinator_address is None and num_processes in (None, 1):
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"distributed run: {', '.join(missing)} not given (all three are needed without --distributed)"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"distributed run: process_id {process_id} outside 0..{num_processes - 1}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True
