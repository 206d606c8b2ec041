"""The experiment config: what a module in experiments/ returns from `get_config(variant)`.

Every field can be overridden from the command line (`--set train.steps=500`); the
resolved config is written to the workdir as config.json.
"""

from __future__ import annotations

import dataclasses

from rlhf_jax import config as config_lib
from rlhf_jax.data.tasks import TASKS, Task
from rlhf_jax.losses.preference import PreferenceConfig
from rlhf_jax.models.config import ATTENTION, REMAT_POLICIES, ModelConfig
from rlhf_jax.models.presets import preset
from rlhf_jax.rl_section import METHODS, PRM_READINGS, Method, RLSection  # noqa: F401 (the config's names)
from rlhf_jax.train_step import OptimConfig

# train.kind -> the kind of the task's data it reads (data.tasks.DATA_KINDS)
KINDS = {"sft": "sft", "reward": "preference", "orm": "labelled", "prm": "labelled", "rl": "sft",
         "preference": "preference"}  # fmt: skip


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
    remat: str = "none"  # per-block rematerialisation of the trained models: models.config.REMAT_POLICIES
    scan_layers: bool = False  # the run's models as one scanned block over stacked layers (compile time flat in depth)
    attention: str = "einsum"  # self-attention of forwards and prefills: models.config.ATTENTION (auto: by platform)
    # LoRA adapters of this rank on the trained model(s), base frozen (models/lora.py); 0 = full fine-tuning
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o")  # of models.config.LORA_TARGETS

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"model.remat={self.remat!r}: expected one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION:
            raise ValueError(f"model.attention={self.attention!r}: expected one of {ATTENTION}")
        try:  # the LoRA settings alone, on a model with every target (a gated MLP)
            ModelConfig("llama", 8, 8, 1, 1, 8, lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                        lora_targets=self.lora_targets)  # fmt: skip
        except ValueError as e:
            raise ValueError(str(e).replace("ModelConfig.", "model.")) from None
        if self.vocab_size < 0:
            raise ValueError(f"model.vocab_size={self.vocab_size}: must be >= 0 (0 = the tokenizer's)")
        if self.preset or self.init_from:
            if self.preset:
                try:
                    preset(self.preset)
                except ValueError as e:
                    raise ValueError(f"model.preset: {e}") from None
            return
        try:
            self.model_config(self.vocab_size or 1)
        except ValueError as e:
            raise ValueError(str(e).replace("ModelConfig.", "model.")) from None

    @property
    def how_to_run(self) -> dict:
        """The settings of how the run's models compute, applied to a loaded one too."""
        return dict(remat=self.remat, attention=self.attention)

    @property
    def from_scratch(self) -> bool:
        return not (self.preset or self.init_from)

    def model_config(self, vocab_size: int) -> ModelConfig:
        lora = dict(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha, lora_targets=self.lora_targets)
        if self.preset:
            return dataclasses.replace(preset(self.preset), **self.how_to_run, scan_layers=self.scan_layers, **lora)
        return ModelConfig(
            **self.how_to_run,
            scan_layers=self.scan_layers,
            **lora,
            family=self.family,
            vocab_size=self.vocab_size or vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            d_ff=self.d_ff,
            max_positions=self.max_positions,
        )


EVAL_SPLITS = ("test", "validation")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """task: a built-in task (summarization, arithmetic: generated, n_train / n_test rows)
    or a real data set read from `source_dir` (tldr: the TL;DR SFT files for prompts and
    SFT, the human comparisons for pairs; hh: Anthropic HH-RLHF), of which n_train /
    n_test rows are used (0 = all). Prompts over max_prompt_len tokens are dropped.
    eval_split: the held-out rows every report of the run is computed on: "test", or
    "validation" (disjoint from test: for choosing settings without reading test figures).
    comparisons: a directory whose comparisons.jsonl (prompt, chosen, rejected[, document])
    replaces the task's preference train rows (comparisons of a policy's own samples, as
    an iterated run collects them); "" = the task's. solutions: likewise, a directory whose
    solutions.jsonl (prompt, completion, outcome, step_labels) replaces the task's labelled
    train rows (ORM / PRM training on a generator's labelled samples), and its
    held_out.jsonl, if there, the test rows."""

    task: str = "summarization"
    data_dir: str = ""  # TFDS data dir; "" = <workdir>/tfds
    source_dir: str = ""  # tldr / hh: the original files (tldr: sft/ and comparisons/ under it)
    seed: int = 0
    n_train: int = 2000
    n_test: int = 200
    max_prompt_len: int = 64
    max_completion_len: int = 16
    tokenizer: str = ""  # an HF tokenizer directory; "" = the init_from checkpoint's, else train one
    eval_split: str = "test"
    comparisons: str = ""
    solutions: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"data.task={self.task!r}: expected one of {tuple(TASKS)}")
        if self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"data.eval_split={self.eval_split!r}: expected one of {EVAL_SPLITS}")
        if self.max_prompt_len < 1 or self.max_completion_len < 1:
            raise ValueError("data.max_prompt_len and data.max_completion_len must be positive")
        smallest = 1 if self.generated else 0
        for name in ("n_train", "n_test"):
            if getattr(self, name) < smallest:
                raise ValueError(f"data.{name}={getattr(self, name)}: must be >= {smallest} for task {self.task}")

    @property
    def task_spec(self) -> Task:
        """The `data.tasks.Task` this section names."""
        return TASKS[self.task]

    @property
    def generated(self) -> bool:
        """A built-in task generated from data.seed (with a gold judge); else read from files."""
        return TASKS[self.task].generated


@dataclasses.dataclass(frozen=True)
class TrainSection:
    """prompt_loss_weight (SFT): weight of a prompt token in the loss relative to a
    completion token; 0 = completion only (TRL's default). tie_strength (reward models on
    comparisons with ties, `data.comparisons`): Davidson's nu, the tie term's weight."""

    kind: str = "sft"
    steps: int = 200
    batch_size: int = 32
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep: int = 2
    prompt_loss_weight: float = 0.0
    tie_strength: float = 1.0  # reward models on comparisons with ties: Davidson's nu (losses/reward.py)
    class_balance: bool = False  # orm, prm: each class weighted by 1 / its frequency in the train set

    def __post_init__(self):
        config_lib.check_numbers(self, {"seed": ">= 0"})
        if self.kind not in KINDS:
            raise ValueError(f"train.kind={self.kind!r}: expected one of {tuple(KINDS)}")
        for name in ("steps", "batch_size", "log_every", "save_every", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be >= 1")
        if self.prompt_loss_weight < 0:
            raise ValueError(f"train.prompt_loss_weight={self.prompt_loss_weight}: must be >= 0")
        if not self.tie_strength > 0:
            raise ValueError(f"train.tie_strength={self.tie_strength}: must be > 0")
        if self.class_balance and self.kind not in ("orm", "prm"):
            raise ValueError(f"train.class_balance: only for train.kind='orm' or 'prm', got {self.kind!r}")
        if self.prompt_loss_weight > 0 and self.kind != "sft":
            raise ValueError(f"train.prompt_loss_weight: only for train.kind='sft', got {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class PreferenceSection(PreferenceConfig):
    """Offline preference training (train.kind "preference"): an objective of
    losses.preference with its settings, and `reference`, the reference policy (a run's
    workdir or an HF directory; "" = the starting policy)."""

    reference: str = ""

    def __post_init__(self):
        try:
            super().__post_init__()
        except ValueError as e:
            raise ValueError(str(e).replace("PreferenceConfig.", "preference.")) from None

    def loss_config(self) -> PreferenceConfig:
        fields = {f.name for f in dataclasses.fields(PreferenceConfig)}
        return PreferenceConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in fields})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimConfig = OptimConfig()
    train: TrainSection = TrainSection()
    rl: RLSection = RLSection()
    preference: PreferenceSection = PreferenceSection()
    mesh: tuple[int, ...] = (-1, 1, 1)

    def __post_init__(self):
        config_lib.check_numbers(self)
        if len(self.mesh) != 3:
            raise ValueError(f"mesh={self.mesh}: expected (data, fsdp, tensor)")
