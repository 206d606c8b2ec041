"""A full-size dry run: one iteration of a config's loop traced with `jax.eval_shape`, with
no parameters allocated and no data read. It catches, before a pod is booked, what would
otherwise fail after the model loads: a prompt + completion longer than the model's
positions, batches that do not split into minibatches or accumulation steps, a loss that
does not trace at the real shapes; and it reports what the train state will weigh.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.batches import KTOBatch, PreferenceBatch, Scored, SFTBatch
from rlhf_jax.eval.verifiers import PRM_MAX_STEPS
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops import online
from rlhf_jax.losses.preference import OBJECTIVES, kto_loss, preference_loss
from rlhf_jax.losses.reward import orm_loss, pair_loss, prm_loss
from rlhf_jax.losses.sft import sft_loss
from rlhf_jax.models import lora
from rlhf_jax.models.hf import read_config
from rlhf_jax.models.transformer import abstract_model
from rlhf_jax.rollout import BaselineState
from rlhf_jax.sampling import Sampler, SamplingConfig
from rlhf_jax.train_step import TrainState, abstract_opt_state, make_optimizer, make_schedule, train_step_fn
from rlhf_jax.workdir import checkpoint_dir


def _sds(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _sequences(B: int, T: int):
    return _sds((B, T), jnp.int32), _sds((B, T), jnp.int32), _sds((B, T), jnp.int32)


def _state(params, optimizer) -> TrainState:
    opt_state = abstract_opt_state(optimizer, params)
    return TrainState(step=_sds((), jnp.int32), params=params, opt_state=opt_state)


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def run_model_config(cfg: ExperimentConfig, vocab_size: int | None):
    """The model the run builds: model.init_from's config.json where that checkpoint exists
    (a pipeline's later stages start from ones not written yet: their model.* sizes), else
    its preset or sizes; with the run's remat, attention, layout and LoRA settings."""
    m = cfg.model
    if m.init_from and not m.preset:
        run = dict(**m.how_to_run, scan_layers=m.scan_layers, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
                   lora_targets=m.lora_targets)  # fmt: skip
        try:
            return dataclasses.replace(read_config(checkpoint_dir(m.init_from)), **run)
        except FileNotFoundError:
            pass
    return m.model_config(vocab_size or m.vocab_size or 32000)


def abstract_iteration(cfg: ExperimentConfig, vocab_size: int | None = None) -> dict:
    """Trace one iteration of cfg's loop at full size. Returns the parameter count (policy
    and critic; "trainable": those the optimiser updates, fewer with LoRA), the train
    state's bytes and the traced outputs (ShapeDtypeStructs). `vocab_size` is the
    tokenizer's, for a model trained from scratch (a preset fixes its own).

    Raises ValueError naming the config field when the shapes cannot work."""
    model_cfg = run_model_config(cfg, vocab_size)
    P, C = cfg.data.max_prompt_len, cfg.data.max_completion_len
    T = P + C
    if T > model_cfg.max_positions:
        raise ValueError(
            f"data.max_prompt_len + data.max_completion_len = {T} exceeds the model's "
            f"{model_cfg.max_positions} positions"
        )
    kind = cfg.train.kind
    head = "scalar" if kind in ("reward", "orm") else "lm"  # a PRM is an LM reading label tokens
    model, params, _ = abstract_model(model_cfg, head)
    optimizer = make_optimizer(cfg.optim)
    schedule = make_schedule(cfg.optim)
    out: dict = {}

    if kind == "rl":
        rl = cfg.rl  # the RL loop's own compiled pieces at abstract shapes
        critic = None
        state_params = params
        if rl.estimator.critic:
            critic, value_params, _ = abstract_model(model_cfg, "scalar")
            state_params = {"policy": params, "value": value_params}
        sampler = Sampler(
            model,
            SamplingConfig(max_new_tokens=C, temperature=rl.temperature, n_samples=rl.k, max_cache_len=T),
        )
        key = jax.eval_shape(lambda: jax.random.key(0))
        prompts = _sds((rl.n_prompts * rl.draws, P), jnp.int32)  # dynamic sampling draws them all at once
        samples = jax.eval_shape(sampler._fn, params, prompts, prompts, key)

        def scored(n):
            return Scored(*_sequences(n, T), _sds((n, C)), _sds((n,)), _sds((n,), jnp.bool_))

        # one greedy completion per prompt for an estimator with a greedy rollout (ReMax)
        greedy = scored(rl.n_prompts) if rl.estimator.greedy_rollout else None
        experience = online.make_experience(rl, rl.k, model, critic, C)
        baseline = jax.eval_shape(BaselineState.init)
        rollout, _, _ = jax.eval_shape(
            experience, state_params, params, scored(rl.rollout_batch), greedy, _sds(()), baseline, key
        )
        step = train_step_fn(online.make_loss(rl, model, critic, C), optimizer, cfg.optim.accum_steps, schedule)
        update = online.make_update(step, None)
        order = _sds((rl.steps_per_iteration, rl.minibatch), jnp.int32)
        state = _state(state_params, optimizer)
        new_state, metrics = jax.eval_shape(update, state, rollout, order)
        out.update(samples=samples, rollout=rollout, metrics=metrics)
    else:
        B = cfg.train.batch_size
        if kind == "sft":
            loss_fn = functools.partial(sft_loss, model=model, prompt_weight=cfg.train.prompt_loss_weight)
            batch = SFTBatch(*_sequences(B, T))
        elif kind == "reward":
            loss_fn = functools.partial(pair_loss, model=model)
            batch = PreferenceBatch(*_sequences(B, T), *_sequences(B, T), _sds((B,)), _sds((B,)))
        elif kind == "preference":
            pcfg = cfg.preference.loss_config()
            if not OBJECTIVES[pcfg.objective].paired:  # KTO: unpaired completions
                loss_fn = functools.partial(kto_loss, cfg=pcfg, model=model)
                batch = KTOBatch(
                    *_sequences(2 * B, T), _sds((2 * B,)), _sds((2 * B,)), *_sequences(2 * B, T), _sds((2 * B,))
                )
            else:
                loss_fn = functools.partial(preference_loss, cfg=pcfg, model=model)
                batch = PreferenceBatch(*_sequences(B, T), *_sequences(B, T), _sds((B,)), _sds((B,)))
        elif kind == "orm":
            tokens, mask, _ = _sequences(B, T)
            batch = {"tokens_BxT": tokens, "mask_BxT": mask, "labels_B": _sds((B,), jnp.int32)}

            def loss_fn(params, b):
                return orm_loss(params, b["tokens_BxT"], b["mask_BxT"], b["labels_B"], model)
        elif kind == "prm":
            tokens, mask, _ = _sequences(B, T)
            steps = _sds((B, PRM_MAX_STEPS), jnp.int32)
            batch = {"tokens_BxT": tokens, "mask_BxT": mask, "step_positions_BxS": steps, "step_labels_BxS": steps}

            def loss_fn(params, b):  # any three token ids: the tokenizer's label tokens have these shapes
                return prm_loss(params, b["tokens_BxT"], b["mask_BxT"], b["step_positions_BxS"], b["step_labels_BxS"],
                                (0, 1, 2), model)  # fmt: skip
        else:
            raise ValueError(f"train.kind={kind!r}: no full-size dry run")
        if B % cfg.optim.accum_steps:
            raise ValueError(f"train.batch_size={B} is not divisible by optim.accum_steps={cfg.optim.accum_steps}")
        state = _state(params, optimizer)
        new_state, metrics = jax.eval_shape(
            train_step_fn(loss_fn, optimizer, cfg.optim.accum_steps, schedule), state, batch
        )
        out.update(metrics=metrics)
    out["params"] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(new_state.params))
    out["trainable"] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(lora.partition(new_state.params)[0]))
    out["state_bytes"] = _nbytes(new_state)
    return out
