"""SFT of a small GPT-2-family policy, from scratch, on the built-in summarisation task's
reference summaries, the quickstart's SFT stage (2-core CPU: about 2 min; test perplexity
of the reference summaries about 63 at seed 0). The prompt's tokens count in the loss at
0.3 of a completion token: predicting a document's recurring topic words teaches the
model to copy from the document, which is what a summary needs; with the completion
alone, 600 steps do not get there.

    python -m rlhf_jax.main --config experiments/sft_summarization.py --workdir /tmp/rlhf_jax_sft

Variants: `tiny` (seconds; the tests' size).
"""

from rlhf_jax.experiment import DataSection, ExperimentConfig, ModelSection, TrainSection
from rlhf_jax.train_step import OptimConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    cfg = ExperimentConfig(
        name="sft_summarization",
        model=ModelSection(family="gpt2", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=64),
        data=DataSection(task="summarization", n_train=20000, n_test=200, max_prompt_len=48, max_completion_len=12),
        optim=OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=20, total_steps=600, end_lr_ratio=0.1),
        train=TrainSection(kind="sft", steps=600, batch_size=32, log_every=50, save_every=300, prompt_loss_weight=0.3),
    )
    if variant == "tiny":
        return ExperimentConfig(
            name="sft_summarization_tiny",
            model=ModelSection(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=128),
            data=DataSection(task="summarization", n_train=64, n_test=16, max_prompt_len=80, max_completion_len=16),
            optim=OptimConfig(learning_rate=1e-2, total_steps=12),
            train=TrainSection(kind="sft", steps=12, batch_size=8, log_every=4, save_every=4),
        )
    if variant is not None:
        raise ValueError(f"sft_summarization: unknown variant {variant!r}; known: tiny")
    return cfg
