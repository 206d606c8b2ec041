"""The RLOO paper's Table 1 comparison (Ahmadian et al. 2024) on the built-in summarisation
task: every method from the same SFT policy and reward model (one of each per seed), with
the paper's equal-sample budget (every online method samples the same number of
completions: rollout_batch x steps), judged by the task's gold reward.

    python -m rlhf_jax.main --config experiments/studies/rloo_paper.py --workdir DIR \\
        --records studies/rloo_paper [--jobs 2]

Cells: SFT (the report's first row), RLOO k=2, RLOO k=4, RAFT k=2, RAFT k=4, REINFORCE with
a moving-average baseline, Vanilla PG, PPO, DPO; seeds 0-4. Each method runs at the
quickstart's settings (`experiments/quickstart.py`): the same learning rate for every
online method. Variants: smoke (two methods, two seeds, the quickstart's tiny sizes: the
tests' size).
"""

import dataclasses

from experiments import quickstart
from rlhf_jax.study import Cell, StudyConfig

SEEDS = (0, 1, 2, 3, 4)
# group -> (quickstart method, samples per prompt k); the paper's Table 1 rows
METHODS = {
    "rloo_k2": ("rloo", 2),
    "rloo_k4": ("rloo", 4),
    "raft_k2": ("raft", 2),
    "raft_k4": ("raft", 4),
    "reinforce": ("reinforce", 1),
    "vanilla_pg": ("vanilla_pg", 1),
    "ppo": ("ppo", 1),
    "dpo": ("dpo", 1),
}


def pipeline(method: str, k: int, tiny: bool):
    cfg = quickstart.with_method(quickstart.full(), method)
    if cfg.policy.train.kind == "rl" and cfg.policy.rl.k != k:
        cfg = dataclasses.replace(
            cfg, policy=dataclasses.replace(cfg.policy, rl=dataclasses.replace(cfg.policy.rl, k=k))
        )
    return quickstart.tiny(cfg) if tiny else cfg


def get_config(variant: str | None = None) -> StudyConfig:
    if variant not in (None, "smoke"):
        raise ValueError(f"rloo_paper: unknown variant {variant!r}; known: smoke")
    smoke = variant == "smoke"
    groups = {g: METHODS[g] for g in ("rloo_k2", "raft_k2")} if smoke else METHODS
    seeds = (0, 1) if smoke else SEEDS
    cells = tuple(
        Cell(group, seed, pipeline(method, k, smoke), settings=(("method", method), ("k", str(k))))
        for group, (method, k) in groups.items()
        for seed in seeds
    )
    return StudyConfig(
        name="rloo_paper_smoke" if smoke else "rloo_paper",
        cells=cells,
        description="The RLOO paper's Table 1 on the built-in summarisation task (experiments/studies/rloo_paper.py).",
    )
