"""The settings of the RLOO paper (Ahmadian et al., 2024, "Back to Basics: Revisiting
REINFORCE Style Optimization for Learning from Human Feedback in LLMs", appendix C), shared
by the experiment modules rloo_paper_tldr_pythia.py, rloo_paper_hh_pythia.py and
rloo_paper_hh_llama.py. Each module's variants are the pipeline's stages:

    sft       SFT of the base model: Pythia 2 epochs, Llama 1 epoch; lr 2e-5, cosine decay
              after a 3% warm-up (TL;DR: its SFT split; HH: prompts + chosen responses)
    reward    Bradley-Terry reward model from the SFT policy: 1 epoch, lr 1e-5, cosine, 3%
    rloo_k2, rloo_k4, raft_k2, raft_k4, reinforce (moving-average baseline), vanilla_pg, ppo
              online RL from the SFT policy against the reward model: lr 1e-6 constant after
              a 3% linear warm-up, beta 0.03 (TL;DR) / 0.10 (HH), 2 gradient steps per
              rollout batch (Pythia: rollout 512 in 2 steps of 256; Llama: rollout 2048,
              2 passes of one step of 2048, after Dong et al.), prompts over 448 (TL;DR) /
              348 (HH) tokens dropped, 512 tokens of context in all
    dpo       DPO on the preference pairs from the SFT policy (lr and warm-up as the RL
              methods; beta 0.1, the DPO paper's)

lora      appended to a stage (`rloo_k4,lora`): rank-16 adapters on every projection of the
              frozen SFT model (alpha 16), at 10x the stage's learning rate (our choice; the
              paper fine-tunes every weight); the HF export merges them

The paper counts 600 (TL;DR) and 393 (HH, Pythia) steps, which we read as rollout
iterations; for Llama it gives none, and we take one pass over the 112k HH prompts. It
gives no SFT / reward batch size: we use 64. Completions may use what the prompt leaves of
the 512 tokens: 64 (TL;DR) and 164 (HH). Evaluation: the paper's 1000 test prompts.

Pod settings (ours): every stage runs on the slice its module names (`Setting.slice`) with
parameters, gradients and Adam's moments sharded over every chip (mesh (1, -1, 1)), the
layer stack scanned (`model.scan_layers`: compile time flat in depth), each block
recomputed in the backward pass (`model.remat=full`) and the sampler reading the trained
shardings (`rl.sampler_weights=sharded`: no whole copy per chip); on Llama's 2048-sequence
minibatch the policy + critic stages (ppo, vanilla_pg) accumulate gradients over 2
micro-batches (`optim.accum_steps`: the same update). `python tpu/fit.py`
compiles every variant for its slice (`--dry-run --target`) and checks that each program
leaves at least 10% of the chip's HBM free; its records are in tpu/fit/.

Running a module: each stage is one run, later stages start from earlier ones' workdirs. On
a TPU pod slice (tpu/README.md; gs:// paths are the bucket's gcsfuse mount on every worker),
with the base model's HF directory and the data set's files copied to the bucket (each
module's docstring names MODULE, SLICE, MODEL, DATA and the files):

    B=gs://$BUCKET/rloo_paper/$MODULE
    tpu/create.sh --name rlhf --zone $ZONE --type $SLICE
    tpu/setup.sh --name rlhf --zone $ZONE --bucket $BUCKET
    run() { tpu/launch.sh --name rlhf --zone $ZONE --wait -- --config experiments/rloo_paper_$MODULE.py:$1 \
        --workdir $B/$1 --set data.source_dir=gs://$BUCKET/data/$DATA "${@:2}"; }
    run sft --set model.init_from=gs://$BUCKET/models/$MODEL
    run reward --set model.init_from=$B/sft
    run rloo_k4 --set model.init_from=$B/sft --set rl.reward_model=$B/reward
    run dpo --set model.init_from=$B/sft

The same command on one GPU host: python -m rlhf_jax.main --config
experiments/rloo_paper_$MODULE.py:rloo_k4 --workdir DIR --set ... (docs/pods.md). Check a
stage's shapes at full size first, without a model or data: ... --dry-run; that it fits
the slice (libtpu, no TPU): ... --dry-run --target $SLICE (tpu/fit.py has compiled every
stage for it: docs/pods.md).
"""

from __future__ import annotations

import dataclasses
import math

from rlhf_jax.experiment import (
    DataSection,
    ExperimentConfig,
    ModelSection,
    PreferenceSection,
    RLSection,
    TrainSection,
)
from rlhf_jax.models.config import LORA_TARGETS
from rlhf_jax.models.presets import preset
from rlhf_jax.train_step import OptimConfig

CONTEXT = 512
METHODS = {
    "rloo_k2": {"method": "rloo", "k": 2},
    "rloo_k4": {"method": "rloo", "k": 4},
    "raft_k2": {"method": "raft", "k": 2},
    "raft_k4": {"method": "raft", "k": 4},
    "reinforce": {"method": "reinforce", "k": 1},
    "vanilla_pg": {"method": "vanilla_pg", "k": 1},
    "ppo": {"method": "ppo", "k": 1},
}
VARIANTS = ("sft", "reward", *METHODS, "dpo")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One (data set, base model) column of the paper's table 1."""

    name: str
    task: str  # tldr | hh
    preset: str
    max_prompt_len: int
    beta: float
    rl_steps: int | None  # None: one pass over the training prompts
    rollout_batch: int
    minibatch: int
    updates_per_batch: int
    sft_epochs: int
    n_sft: int  # training examples (SFT) and pairs (reward model, DPO), as published
    n_pairs: int
    batch_size: int = 64  # SFT and reward model
    dpo_batch_size: int = 256
    slice: str = "v4-64"  # the TPU slice the paper modules' settings are fitted to (tpu/fit.py)
    critic_accum_steps: int = 1  # micro-batches of a policy + critic update (the same step, less memory)


TLDR_PYTHIA = Setting("tldr_pythia", "tldr", "pythia-6.9b", 448, 0.03, 600, 512, 256, 1, 2, 116_722, 92_858)
HH_PYTHIA = Setting("hh_pythia", "hh", "pythia-6.9b", 348, 0.10, 393, 512, 256, 1, 2, 112_000, 112_000)
HH_LLAMA = Setting(
    "hh_llama", "hh", "llama-7b", 348, 0.10, None, 2048, 2048, 2, 1, 112_000, 112_000, slice="v4-128",
    critic_accum_steps=2,  # 32 rows per chip of policy and critic activations: 139% of a v4 chip's HBM in one
)  # fmt: skip
SETTINGS = {"rloo_paper_tldr_pythia": TLDR_PYTHIA, "rloo_paper_hh_pythia": HH_PYTHIA, "rloo_paper_hh_llama": HH_LLAMA}


def _steps(epochs: float, n: int, batch: int) -> int:
    return math.ceil(epochs * n / batch)


def _warmup(total: int) -> int:
    return max(1, round(0.03 * total))


def paper_config(setting: Setting, variant: str | None) -> ExperimentConfig:
    """The config of one stage (`variant`, optionally `,lora`); set model.init_from (the base
    model's HF directory, or the SFT run), rl.reward_model / preference.reference and
    data.source_dir with --set."""
    stage, *extras = (variant or "").split(",")
    if stage not in VARIANTS or any(e != "lora" for e in extras):
        raise ValueError(
            f"{setting.name}: unknown variant {variant!r}; known: {', '.join(VARIANTS)}, each optionally with ,lora"
        )
    cfg = _stage_config(setting, stage)
    return _with_lora(cfg) if extras else cfg


def _with_lora(cfg: ExperimentConfig) -> ExperimentConfig:
    """Rank-16 adapters (alpha 16) on every projection the model has (a gate only in a
    gated MLP: Llama), at 10x the stage's learning rate (adapters start at zero effect)."""
    gated = preset(cfg.model.preset).gated_mlp
    targets = tuple(t for t in LORA_TARGETS if t != "gate" or gated)
    model = dataclasses.replace(cfg.model, lora_rank=16, lora_alpha=16.0, lora_targets=targets)
    optim = dataclasses.replace(cfg.optim, learning_rate=float(f"{10 * cfg.optim.learning_rate:.6g}"))
    return dataclasses.replace(cfg, name=cfg.name + "_lora", model=model, optim=optim)


def _stage_config(setting: Setting, variant: str) -> ExperimentConfig:
    data = DataSection(
        task=setting.task,
        n_train=0,
        n_test=1000,
        max_prompt_len=setting.max_prompt_len,
        max_completion_len=CONTEXT - setting.max_prompt_len,
    )
    model = ModelSection(preset=setting.preset, scan_layers=True, remat="full")
    name = f"rloo_paper_{setting.name}_{variant}"
    mesh = (1, -1, 1)  # parameters, gradients and moments sharded over every device (ZeRO-3)
    if variant in ("sft", "reward"):
        epochs, lr, n = (setting.sft_epochs, 2e-5, setting.n_sft) if variant == "sft" else (1, 1e-5, setting.n_pairs)
        steps = _steps(epochs, n, setting.batch_size)
        return ExperimentConfig(
            name=name,
            model=model,
            data=data,
            optim=OptimConfig(learning_rate=lr, schedule="cosine", warmup_steps=_warmup(steps), total_steps=steps),
            train=TrainSection(kind=variant, steps=steps, batch_size=setting.batch_size, log_every=10, save_every=200),
            mesh=mesh,
        )
    if variant == "dpo":
        steps = _steps(1, setting.n_pairs, setting.dpo_batch_size)
        return ExperimentConfig(
            name=name,
            model=model,
            data=data,
            optim=OptimConfig(learning_rate=1e-6, warmup_steps=_warmup(steps), total_steps=steps),
            train=TrainSection(kind="preference", steps=steps, batch_size=setting.dpo_batch_size, save_every=100),
            preference=PreferenceSection(objective="dpo", beta=0.1),
            mesh=mesh,
        )
    method = METHODS[variant]
    prompts_per_iteration = setting.rollout_batch // method["k"]
    iterations = setting.rl_steps or _steps(1, setting.n_sft, prompts_per_iteration)
    rl = RLSection(
        **method,
        rollout_batch=setting.rollout_batch,
        minibatch=setting.minibatch,
        updates_per_batch=setting.updates_per_batch,
        beta=setting.beta,
        sampler_weights="sharded",
    )
    total = iterations * rl.steps_per_iteration
    return ExperimentConfig(
        name=name,
        model=model,
        data=data,
        optim=OptimConfig(
            learning_rate=1e-6,
            warmup_steps=_warmup(total),
            total_steps=total,
            accum_steps=setting.critic_accum_steps if rl.estimator.critic else 1,
        ),
        train=TrainSection(kind="rl", steps=iterations, log_every=1, save_every=25),
        rl=rl,
        mesh=mesh,
    )
