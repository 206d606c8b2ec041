"""The experiment config: what a module in experiments/ returns from `get_config(variant)`.

Every field can be overridden from the command line (`--set train.steps=500`); the
resolved config is written to the workdir as config.json.
"""

from __future__ import annotations

import dataclasses

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.presets import preset
from rlhf_jax.train_step import OptimConfig

KINDS = ("sft", "reward")
TASKS = ("summarization",)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """A preset name, or the sizes of a model trained from scratch (vocab_size 0 = the
    tokenizer's); `init_from` an HF checkpoint directory to start from instead."""

    preset: str = ""
    family: str = "llama"
    vocab_size: int = 0
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 0
    d_ff: int = 256
    max_positions: int = 256
    init_from: str = ""

    def model_config(self, vocab_size: int) -> ModelConfig:
        if self.preset:
            return preset(self.preset)
        return ModelConfig(
            family=self.family,
            vocab_size=self.vocab_size or vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            d_ff=self.d_ff,
            max_positions=self.max_positions,
        )


@dataclasses.dataclass(frozen=True)
class DataSection:
    task: str = "summarization"
    data_dir: str = ""  # TFDS data dir; "" = <workdir>/tfds
    seed: int = 0
    n_train: int = 2000
    n_test: int = 200
    max_prompt_len: int = 64
    max_completion_len: int = 16
    tokenizer: str = ""  # an HF tokenizer directory; "" = train the task tokenizer

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"data.task={self.task!r}: expected one of {TASKS}")
        if self.max_prompt_len < 1 or self.max_completion_len < 1:
            raise ValueError("data.max_prompt_len and data.max_completion_len must be positive")


@dataclasses.dataclass(frozen=True)
class TrainSection:
    kind: str = "sft"
    steps: int = 200
    batch_size: int = 32
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep: int = 2

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"train.kind={self.kind!r}: expected one of {KINDS}")
        for name in ("steps", "batch_size", "log_every", "save_every", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimConfig = OptimConfig()
    train: TrainSection = TrainSection()
    mesh: tuple[int, ...] = (-1, 1, 1)

    def __post_init__(self):
        if len(self.mesh) != 3:
            raise ValueError(f"mesh={self.mesh}: expected (data, fsdp, tensor)")
