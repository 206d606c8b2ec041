"""Shared test helpers."""

import pytest

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import init_model

TINY_LLAMA = ModelConfig(family="llama", vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32)


_MODELS = {}


def tiny_model(head: str = "lm", seed: int = 0):
    key = (head, seed)
    if key not in _MODELS:
        _MODELS[key] = init_model(TINY_LLAMA, head=head, seed=seed)
    return _MODELS[key]


def first_fast(values):
    """Parameters of which the first runs in the fast tier (`-m "not slow"`) and the rest
    in the full suite only: the same property, checked once quickly and then everywhere."""
    values = list(values)
    slow = [pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=pytest.mark.slow) for v in values[1:]]
    return values[:1] + slow
