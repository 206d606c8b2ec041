"""Outcome (ORM) and process (PRM) reward models on the built-in arithmetic task, whose
solutions carry exact per-step and final-answer labels: the ORM by default, the PRM with
--set train.kind=prm.

    python -m rlhf_jax.main --config experiments/reward_arithmetic.py --workdir /tmp/rlhf_jax_orm

Variants: `tiny` (seconds; the tests' size).
"""

from rlhf_jax.experiment import DataSection, ExperimentConfig, ModelSection, TrainSection
from rlhf_jax.train_step import OptimConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    if variant == "tiny":
        return ExperimentConfig(
            name="reward_arithmetic_tiny",
            model=ModelSection(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=128),
            data=DataSection(task="arithmetic", n_train=64, n_test=32, max_prompt_len=32, max_completion_len=64),
            optim=OptimConfig(learning_rate=1e-2, total_steps=1000),
            train=TrainSection(kind="orm", steps=8, batch_size=8, log_every=2, save_every=4),
        )
    if variant is not None:
        raise ValueError(f"reward_arithmetic: unknown variant {variant!r}; known: tiny")
    return ExperimentConfig(
        name="reward_arithmetic",
        model=ModelSection(family="llama", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=128),
        data=DataSection(task="arithmetic", n_train=4000, n_test=400, max_prompt_len=32, max_completion_len=64),
        optim=OptimConfig(learning_rate=1e-3, schedule="cosine", warmup_steps=20, total_steps=400),
        train=TrainSection(kind="orm", steps=400, batch_size=32, log_every=20, save_every=100),
    )
