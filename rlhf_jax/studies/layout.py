"""Where a study's cell runs in its workdir: its own directory, and the shared stages it
starts from (`place`), keyed by a hash of their configs so that cells with the same stage
share one run."""

from __future__ import annotations

import dataclasses
import os

from rlhf_jax import config as config_lib
from rlhf_jax import pipeline
from rlhf_jax.studies.iterated import IteratedConfig
from rlhf_jax.studies.process_supervision import ProcessConfig
from rlhf_jax.studies.records import digest
from rlhf_jax.studies.weak_to_strong import WeakToStrongConfig


@dataclasses.dataclass(frozen=True)
class Placed:
    """A cell placed in the study's workdir: its stages' directories and configs."""

    cell: object  # a study.Cell (its module imports this one)
    directory: str
    dirs: dict[str, str]
    data_dir: str  # the study's prepared data, shared by every cell
    configs: dict[str, pipeline.ExperimentConfig]
    shared: tuple[tuple[str, str], ...]  # (stage, key "shared/<stage>-<hash>") of the shared stages it needs, in order


def place(cell, workdir: str) -> Placed:
    """A pipeline cell shares its seed's SFT and reward model (on a verifiable reward, its
    SFT only); an iterated cell its SFT (its reward models are its rounds' own); a
    process-supervision cell its seed's base model (both generators of a seed start from
    it); a weak-to-strong cell its pretrained sizes (the same for every seed)."""
    seeded = cell.seeded
    directory, data_dir = os.path.join(workdir, "cells", cell.name), os.path.join(workdir, "tfds")
    if isinstance(seeded, ProcessConfig):
        key = f"base-{digest(config_lib.non_default(seeded.wired_stages(directory, data_dir)['facts']))}"
        base = os.path.join(workdir, "shared", key)
        return Placed(cell, directory, {"facts": base}, data_dir, seeded.wired_stages(directory, data_dir, base),
                      (("facts", f"shared/{key}"),))  # fmt: skip
    if isinstance(seeded, WeakToStrongConfig):
        configs = seeded.wired_stages(directory, data_dir)
        keys = {name: f"{name}-{digest(config_lib.non_default(stage))}" for name, stage in configs.items()}
        dirs = {name: os.path.join(workdir, "shared", key) for name, key in keys.items()}
        return Placed(cell, directory, dirs, data_dir, configs, tuple((n, f"shared/{k}") for n, k in keys.items()))
    p = seeded.pipeline if isinstance(seeded, IteratedConfig) else seeded
    sft_key = f"sft-{digest(config_lib.non_default(p.sft), cell.seed)}"
    reward_key = f"reward-{digest(config_lib.non_default(p.reward), cell.seed, sft_key)}"
    dirs = {
        "sft": os.path.join(workdir, "shared", sft_key),
        "reward": os.path.join(workdir, "shared", reward_key),
        "policy": os.path.join(directory, "policy"),
    }
    if p.reward_source == "task":  # a verifiable reward: no reward model; the judged pairs are the cell's own
        dirs = {"sft": dirs["sft"], "policy": dirs["policy"], "pairs": os.path.join(directory, "pairs")}
    configs = pipeline.stages(p, directory, dirs, data_dir)
    shared = (("sft", f"shared/{sft_key}"), ("reward", f"shared/{reward_key}"))
    if isinstance(seeded, IteratedConfig) or p.reward_source == "task":
        shared = shared[:1]
    if isinstance(seeded, IteratedConfig):
        dirs = {"sft": dirs["sft"]}
    return Placed(cell, directory, dirs, data_dir, configs, shared)
