"""The RLOO paper's Table 1 comparison (Ahmadian et al. 2024) on the built-in summarisation
task: every method from the same SFT policy and reward model (one of each per seed), with
the paper's equal-sample budget (every online method samples the same number of
completions: rollout_batch x steps), judged by the task's gold reward.

    python -m rlhf_jax.main --config experiments/studies/rloo_paper.py --workdir DIR \\
        --records studies/rloo_paper [--jobs 2]

The grid, fixed before any test figure is read:

1. Table 1: SFT (the report's first row), RLOO k=2, RLOO k=4, RAFT k=2, RAFT k=4, REINFORCE
   with a moving-average baseline, Vanilla PG, PPO, DPO; seeds 0-4, each method at the
   quickstart's settings (`experiments/quickstart.py`) but its policy learning rate, which
   is chosen per method from the same grid (LEARNING_RATES) by the greedy gold reward on
   the validation split at seeds 0 and 1, before any test cell runs.
2. PPO's GAE lambda in LAMBDAS (0.95 is Table 1's PPO): reward and clip-fraction curves.
3. Robustness, for RLOO k=4 and RAFT k=4, one axis at a time from Table 1's setting (noise
   0, beta 0.05): Gaussian reward noise of NOISES x the batch's reward-model score std
   (`rl.reward_noise_scale=score_std`), and the KL coefficient in BETAS.
4. Sample efficiency: gold reward against completions sampled, RLOO k=2 against RAFT k=4
   and PPO (every online method samples rollout_batch x steps completions).
5. Appendix A: entropy and top-k mass per generation step of SFT, PPO and RLOO k=4.

Groups 2-3 run at seeds 0-2 (VARIANT_SEEDS) with their method's chosen learning rate.
Variants: smoke (two methods and one noisy variant, the quickstart's tiny sizes, two
learning rates chosen at one seed: the tests' size).
"""

import dataclasses

from experiments import quickstart
from rlhf_jax.study import Cell, Figure, Selection, StudyConfig

SEEDS = (0, 1, 2, 3, 4)
LEARNING_RATES = (3e-5, 1e-4, 3e-4)  # the policy's, the same grid for every method
SELECTION_SEEDS = (0, 1)
VARIANT_SEEDS = (0, 1, 2)  # the lambda, noise and beta groups
LAMBDAS = (0.95, 0.97, 0.99, 1.0)  # PPO's GAE lambda; 0.95 is Table 1's
NOISES = (0, 1, 3, 5)  # reward noise, multiples of the batch's score std; 0 is Table 1's
BETAS = (0.01, 0.05, 0.25)  # the KL coefficient; 0.05 is Table 1's
ROBUSTNESS = ("rloo_k4", "raft_k4")
TRIO = ("gold", "score", "kl")
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


def with_rl(cfg, **fields):
    policy = dataclasses.replace(cfg.policy, rl=dataclasses.replace(cfg.policy.rl, **fields))
    return dataclasses.replace(cfg, policy=policy)


def variants(smoke: bool) -> list[tuple[str, str, dict]]:
    """(group, the group it varies, rl fields) for the lambda, noise and beta groups."""
    if smoke:
        return [("rloo_k2.noise=3", "rloo_k2", {"reward_noise": 3.0, "reward_noise_scale": "score_std"})]
    out = [(f"ppo.lam={lam:g}", "ppo", {"lam": lam}) for lam in LAMBDAS if lam != 0.95]
    for base in ROBUSTNESS:
        out += [
            (f"{base}.noise={n:g}", base, {"reward_noise": float(n), "reward_noise_scale": "score_std"})
            for n in NOISES
            if n
        ]
        out += [(f"{base}.beta={b:g}", base, {"beta": b}) for b in BETAS if b != 0.05]
    return out


def with_learning_rate(cfg, lr: float):
    policy = dataclasses.replace(cfg.policy, optim=dataclasses.replace(cfg.policy.optim, learning_rate=lr))
    return dataclasses.replace(cfg, policy=policy)


def paper_figures() -> tuple[Figure, ...]:
    """Items 2-5 of the grid, each a figure of a few groups."""
    lam = Figure("ppo_lambda", "PPO's GAE lambda", tuple(ppo_lambda_groups()), ("gold", "score", "clip_frac"))
    noise = [
        Figure(f"{b}_noise", f"{b}: reward noise (x score std)", (b, *(f"{b}.noise={n}" for n in NOISES[1:])), TRIO)
        for b in ROBUSTNESS
    ]
    beta = [
        Figure(f"{b}_beta", f"{b}: KL coefficient", tuple(b if x == 0.05 else f"{b}.beta={x:g}" for x in BETAS), TRIO)
        for b in ROBUSTNESS
    ]
    efficiency = Figure(
        "sample_efficiency", "Gold reward against completions sampled", ("rloo_k2", "raft_k4", "ppo"), ("gold",)
    )
    generation = Figure(
        "generation",
        "Entropy and top-k mass per generation step (appendix A)",
        ("SFT", "ppo", "rloo_k4"),
        source="generation",
    )
    return (lam, *noise, *beta, efficiency, generation)


def ppo_lambda_groups() -> list[str]:
    return ["ppo" if lam == 0.95 else f"ppo.lam={lam:g}" for lam in LAMBDAS]


def smoke_figures() -> tuple[Figure, ...]:
    return (
        Figure("noise", "RLOO k=2 with reward noise", ("rloo_k2", "rloo_k2.noise=3"), ("gold", "score")),
        Figure("generation", "Entropy and top-k mass per generation step", ("SFT", "rloo_k2"), source="generation"),
    )


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
    for group, base, fields in variants(smoke):
        method, k = METHODS[base]
        settings = (("method", method), ("k", str(k))) + tuple((f, str(v)) for f, v in fields.items())
        cells += tuple(
            Cell(group, seed, with_rl(pipeline(method, k, smoke), **fields), settings, select_with=base)
            for seed in ((0,) if smoke else VARIANT_SEEDS)
        )
    selection = Selection(
        "lr",
        (1e-2, 3e-2) if smoke else LEARNING_RATES,
        with_learning_rate,
        seeds=(0,) if smoke else SELECTION_SEEDS,
        metric="policy.greedy.gold.mean",
    )
    figures = smoke_figures() if smoke else paper_figures()
    return StudyConfig(
        name="rloo_paper_smoke" if smoke else "rloo_paper",
        cells=cells,
        selection=selection,
        curves=("gold", "score", "kl", "clip_frac", "entropy"),
        figures=figures,
        description="The RLOO paper's Table 1 on the built-in summarisation task (experiments/studies/rloo_paper.py).",
    )
