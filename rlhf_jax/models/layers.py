"""Transformer building blocks: pure maths functions and the small NNX modules that hold
their parameters. Every parameter carries `logical_axes`; `mesh.py` maps them to devices.

Shape letters: B batch, T query length, S key length (the cache), D d_model, H query
heads, K key/value heads, G = H / K, E head_dim, F d_ff, V vocab.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlhf_jax.mesh import shard
from rlhf_jax.models import attention
from rlhf_jax.models.config import ModelConfig

INIT_STD = 0.02


def param(rngs: nnx.Rngs | None, shape: tuple[int, ...], axes: tuple, init: str = "normal") -> nnx.Param:
    """A float32 parameter with its logical axis names (`init`: normal(0.02) | zeros | ones |
    lora_a: U(+-1/sqrt(fan_in)), fan_in the product of all dims but the last, as PEFT's
    Kaiming-uniform(a=sqrt(5)) init of LoRA's A)."""
    assert len(shape) == len(axes), (shape, axes)
    if init == "normal":
        value = INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)
    elif init == "lora_a":
        bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
        value = jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)
    elif init == "zeros":
        value = jnp.zeros(shape, jnp.float32)
    else:
        value = jnp.ones(shape, jnp.float32)
    return nnx.Param(value, logical_axes=axes, init=init)


# ----------------------------------------------------------------------------- maths


def layer_norm(x, scale, bias, eps: float):
    """(x - mean) / sqrt(var + eps) * scale + bias, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def rms_norm(x, scale, eps: float):
    """x / sqrt(mean(x^2) + eps) * scale, statistics in float32 (as Llama)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + eps)
    return (y * scale).astype(x.dtype)


def activation(name: str, x):
    if name == "gelu_new":
        return jax.nn.gelu(x, approximate=True)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name == "silu":
        return jax.nn.silu(x)
    return jax.nn.relu(x)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies theta^(-2i/d) over the rotary dims, with linear / llama3 scaling."""
    dim = cfg.rotary_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if cfg.rope_type == "linear":
        inv = inv / cfg.rope_factor
    elif cfg.rope_type == "llama3":
        low_wavelen = cfg.rope_original_max_positions / cfg.rope_low_freq_factor
        high_wavelen = cfg.rope_original_max_positions / cfg.rope_high_freq_factor
        wavelen = 2 * math.pi / inv
        smooth = (cfg.rope_original_max_positions / wavelen - cfg.rope_low_freq_factor) / (
            cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
        )
        scaled = np.where(wavelen > low_wavelen, inv / cfg.rope_factor, inv)
        mid = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
        is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(is_mid, mid, scaled)
    return inv.astype(np.float32)


def rope_tables(cfg: ModelConfig, positions_BxT):
    """cos, sin of shape [B, T, rotary_dim] in the HF half-split layout (freqs repeated twice)."""
    freqs_BxTxR2 = positions_BxT.astype(jnp.float32)[..., None] * rope_inv_freq(cfg)
    freqs_BxTxR = jnp.concatenate([freqs_BxTxR2, freqs_BxTxR2], axis=-1)
    return jnp.cos(freqs_BxTxR), jnp.sin(freqs_BxTxR)


def apply_rope(x_BxTxNxE, cos_BxTxR, sin_BxTxR):
    """x * cos + rotate_half(x) * sin on the first R dims of each head; the rest passes through."""
    rot = cos_BxTxR.shape[-1]
    x_rot, x_pass = x_BxTxNxE[..., :rot], x_BxTxNxE[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    cos, sin = cos_BxTxR[:, :, None, :], sin_BxTxR[:, :, None, :]
    out = (x_rot.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x_BxTxNxE.dtype)
    return jnp.concatenate([out, x_pass], axis=-1) if x_pass.shape[-1] else out


# ----------------------------------------------------------------------------- modules


class Norm(nnx.Module):
    """LayerNorm (scale and bias) or RMSNorm (scale only), by the family."""

    def __init__(self, cfg: ModelConfig):
        self.kind, self.eps = cfg.norm, cfg.norm_eps
        self.scale = param(None, (cfg.d_model,), ("embed",), "ones")
        self.bias = param(None, (cfg.d_model,), ("embed",), "zeros") if cfg.norm_bias else None

    def __call__(self, x):
        if self.kind == "rmsnorm":
            return rms_norm(x, self.scale[...], self.eps)
        return layer_norm(x, self.scale[...], self.bias[...], self.eps)


class Proj(nnx.Module):
    """y = x . kernel + bias, contracting x's last `n_in` dims with the kernel's first.

    With a LoRA rank r > 0 (Hu et al. 2021): y = x . kernel + (alpha / r) (x . lora_a) . lora_b
    + bias, lora_a [*in, r] ~ U(+-1/sqrt(fan_in)) and lora_b [r, *out] = 0, so the adapted
    projection starts equal to the kernel's; the low-rank path never forms a [*in, *out]
    matrix (`lora.merge` does, for export)."""

    def __init__(self, in_shape, out_shape, in_axes, out_axes, bias: bool, rngs: nnx.Rngs,
                 lora_rank: int = 0, lora_alpha: float = 16.0):  # fmt: skip
        self.n_in = len(in_shape)
        self.kernel = param(rngs, (*in_shape, *out_shape), (*in_axes, *out_axes))
        self.bias = param(None, tuple(out_shape), tuple(out_axes), "zeros") if bias else None
        self.lora_scale = lora_alpha / lora_rank if lora_rank else 0.0
        self.lora_a = param(rngs, (*in_shape, lora_rank), (*in_axes, None), "lora_a") if lora_rank else None
        self.lora_b = param(None, (lora_rank, *out_shape), (None, *out_axes), "zeros") if lora_rank else None

    def __call__(self, x):
        kernel = self.kernel[...].astype(x.dtype)
        y = jnp.tensordot(x, kernel, axes=self.n_in)
        if self.lora_a is not None:
            down = jnp.tensordot(x, self.lora_a[...].astype(x.dtype), axes=self.n_in)
            y = y + self.lora_scale * jnp.tensordot(down, self.lora_b[...].astype(x.dtype), axes=1)
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


def _lora(cfg: ModelConfig, target: str) -> tuple[int, float]:
    """(rank, alpha) of the projection named `target`: (0, alpha) when it is not adapted."""
    return (cfg.lora_rank if target in cfg.lora_targets else 0), cfg.lora_alpha


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        D, H, K, E = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q = Proj((D,), (H, E), ("embed",), ("heads", "head_dim"), cfg.qkv_bias, rngs, *_lora(cfg, "q"))
        self.k = Proj((D,), (K, E), ("embed",), ("kv_heads", "head_dim"), cfg.qkv_bias, rngs, *_lora(cfg, "k"))
        self.v = Proj((D,), (K, E), ("embed",), ("kv_heads", "head_dim"), cfg.qkv_bias, rngs, *_lora(cfg, "v"))
        self.o = Proj((H, E), (D,), ("heads", "head_dim"), ("embed",), cfg.o_bias, rngs, *_lora(cfg, "o"))
        self.impl = cfg.attention  # the kernel of forwards and prefills (attention.py)

    def __call__(self, x_BxTxD, rope, mask_BxTxS, cache, index, last_query: bool = False):
        """Attention output [B, T, D], or [B, 1, D] for the last position only when
        `last_query` (keys and values still come from, and are cached for, all T)."""
        x_q = x_BxTxD[:, -1:] if last_query else x_BxTxD
        q = shard(self.q(x_q), ("batch", "length", "act_heads", None))
        k = shard(self.k(x_BxTxD), ("batch", "length", "act_kv_heads", None))
        v = shard(self.v(x_BxTxD), ("batch", "length", "act_kv_heads", None))
        if last_query:
            mask_BxTxS = mask_BxTxS[:, -1:]
        if rope is not None:
            q_rope = tuple(t[:, -1:] for t in rope) if last_query else rope
            q, k = apply_rope(q, *q_rope), apply_rope(k, *rope)
        prefill = cache is not None and isinstance(index, int) and index == 0  # slots [0, T): keys of this call only
        fused = self.impl != "einsum" and (cache is None or prefill)
        if fused:  # over this call's keys alone, laid out [B, T, K, E]
            out_BxTxHxE = attention.self_attention(q, k, v, mask_BxTxS[..., : k.shape[1]], self.impl)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, E]
        if cache is not None:  # a KVCache (kv_cache.py): this call's keys go to slots [index, index + T)
            cache = cache.write(k, v, index)
        if not fused:
            out_BxTxHxE = (
                attention.attention(q, k, v, mask_BxTxS) if cache is None else cache.attend(q, mask_BxTxS, index)
            )
        return self.o(out_BxTxHxE), cache


class MLP(nnx.Module):
    """down(act(up(x))) or, gated (SwiGLU), down(act(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        D, F = cfg.d_model, cfg.d_ff
        self.act = cfg.activation
        gated = cfg.gated_mlp
        self.gate = Proj((D,), (F,), ("embed",), ("mlp",), cfg.mlp_bias, rngs, *_lora(cfg, "gate")) if gated else None
        self.up = Proj((D,), (F,), ("embed",), ("mlp",), cfg.mlp_bias, rngs, *_lora(cfg, "up"))
        self.down = Proj((F,), (D,), ("mlp",), ("embed",), cfg.mlp_bias, rngs, *_lora(cfg, "down"))

    def __call__(self, x_BxTxD):
        up = self.up(x_BxTxD)
        h = activation(self.act, self.gate(x_BxTxD)) * up if self.gate is not None else activation(self.act, up)
        return self.down(shard(h, ("batch", "length", "act_mlp")))


class Block(nnx.Module):
    """Pre-norm residual block; GPT-NeoX's parallel form is x + attn(ln1 x) + mlp(ln2 x)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.parallel = cfg.parallel_residual
        self.attn_norm = Norm(cfg)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = Norm(cfg)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x_BxTxD, rope, mask_BxTxS, cache=None, index=0, last_query: bool = False):
        """The block's output [B, T, D]; with `last_query`, [B, 1, D] at the last position
        only (the prefill's final block: the other positions' outputs feed nothing)."""
        attn_out, cache = self.attn(self.attn_norm(x_BxTxD), rope, mask_BxTxS, cache, index, last_query)
        if last_query:
            x_BxTxD = x_BxTxD[:, -1:]
        if self.parallel:
            x_BxTxD = x_BxTxD + attn_out + self.mlp(self.mlp_norm(x_BxTxD))
        else:
            x_BxTxD = x_BxTxD + attn_out
            x_BxTxD = x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD))
        return shard(x_BxTxD, ("batch", "length", "act_embed")), cache
