"""Orbax checkpoints of a run: the train state (any pytree) and a JSON `meta` dict (loop
state: data position, RNG seed, baseline, KL controller, config), saved together.

Saves are asynchronous (the step continues while the previous state is written) and
atomic (Orbax writes to a temporary directory and renames it). A restore tries the
latest step first and falls back to earlier ones, with a warning, if a checkpoint
cannot be read, so a truncated or corrupt latest save never loses the run.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, step: int, state: Any, meta: dict[str, Any], force: bool = True) -> bool:
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
        of arrays); None if there is none."""
        target = jax.tree.map(_abstract, abstract_state)
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
                )
                return step, out["state"], dict(out["meta"])
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                warnings.warn(
                    f"checkpoint step {step} in {self.directory} cannot be restored ({type(e).__name__}: {e}); "
                    "falling back to an earlier one",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
