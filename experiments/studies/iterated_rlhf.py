"""Iterated online RLHF against one round at the same labelling budget (Bai et al. 2022;
`rlhf_jax/studies/iterated.py`), on the built-in summarisation task:

    python -m rlhf_jax.main --config experiments/studies/iterated_rlhf.py --workdir DIR \\
        --records studies/iterated_rlhf [--jobs 2]

Groups, fixed before any figure is read: `rounds4` (4 rounds of 2000 comparisons of the
newest policy's samples) and `one_round` (8000 comparisons of SFT samples), each with the
quickstart's SFT (one per seed, shared), a reward model retrained from the SFT on all the
comparisons so far (2 epochs) and 100 RLOO (k = 4) steps in all against it, the SFT as KL
reference (`experiments/iterated_summarization.py`); seeds 0-2. The report: the last
round's gold reward, win-rate against SFT, proxy-gold gap and the reward model's accuracy
on the newest policy's pairs, with intervals; per round in the figure. Variant: smoke
(the tiny sizes, one seed: the tests' size).
"""

from experiments import iterated_summarization
from rlhf_jax.studies.claims import Arm, Claim, Diff, Gate
from rlhf_jax.studies.study import Cell, Figure, Metric, StudyConfig

SEEDS = (0, 1, 2)
GROUPS = {"rounds4": "", "one_round": "one_round"}  # group -> variant of experiments/iterated_summarization.py
METRICS = (
    Metric("sampled gold reward", "{p}.sampled.gold.mean"),
    Metric("greedy gold reward", "{p}.greedy.gold.mean"),
    Metric("sampled win-rate vs SFT", "policy_vs_sft.sampled"),
    Metric("proxy-gold gap", "proxy_gold_gap"),
    Metric("RM accuracy on the newest policy's pairs", "reward_model.on_policy_after"),
    Metric("RM held-out accuracy", "reward_model.test_accuracy"),
    Metric("KL to SFT", "{p}.greedy.kl_to_reference"),
    Metric("sampled length", "{p}.sampled.length"),
)
CURVES = ("gold", "score", "proxy_gold_gap", "rm_accuracy_before", "rm_accuracy_after", "kl")


GOLD_WHY = "one more of the four topic words in one summary of ten (0.25 / 10)"
POST_HOC = "test, post hoc"  # the gates were declared after the test records (see the provenance)


def gates(rounds: int) -> tuple[Gate, ...]:
    return (
        Gate("reward model learns", "round 0's reward model on held-out pairs of SFT samples (noise-free gold labels)",
             Arm("rounds4", "curve[round=0]:rm_accuracy_after"), low=0.65, split=POST_HOC,
             reason="0.5 is chance; below 0.65 the proxy carries little of the gold signal"),
    )  # fmt: skip


def claims(rounds: int) -> tuple[Claim, ...]:
    def accuracy(when, r):
        return Arm("rounds4", f"curve[round={r}]:rm_accuracy_{when}")

    stale = tuple(Diff(accuracy("after", r), accuracy("before", r), f"round {r}: after - before retraining")
                  for r in range(1, rounds))  # fmt: skip
    gate = ("reward model learns",)
    return (
        Claim("staleness", "a reward model trained on earlier policies judges the newest policy's samples worse than "
              "one retrained with them (accuracy on the same held-out pairs, after - before retraining)", stale, +1,
              0.03, "one held-out pair of the 30-60 a round keeps", gate),
        Claim("rounds beat one round", "iterated rounds give a better policy at the same labelling budget (sampled "
              "gold after the last round)", (Diff(Arm("rounds4", "{p}.sampled.gold.mean"),
                                                  Arm("one_round", "{p}.sampled.gold.mean")),), +1, 0.025, GOLD_WHY,
              gate),
        Claim("rounds over-optimise less", "iterated rounds reduce over-optimisation (proxy-gold gap after the last "
              "round)", (Diff(Arm("rounds4", "proxy_gold_gap"), Arm("one_round", "proxy_gold_gap")),), -1, 0.1,
              "a tenth of the SFT's standard deviation in each reward", gate),
    )  # fmt: skip


def get_config(variant: str | None = None) -> StudyConfig:
    if variant not in (None, "smoke"):
        raise ValueError(f"iterated_rlhf: unknown variant {variant!r}; known: smoke")
    smoke = variant == "smoke"
    variants = {g: ",".join(p for p in (v, "tiny" if smoke else "") if p) for g, v in GROUPS.items()}
    configs = {g: iterated_summarization.get_config(v) for g, v in variants.items()}
    cells = tuple(
        Cell(group, seed, cfg, settings=(("rounds", str(cfg.rounds)), ("comparisons", str(cfg.comparisons_per_round))))
        for group, cfg in configs.items()
        for seed in ((0,) if smoke else SEEDS)
    )
    figure = Figure("rounds", "Proxy and gold reward across rounds", tuple(GROUPS), ("gold", "score", "proxy_gold_gap"))
    return StudyConfig(
        name="iterated_rlhf_smoke" if smoke else "iterated_rlhf",
        cells=cells,
        metrics=METRICS,
        curves=CURVES,
        figures=(figure,),
        claims=claims(configs["rounds4"].rounds),
        gates=gates(configs["rounds4"].rounds),
        description="Iterated online RLHF against one round at the same labelling budget "
        "(experiments/studies/iterated_rlhf.py).",
    )
