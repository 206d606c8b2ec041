"""Experiment loops, one per `train.kind`, each a `common.Loop` that the one run skeleton
(`common.run_loop`) drives: supervised (SFT, Bradley-Terry / ORM / PRM reward models),
online RL, offline preference training."""

from __future__ import annotations

from rlhf_jax.experiment import ExperimentConfig


def run(cfg: ExperimentConfig, workdir: str) -> dict:
    """Run the loop of cfg.train.kind in workdir (`pipeline.run` runs a PipelineConfig's
    stages through this)."""
    from rlhf_jax.loops import common, offline, online, supervised  # imported when a run starts

    loops = {
        "sft": supervised.sft,
        "reward": supervised.reward,
        "orm": supervised.orm,
        "prm": supervised.prm,
        "rl": online.rl,
        "preference": offline.preference,
    }
    return common.run_loop(cfg, workdir, loops[cfg.train.kind])
