"""Model configuration: one decoder-only transformer, its family chosen by `family`.

The family fixes the architecture choices that differ between GPT-2, GPT-NeoX (Pythia)
and Llama / Qwen2; the sizes are free. `from_hf_config` / `to_hf_config` translate a
Hugging Face `config.json` dict in both directions (old and new RoPE keys).
"""

from __future__ import annotations

import dataclasses
from typing import Any

FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")
ACTIVATIONS = ("gelu_new", "gelu", "silu", "relu")
ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16")
# Rematerialisation of each block in the backward pass (jax.checkpoint policies): "none"
# keeps every activation; "full" keeps only each block's input and recomputes the rest;
# "dots" keeps the matmul outputs; "dots_no_batch" those without batch dimensions.
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
# Self-attention of training forwards and prefills (`models/attention.py`): the einsum
# reference, XLA's fused op, cuDNN's or Pallas splash kernel, or by platform.
ATTENTION = ("einsum", "xla", "cudnn", "splash", "auto")
# Projections LoRA can adapt (`models/lora.py`): attention q, k, v, o; MLP gate, up, down.
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")

# Hugging Face activation names -> ours (gelu_new is the tanh approximation).
_HF_ACTIVATIONS = {
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu_fast": "gelu_new",
    "gelu": "gelu",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and family of a decoder-only transformer.

    family: gpt2 (learned positions, LayerNorm, GELU MLP, tied embeddings),
      gpt_neox (parallel residual, partial rotary, untied head), llama / qwen2
      (RMSNorm, SwiGLU, RoPE, grouped-query attention; qwen2 adds q/k/v biases).
    """

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    n_kv_heads: int = 0  # 0 = n_heads (multi-head attention)
    head_dim: int = 0  # 0 = d_model // n_heads
    max_positions: int = 2048
    norm_eps: float = 1e-5
    activation: str = ""  # "" = the family's default
    tie_embeddings: bool | None = None  # None = the family's default
    parallel_residual: bool | None = None  # gpt_neox only
    qkv_bias: bool | None = None  # None = the family's default
    o_bias: bool | None = None  # attention output projection bias
    mlp_bias: bool | None = None
    rotary_pct: float = 1.0
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    dtype: str = "float32"  # compute dtype; parameters are always float32
    remat: str = "none"  # REMAT_POLICIES; how to run, not what the model is (not in config.json)
    scan_layers: bool = False  # one scanned block over stacked layer params (compile time flat in depth)
    attention: str = "einsum"  # ATTENTION; like remat, how to run (not in config.json)
    # LoRA (Hu et al. 2021, `models/lora.py`): rank-r adapters on `lora_targets`, y = x W + (alpha / r) x A B;
    # 0 = none. Like remat, not part of config.json: an HF export merges the adapters into W.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o")

    def __post_init__(self):
        _check(self.family in FAMILIES, "family", self.family, f"one of {FAMILIES}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_positions"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        defaults = _FAMILY_DEFAULTS[self.family]
        for name, value in defaults.items():
            if getattr(self, name) is None or getattr(self, name) == "":
                object.__setattr__(self, name, value)
        if self.n_kv_heads == 0:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim == 0:
            _check(
                self.d_model % self.n_heads == 0,
                "d_model",
                self.d_model,
                f"divisible by n_heads={self.n_heads} (or set head_dim)",
            )
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        _check(
            self.n_heads % self.n_kv_heads == 0,
            "n_kv_heads",
            self.n_kv_heads,
            f"a divisor of n_heads={self.n_heads}",
        )
        _check(self.activation in ACTIVATIONS, "activation", self.activation, f"one of {ACTIVATIONS}")
        _check(0.0 < self.rotary_pct <= 1.0, "rotary_pct", self.rotary_pct, "in (0, 1]")
        _check(self.rope_type in ROPE_TYPES, "rope_type", self.rope_type, f"one of {ROPE_TYPES}")
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {DTYPES}")
        _check(self.remat in REMAT_POLICIES, "remat", self.remat, f"one of {REMAT_POLICIES}")
        _check(self.attention in ATTENTION, "attention", self.attention, f"one of {ATTENTION}")
        _check(self.norm_eps > 0, "norm_eps", self.norm_eps, "positive")
        _check(self.lora_rank >= 0, "lora_rank", self.lora_rank, "an integer >= 0 (0 = no adapters)")
        _check(self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "positive")
        _check(
            bool(self.lora_targets) and set(self.lora_targets) <= set(LORA_TARGETS),
            "lora_targets",
            self.lora_targets,
            f"a non-empty subset of {LORA_TARGETS} (gate: gated MLPs only, else no projection)",
        )
        if self.uses_rope:
            _check(self.rotary_dim % 2 == 0, "rotary_pct", self.rotary_pct, "giving an even rotary dim")

    @property
    def norm(self) -> str:
        return "rmsnorm" if self.family in ("llama", "qwen2") else "layernorm"

    @property
    def gated_mlp(self) -> bool:
        return self.family in ("llama", "qwen2")

    @property
    def uses_rope(self) -> bool:
        return self.family != "gpt2"

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    @property
    def norm_bias(self) -> bool:
        return self.norm == "layernorm"


_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": dict(
        activation="gelu_new", tie_embeddings=True, parallel_residual=False, qkv_bias=True, o_bias=True, mlp_bias=True
    ),
    "gpt_neox": dict(
        activation="gelu",
        tie_embeddings=False,
        parallel_residual=True,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
    ),
    "llama": dict(
        activation="silu",
        tie_embeddings=False,
        parallel_residual=False,
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
    ),
    "qwen2": dict(
        activation="silu",
        tie_embeddings=False,
        parallel_residual=False,
        qkv_bias=True,
        o_bias=False,
        mlp_bias=False,
    ),
}


def _check(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"ModelConfig.{field}={value!r}: expected {expected}")


# ----------------------------------------------------------------------------- HF config


def from_hf_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A ModelConfig from a Hugging Face `config.json` dict; `source` names it in errors."""
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{source}: unknown model_type {model_type!r}; supported: {FAMILIES}")

    def need(*keys: str) -> Any:
        for key in keys:
            if hf.get(key) is not None:
                return hf[key]
        raise ValueError(f"{source}: missing field {keys[0]!r} for model_type {model_type!r}")

    act_name = hf.get("activation_function") or hf.get("hidden_act") or ""
    if act_name and act_name not in _HF_ACTIVATIONS:
        raise ValueError(f"{source}: unsupported activation {act_name!r}")
    activation = _HF_ACTIVATIONS.get(act_name, "")
    if model_type == "gpt2":
        if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
            raise ValueError(f"{source}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
        d_model = need("n_embd")
        return ModelConfig(
            family="gpt2",
            vocab_size=need("vocab_size"),
            d_model=d_model,
            n_layers=need("n_layer"),
            n_heads=need("n_head"),
            d_ff=hf.get("n_inner") or 4 * d_model,
            max_positions=need("n_positions"),
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=activation,
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    rope = _hf_rope(hf, source)
    common = dict(
        vocab_size=need("vocab_size"),
        d_model=need("hidden_size"),
        n_layers=need("num_hidden_layers"),
        n_heads=need("num_attention_heads"),
        d_ff=need("intermediate_size"),
        max_positions=hf.get("max_position_embeddings", 2048),
        activation=activation,
        **rope,
    )
    if model_type == "gpt_neox":
        return ModelConfig(
            family="gpt_neox",
            norm_eps=hf.get("layer_norm_eps", 1e-5),
            tie_embeddings=hf.get("tie_word_embeddings", False),
            parallel_residual=hf.get("use_parallel_residual", True),
            qkv_bias=hf.get("attention_bias", True),
            o_bias=hf.get("attention_bias", True),
            **common,
        )
    if hf.get("use_sliding_window"):
        raise ValueError(f"{source}: sliding-window attention is not supported")
    attention_bias = hf.get("attention_bias", False)
    return ModelConfig(
        family=model_type,
        n_kv_heads=hf.get("num_key_value_heads") or 0,
        head_dim=hf.get("head_dim") or 0,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        o_bias=attention_bias and model_type == "llama",
        mlp_bias=bool(hf.get("mlp_bias", False)),
        **common,
    )


def _hf_rope(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """RoPE settings from either `rope_parameters` (transformers >= 5) or the old keys."""
    params = dict(hf.get("rope_parameters") or {})
    old_scaling = hf.get("rope_scaling") or {}
    params = {**old_scaling, **params}
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    pct = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"{source}: unsupported rope_type {rope_type!r}; supported: {ROPE_TYPES}")
    out = dict(rope_theta=float(theta), rotary_pct=float(pct), rope_type=rope_type)
    if rope_type != "default":
        out["rope_factor"] = float(params["factor"])
    if rope_type == "llama3":
        out["rope_low_freq_factor"] = float(params["low_freq_factor"])
        out["rope_high_freq_factor"] = float(params["high_freq_factor"])
        out["rope_original_max_positions"] = int(params["original_max_position_embeddings"])
    return out


def to_hf_config(cfg: ModelConfig, head: str = "lm") -> dict[str, Any]:
    """The `config.json` dict that `transformers` loads as the same architecture."""
    arch = {
        "gpt2": ("GPT2LMHeadModel", "GPT2ForSequenceClassification"),
        "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification"),
        "llama": ("LlamaForCausalLM", "LlamaForSequenceClassification"),
        "qwen2": ("Qwen2ForCausalLM", "Qwen2ForSequenceClassification"),
    }[cfg.family][0 if head == "lm" else 1]
    hf_act = {"gelu_new": "gelu_new", "gelu": "gelu", "silu": "silu", "relu": "relu"}[cfg.activation]
    out: dict[str, Any] = {
        "model_type": cfg.family,
        "architectures": [arch],
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "dtype": "float32",
    }
    if head != "lm":
        out.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    if cfg.family == "gpt2":
        out.update(
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.d_ff,
            n_positions=cfg.max_positions,
            layer_norm_epsilon=cfg.norm_eps,
            activation_function=hf_act,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        return out
    rope: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type != "default":
        rope["factor"] = cfg.rope_factor
    if cfg.rope_type == "llama3":
        rope.update(
            low_freq_factor=cfg.rope_low_freq_factor,
            high_freq_factor=cfg.rope_high_freq_factor,
            original_max_position_embeddings=cfg.rope_original_max_positions,
        )
    out.update(
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_ff,
        max_position_embeddings=cfg.max_positions,
        hidden_act=hf_act,
        rope_theta=cfg.rope_theta,
    )
    if cfg.family == "gpt_neox":
        rope["partial_rotary_factor"] = cfg.rotary_pct
        out.update(
            layer_norm_eps=cfg.norm_eps,
            use_parallel_residual=cfg.parallel_residual,
            attention_bias=cfg.qkv_bias,
            rotary_pct=cfg.rotary_pct,
            rotary_emb_base=cfg.rope_theta,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
    else:
        out.update(
            num_key_value_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim,
            rms_norm_eps=cfg.norm_eps,
            attention_bias=cfg.qkv_bias if cfg.family == "llama" else False,
            mlp_bias=cfg.mlp_bias,
        )
    out["rope_parameters"] = rope
    return out
