"""Offline preference objectives over sequence log-probs (sums over the completion).

With h = [log pi(y+) - log pi_ref(y+)] - [log pi(y-) - log pi_ref(y-)]:
    DPO     -(1 - e) log sigma(beta h) - e log sigma(-beta h)      (e: label smoothing, cDPO)
    IPO     (h - 1 / (2 beta))^2
    CPO     -log sigma(beta (log pi(y+) - log pi(y-))) + alpha * NLL(y+)        (no reference)
    ORPO    NLL(y+) + lambda * -log sigma(log odds(y+) - log odds(y-)),
            odds(y) = P(y) / (1 - P(y)), P(y) = exp(mean_t log pi(y_t))           (no reference)
    SimPO   -log sigma(beta mean_t log pi(y+_t) - beta mean_t log pi(y-_t) - gamma) (no reference)
    KTO     unpaired: w_D (1 - sigma(beta (rho - z0))) for desirable y,
            w_U (1 - sigma(beta (z0 - rho))) for undesirable y, rho = log pi(y) - log pi_ref(y),
            z0 = max(0, mean(log pi(y') - log pi_ref(y'))) over mismatched (x, y') pairs,
            without gradient (the reference point).
NLL terms are token means over the chosen completion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.batches import KTOBatch, PreferenceBatch
from rlhf_jax.losses.common import check_nonempty_rows, check_same_shape, masked_sum


class PairLogps(NamedTuple):
    """A batch of pairs' log-probs [B]: sums (pi_c, pi_r) and token means (mean_c, mean_r)
    of the policy over the chosen and rejected completions, their lengths, the frozen
    reference's sums (ref_c, ref_r) and the chosen completions' token-mean NLL (a scalar)."""

    pi_c: jax.Array
    pi_r: jax.Array
    mean_c: jax.Array
    mean_r: jax.Array
    n_c: jax.Array
    n_r: jax.Array
    ref_c: jax.Array
    ref_r: jax.Array
    nll_chosen: jax.Array


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registered preference objective. paired: fn(PairLogps, cfg) -> (loss, metrics);
    unpaired (KTO): fn(params, KTOBatch, cfg, model). reference: it needs pi_ref."""

    name: str
    fn: Callable
    reference: bool = True
    paired: bool = True


OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, *, reference: bool = True, paired: bool = True):
    """Decorator: make fn the objective `preference.objective=name`."""

    def add(fn):
        if name in OBJECTIVES:
            raise ValueError(f"preference objective {name!r} is registered already")
        OBJECTIVES[name] = Objective(name, fn, reference, paired)
        return fn

    return add


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    objective: str = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0  # DPO
    length_normalise: bool = False  # IPO on mean token log-probs instead of sums
    cpo_alpha: float = 1.0
    orpo_lambda: float = 0.1
    simpo_gamma: float = 0.5
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"PreferenceConfig.objective={self.objective!r}: expected one of {tuple(OBJECTIVES)}")
        if self.beta <= 0:
            raise ValueError(f"PreferenceConfig.beta={self.beta}: must be positive")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"PreferenceConfig.label_smoothing={self.label_smoothing}: must be in [0, 0.5)")
        for name in ("cpo_alpha", "orpo_lambda", "simpo_gamma", "kto_desirable_weight", "kto_undesirable_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"PreferenceConfig.{name}={getattr(self, name)}: must be >= 0")

    @property
    def needs_reference(self) -> bool:
        return OBJECTIVES[self.objective].reference


def _pair_metrics(chosen_rewards_B, rejected_rewards_B, loss):
    return {
        "loss": loss,
        "rewards_chosen": jnp.mean(chosen_rewards_B),
        "rewards_rejected": jnp.mean(rejected_rewards_B),
        "rewards_margin": jnp.mean(chosen_rewards_B - rejected_rewards_B),
        "accuracy": jnp.mean((chosen_rewards_B > rejected_rewards_B).astype(jnp.float32)),
    }


def dpo_objective(pi_c_B, pi_r_B, ref_c_B, ref_r_B, beta: float, label_smoothing: float = 0.0):
    check_same_shape("dpo_objective", pi_chosen=pi_c_B, pi_rejected=pi_r_B, ref_chosen=ref_c_B, ref_rejected=ref_r_B)
    h = (pi_c_B - ref_c_B) - (pi_r_B - ref_r_B)
    losses = -(1 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    loss = jnp.mean(losses)
    return loss, _pair_metrics(beta * (pi_c_B - ref_c_B), beta * (pi_r_B - ref_r_B), loss)


def ipo_objective(pi_c_B, pi_r_B, ref_c_B, ref_r_B, beta: float):
    check_same_shape("ipo_objective", pi_chosen=pi_c_B, pi_rejected=pi_r_B, ref_chosen=ref_c_B, ref_rejected=ref_r_B)
    h = (pi_c_B - ref_c_B) - (pi_r_B - ref_r_B)
    loss = jnp.mean(jnp.square(h - 1.0 / (2.0 * beta)))
    return loss, _pair_metrics(beta * (pi_c_B - ref_c_B), beta * (pi_r_B - ref_r_B), loss)


def cpo_objective(pi_c_B, pi_r_B, nll_chosen, beta: float, alpha: float):
    check_same_shape("cpo_objective", pi_chosen=pi_c_B, pi_rejected=pi_r_B)
    pref = -jnp.mean(jax.nn.log_sigmoid(beta * (pi_c_B - pi_r_B)))
    loss = pref + alpha * nll_chosen
    metrics = _pair_metrics(beta * pi_c_B, beta * pi_r_B, loss)
    metrics.update(preference_loss=pref, nll=nll_chosen)
    return loss, metrics


def log_odds(mean_logps_B):
    """log(P / (1 - P)) for P = exp(mean log-prob) < 1, computed stably."""
    return mean_logps_B - jnp.log(-jnp.expm1(jnp.minimum(mean_logps_B, -1e-7)))


def orpo_objective(mean_pi_c_B, mean_pi_r_B, nll_chosen, lam: float):
    check_same_shape("orpo_objective", pi_chosen=mean_pi_c_B, pi_rejected=mean_pi_r_B)
    ratio = log_odds(mean_pi_c_B) - log_odds(mean_pi_r_B)
    odds_loss = -jnp.mean(jax.nn.log_sigmoid(ratio))
    loss = nll_chosen + lam * odds_loss
    metrics = _pair_metrics(mean_pi_c_B, mean_pi_r_B, loss)
    metrics.update(odds_ratio_loss=odds_loss, log_odds_ratio=jnp.mean(ratio), nll=nll_chosen)
    return loss, metrics


def simpo_objective(mean_pi_c_B, mean_pi_r_B, beta: float, gamma: float):
    check_same_shape("simpo_objective", pi_chosen=mean_pi_c_B, pi_rejected=mean_pi_r_B)
    loss = -jnp.mean(jax.nn.log_sigmoid(beta * (mean_pi_c_B - mean_pi_r_B) - gamma))
    return loss, _pair_metrics(beta * mean_pi_c_B, beta * mean_pi_r_B, loss)


def kto_reference_point(kl_pi_B, kl_ref_B):
    """z0 = max(0, mean(log pi(y'|x) - log pi_ref(y'|x))) on mismatched pairs, no gradient."""
    return jax.lax.stop_gradient(jnp.maximum(jnp.mean(kl_pi_B - kl_ref_B), 0.0))


def kto_objective(pi_B, ref_B, desirable_B, z0, beta: float, w_desirable: float = 1.0, w_undesirable: float = 1.0):
    check_same_shape("kto_objective", pi=pi_B, ref=ref_B, desirable=desirable_B)
    rho = pi_B - ref_B
    good = desirable_B.astype(bool)
    losses = jnp.where(
        good,
        w_desirable * (1 - jax.nn.sigmoid(beta * (rho - z0))),
        w_undesirable * (1 - jax.nn.sigmoid(beta * (z0 - rho))),
    )
    loss = jnp.mean(losses)
    n_good = jnp.maximum(good.sum(), 1)
    n_bad = jnp.maximum((~good).sum(), 1)
    metrics = {
        "loss": loss,
        "kl_reference_point": z0,
        "rewards_desirable": jnp.sum(jnp.where(good, beta * rho, 0.0)) / n_good,
        "rewards_undesirable": jnp.sum(jnp.where(good, 0.0, beta * rho)) / n_bad,
    }
    return loss, metrics


# ----------------------------------------------------------------------------- with a model


def completion_logps(model, params, tokens_BxT, mask_BxT, completion_mask_BxT):
    """Per row of the completion: (sum_t log pi, mean_t log pi, number of tokens), each [B]."""
    check_nonempty_rows("preference batch", "completion_mask", completion_mask_BxT)
    logps = model.token_logps(params, tokens_BxT, mask_BxT)
    total = masked_sum(logps, completion_mask_BxT, axis=-1)
    n = jnp.maximum(jnp.sum(completion_mask_BxT.astype(jnp.float32), axis=-1), 1.0)
    return total, total / n, n


def preference_loss(params, batch: PreferenceBatch, cfg: PreferenceConfig, model):
    """Any paired objective of `cfg`; chosen and rejected share one forward."""
    check_same_shape("preference batch", chosen=batch.chosen_tokens_BxT, rejected=batch.rejected_tokens_BxT)
    cat = lambda a, b: jnp.concatenate([a, b])  # noqa: E731
    total, mean, n = completion_logps(
        model,
        params,
        cat(batch.chosen_tokens_BxT, batch.rejected_tokens_BxT),
        cat(batch.chosen_mask_BxT, batch.rejected_mask_BxT),
        cat(batch.chosen_completion_mask_BxT, batch.rejected_completion_mask_BxT),
    )
    (pi_c, pi_r), (mean_c, mean_r), (n_c, n_r) = jnp.split(total, 2), jnp.split(mean, 2), jnp.split(n, 2)
    x = PairLogps(pi_c, pi_r, mean_c, mean_r, n_c, n_r, batch.ref_chosen_logps_B, batch.ref_rejected_logps_B,
                  -jnp.sum(pi_c) / jnp.sum(n_c))  # fmt: skip
    objective = OBJECTIVES[cfg.objective]
    if not objective.paired:
        raise ValueError(f"preference_loss: objective {cfg.objective!r} takes unpaired data (use kto_loss)")
    return objective.fn(x, cfg)


@register_objective("dpo")
def _dpo(x: PairLogps, cfg: PreferenceConfig):
    """-log sigma(beta h), h = the chosen-minus-rejected log-ratio to pi_ref (Rafailov et al. 2023; cDPO smoothing)."""
    return dpo_objective(x.pi_c, x.pi_r, x.ref_c, x.ref_r, cfg.beta, cfg.label_smoothing)


@register_objective("ipo")
def _ipo(x: PairLogps, cfg: PreferenceConfig):
    """(h - 1 / (2 beta))^2 (Azar et al. 2023; on token means with preference.length_normalise)."""
    if cfg.length_normalise:
        return ipo_objective(x.mean_c, x.mean_r, x.ref_c / x.n_c, x.ref_r / x.n_r, cfg.beta)
    return ipo_objective(x.pi_c, x.pi_r, x.ref_c, x.ref_r, cfg.beta)


@register_objective("cpo", reference=False)
def _cpo(x: PairLogps, cfg: PreferenceConfig):
    """-log sigma(beta (log pi(y+) - log pi(y-))) + alpha NLL(y+), no reference (Xu et al. 2024)."""
    return cpo_objective(x.pi_c, x.pi_r, x.nll_chosen, cfg.beta, cfg.cpo_alpha)


@register_objective("orpo", reference=False)
def _orpo(x: PairLogps, cfg: PreferenceConfig):
    """NLL(y+) - lambda log sigma(log odds(y+) - log odds(y-)), no reference (Hong et al. 2024)."""
    return orpo_objective(x.mean_c, x.mean_r, x.nll_chosen, cfg.orpo_lambda)


@register_objective("simpo", reference=False)
def _simpo(x: PairLogps, cfg: PreferenceConfig):
    """-log sigma(beta (mean log pi(y+) - mean log pi(y-)) - gamma), no reference (Meng et al. 2024)."""
    return simpo_objective(x.mean_c, x.mean_r, cfg.beta, cfg.simpo_gamma)


@register_objective("kto", paired=False)
def kto_loss(params, batch: KTOBatch, cfg: PreferenceConfig, model):
    """Unpaired: w (1 - sigma(beta (rho - z0))) for desirable y, rho = log pi / pi_ref (Ethayarajh et al. 2024)."""
    pi, _, _ = completion_logps(model, params, batch.tokens_BxT, batch.mask_BxT, batch.completion_mask_BxT)
    kl_pi, _, _ = completion_logps(model, params, batch.kl_tokens_BxT, batch.kl_mask_BxT, batch.kl_completion_mask_BxT)
    z0 = kto_reference_point(kl_pi, batch.kl_ref_logps_B)
    return kto_objective(
        pi, batch.ref_logps_B, batch.desirable_B, z0, cfg.beta, cfg.kto_desirable_weight, cfg.kto_undesirable_weight
    )


REFERENCE_FREE = tuple(name for name, o in OBJECTIVES.items() if not o.reference)
