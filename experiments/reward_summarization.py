"""A Bradley-Terry reward model on the built-in summarisation task's preference pairs
(labelled by the gold reward through Bradley-Terry, i.e. noisy); reports the held-out
pairwise accuracy (the quickstart's reward stage: 0.655 on 200 pairs from its SFT run at
seed 0, about 2 min on a 2-core CPU; the gold reward itself scores 0.85 of them right). Start
it from an SFT run with --set model.init_from=<sft workdir>:

    python -m rlhf_jax.main --config experiments/reward_summarization.py --workdir /tmp/rlhf_jax_rm

Variants: `tiny` (seconds; the tests' size).
"""

from rlhf_jax.experiment import DataSection, ExperimentConfig, ModelSection, TrainSection
from rlhf_jax.train_step import OptimConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    if variant == "tiny":
        return ExperimentConfig(
            name="reward_summarization_tiny",
            model=ModelSection(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=128),
            data=DataSection(task="summarization", n_train=64, n_test=32, max_prompt_len=80, max_completion_len=16),
            optim=OptimConfig(learning_rate=1e-2, total_steps=12),
            train=TrainSection(kind="reward", steps=12, batch_size=8, log_every=4, save_every=4),
        )
    if variant is not None:
        raise ValueError(f"reward_summarization: unknown variant {variant!r}; known: tiny")
    return ExperimentConfig(
        name="reward_summarization",
        model=ModelSection(family="gpt2", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=64),
        data=DataSection(task="summarization", n_train=20000, n_test=200, max_prompt_len=48, max_completion_len=12),
        optim=OptimConfig(learning_rate=1e-3, schedule="cosine", warmup_steps=20, total_steps=600, end_lr_ratio=0.1),
        train=TrainSection(kind="reward", steps=600, batch_size=32, log_every=50, save_every=300),
    )
