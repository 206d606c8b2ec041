"""Published model sizes, for experiment modules and shape checks (`jax.eval_shape`).

Parameter counts (embeddings and head included) are the published ones, checked in
tests/test_param_counts.py.
"""

from rlhf_jax.models.config import ModelConfig


def _pythia(vocab: int, d: int, layers: int, heads: int) -> ModelConfig:
    return ModelConfig(
        family="gpt_neox",
        vocab_size=vocab,
        d_model=d,
        n_layers=layers,
        n_heads=heads,
        d_ff=4 * d,
        max_positions=2048,
        rotary_pct=0.25,
    )


PRESETS: dict[str, ModelConfig] = {
    "gpt2": ModelConfig(
        family="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_positions=1024
    ),
    "pythia-160m": _pythia(50304, 768, 12, 12),
    "pythia-410m": _pythia(50304, 1024, 24, 16),
    "pythia-1b": _pythia(50304, 2048, 16, 8),
    "pythia-1.4b": _pythia(50304, 2048, 24, 16),
    "pythia-2.8b": _pythia(50304, 2560, 32, 32),
    "pythia-6.9b": _pythia(50432, 4096, 32, 32),
    "llama-7b": ModelConfig(
        family="llama", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008, max_positions=4096
    ),
    "qwen2-0.5b": ModelConfig(
        family="qwen2",
        vocab_size=151936,
        d_model=896,
        n_layers=24,
        n_heads=14,
        n_kv_heads=2,
        d_ff=4864,
        max_positions=32768,
        tie_embeddings=True,
        rope_theta=1000000.0,
    ),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
