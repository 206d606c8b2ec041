"""Iterated online RLHF on the built-in summarisation task (`rlhf_jax/studies/iterated.py`): the
quickstart's SFT policy, then rounds of fresh comparisons of the newest policy's samples
(labelled by the task's Bradley-Terry labeller on the gold reward), a reward model
retrained from the SFT on every comparison so far, and RLOO (k = 4) continued against it
with the SFT as KL reference:

    python -m rlhf_jax.main --config experiments/iterated_summarization.py --workdir DIR

Variants (comma-separated): one_round (the baseline at the same labelling budget: all
ROUNDS x PER_ROUND comparisons of SFT samples, then all the RL steps), continue (each
round's reward model continues from the last), last_reference (the KL reference moves to
the last round's policy), tiny (seconds; the tests' size). Another seed: --set pipeline.seed=1.
"""

import dataclasses

from experiments import quickstart
from rlhf_jax.studies.iterated import IteratedConfig

ROUNDS, PER_ROUND = 4, 2000  # the labelling budget: 8000 comparisons
VARIANTS = ("one_round", "continue", "last_reference", "tiny")


def get_config(variant: str | None = None) -> IteratedConfig:
    parts = [p for p in (variant or "").split(",") if p]
    unknown = [p for p in parts if p not in VARIANTS]
    if unknown:
        raise ValueError(f"iterated_summarization: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    tiny = "tiny" in parts
    p = quickstart.with_method(quickstart.full(), "rloo")
    if tiny:
        p = quickstart.tiny(p)
    rounds, per_round = (2, 8) if tiny else (ROUNDS, PER_ROUND)
    if "one_round" in parts:
        rounds, per_round = 1, rounds * per_round
    policy = p.policy
    if not tiny:  # 25 RLOO steps a round at the quickstart's sampling budget (100 in all)
        policy = dataclasses.replace(policy, train=dataclasses.replace(policy.train, steps=100, save_every=25))
    p = dataclasses.replace(p, name="iterated_summarization", policy=policy)
    return IteratedConfig(
        name="iterated_summarization" + ("_tiny" if tiny else ""),
        pipeline=p,
        rounds=rounds,
        comparisons_per_round=per_round,
        reward_init="continue" if "continue" in parts else "scratch",
        reference="last" if "last_reference" in parts else "sft",
        reward_epochs=2.0,
        held_out_pairs=4 if tiny else 200,
    )
