"""Weak-to-strong generalisation (`rlhf_jax/studies/weak_to_strong.py`): four model sizes (d_model 8
to 128, about 6k to 0.8M parameters as classifiers of the digit tasks: over 100x), each
pretrained the same way (1500 steps of 64), then weak supervisors, strong
students on their labels (naive, with the auxiliary confidence loss, on hardened labels,
bootstrapped through the intermediate sizes), strong ceilings and a from-scratch ceiling:

    python -m rlhf_jax.main --config experiments/weak_to_strong.py:parity --workdir /tmp/rlhf_jax_w2s

Variants (comma-separated): the task, one of contains, majority, sorted, parity (digit
strings, `tasks.classification`; the default: sorted) or preference (the summarisation
task's comparisons, with models pretrained on its SFT data); related (the digit models
pretrained on the properties the tasks are composed from, never their answers:
`classification.RELATED`); tiny (seconds; the tests' size). Another seed: --set seed=1.
"""

import dataclasses

from rlhf_jax.experiment import DataSection, ExperimentConfig, ModelSection, TrainSection
from rlhf_jax.loops.classifier import FitConfig
from rlhf_jax.studies.weak_to_strong import PREFERENCE, WeakToStrongConfig
from rlhf_jax.tasks import classification
from rlhf_jax.train_step import OptimConfig

# (d_model, n_layers, n_heads): the sizes, smallest first
SIZES = ((8, 1, 1), (16, 1, 2), (32, 2, 2), (128, 3, 4))


def pretraining(task: str, d_model: int, n_layers: int, n_heads: int, steps: int,
                related: bool = False) -> ExperimentConfig:  # fmt: skip
    """The same pretraining for every size: the digit strings' properties (related: those
    the tasks are composed from, never their answers; `classification.RELATED`), or the
    summarisation task's SFT data."""
    model = ModelSection(family="llama", d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=4 * d_model,
                         max_positions=128)  # fmt: skip
    if task == PREFERENCE:
        data = DataSection(task="summarization", n_train=20000, n_test=200, max_prompt_len=48, max_completion_len=12)
    else:
        data = DataSection(task="digits_related" if related else "digits", n_train=40000, n_test=200,
                           max_prompt_len=12, max_completion_len=40)  # fmt: skip
    return ExperimentConfig(
        name=f"pretrain_{data.task}_d{d_model}l{n_layers}",
        model=model,
        data=data,
        optim=OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=50, total_steps=steps, end_lr_ratio=0.1),
        train=TrainSection(kind="sft", steps=steps, batch_size=64, log_every=200, save_every=500),
    )


def get_config(variant: str | None = None) -> WeakToStrongConfig:
    parts = [p for p in (variant or "").split(",") if p]
    tasks = [p for p in parts if p in (*classification.DIFFICULTY, PREFERENCE)]
    if len(tasks) > 1 or any(p not in (*classification.DIFFICULTY, PREFERENCE, "tiny", "related") for p in parts):
        raise ValueError(f"weak_to_strong: unknown variant {variant!r}; known: one task of "
                         f"{(*classification.DIFFICULTY, PREFERENCE)}, related, tiny (comma-separated)")  # fmt: skip
    task = tasks[0] if tasks else "sorted"
    tiny = "tiny" in parts
    sizes = tuple(pretraining(task, *s, steps=1500, related="related" in parts) for s in SIZES)
    cfg = WeakToStrongConfig(
        name=f"weak_to_strong_{task}",
        task=task,
        sizes=sizes,
        fit=FitConfig(steps=2 * 2000 // 32, batch_size=32, learning_rate=3e-4),  # 2 epochs, as the paper trains
        n_split=2000,
        n_test=1000,
        # the related pretraining never names a task: its tokenizer spells " ; majority" letter by letter (18 tokens)
        length=64 if task == PREFERENCE else 24 if "related" in parts else 16,
    )
    if tiny:
        small = tuple(
            dataclasses.replace(
                s, data=dataclasses.replace(s.data, n_train=64, n_test=8),
                optim=dataclasses.replace(s.optim, warmup_steps=0, total_steps=3),
                train=dataclasses.replace(s.train, steps=3, batch_size=8, log_every=1, save_every=3),
                model=dataclasses.replace(s.model, d_model=8 * (i + 1), n_layers=1, n_heads=2, d_ff=16 * (i + 1)),
            )
            for i, s in enumerate(sizes[:3])
        )  # fmt: skip
        small = tuple(dataclasses.replace(s, name=f"pretrain_{s.data.task}_d{s.model.d_model}l1") for s in small)
        # the tiny tokenizer (from 64 texts) spells unseen words in pieces: longer sequences
        cfg = dataclasses.replace(cfg, name=cfg.name + "_tiny", sizes=small, n_split=16, n_test=16,
                                  fit=FitConfig(steps=3, batch_size=8), length=4 * cfg.length)  # fmt: skip
    return cfg
