"""The RLOO paper's Table 1 comparison (Ahmadian et al. 2024) on the built-in summarisation
task: every method from the same SFT policy and reward model (one of each per seed), with
the paper's equal-sample budget (every online method samples the same number of
completions: rollout_batch x steps), judged by the task's gold reward.

    python -m rlhf_jax.main --config experiments/studies/rloo_paper.py --workdir DIR \\
        --records studies/rloo_paper [--jobs 2]

Cells: SFT (the report's first row), RLOO k=2, RLOO k=4, RAFT k=2, RAFT k=4, REINFORCE with
a moving-average baseline, Vanilla PG, PPO, DPO; seeds 0-4, each method at the quickstart's
settings (`experiments/quickstart.py`) but its policy learning rate, which is chosen per
method from the same grid (LEARNING_RATES) by the greedy gold reward on the validation split
at seeds 0 and 1, before any test cell runs. Variants: smoke (two methods, two seeds, two
learning rates chosen at one seed, the quickstart's tiny sizes: the tests' size).
"""

import dataclasses

from experiments import quickstart
from rlhf_jax.study import Cell, Selection, StudyConfig

SEEDS = (0, 1, 2, 3, 4)
LEARNING_RATES = (3e-5, 1e-4, 3e-4)  # the policy's, the same grid for every method
SELECTION_SEEDS = (0, 1)
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


def with_learning_rate(cfg, lr: float):
    policy = dataclasses.replace(cfg.policy, optim=dataclasses.replace(cfg.policy.optim, learning_rate=lr))
    return dataclasses.replace(cfg, policy=policy)


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
    selection = Selection(
        "lr",
        (1e-2, 3e-2) if smoke else LEARNING_RATES,
        with_learning_rate,
        seeds=(0,) if smoke else SELECTION_SEEDS,
        metric="policy.greedy.gold.mean",
    )
    return StudyConfig(
        name="rloo_paper_smoke" if smoke else "rloo_paper",
        cells=cells,
        selection=selection,
        description="The RLOO paper's Table 1 on the built-in summarisation task (experiments/studies/rloo_paper.py).",
    )
