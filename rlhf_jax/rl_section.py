"""The online-RL section of the experiment config (`rl.*`) and the registry of the
literature's named online methods (`rl.method`): each an advantage estimator of rollout.py and
a policy objective of losses/policy.py with the defaults of its paper."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from rlhf_jax import rollout
from rlhf_jax.eval.verifiers import SCORES
from rlhf_jax.losses import policy as policy_losses
from rlhf_jax.losses.common import AGGREGATIONS
from rlhf_jax.rollout_corrections import IS_CORRECTIONS


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
