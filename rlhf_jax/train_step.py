"""The optimiser and the jitted train step: `make_train_step(loss_fn, optimizer)`.

The train state is a plain pytree (step, params, optimiser state) that jit donates and
Orbax saves. With LoRA adapters (`models/lora.py`) only the trainable leaves get gradients
and optimiser state, and only they are donated: the frozen base is shared with the
reference. `loss_fn(params, batch) -> (loss, metrics)` is any loss of `losses/` with
its config and model bound (functools.partial). Gradient accumulation splits the batch
into `accum_steps` micro-batches scanned in one program: the update equals one step on
the whole batch for losses that are means over rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlhf_jax.models import lora

SCHEDULES = ("constant", "cosine", "linear")


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then a constant, cosine or linear decay to
    `end_lr_ratio * learning_rate`, and global-norm gradient clipping (0 = none)."""

    learning_rate: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 1000
    end_lr_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    accum_steps: int = 1

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r}: expected one of {SCHEDULES}")
        if self.learning_rate <= 0:
            raise ValueError(f"optim.learning_rate={self.learning_rate}: must be positive")
        for name in ("warmup_steps", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"optim.{name}={getattr(self, name)}: must be >= 0")
        if self.accum_steps < 1:
            raise ValueError(f"optim.accum_steps={self.accum_steps}: must be >= 1")
        if self.total_steps < 1 or self.warmup_steps > self.total_steps:
            raise ValueError(
                f"optim.total_steps={self.total_steps}: must be >= 1 and >= warmup_steps={self.warmup_steps}"
            )


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_ratio
    decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_ratio)
    else:
        after = optax.linear_schedule(peak, end, decay_steps)
    if cfg.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm else []
    parts.append(optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """The state of step 0. On a mesh, the optimiser state is created directly in its
    shardings: every per-parameter leaf (Adam's moments) sharded like its parameter,
    the rest (counts) replicated over the same mesh. `jax.jit(optimizer.init)` alone would
    not do it: init reads only shapes, so jit drops its inputs and puts the whole state on
    one device, to be copied to every chip."""
    step = jnp.zeros((), jnp.int32)
    trainable = lora.partition(params)[0]  # with LoRA: the adapters (and a score head) only
    sharding = jax.tree.leaves(params)[0].sharding
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return TrainState(step=step, params=params, opt_state=jax.jit(optimizer.init)(trainable))
    replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    out_shardings = optax_state_shardings(optimizer, trainable, replicated)
    opt_state = jax.jit(optimizer.init, out_shardings=out_shardings)(trainable)
    return TrainState(step=jax.device_put(step, replicated), params=params, opt_state=opt_state)


def abstract_opt_state(optimizer: optax.GradientTransformation, params):
    """The optimiser state's ShapeDtypeStructs for params (of the trainable leaves only)."""
    return jax.eval_shape(optimizer.init, lora.partition(params)[0])


def optax_state_shardings(optimizer: optax.GradientTransformation, params, other):
    """The shardings of optimizer.init(params): each parameter's own for the leaves that
    mirror it, `other` for the rest."""
    abstract = jax.eval_shape(optimizer.init, params)
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    return optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        abstract,
        param_shardings,
        transform_non_params=lambda _: other,
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )


def state_shardings(state: TrainState):
    """The shardings a state lives in (to pin a train step's in and out shardings)."""
    return jax.tree.map(lambda x: x.sharding, state)


def _grads(loss_fn, params, batch, accum_steps: int):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        (_, metrics), grads = grad_fn(params, batch)
        return grads, metrics

    def split(x):
        if x.shape[0] % accum_steps:
            raise ValueError(f"gradient accumulation: batch of {x.shape[0]} rows not divisible by {accum_steps}")
        return x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])

    micro = jax.tree.map(split, batch)

    def body(acc, mb):
        (_, metrics), grads = grad_fn(params, mb)
        return jax.tree.map(jnp.add, acc, (grads, metrics)), None

    zero_grads = jax.tree.map(jnp.zeros_like, params)
    first = jax.tree.map(lambda x: x[0], micro)
    zero_metrics = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(grad_fn, params, first)[0][1])
    (grads, metrics), _ = jax.lax.scan(body, (zero_grads, zero_metrics), micro)
    return jax.tree.map(lambda x: x / accum_steps, (grads, metrics))


def all_finite(*trees) -> jax.Array:
    """1.0 if every floating-point value of the trees is finite, else 0.0 (a float, so that
    it averages and scans like the other metrics; 1.0 exactly only if all steps were)."""
    leaves = [x for x in jax.tree.leaves(trees) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)
    return ok.astype(jnp.float32)


def train_step_fn(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    accum_steps: int = 1,
    schedule: optax.Schedule | None = None,
):
    """The un-jitted `step(state, batch) -> (state, metrics)` (to compose, e.g. scanned
    over the minibatches of a rollout). metrics["finite"]: `all_finite` of the loss, the
    new parameters and the new optimiser state (the loop saves no state that is not)."""

    def step(state: TrainState, batch):
        trainable, frozen = lora.partition(state.params)
        loss = loss_fn if frozen is None else (lambda t, b: loss_fn(lora.combine(t, frozen), b))
        grads, metrics = _grads(loss, trainable, batch, accum_steps)
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        params = lora.combine(trainable, frozen)
        metrics = dict(  # frozen leaves do not change: their finiteness was checked when loaded
            metrics, grad_norm=optax.tree.norm(grads), finite=all_finite(metrics.get("loss"), trainable, opt_state)
        )
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_train_step(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    accum_steps: int = 1,
    schedule: optax.Schedule | None = None,
    state_shardings=None,
    batch_shardings=None,
):
    """A jitted `step(state, batch) -> (state, metrics)` that donates the state (its
    trainable part: `jit_donating`); with shardings, the state keeps them (in and out) and
    the batch is laid out as given."""
    step = train_step_fn(loss_fn, optimizer, accum_steps, schedule)
    arg_shardings = None if batch_shardings is None and state_shardings is None else (batch_shardings,)
    return jit_donating(step, state_shardings, arg_shardings)


def keep_frozen(restored: TrainState, initial: TrainState) -> TrainState:
    """`restored` with the frozen (LoRA base) leaves of `initial`: equal values, since no
    step changes them, and the arrays other holders (the reference) share."""
    trainable, _ = lora.partition(restored.params)
    _, frozen = lora.partition(initial.params)
    return restored if frozen is None else restored.replace(params=lora.combine(trainable, frozen))


def _split_state(state: TrainState):
    trainable, frozen = lora.partition(state.params)
    return state.replace(params=trainable), frozen


def jit_donating(fn: Callable, state_shardings=None, arg_shardings: tuple | None = None) -> Callable:
    """jit `fn(state, *args) -> (state, out)` with the state donated except its frozen
    parameters (a LoRA base, which no step changes): they go in as an argument that is not
    donated, so the reference and a critic that share those arrays keep them. Without
    adapters this is `jax.jit(fn, donate_argnums=0)`. With `state_shardings` the state
    keeps them in and out; `arg_shardings` lays out the other arguments."""

    def inner(live, frozen, *args):
        state, out = fn(live.replace(params=lora.combine(live.params, frozen)), *args)
        return _split_state(state)[0], out

    if state_shardings is None and arg_shardings is None:
        jitted = jax.jit(inner, donate_argnums=0)
    else:
        live_sh, frozen_sh = _split_state(state_shardings) if state_shardings is not None else (None, None)
        jitted = jax.jit(
            inner,
            in_shardings=(live_sh, frozen_sh, *(arg_shardings or ())),
            out_shardings=(live_sh, None),
            donate_argnums=0,
        )

    def call(state: TrainState, *args):
        live, frozen = _split_state(state)
        live, out = jitted(live, frozen, *args)
        return live.replace(params=lora.combine(live.params, frozen)), out

    call.lower = lambda state, *args: jitted.lower(*_split_state(state), *args)  # ahead of time (`aot.py`)
    return call
