"""The experiment config: what a module in experiments/ returns from `get_config(variant)`.

Every field can be overridden from the command line (`--set train.steps=500`); the
resolved config is written to the workdir as config.json.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from rlhf_jax import config as config_lib
from rlhf_jax import rollout
from rlhf_jax.data.tasks import TASKS, Task
from rlhf_jax.eval.verifiers import SCORES
from rlhf_jax.losses import policy as policy_losses
from rlhf_jax.losses.common import AGGREGATIONS
from rlhf_jax.losses.preference import PreferenceConfig
from rlhf_jax.models.config import ATTENTION, REMAT_POLICIES, ModelConfig
from rlhf_jax.models.presets import preset
from rlhf_jax.rollout_corrections import IS_CORRECTIONS
from rlhf_jax.train_step import OptimConfig

# train.kind -> the kind of the task's data it reads (data.tasks.DATA_KINDS)
KINDS = {"sft": "sft", "reward": "preference", "orm": "labelled", "prm": "labelled", "rl": "sft",
         "preference": "preference"}  # fmt: skip


class Method(NamedTuple):
    """An online method of the literature: an advantage estimator and a policy objective of
    the registries in rollout.py and losses/policy.py (rl.advantage / rl.loss override
    either), where it comes from, and the defaults of its objective: the ratio's clip
    (low, high: the interval [1 - low, 1 + high]; rl.ppo_clip / rl.clip_high override) and
    the loss aggregation (`losses.common.AGGREGATIONS`; rl.aggregation overrides)."""

    advantage: str
    loss: str
    paper: str
    clip: tuple[float, float] = (0.2, 0.2)
    aggregation: str = "token_mean"
    dynamic_sampling: int = 1  # prompt batches drawn per iteration (DAPO's dynamic sampling: 3)
    overlong_buffer: float = 0.0  # DAPO's L_cache as a share of the maximum completion length


METHODS = {
    "rloo": Method("rloo", "reinforce", "Ahmadian et al. 2024"),
    "reinforce": Method("moving_average", "reinforce", "Williams 1992; the RLOO paper's baseline"),
    "grpo": Method("grpo", "ppo", "Shao et al. 2024 (DeepSeekMath)", aggregation="seq_mean_token_mean"),
    "dr_grpo": Method("dr_grpo", "ppo", "Liu et al. 2025 (Dr. GRPO)", aggregation="seq_mean_token_sum_norm"),
    "gspo": Method("grpo", "gspo", "Zheng et al. 2025 (GSPO)", clip=(3e-4, 4e-4)),
    "cispo": Method("grpo", "cispo", "MiniMax 2025 (MiniMax-M1)", clip=(1.0, 0.28)),
    "reinforce_pp": Method("reinforce_pp", "ppo", "Hu 2025 (REINFORCE++)"),
    "dapo": Method("grpo", "ppo", "Yu et al. 2025 (DAPO)", clip=(0.2, 0.28), dynamic_sampling=3, overlong_buffer=0.2),
    "remax": Method("remax", "reinforce", "Li et al. 2023"),
    "ppo": Method("gae", "ppo", "Schulman et al. 2017; Ziegler et al. 2019"),
    "vanilla_pg": Method("reward_to_go", "vanilla_pg", "the RLOO paper's Vanilla PG"),
    "raft": Method("best_of_k", "raft", "Dong et al. 2023"),
}

PRM_READINGS = (*SCORES, "steps")  # how rl.reward_model is read when it is a process reward model


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
class RLSection:
    """Online RL (train.kind "rl"). One iteration samples `k` completions for each of
    `rollout_batch // k` prompts, scores them, and takes `updates_per_batch` passes of
    `rollout_batch // minibatch` gradient steps over them; train.steps counts iterations.

    method: a named method of `METHODS` (rloo | reinforce: moving-average baseline,
    `baseline_decay` 0 = the mean of all past rewards, RLOO paper eq. 8 | grpo | remax |
    ppo | vanilla_pg | raft), i.e. an advantage estimator and a policy objective;
    advantage / loss: either one by name from the registries (`rollout.ESTIMATORS`,
    `losses.policy.OBJECTIVES`) instead of the method's ("" = the method's).
    reward_model: a reward run's workdir or an HF directory with a scalar head; "gold" =
    the task's gold judge. prm_reading: "" (reward_model is a scalar reward model), or
    reward_model is a process reward model (an LM, train.kind prm) read as one of
    `eval.verifiers.SCORES` (product, min, first_error: a score per completion) or "steps"
    (its per-step rewards at each step's last token: use a token-level estimator such as
    rloo_to_go). critic_from: "reward" (TRL's default) or "policy" (its backbone).
    reference: the KL reference pi_ref, a finished run or an HF directory; "" = the policy's
    starting checkpoint (a policy that continues training keeps its SFT as reference).
    beta: KL coefficient of R = r - beta * KL; target_kl > 0 adapts it (Ziegler et al.).
    reward_noise: std of Gaussian noise added to r (the robustness sweeps), in the units of
    reward_noise_scale: "absolute" or "score_std" (multiples of the batch's score std); or,
    with "flip", the probability that a verifiable reward's 0 / 1 is flipped.
    old_logps: where log pi_old comes from: "sampler" (the log-probs the sampler computed
    while drawing, under the same parameters: no extra forward) or "forward" (a training
    forward over the sampled sequences; equal up to rounding, which in bf16 may matter).
    sampler_weights: on a mesh, "whole" (a copy of the policy with every weight whole along
    fsdp, made for each rollout and freed before the update: decode gathers nothing) or
    "sharded" (the trained weights as they lie, each layer gathered inside the decode loop:
    no copy, for a model whose whole weights do not fit a chip; best with model.scan_layers).
    ppo_clip / clip_high: the ratio's clip interval [1 - ppo_clip, 1 + clip_high] of the
    ratio objectives (ppo, gspo, gspo_token, cispo); none = the method's (0.2 / 0.2; GSPO
    3e-4 / 4e-4; CISPO 1 / 0.28, no lower bound on its weight); clip_high alone decouples
    the upper bound (DAPO's clip-higher). dual_clip: c > 1, PPO's surrogate of a negative
    advantage bounded below by c A (Ye et al. 2020). aggregation: how the token-level
    objectives reduce per-token terms (`losses.common.AGGREGATIONS`; "" = the method's:
    token_mean, GRPO seq_mean_token_mean, Dr. GRPO seq_mean_token_sum_norm).
    is_correction: the gap between the sampler's and the trainer's log-probs (bf16
    sampling, another kernel), corrected by importance weights pi_train / pi_sampler capped at
    is_cap C: "tis_token" / "tis_seq" (truncated: min(w, C)) or "mis_token" / "mis_seq"
    (masked: 0 past C), per token or per sequence (`rollout_corrections.importance_weights`); pi_old is
    then the trained weights' forward whatever old_logps says. The gap itself
    (mismatch_mean / _max / _frac) is logged whenever both log-probs exist (old_logps
    forward, or a correction).
    dynamic_sampling: prompt batches drawn per iteration (0 = the method's: 1, DAPO 3);
    above 1, the groups whose k rewards are all equal are dropped first and the batch filled
    from the rest (`rollout_corrections.dynamic_sampling_groups`; metrics groups_with_signal and
    kept_without_signal). overlong_buffer: DAPO's L_cache in tokens (none = the method's: 0,
    DAPO a fifth of the maximum completion length): a reward penalty rising to -1 over the
    last L_cache tokens of the limit (`rollout_corrections.overlong_penalty`). overlong_filter:
    completions cut at the limit (no EOS) are left out of the loss.
    sample_dtype: the sampler's compute dtype, "float32" or "bfloat16" (weights cast as
    each layer uses them, activations and KV cache in bf16: the cache, a sampler's largest
    buffer, halves); the policy still trains in float32, so bf16 sampling needs
    old_logps=forward (the ratio's pi_old from the trained weights, not the bf16 sampler's).
    """

    method: str = "rloo"
    advantage: str = ""
    loss: str = ""
    k: int = 4
    rollout_batch: int = 64
    minibatch: int = 64
    updates_per_batch: int = 1
    beta: float = 0.05
    kl_estimator: str = "k1"
    target_kl: float = 0.0
    kl_horizon: float = 10000.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    reward_model: str = "gold"
    prm_reading: str = ""
    critic_from: str = "reward"
    reference: str = ""
    missing_eos_penalty: float = 0.0
    reward_noise: float = 0.0
    reward_noise_scale: str = "absolute"
    whiten_advantages: bool = False
    baseline_decay: float = 0.0
    clip_eps: float | None = None
    ppo_clip: float | None = None
    clip_high: float | None = None
    dual_clip: float | None = None
    aggregation: str = ""
    value_clip: float | None = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    ent_coef: float = 0.0
    kl_loss_coef: float = 0.0
    old_logps: str = "sampler"
    sampler_weights: str = "whole"
    sample_dtype: str = "float32"
    is_correction: str = "none"
    is_cap: float = 2.0
    dynamic_sampling: int = 0
    overlong_buffer: int | None = None
    overlong_filter: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"rl.method={self.method!r}: expected one of {tuple(METHODS)}")
        if self.advantage and self.advantage not in rollout.ESTIMATORS:
            raise ValueError(f"rl.advantage={self.advantage!r}: expected one of {tuple(rollout.ESTIMATORS)}")
        if self.loss and self.loss not in policy_losses.OBJECTIVES:
            raise ValueError(f"rl.loss={self.loss!r}: expected one of {tuple(policy_losses.OBJECTIVES)}")
        est, obj = self.estimator, self.objective
        if est.level not in obj.accepts:
            raise ValueError(
                f"rl.loss={obj.name!r} takes {' or '.join(obj.accepts)}-level advantages; "
                f"rl.advantage={est.name!r} gives {est.level}-level ones"
            )
        if self.k < max(1, est.min_k):
            raise ValueError(f"rl.k={self.k}: the {est.name} estimator needs k >= {max(1, est.min_k)}")
        if self.rollout_batch < 1:
            raise ValueError(f"rl.rollout_batch={self.rollout_batch}: must be >= 1")
        if self.rollout_batch % self.k:
            raise ValueError(f"rl.rollout_batch={self.rollout_batch}: must be a multiple of rl.k={self.k}")
        if self.minibatch < 1 or self.rollout_batch % self.minibatch:
            raise ValueError(f"rl.minibatch={self.minibatch}: must divide rl.rollout_batch={self.rollout_batch}")
        if self.updates_per_batch < 1:
            raise ValueError(f"rl.updates_per_batch={self.updates_per_batch}: must be >= 1")
        if self.old_logps not in ("sampler", "forward"):
            raise ValueError(f"rl.old_logps={self.old_logps!r}: expected 'sampler' or 'forward'")
        if self.sampler_weights not in ("whole", "sharded"):
            raise ValueError(f"rl.sampler_weights={self.sampler_weights!r}: expected 'whole' or 'sharded'")
        if self.sample_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"rl.sample_dtype={self.sample_dtype!r}: expected 'float32' or 'bfloat16'")
        if self.sample_dtype != "float32" and self.old_logps == "sampler" and self.is_correction == "none":
            raise ValueError(
                f"rl.sample_dtype={self.sample_dtype}: the sampler's log-probs are not the trained policy's; "
                "set rl.old_logps=forward (pi_old from a forward of the trained weights), or correct for the "
                "sampler with rl.is_correction (tis_token, tis_seq, mis_token, mis_seq)"
            )
        if self.is_correction not in IS_CORRECTIONS:
            raise ValueError(f"rl.is_correction={self.is_correction!r}: expected one of {IS_CORRECTIONS}")
        if self.is_correction.endswith("_token") and "token" not in obj.accepts:
            raise ValueError(
                f"rl.is_correction={self.is_correction}: per-token weights need an objective that takes token "
                f"advantages; rl.loss={obj.name!r} takes {' or '.join(obj.accepts)}: use {self.is_correction[:3]}_seq"
            )
        if not self.is_cap > 0:
            raise ValueError(f"rl.is_cap={self.is_cap}: must be positive")
        if self.dynamic_sampling < 0:
            raise ValueError(f"rl.dynamic_sampling={self.dynamic_sampling}: must be >= 0 (0 = the method's, 1 = off)")
        if self.draws > 1 and self.k < 2:
            raise ValueError(f"rl.dynamic_sampling={self.draws}: needs groups, rl.k >= 2 (k={self.k})")
        if self.overlong_buffer is not None and self.overlong_buffer < 0:
            raise ValueError(f"rl.overlong_buffer={self.overlong_buffer}: must be >= 0 (0 = no penalty)")
        if self.reward_noise_scale not in rollout.NOISE_SCALES:
            raise ValueError(
                f"rl.reward_noise_scale={self.reward_noise_scale!r}: expected one of {rollout.NOISE_SCALES}"
            )
        if self.prm_reading and self.prm_reading not in PRM_READINGS:
            raise ValueError(f"rl.prm_reading={self.prm_reading!r}: expected one of {PRM_READINGS}")
        if self.prm_reading and self.reward_model == "gold":
            raise ValueError(f"rl.prm_reading={self.prm_reading!r}: name the process reward model in rl.reward_model")
        if self.prm_reading and self.estimator.critic and self.critic_from == "reward":
            raise ValueError("rl.critic_from=reward: a process reward model has no scalar head; use 'policy'")
        if self.critic_from not in ("reward", "policy"):
            raise ValueError(f"rl.critic_from={self.critic_from!r}: expected 'reward' or 'policy'")
        for name in ("beta", "target_kl", "reward_noise", "baseline_decay", "missing_eos_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"rl.{name}={getattr(self, name)}: must be >= 0")
        if self.reward_noise_scale == "flip" and self.reward_noise > 1:
            raise ValueError(f"rl.reward_noise={self.reward_noise}: a flip probability, at most 1")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"rl.baseline_decay={self.baseline_decay}: must be in [0, 1)")
        self._check_sampling_and_loss()

    def _check_sampling_and_loss(self):
        if self.aggregation and self.aggregation not in AGGREGATIONS:
            raise ValueError(f"rl.aggregation={self.aggregation!r}: expected one of {AGGREGATIONS} ('' = the method's)")
        try:  # the objective's settings are checked where they are defined, once
            self.loss_config()
        except ValueError as e:
            raise ValueError(str(e).replace("PolicyLossConfig.", "rl.")) from None
        if not 0 < self.top_p <= 1:
            raise ValueError(f"rl.top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"rl.top_k={self.top_k}: must be >= 0 (0 = off)")
        if not self.kl_horizon > 0:
            raise ValueError(f"rl.kl_horizon={self.kl_horizon}: must be positive")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"rl.{name}={getattr(self, name)}: must be in [0, 1]")

    @property
    def estimator(self) -> rollout.Estimator:
        """The advantage estimator's record (rl.advantage, else the method's)."""
        return rollout.ESTIMATORS[self.advantage or METHODS[self.method][0]]

    @property
    def objective(self) -> policy_losses.Objective:
        """The policy objective's record (rl.loss, else the method's)."""
        return policy_losses.OBJECTIVES[self.loss or METHODS[self.method][1]]

    @property
    def clip(self) -> tuple[float, float]:
        """(low, high) of the ratio's clip: rl.ppo_clip (both, unless rl.clip_high is set), else
        the method's."""
        method = METHODS[self.method]
        low = method.clip[0] if self.ppo_clip is None else self.ppo_clip
        high = self.clip_high if self.clip_high is not None else (method.clip[1] if self.ppo_clip is None else low)
        return low, high

    @property
    def draws(self) -> int:
        """Prompt batches drawn per iteration (dynamic sampling above 1)."""
        return self.dynamic_sampling or METHODS[self.method].dynamic_sampling

    def overlong_tokens(self, max_len: int) -> int:
        """DAPO's L_cache for completions of at most max_len tokens (0: no penalty)."""
        if self.overlong_buffer is not None:
            return self.overlong_buffer
        return int(round(METHODS[self.method].overlong_buffer * max_len))

    @property
    def loss_aggregation(self) -> str:
        return self.aggregation or METHODS[self.method].aggregation

    def loss_config(self, completion_len: int = 0) -> policy_losses.PolicyLossConfig:
        """The policy objective's settings: the fields this section shares with
        `PolicyLossConfig` (one default, one check: its own), with the objective, the clip and
        the aggregation resolved (the method's where unset). completion_len: as in
        `loops.online.make_loss`."""
        shared = {f.name for f in dataclasses.fields(policy_losses.PolicyLossConfig)} & {
            f.name for f in dataclasses.fields(self)
        }
        low, high = self.clip
        resolved = {"objective": self.objective.name, "ppo_clip": low, "clip_high": high,
                    "aggregation": self.loss_aggregation, "completion_len": completion_len}  # fmt: skip
        return policy_losses.PolicyLossConfig(**{**{n: getattr(self, n) for n in shared}, **resolved})

    @property
    def n_prompts(self) -> int:
        return self.rollout_batch // self.k

    @property
    def steps_per_iteration(self) -> int:
        return self.updates_per_batch * (self.rollout_batch // self.minibatch)


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
