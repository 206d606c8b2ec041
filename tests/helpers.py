"""Shared test helpers."""

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import init_model

TINY_LLAMA = ModelConfig(family="llama", vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32)


_MODELS = {}


def tiny_model(head: str = "lm", seed: int = 0):
    key = (head, seed)
    if key not in _MODELS:
        _MODELS[key] = init_model(TINY_LLAMA, head=head, seed=seed)
    return _MODELS[key]
