"""Orbax checkpoints of a run: the train state (any pytree) and a JSON `meta` dict (loop
state: data position, RNG seed, baseline, KL controller, config), saved together.

Saves are asynchronous (the step continues while the previous state is written) and
atomic (Orbax writes to a temporary directory and renames it). A restore tries the
latest step first and falls back to earlier ones, with a warning, if a checkpoint cannot
be read; the unreadable newer steps are then moved aside to `<directory>.unreadable/`
(kept, never deleted), so that the resumed run can save those steps again. When
checkpoints exist but none can be read, the restore refuses (`CheckpointError`) instead
of starting over: a silent restart would overwrite the run's results.

Integrity: each save puts two 32-bit checksums of every array of the state into `meta`
(`digests`: the wrapping sums of the array's words and of a hash of each, from the host
copies of its shards; integer sums, so the same on any mesh the state is restored onto;
none over several processes), and a restore
recomputes them: a checkpoint whose bytes changed on disk is unreadable like any other
(named, moved aside, the previous one restored) instead of resuming with damaged values.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.errors import CheckpointError


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.keep, self.async_save = keep, async_save
        self.manager = self._manager()

    def _manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.keep,
            enable_async_checkpointing=self.async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def save(self, step: int, state: Any, meta: dict[str, Any], force: bool = True) -> bool:
        meta = {**meta, "digests": digests(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self.manager.save(int(step), args=args, force=force)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, meta) of the newest readable checkpoint, restored straight into the
        shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct with .sharding, or
        of arrays); None if there is none. Newer unreadable steps are moved aside; if no
        step is readable, CheckpointError."""
        target = jax.tree.map(_abstract, abstract_state)
        self._check_layer_layout(target)
        failed: list[tuple[int, str]] = []
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
                )
                meta = dict(out["meta"])
                damaged = _damaged(meta.pop("digests", None), out["state"])
                if damaged:
                    raise ValueError(f"its arrays differ from what was saved: {damaged}")
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                failed.append((step, reason))
                warnings.warn(
                    f"checkpoint step {step} in {self.directory} cannot be restored ({reason}); "
                    "falling back to an earlier one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if failed:
                self._move_aside([s for s, _ in failed])
            return step, out["state"], meta
        if failed:
            listed = "; ".join(f"step {s}: {r}" for s, r in failed)
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be restored ({listed}); nothing was changed. "
                "Rerun with --restart to start this run over (its old outputs are moved aside, not deleted)"
            )
        return None

    def _check_layer_layout(self, target) -> None:
        """A checkpoint whose layer stack is laid out otherwise than the run's model
        (`model.scan_layers`) is refused by name, before any step is tried (it is not
        unreadable: nothing is moved aside)."""
        step = self.latest_step()
        if step is None:
            return
        try:
            saved = _layer_layout(jax.tree_util.tree_flatten_with_path(self.manager.item_metadata(step)["state"])[0])
        except Exception:  # noqa: BLE001 - unreadable metadata: the restore's fallback deals with it
            return
        wanted = _layer_layout(jax.tree_util.tree_flatten_with_path(target)[0])
        if saved and wanted and saved != wanted:
            flag = "true" if saved == "scanned" else "false"
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} holds a {saved} layer stack; this run's model is "
                f"{wanted} (model.scan_layers={str(wanted == 'scanned').lower()}). Resume it with "
                f"--set model.scan_layers={flag} --overwrite-config, or start over with --restart (its old outputs "
                "are moved aside, not deleted); an HF export loads in either layout"
            )

    def _move_aside(self, steps: list[int]) -> None:
        """Rename unreadable step directories into <directory>.unreadable/ (process 0), then
        reopen the manager so that those steps can be saved again."""
        self.manager.close()
        if jax.process_index() == 0:
            aside = self.directory + ".unreadable"
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                source = os.path.join(self.directory, str(step))
                if not os.path.exists(source):
                    continue
                target, n = os.path.join(aside, str(step)), 1
                while os.path.exists(target):
                    target, n = os.path.join(aside, f"{step}.{n}"), n + 1
                shutil.move(source, target)
                print(f"checkpoint step {step} is unreadable: moved aside to {target}")
        mesh_lib.barrier("unreadable checkpoints moved aside")
        self.manager = self._manager()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _layer_layout(flat) -> str | None:
    """ "unrolled" (params .../layers/<i>/...), "scanned" (.../layers/<name>/...) or None
    (no layer stack) from a flattened pytree's key paths."""
    for path, _ in flat:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        for a, b in zip(keys, keys[1:], strict=False):
            if a == "layers":
                return "unrolled" if b.isdigit() else "scanned"
    return None


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _words(a: np.ndarray) -> np.ndarray:
    """An array's bits as uint32 words (narrower items widened, bool as 0 / 1)."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint32)
    narrow = {1: np.uint8, 2: np.uint16}.get(a.dtype.itemsize)
    if narrow is not None:
        return a.view(narrow).astype(np.uint32)
    return a.view(np.uint32)  # 4 bytes: one word; 8 bytes: two


def _mix(w: np.ndarray) -> np.ndarray:
    """An integer hash of each word (lowbias32), so that words with zero low bits (small
    floats) still spread over all 32 bits of the sum."""
    w = w ^ (w >> np.uint32(16))
    w = w * np.uint32(0x7FEB352D)
    w = w ^ (w >> np.uint32(15))
    w = w * np.uint32(0x846CA68B)
    return w ^ (w >> np.uint32(16))


def _sums(a: np.ndarray) -> np.ndarray:
    """[2] uint32: the wrapping sums of the words and of their hashes."""
    w = _words(a).ravel()
    with np.errstate(over="ignore"):
        return np.array([w.sum(dtype=np.uint32), _mix(w).sum(dtype=np.uint32)], np.uint32)


def _leaf_sums(leaf) -> list[int]:
    """The sums over the whole array from the shards this process holds (one copy of each:
    replica 0), on the host: integer sums, so any sharding of the same values gives the same
    digest, and no collective runs beside the checkpoint writer's threads."""
    shards = [s.data for s in leaf.addressable_shards if s.replica_id == 0] if isinstance(leaf, jax.Array) else [leaf]
    total = np.zeros(2, np.uint32)
    with np.errstate(over="ignore"):
        for shard in shards:
            total = total + _sums(np.asarray(shard))
    return [int(total[0]), int(total[1])]


def digests(state: Any) -> dict[str, list[int]]:
    """{leaf path: [sum of words, sum of hashed words]} of every array of the state ({} over
    several processes: each holds only its shards, and one process writes the meta)."""
    if jax.process_count() > 1:
        return {}
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): _leaf_sums(leaf) for path, leaf in flat if hasattr(leaf, "dtype")}


def _damaged(saved: dict | None, state: Any) -> str:
    """The leaves whose checksums differ from the saved ones ('' when none, or when the
    checkpoint predates checksums)."""
    if not saved:
        return ""
    now = digests(state)
    bad = [path for path, sums in saved.items() if path in now and now[path] != list(sums)]
    return "" if not bad else f"{len(bad)} of {len(saved)} arrays, e.g. {', '.join(bad[:3])}"
