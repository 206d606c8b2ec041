"""Experiment loops, one per `train.kind`: supervised (SFT, Bradley-Terry / ORM / PRM
reward models), online RL, offline preference training. All share `common.drive`."""

from __future__ import annotations

from rlhf_jax.experiment import ExperimentConfig


def run(cfg: ExperimentConfig, workdir: str) -> dict:
    """Run the loop of cfg.train.kind in workdir (`pipeline.run` runs a PipelineConfig's
    stages through this)."""
    from rlhf_jax.loops import offline, online, supervised  # only the one asked for is used

    loops = {
        "sft": supervised.run_sft,
        "reward": supervised.run_reward,
        "orm": supervised.run_orm,
        "prm": supervised.run_prm,
        "rl": online.run_rl,
        "preference": offline.run_preference,
    }
    return loops[cfg.train.kind](cfg, workdir)
