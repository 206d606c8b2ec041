"""Policy-gradient losses of online RLHF over a pre-sampled `Rollout`, each registered as data.

Objectives (pure, on log-probs; minimised):
    REINFORCE / RLOO / GRPO / ReMax   -mean_i A_i log pi(y_i|x_i)
      with a sequence ratio rho_i = pi(y_i|x_i) / pi_old(y_i|x_i) when a batch is reused:
                                      -mean_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i)
    PPO (per token)                   -mean_t min(f_t A_t, clip(f_t, 1 - eps, 1 + eps) A_t),
                                      f_t = pi(y_t|s_t) / pi_old(y_t|s_t)   (RLOO paper eq. 5)
    value (clipped)                   (1/2) mean_t max((V_t - G_t)^2, (V_old + clip(V_t - V_old, +-eps_v) - G_t)^2)
    Vanilla PG                        -mean_t A_t log pi(y_t|s_t)  (no ratio, no clipping)
    RAFT                              -mean over the best-of-k completions' tokens of log pi(y_t|s_t)
    GSPO                              -mean_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t log f_t)
    CISPO                             -sum_t sg[clip(f_t)] A_t log pi(y_t|s_t) / (tokens)
PPO's clip may be decoupled (DAPO: 1 + clip_high above, 1 - ppo_clip below) and bounded
below for negative advantages (dual clip); its per-token terms reduce by `aggregation`
(`common.aggregate`: the batch's token mean, GRPO's mean of per-sequence means, Dr. GRPO's
token sums over a constant length). Elsewhere token means run over every completion token. An optional KL loss term
beta_loss * mean_t kl_t(pi, pi_ref) (k1/k2/k3) replaces or complements the KL in the reward.

A policy objective is one function registered with `register_objective`: it maps the
token log-probs of the current policy and the rollout to (loss, metrics), and declares
which advantage levels (`rollout.LEVELS`) it accepts; a token-level objective given one
advantage per completion sees it on every completion token (`Rollout.token_advantages`:
"ppo" with GRPO's advantages is the DeepSeekMath GRPO objective). `policy_loss` is the one
place that runs the forward, adds the critic's value loss when the estimator has one, the
KL loss term and the entropy bonus.

    name        accepts               objective
    reinforce   sequence              REINFORCE on log pi(y|x), clipped sequence ratio with clip_eps
    ppo         token, sequence       PPO's clipped per-token surrogate
    vanilla_pg  token, sequence       -A_t log pi(y_t|s_t)
    raft        selection             NLL of the selected completions
    gspo        sequence              GSPO's sequence-ratio surrogate (Zheng et al. 2025)
    gspo_token  token, sequence       GSPO-token: the sequence ratio, each token's own gradient
    cispo       token, sequence       CISPO's clipped, stop-gradient IS weight (MiniMax-M1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rlhf_jax.batches import Rollout
from rlhf_jax.losses.common import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    check_same_shape,
    kl_per_token,
    masked_mean,
    sequence_sum,
)


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
    """objective: a registered policy objective (`OBJECTIVES`); clip_eps: REINFORCE/RLOO
    sequence-ratio clip (None = plain REINFORCE, valid for one update per batch);
    ppo_clip: PPO's epsilon; value_clip: critic clip (None = unclipped);
    vf_coef / ent_coef: weights of the value loss and the entropy bonus; kl_loss_coef with
    kl_estimator: KL to the reference as a loss term; temperature: the sampling one;
    clip_high: the upper clip of the ratio (DAPO's decoupled clip; None = ppo_clip, the
    lower one), also GSPO's and CISPO's; dual_clip: c > 1, a lower bound c A on the
    surrogate of negative advantages (Ye et al. 2020); aggregation: how the token-level
    objectives reduce their per-token terms (`common.AGGREGATIONS`; Dr. GRPO divides token
    sums by the maximum completion length, completion_len or the row length);
    completion_len: K > 0 when completions fill the last K positions of every row (the
    RL loop's layout): log-probs are computed there only."""

    objective: str = "reinforce"
    clip_eps: float | None = None
    ppo_clip: float = 0.2
    clip_high: float | None = None
    dual_clip: float | None = None
    aggregation: str = "token_mean"
    value_clip: float | None = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    kl_loss_coef: float = 0.0
    kl_estimator: str = "k1"
    temperature: float = 1.0
    completion_len: int = 0

    def __post_init__(self):
        for name in ("ppo_clip", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PolicyLossConfig.{name}={getattr(self, name)}: must be positive")
        for name in ("vf_coef", "ent_coef", "kl_loss_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"PolicyLossConfig.{name}={getattr(self, name)}: must be >= 0")
        if self.completion_len < 0:
            raise ValueError(f"PolicyLossConfig.completion_len={self.completion_len}: must be >= 0 (0 = all positions)")
        for name in ("clip_eps", "value_clip"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"PolicyLossConfig.{name}={getattr(self, name)}: must be positive or none")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"PolicyLossConfig.objective={self.objective!r}: one of {tuple(OBJECTIVES)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"PolicyLossConfig.kl_estimator={self.kl_estimator!r}: one of {KL_ESTIMATORS}")
        if self.clip_high is not None and not self.clip_high > 0:
            raise ValueError(f"PolicyLossConfig.clip_high={self.clip_high}: must be positive or none")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"PolicyLossConfig.dual_clip={self.dual_clip}: must be > 1 (c A bounds a negative "
                             "advantage's surrogate) or none")  # fmt: skip
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"PolicyLossConfig.aggregation={self.aggregation!r}: one of {AGGREGATIONS}")

    @property
    def clip_range(self) -> tuple[float, float]:
        """(1 - low, 1 + high): the ratio's clip interval."""
        return 1 - self.ppo_clip, 1 + (self.ppo_clip if self.clip_high is None else self.clip_high)


# ----------------------------------------------------------------------------- objectives


def reinforce_objective(seq_logps_B, advantages_B, old_seq_logps_B=None, clip_eps=None):
    """-mean(A log pi(y|x)); with clip_eps, the clipped sequence-ratio surrogate."""
    check_same_shape("reinforce_objective", seq_logps=seq_logps_B, advantages=advantages_B)
    adv = jax.lax.stop_gradient(advantages_B)
    metrics = {"advantage_mean": adv.mean(), "advantage_std": adv.std()}
    if clip_eps is None:
        return -jnp.mean(adv * seq_logps_B), metrics
    ratio_B = jnp.exp(seq_logps_B - jax.lax.stop_gradient(old_seq_logps_B))
    clipped = jnp.clip(ratio_B, 1 - clip_eps, 1 + clip_eps)
    loss = -jnp.mean(jnp.minimum(ratio_B * adv, clipped * adv))
    metrics.update(ratio_mean=ratio_B.mean(), clip_frac=jnp.mean(jnp.abs(ratio_B - 1) > clip_eps))
    return loss, metrics


def ppo_objective(logps_BxT, old_logps_BxT, advantages_BxT, mask_BxT, clip_eps: float, clip_high: float | None = None,
                  dual_clip: float | None = None, aggregation: str = "token_mean", norm_len: float = 1.0):  # fmt: skip
    """Clipped per-token surrogate (Schulman et al. 2017), r_t = pi(y_t) / pi_old(y_t):
        s_t = min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t),   eps_high = clip_high or eps_low
    (DAPO's decoupled clip, Yu et al. 2025), with dual_clip c: s_t = max(s_t, c A_t) where
    A_t < 0 (Ye et al. 2020: a very large ratio cannot push a bad token's loss without bound);
    loss = -aggregate(s) (`common.aggregate`). Metrics: clip fractions, approximate KL, ratios."""
    check_same_shape("ppo_objective", logps=logps_BxT, old_logps=old_logps_BxT, advantages=advantages_BxT)
    low, high = 1 - clip_eps, 1 + (clip_eps if clip_high is None else clip_high)
    adv = jax.lax.stop_gradient(advantages_BxT)
    log_ratio = logps_BxT - jax.lax.stop_gradient(old_logps_BxT)
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, low, high) * adv)
    metrics = {}
    if dual_clip is not None:
        lower = dual_clip * adv
        metrics["dual_clip_frac"] = masked_mean(((adv < 0) & (surrogate < lower)).astype(jnp.float32), mask_BxT)
        surrogate = jnp.where(adv < 0, jnp.maximum(surrogate, lower), surrogate)
    loss = -aggregate(surrogate, mask_BxT, aggregation, norm_len)
    m = mask_BxT.astype(bool)
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    metrics.update({
        "clip_frac": masked_mean(f32((ratio < low) | (ratio > high)), mask_BxT),
        "clip_frac_low": masked_mean(f32((ratio < low) & (adv < 0)), mask_BxT),
        "clip_frac_high": masked_mean(f32((ratio > high) & (adv > 0)), mask_BxT),
        "approx_kl": masked_mean(jnp.expm1(-log_ratio) + log_ratio, mask_BxT),  # k3 of pi_old || pi
        "ratio_mean": masked_mean(ratio, mask_BxT),
        "ratio_max": jnp.max(jnp.where(m, ratio, -jnp.inf)),
        "ratio_min": jnp.min(jnp.where(m, ratio, jnp.inf)),
        "advantage_mean": masked_mean(adv, mask_BxT),
    })  # fmt: skip
    return loss, metrics


def gspo_objective(logps_BxT, old_logps_BxT, advantages_B, mask_BxT, clip_low: float, clip_high: float):
    """GSPO (Zheng et al. 2025): a sequence-level ratio, the geometric mean of the token ratios,
    s_i = exp((1/|y_i|) sum_t [log pi(y_i,t) - log pi_old(y_i,t)]),
    loss = -(1/B) sum_i min(s_i A_i, clip(s_i, 1 - clip_low, 1 + clip_high) A_i)."""
    check_same_shape("gspo_objective", logps=logps_BxT, old_logps=old_logps_BxT)
    adv = jax.lax.stop_gradient(advantages_B)
    log_s = masked_mean(logps_BxT - jax.lax.stop_gradient(old_logps_BxT), mask_BxT, axis=-1)
    s = jnp.exp(log_s)
    low, high = 1 - clip_low, 1 + clip_high
    loss = -jnp.mean(jnp.minimum(s * adv, jnp.clip(s, low, high) * adv))
    clipped = ((s < low) | (s > high)).astype(jnp.float32)
    return loss, {"clip_frac": clipped.mean(), "ratio_mean": s.mean(), "advantage_mean": adv.mean()}


def gspo_token_objective(logps_BxT, old_logps_BxT, advantages_BxT, mask_BxT, clip_low: float, clip_high: float):
    """GSPO-token (Zheng et al. 2025): per token s_i,t = sg[s_i] pi(y_i,t) / sg[pi(y_i,t)], whose
    value is the sequence ratio s_i and whose gradient is the token's; with token advantages
        loss = -(1/B) sum_i (1/|y_i|) sum_t min(s_i,t A_i,t, clip(s_i,t, 1 - clip_low, 1 + clip_high) A_i,t)
    (equal to GSPO, value and gradient, when every A_i,t = A_i)."""
    check_same_shape("gspo_token_objective", logps=logps_BxT, old_logps=old_logps_BxT, advantages=advantages_BxT)
    adv = jax.lax.stop_gradient(advantages_BxT)
    log_s_B = masked_mean(logps_BxT - jax.lax.stop_gradient(old_logps_BxT), mask_BxT, axis=-1)
    s = jnp.exp(jax.lax.stop_gradient(log_s_B)[:, None] + logps_BxT - jax.lax.stop_gradient(logps_BxT))
    low, high = 1 - clip_low, 1 + clip_high
    surrogate = jnp.minimum(s * adv, jnp.clip(s, low, high) * adv)
    loss = -aggregate(surrogate, mask_BxT, "seq_mean_token_mean")
    clipped = ((s < low) | (s > high)).astype(jnp.float32)
    return loss, {"clip_frac": masked_mean(clipped, mask_BxT), "ratio_mean": masked_mean(s, mask_BxT)}


def cispo_objective(logps_BxT, old_logps_BxT, advantages_BxT, mask_BxT, clip_low: float, clip_high: float,
                    aggregation: str = "token_mean", norm_len: float = 1.0):  # fmt: skip
    """CISPO (MiniMax-M1, 2025): REINFORCE weighted by the clipped, stop-gradient importance
    weight, so every token keeps its gradient (PPO's clip drops those outside the interval):
        loss = -aggregate(sg[clip(r_t, 1 - clip_low, 1 + clip_high)] A_t log pi(y_t)),
    token_mean by default (MiniMax: over all tokens of the batch; clip_low 1: no lower bound)."""
    check_same_shape("cispo_objective", logps=logps_BxT, old_logps=old_logps_BxT, advantages=advantages_BxT)
    adv = jax.lax.stop_gradient(advantages_BxT)
    ratio = jnp.exp(jax.lax.stop_gradient(logps_BxT - old_logps_BxT))
    low, high = 1 - clip_low, 1 + clip_high
    weight = jnp.clip(ratio, low, high)
    loss = -aggregate(weight * adv * logps_BxT, mask_BxT, aggregation, norm_len)
    clipped = ((ratio < low) | (ratio > high)).astype(jnp.float32)
    return loss, {"clip_frac": masked_mean(clipped, mask_BxT), "ratio_mean": masked_mean(ratio, mask_BxT),
                  "advantage_mean": masked_mean(adv, mask_BxT)}  # fmt: skip


def value_objective(values_BxT, old_values_BxT, returns_BxT, mask_BxT, clip: float | None):
    """(1/2) mean_t of the squared error, or its clipped maximum (PPO's value clipping)."""
    check_same_shape("value_objective", values=values_BxT, old_values=old_values_BxT, returns=returns_BxT)
    ret = jax.lax.stop_gradient(returns_BxT)
    err = jnp.square(values_BxT - ret)
    if clip is None:
        return 0.5 * masked_mean(err, mask_BxT), {"value_clip_frac": jnp.zeros(())}
    old = jax.lax.stop_gradient(old_values_BxT)
    clipped = old + jnp.clip(values_BxT - old, -clip, clip)
    err_clipped = jnp.square(clipped - ret)
    frac = masked_mean((err_clipped > err).astype(jnp.float32), mask_BxT)
    return 0.5 * masked_mean(jnp.maximum(err, err_clipped), mask_BxT), {"value_clip_frac": frac}


def vanilla_pg_objective(logps_BxT, advantages_BxT, mask_BxT):
    """-mean_t A_t log pi(y_t|s_t): no ratio, no clipping."""
    check_same_shape("vanilla_pg_objective", logps=logps_BxT, advantages=advantages_BxT)
    adv = jax.lax.stop_gradient(advantages_BxT)
    return -masked_mean(adv * logps_BxT, mask_BxT), {"advantage_mean": masked_mean(adv, mask_BxT)}


def raft_objective(logps_BxT, weights_B, mask_BxT):
    """Negative log-likelihood, token mean over the selected completions."""
    selected = mask_BxT.astype(jnp.float32) * jax.lax.stop_gradient(weights_B)[:, None]
    return -masked_mean(logps_BxT, selected), {"selected": weights_B.sum()}


# ----------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registered policy objective: fn(logps_BxT, rollout, cfg) -> (loss, metrics);
    accepts: the advantage levels it can use; value_clip: whether the critic's value loss
    (when the estimator has a critic) is clipped by cfg.value_clip."""

    name: str
    fn: Callable
    accepts: tuple[str, ...]
    value_clip: bool = True


OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, *, accepts: tuple[str, ...], value_clip: bool = True):
    """Decorator: make `fn(logps_BxT, rollout, cfg) -> (loss, metrics)` the objective `rl.loss=name`."""

    def add(fn):
        if name in OBJECTIVES:
            raise ValueError(f"policy objective {name!r} is registered already")
        OBJECTIVES[name] = Objective(name, fn, tuple(accepts), value_clip)
        return fn

    return add


def objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"policy objective {name!r}: expected one of {tuple(OBJECTIVES)}")
    return OBJECTIVES[name]


@register_objective("reinforce", accepts=("sequence",))
def _reinforce(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """-A log pi(y) on the sequence (rl.clip_eps clips the sequence ratio)."""
    cmask = rollout.completion_mask_BxT
    old_B = sequence_sum(rollout.old_logps_BxT, cmask)
    return reinforce_objective(sequence_sum(logps_BxT, cmask), rollout.advantages_B, old_B, cfg.clip_eps)


def _norm_len(logps_BxT, cfg: PolicyLossConfig) -> float:
    """Dr. GRPO's constant: the maximum completion length (the row length when completions
    are not laid out in the last completion_len positions)."""
    return float(cfg.completion_len or logps_BxT.shape[-1])


@register_objective("ppo", accepts=("token", "sequence"))
def _ppo(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """-min(r A, clip(r, 1 - eps, 1 + eps_high) A) per token, r = pi / pi_old (rl.ppo_clip, clip_high, dual_clip)."""
    adv_BxT, mask_BxT = rollout.token_advantages(), rollout.completion_mask_BxT
    return ppo_objective(logps_BxT, rollout.old_logps_BxT, adv_BxT, mask_BxT, cfg.ppo_clip, cfg.clip_high,
                         cfg.dual_clip, cfg.aggregation, _norm_len(logps_BxT, cfg))  # fmt: skip


@register_objective("gspo", accepts=("sequence",))
def _gspo(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """-min(s A, clip(s) A), s = the geometric mean of the token ratios (sequence level)."""
    low, high = cfg.clip_range
    return gspo_objective(logps_BxT, rollout.old_logps_BxT, rollout.advantages_B, rollout.completion_mask_BxT,
                          1 - low, high - 1)  # fmt: skip


@register_objective("gspo_token", accepts=("token", "sequence"))
def _gspo_token(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """GSPO's sequence ratio with each token's own gradient and advantage."""
    low, high = cfg.clip_range
    return gspo_token_objective(logps_BxT, rollout.old_logps_BxT, rollout.token_advantages(),
                                rollout.completion_mask_BxT, 1 - low, high - 1)  # fmt: skip


@register_objective("cispo", accepts=("token", "sequence"))
def _cispo(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """-sg[clip(r, 1 - eps, 1 + eps_high)] A log pi(y_t) per token: every token keeps its gradient."""
    low, high = cfg.clip_range
    return cispo_objective(logps_BxT, rollout.old_logps_BxT, rollout.token_advantages(), rollout.completion_mask_BxT,
                           1 - low, high - 1, cfg.aggregation, _norm_len(logps_BxT, cfg))  # fmt: skip


@register_objective("vanilla_pg", accepts=("token", "sequence"), value_clip=False)
def _vanilla_pg(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """-A_t log pi(y_t) per token, no ratio, no clip."""
    return vanilla_pg_objective(logps_BxT, rollout.token_advantages(), rollout.completion_mask_BxT)


@register_objective("raft", accepts=("selection",))
def _raft(logps_BxT, rollout: Rollout, cfg: PolicyLossConfig):
    """negative log-likelihood of the selected completions."""
    return raft_objective(logps_BxT, rollout.advantages_B, rollout.completion_mask_BxT)


# ----------------------------------------------------------------------------- with a model


def aligned_values(model, params, tokens_BxT, mask_BxT):
    """V(s_t) at position t: the critic's output at the state before x_t (position t-1)."""
    values = model.values(params, tokens_BxT, mask_BxT)
    return jnp.pad(values[:, :-1], ((0, 0), (1, 0)))


def policy_loss(params, rollout: Rollout, cfg: PolicyLossConfig, model, value_model=None):
    """loss = objective(log pi) [+ vf_coef * value loss] [+ kl_loss_coef * KL] [- ent_coef * H].

    Without a critic `params` are the policy's; with one (value_model, the estimator's
    critic) params = {"policy": ..., "value": ...} and rollout.returns_BxT are the value
    targets (rollout.values_BxT the values at sampling time, for clipping)."""
    policy_params = params if value_model is None else params["policy"]
    logps, entropy = model.token_logps_and_entropy(
        policy_params, rollout.tokens_BxT, rollout.mask_BxT, cfg.temperature, cfg.completion_len
    )
    obj = objective(cfg.objective)
    loss, metrics = obj.fn(logps, rollout, cfg)
    cmask = rollout.completion_mask_BxT
    if value_model is not None:
        values = aligned_values(value_model, params["value"], rollout.tokens_BxT, rollout.mask_BxT)
        clip = cfg.value_clip if obj.value_clip else None
        vf, vmetrics = value_objective(values, rollout.values_BxT, rollout.returns_BxT, cmask, clip)
        metrics.update(vmetrics, policy_loss=loss, value_loss=vf)
        loss = loss + cfg.vf_coef * vf
    if cfg.kl_loss_coef:
        kl = masked_mean(kl_per_token(logps, rollout.ref_logps_BxT, cfg.kl_estimator), cmask)
        metrics["kl_loss"] = kl
        loss = loss + cfg.kl_loss_coef * kl
    entropy = masked_mean(entropy, cmask)
    metrics["entropy"] = entropy
    if cfg.ent_coef:  # else a metric only: 0 * H would still send a backward pass through H
        loss = loss - cfg.ent_coef * entropy
    metrics["loss"] = loss
    return loss, metrics
