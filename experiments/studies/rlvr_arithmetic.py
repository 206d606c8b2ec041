"""The RLOO paper's Table 1 and the GRPO family on a verifiable reward (Ahmadian et al. 2024;
Shao et al. 2024; Liu et al. 2025; Yu et al. 2025; Zheng et al. 2025; MiniMax 2025; Hu
2025), on the built-in arithmetic task, where content is the only lever: reward 1 for the
exact final answer, 0 otherwise; no reward model, no judge, no length term.

    python -m rlhf_jax.main --config experiments/studies/rlvr_arithmetic.py --workdir DIR \\
        --records studies/rlvr_arithmetic [--jobs 2]

Every cell: the SFT policy of `experiments/rlvr_arithmetic.py` (one per seed, shared;
1-3 operations of + and -, solutions that slip half the time), then one method from it
against the exact-answer reward (`reward_source=task`). Every online method samples the
same completions (rollout_batch 64 an iteration, rollout_batch / k prompts, for 100
iterations; DAPO, whose dynamic sampling draws 3 batches an iteration, for 33) and takes 4
gradient steps on each batch (so that PPO's clip and its kin can
act); KL coefficient 0 (the verifiable-reward practice: DAPO and Dr. GRPO drop the KL term;
the beta variants put it back); log pi_old from a training forward, so the sampler-trainer
mismatch is logged. DPO trains on the SFT's two samples of 3,200 train prompts, the pairs
the judge tells apart (as many judged completions as an online method's 6,400).

The grid, fixed before any test figure is read:

1. Table 1 and the GRPO family (METHODS, seeds 0-4): RLOO k=2 and k=4, RAFT k=2 and k=4,
   REINFORCE with a moving-average baseline, Vanilla PG, PPO (GAE lambda 0.95), DPO;
   GRPO, Dr. GRPO, DAPO, GSPO, CISPO, REINFORCE++ at their papers' settings. The policy
   learning rate of each method is chosen from LEARNING_RATES by the sampled accuracy
   (pass@1 over 8 samples of each of 200 validation problems) at SELECTION_SEEDS, before
   any test cell runs; a method whose best sits at the grid's edge tries the next value
   past it, LR_BELOW or LR_ABOVE, on validation before its test cells (the runner's rule:
   `Selection.below` / `above`).
2. PPO's GAE lambda in LAMBDAS; RLOO k=4 and RAFT k=4 with each reward flipped with
   probability p in NOISES, and with KL coefficient beta in BETAS: seeds 0-2, the method's
   chosen learning rate.

Measures: test accuracy (pass@1 at T = 1, 8 samples a problem; greedy; pass@8), the
learning curve (training accuracy against completions sampled; its mean over training is
the sample-efficiency figure), KL to SFT, the lengths of right and wrong answers, entropy,
clip fraction and the mismatch. Variant: smoke (two methods, the tiny sizes, one seed:
the tests' size).
"""

import dataclasses

from experiments import rlvr_arithmetic
from experiments.studies.rloo_paper import ppo_steps_per_rollout, with_learning_rate
from rlhf_jax.studies.claims import SFT, Arm, Claim, Diff, Gate, Trend
from rlhf_jax.studies.selection import Selection
from rlhf_jax.studies.study import Cell, Figure, Metric, StudyConfig

SEEDS = (0, 1, 2, 3, 4)
VARIANT_SEEDS = (0, 1, 2)
SELECTION_SEEDS = (0, 1)
# the policy's, the same grid for every method. It began one step higher, (1e-4, 3e-4, 1e-3): RLOO k=2's
# first validation cells (seeds 0-1) fell from the SFT's pass@1 0.394 to 0.152 / 0.223 at 3e-4 and rose to
# 0.468 / 0.497 at 1e-4, the grid's lower edge, so it moved down a step before any other cell ran. Then RAFT
# k=2 chose 3e-5, the new lower edge (0.433 against 0.420 at 1e-4), so 1e-5 joined before any test cell ran
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4)
# a step past each edge, tried only by a method whose best sits there. The module said so from the start, by hand;
# the runner applies it since 64 selection records (8 methods) existed and no test record: PPO's best was 3e-4, DPO's
# 1e-5, and no other method's was at an edge
LR_BELOW, LR_ABOVE = (3e-6,), (1e-3,)
LAMBDAS = (0.95, 0.97, 0.99, 1.0)  # PPO's GAE lambda; 0.95 is Table 1's
NOISES = (0.0, 0.1, 0.2, 0.3)  # probability that a reward is flipped
BETAS = (0.0, 0.05, 0.2)  # the KL coefficient; 0 is the main table's
ROBUSTNESS = ("rloo_k4", "raft_k4")
METHODS = tuple(rlvr_arithmetic.METHODS)
ONLINE = tuple(m for m in METHODS if m != "dpo")
TABLE1 = ("rloo_k2", "rloo_k4", "raft_k2", "raft_k4", "reinforce", "vanilla_pg", "ppo", "dpo")
ACCURACY = "{p}.verifiable.pass@1"  # the study's measure, and the selection's on validation
MARGIN = 0.02
MARGIN_WHY = "one problem in fifty answered right more often (4 of the 200 test problems)"
METRICS = (
    Metric("accuracy (pass@1, T = 1)", ACCURACY),
    Metric("greedy accuracy", "{p}.greedy.gold.mean"),
    Metric("pass@8", "{p}.verifiable.pass@8"),
    Metric("length of right answers", "{p}.verifiable.right_length"),
    Metric("length of wrong answers", "{p}.verifiable.wrong_length"),
    Metric("KL to SFT", "{p}.greedy.kl_to_reference"),
)
CURVES = ("gold", "score", "kl", "entropy", "clip_frac", "mismatch_mean")


def pipeline(method: str, tiny: bool, **rl):
    cfg = rlvr_arithmetic.pipeline(method, tiny)
    policy = cfg.policy
    if tiny:  # the smoke study: a few iterations
        train = dataclasses.replace(policy.train, steps=8, log_every=2, save_every=8)
        policy = dataclasses.replace(policy, train=train)
    if policy.train.kind == "rl":
        policy = dataclasses.replace(policy, rl=dataclasses.replace(policy.rl, old_logps="forward", **rl))
    return dataclasses.replace(cfg, policy=policy)


def variants(smoke: bool) -> list[tuple[str, str, dict]]:
    """(group, the group it varies, rl fields) for the lambda, noise and beta groups."""
    if smoke:
        return [("rloo_k2.noise=0.2", "rloo_k2", {"reward_noise": 0.2, "reward_noise_scale": "flip"})]
    out = [(f"ppo.lam={lam:g}", "ppo", {"lam": lam}) for lam in LAMBDAS if lam != 0.95]
    for base in ROBUSTNESS:
        out += [(f"{base}.noise={p:g}", base, {"reward_noise": p, "reward_noise_scale": "flip"}) for p in NOISES if p]
        out += [(f"{base}.beta={b:g}", base, {"beta": b}) for b in BETAS if b]
    return out


def gates(selection: Selection, probe: str) -> tuple[Gate, ...]:
    """probe: a group whose selection cells carry the seed's SFT figures on validation."""
    sel = selection.group(probe, selection.values[0])
    return (
        Gate("headroom", "the SFT's accuracy at T = 1 on the validation problems",
             Arm(sel, "sft.verifiable.pass@1"), low=0.1, high=0.5,
             reason="below 0.1 few groups hold a right answer to learn from; above 0.5 little is left to gain"),
        Gate("samples disagree", "the SFT's pass@8 - pass@1 on validation (how often a right answer is within reach)",
             Diff(Arm(sel, "sft.verifiable.pass@8"), Arm(sel, "sft.verifiable.pass@1")), low=0.1,
             reason="leave-one-out, group and best-of-k baselines differ only where a prompt's k samples do"),
        Gate("ppo clip can act", "PPO's gradient steps per rollout batch (1: every ratio is 1, nothing to clip)",
             Arm("ppo", ppo_steps_per_rollout), low=2, split="config",
             reason="the clip acts only on a policy that moved since it sampled"),
    )  # fmt: skip


def claims() -> tuple[Claim, ...]:
    def acc(group):
        return Arm(group, ACCURACY)

    def auc(group):
        return Arm(group, "curve.mean:gold")

    base = ("headroom", "samples disagree")
    rivals = ("ppo", "raft_k4", "reinforce", "vanilla_pg")
    lam = tuple((x, Diff(acc("ppo" if x == 0.95 else f"ppo.lam={x:g}"), 0.0, f"lambda {x:g}")) for x in LAMBDAS)

    def noisy(group, p):
        return acc(group if not p else f"{group}.noise={p:g}")

    noise = tuple((p, Diff(noisy("rloo_k4", p), noisy("raft_k4", p), f"noise {p:g}")) for p in NOISES)
    zero = Diff(acc("rloo_k4"), acc("raft_k4"), "beta 0")
    beta = tuple(
        Trend(((0.0, zero), (1.0, Diff(acc(f"rloo_k4.beta={b:g}"), acc(f"raft_k4.beta={b:g}"), f"beta {b:g}"))),
              f"change of RLOO k=4 - RAFT k=4 from beta 0 to {b:g}")
        for b in BETAS if b
    )  # fmt: skip
    wrong = "{p}.verifiable.wrong_length"
    return (
        Claim("rl beats sft", "every online method raises test accuracy over the SFT",
              tuple(Diff(acc(g), Arm(SFT, ACCURACY), f"{g} - SFT") for g in ONLINE), +1, MARGIN, MARGIN_WHY, base),
        Claim("rloo k=4 best", "RLOO k=4 beats PPO, RAFT k=4, REINFORCE and Vanilla PG (test accuracy at the end)",
              tuple(Diff(acc("rloo_k4"), acc(g)) for g in rivals), +1, MARGIN, MARGIN_WHY, base),
        Claim("rloo k=4 sample efficiency", "the same in training accuracy averaged over training (area under the "
              "learning curve at equal completions sampled)",
              tuple(Diff(auc("rloo_k4"), auc(g)) for g in rivals), +1, MARGIN, MARGIN_WHY, base),
        Claim("rloo k=4 over k=2", "RLOO k=4 beats RLOO k=2 at equal completions sampled",
              (Diff(acc("rloo_k4"), acc("rloo_k2")),), +1, MARGIN, MARGIN_WHY, base),
        Claim("ppo clips rarely", "PPO clips under 5% of tokens",
              (Diff(Arm("ppo", "curve.mean:clip_frac"), 0.05, "PPO clip fraction - 0.05"),), -1, 0.01,
              "a percent of tokens", ("ppo clip can act",)),
        Claim("ppo lambda", "PPO does best at GAE lambda = 1 (slope of accuracy against lambda > 0)",
              (Trend(lam, "slope of PPO's accuracy over lambda 0.95-1"),), +1, MARGIN / 0.05,
              f"{MARGIN_WHY}, across the grid's span of lambda (0.05)", base),
        Claim("noise: rloo over raft", "RLOO degrades less than RAFT as rewards are flipped (slope of RLOO k=4 - RAFT "
              "k=4 against the flip probability > 0)", (Trend(noise, "slope over flip probability 0-0.3"),), +1,
              MARGIN / 0.3, f"{MARGIN_WHY}, across the grid's span of p (0.3)", base),
        Claim("beta: rloo over raft", "RLOO degrades less than RAFT as beta grows", beta, +1, MARGIN, MARGIN_WHY,
              base),
        Claim("dpo below rloo", "DPO on judged pairs of SFT samples is below RLOO k=4 at equal judged completions",
              (Diff(acc("rloo_k4"), acc("dpo")),), +1, MARGIN, MARGIN_WHY, base),
        Claim("dr grpo: wrong answers", "Dr. GRPO's wrong answers grow less than GRPO's (their length at the end; "
              "both start from the same SFT)", (Diff(Arm("dr_grpo", wrong), Arm("grpo", wrong)),), -1, 1.0,
              "one token of a 48-token limit", base),
        Claim("dapo: entropy", "DAPO's clip-higher keeps the policy's entropy higher than GRPO's (mean over "
              "training)", (Diff(Arm("dapo", "curve.mean:entropy"), Arm("grpo", "curve.mean:entropy")),), +1, 0.05,
              "a twentieth of a nat per token", base),
    )  # fmt: skip


def figures(smoke: bool) -> tuple[Figure, ...]:
    if smoke:
        return (Figure("learning", "Training accuracy against completions sampled", ("rloo_k2", "grpo"), ("gold",)),)
    return (
        Figure("table1", "Table 1: training accuracy against completions sampled (the learning curves)",
               tuple(g for g in TABLE1 if g != "dpo"), ("gold", "kl")),
        Figure("grpo_family", "The GRPO family: training accuracy, entropy and clip fraction",
               ("rloo_k4", "grpo", "dr_grpo", "dapo", "gspo", "cispo", "reinforce_pp"),
               ("gold", "entropy", "clip_frac")),
        Figure("ppo_lambda", "PPO's GAE lambda", tuple("ppo" if x == 0.95 else f"ppo.lam={x:g}" for x in LAMBDAS),
               ("gold", "clip_frac")),
        *(Figure(f"{b}_noise", f"{b}: rewards flipped with probability p",
                 (b, *(f"{b}.noise={p:g}" for p in NOISES if p)), ("gold", "score")) for b in ROBUSTNESS),
        *(Figure(f"{b}_beta", f"{b}: KL coefficient", (b, *(f"{b}.beta={x:g}" for x in BETAS if x)), ("gold", "kl"))
          for b in ROBUSTNESS),
    )  # fmt: skip


def get_config(variant: str | None = None) -> StudyConfig:
    if variant not in (None, "smoke"):
        raise ValueError(f"rlvr_arithmetic: unknown variant {variant!r}; known: smoke")
    smoke = variant == "smoke"
    groups = ("rloo_k2", "grpo") if smoke else METHODS
    cells = tuple(
        Cell(g, seed, pipeline(g, smoke), settings=(("method", g),)) for g in groups for seed in (SEEDS[:1] if smoke
                                                                                                 else SEEDS)
    )  # fmt: skip
    for group, base, fields in variants(smoke):
        settings = (("method", base),) + tuple((f, str(v)) for f, v in fields.items())
        cells += tuple(Cell(group, seed, pipeline(base, smoke, **fields), settings, select_with=base)
                       for seed in (SEEDS[:1] if smoke else VARIANT_SEEDS))  # fmt: skip
    selection = Selection(
        "lr",
        (1e-3, 3e-3) if smoke else LEARNING_RATES,
        with_learning_rate,
        seeds=SEEDS[:1] if smoke else SELECTION_SEEDS,
        metric=ACCURACY.format(p="policy"),
        below=() if smoke else LR_BELOW,
        above=() if smoke else LR_ABOVE,
    )
    verdicts = (
        dict(claims=(), gates=gates(selection, "rloo_k2")[:2])
        if smoke
        else dict(claims=claims(), gates=gates(selection, "rloo_k4"))
    )
    return StudyConfig(
        name="rlvr_arithmetic_smoke" if smoke else "rlvr_arithmetic",
        cells=cells,
        metrics=METRICS,
        selection=selection,
        curves=CURVES,
        figures=figures(smoke),
        description="The RLOO paper's Table 1 and the GRPO family on a verifiable reward "
        "(experiments/studies/rlvr_arithmetic.py).",
        **verdicts,
    )
