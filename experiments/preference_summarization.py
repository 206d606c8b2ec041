"""Offline preference training on the built-in summarisation task's pairs: DPO by
default, any objective with --set preference.objective=ipo|cpo|orpo|simpo|kto. Start the
policy (and so the reference) from an SFT run:

    python -m rlhf_jax.main --config experiments/preference_summarization.py --workdir /tmp/rlhf_jax_dpo \\
        --set model.init_from=/tmp/rlhf_jax_sft

Variants: `tiny` (seconds, from scratch; the tests' size).
"""

from rlhf_jax.experiment import DataSection, ExperimentConfig, ModelSection, PreferenceSection, TrainSection
from rlhf_jax.train_step import OptimConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    if variant == "tiny":
        return ExperimentConfig(
            name="preference_summarization_tiny",
            model=ModelSection(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=128),
            data=DataSection(task="summarization", n_train=64, n_test=16, max_prompt_len=80, max_completion_len=16),
            optim=OptimConfig(learning_rate=1e-2, total_steps=1000),
            train=TrainSection(kind="preference", steps=8, batch_size=8, log_every=2, save_every=4),
            preference=PreferenceSection(objective="dpo", beta=0.1),
        )
    if variant is not None:
        raise ValueError(f"preference_summarization: unknown variant {variant!r}; known: tiny")
    return ExperimentConfig(
        name="preference_summarization",
        model=ModelSection(family="llama", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=64),
        data=DataSection(task="summarization", n_train=2000, n_test=200, max_prompt_len=48, max_completion_len=12),
        optim=OptimConfig(learning_rate=1e-4, warmup_steps=10, total_steps=120),
        train=TrainSection(kind="preference", steps=120, batch_size=32, log_every=10, save_every=60),
        preference=PreferenceSection(objective="dpo", beta=0.1),
    )
