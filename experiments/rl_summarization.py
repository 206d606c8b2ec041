"""Online RL on the built-in summarisation task (default RLOO, k = 4, against the task's
gold judge; any method with --set rl.method=..., a reward model with
--set rl.reward_model=<reward workdir>). Start the policy from an SFT run:

    python -m rlhf_jax.main --config experiments/rl_summarization.py --workdir /tmp/rlhf_jax_rl \\
        --set model.init_from=/tmp/rlhf_jax_sft

Variants: `tiny` (seconds, from scratch; the tests' size).
"""

from rlhf_jax.experiment import DataSection, ExperimentConfig, ModelSection, RLSection, TrainSection
from rlhf_jax.train_step import OptimConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    if variant == "tiny":
        return ExperimentConfig(
            name="rl_summarization_tiny",
            model=ModelSection(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=128),
            data=DataSection(task="summarization", n_train=64, n_test=16, max_prompt_len=80, max_completion_len=16),
            optim=OptimConfig(learning_rate=3e-2, total_steps=1000),
            train=TrainSection(kind="rl", steps=16, log_every=2, save_every=4),
            rl=RLSection(method="rloo", k=4, rollout_batch=16, minibatch=8, updates_per_batch=1, beta=0.05),
        )
    if variant is not None:
        raise ValueError(f"rl_summarization: unknown variant {variant!r}; known: tiny")
    return ExperimentConfig(
        name="rl_summarization",
        model=ModelSection(family="llama", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=64),
        data=DataSection(task="summarization", n_train=2000, n_test=200, max_prompt_len=48, max_completion_len=12),
        optim=OptimConfig(learning_rate=3e-4, warmup_steps=5, total_steps=100),
        train=TrainSection(kind="rl", steps=100, log_every=5, save_every=25),
        rl=RLSection(method="rloo", k=4, rollout_batch=64, minibatch=64, beta=0.05),
    )
