"""LoRA (Hu et al. 2021): low-rank adapters on a frozen base model.

An adapted projection computes y = x W + (alpha / r) (x A) B with A [*in, r], B [r, *out]
(`layers.Proj`; `model.lora_rank`, `lora_alpha`, `lora_targets`). B starts at zero, so a
model with fresh adapters computes exactly its base.

What trains: in a model whose params hold adapters, only `lora_a`, `lora_b` and a scalar
head's `score` (a reward model or critic needs its new head); the embeddings, norms, kernels
and LM head are frozen. A model without adapters trains whole, so a params pytree of
several models ({"policy": ..., "value": ...}) mixes both. `partition` splits the leaves;
the train step differentiates, the optimiser keeps state for, and jit donates only the
trainable part (`train_step.jit_donating`), so the frozen base is one set of arrays shared
by the policy, its KL reference (`without_adapters`: B = 0) and a LoRA critic.

An HF export merges: W' = W + (alpha / r) A B (`merge`), then the adapters are dropped.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rlhf_jax.models.transformer import Model, init_model

ADAPTERS = ("lora_a", "lora_b")
TRAINED_WITH_ADAPTERS = (*ADAPTERS, "score")  # the leaves of an adapted model that train


def _is_model(tree) -> bool:
    return isinstance(tree, dict) and "layers" in tree and "embed" in tree


def has_adapters(tree) -> bool:
    """Whether any dict in the pytree has a `lora_a` key."""
    if not isinstance(tree, dict):
        return False
    return "lora_a" in tree or any(has_adapters(v) for v in tree.values())


def partition(params) -> tuple[dict, dict | None]:
    """(trainable, frozen): two nested dicts holding the params' leaves between them (the
    same arrays), each with only its own keys; frozen is None when no model in `params` has
    adapters (then trainable is `params` itself)."""
    if not has_adapters(params):
        return params, None

    def walk(tree, frozen: bool):
        if not isinstance(tree, dict):
            return (None, tree) if frozen else (tree, None)
        frozen = frozen or (_is_model(tree) and has_adapters(tree))
        train, keep = {}, {}
        for key, value in tree.items():
            a, b = walk(value, frozen and key not in TRAINED_WITH_ADAPTERS)
            if a is not None:
                train[key] = a
            if b is not None:
                keep[key] = b
        return train or None, keep or None

    train, keep = walk(params, False)
    return train or {}, keep or {}


def combine(trainable, frozen):
    """The inverse of `partition`: one nested dict with the leaves of both."""
    if frozen is None:
        return trainable
    if not isinstance(trainable, dict):
        return trainable
    out = dict(frozen)
    for key, value in trainable.items():
        out[key] = combine(value, frozen[key]) if key in frozen else value
    return out


def add_adapters(model: Model, params, rank: int, alpha: float, targets: tuple[str, ...], seed: int = 0, mesh=None):
    """(model, params) with fresh rank-`rank` adapters on `targets` around the same base
    arrays (none copied); rank 0 returns them unchanged. Adapters are drawn like any
    parameter (`init_model`: by seed and path), so they do not depend on the mesh."""
    if not rank:
        return model, params
    if has_adapters(params):
        raise ValueError("add_adapters: the model already has adapters")
    cfg = dataclasses.replace(model.cfg, lora_rank=rank, lora_alpha=alpha, lora_targets=tuple(targets))
    return init_model(cfg, model.head, seed, mesh, existing=params)


def without_adapters(params):
    """The base model's function with the adapted model's params: every adapter replaced by
    zeros placed like it (A B = 0; the trained adapters are donated with the train state, so
    not shared); every other leaf is the same array, not a copy."""

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        return {k: (_zeros_like(v) if k in ADAPTERS else walk(v)) for k, v in tree.items()}

    return walk(params)


def base_leaves(params):
    """The params without their adapters (the same arrays)."""
    if not isinstance(params, dict):
        return params
    return {k: base_leaves(v) for k, v in params.items() if k not in ADAPTERS}


def _zeros_like(x):
    sharding = getattr(x, "sharding", None)
    zeros = np.zeros(x.shape, x.dtype)
    return jax.device_put(zeros, sharding) if sharding is not None else zeros


def merge(params, scale: float):
    """Host params (numpy, unrolled layers) with every adapted kernel replaced by
    W + scale A B and the adapters dropped: the base architecture's params."""

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        if "lora_a" in tree:
            a, b = np.asarray(tree["lora_a"], np.float32), np.asarray(tree["lora_b"], np.float32)
            merged = {k: v for k, v in tree.items() if k not in ADAPTERS}
            merged["kernel"] = np.asarray(tree["kernel"], np.float32) + scale * np.tensordot(a, b, axes=1)
            return merged
        return {k: walk(v) for k, v in tree.items()}

    return walk(params)


def base_config(cfg):
    """The model config without adapters (what an export is)."""
    return dataclasses.replace(cfg, lora_rank=0)
