"""Log-probabilities and entropies of a vocabulary head, fused, with their own VJP.

With z = h W^T / T (h the final hidden states, W the [V, D] output embedding, T the
temperature), log Z = logsumexp(z) and p = softmax(z):

    logp_t = z_t[y_t] - log Z_t                dlogp/dz = onehot(y) - p
    H_t    = log Z_t - sum_v p_v z_v           dH/dz    = -p * (z - (log Z - H))

and dL/dh = (dL/dz / T) W, dL/dW = (dL/dz / T)^T h. The head runs over chunks of
positions (about `CHUNK_ROWS` rows of [B, K] at a time), so each chunk's logits are
reduced while they are still in cache, and the backward builds each chunk's logit
gradient, both of its matmuls, and nothing of [B, K, V] beyond the saved logits.

Why not autodiff through `logsumexp` and `take_along_axis`: on CPU, XLA's backward of
that graph makes several passes over the [B, K, V] logits and a transposed copy of
their gradient for the weight gradient. On the bench's small RLOO update (64 x 64
completion positions, vocab 8192, d_model 128) this head took 268-417 ms forward and
backward; fused, 225-263 ms (bench/RESULTS.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rlhf_jax import mesh as mesh_lib

CHUNK_ROWS = 512  # rows (batch x positions) of logits per chunk: 16 MB at vocab 8192
_LOGITS_AXES = ("batch", "length", "act_vocab")


def chunk_positions(B: int, K: int, rows: int | None = None) -> int:
    """The largest divisor c of K with B * c <= max(rows, B): positions per chunk
    (rows defaults to `CHUNK_ROWS`)."""
    rows = CHUNK_ROWS if rows is None else rows
    return max(c for c in range(1, K + 1) if K % c == 0 and B * c <= max(rows, B))


def _logits(h_BxCxD, weight_VxD, temperature):
    z = jnp.einsum("bcd,vd->bcv", h_BxCxD, weight_VxD.astype(h_BxCxD.dtype)).astype(jnp.float32)
    return mesh_lib.shard(z / temperature, _LOGITS_AXES)


def _forward(h_BxKxD, weight_VxD, targets_BxK, temperature, c, keep_logits):
    """(logps, entropy, log Z) [B, K] and, if keep_logits, the logits z [B, K, V]."""
    B, K, _ = h_BxKxD.shape
    V = weight_VxD.shape[0]

    def body(i, carry):
        h = jax.lax.dynamic_slice_in_dim(h_BxKxD, i * c, c, axis=1)
        y = jax.lax.dynamic_slice_in_dim(targets_BxK, i * c, c, axis=1)
        z = _logits(h, weight_VxD, temperature)  # [B, c, V]
        m = jnp.max(z, axis=-1, keepdims=True)
        e = jnp.exp(z - m)
        s = jnp.sum(e, axis=-1)
        log_z = m[..., 0] + jnp.log(s)
        entropy = log_z - jnp.sum(e * z, axis=-1) / s
        logp = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0] - log_z
        out = (logp, entropy, log_z) + ((z,) if keep_logits else ())
        return tuple(jax.lax.dynamic_update_slice_in_dim(a, x, i * c, axis=1) for a, x in zip(carry, out, strict=True))

    init = tuple(jnp.zeros((B, K), jnp.float32) for _ in range(3))
    if keep_logits:
        init += (mesh_lib.shard(jnp.zeros((B, K, V), jnp.float32), _LOGITS_AXES),)
    return jax.lax.fori_loop(0, K // c, body, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def head_logps(h_BxKxD, weight_VxD, targets_BxK, temperature: float = 1.0):
    """(logps_BxK, entropy_BxK), float32: log softmax(h W^T / T)[y] and the entropy of
    softmax(h W^T / T) at each position; differentiable in h and W."""
    B, K, _ = h_BxKxD.shape
    logp, entropy, _ = _forward(h_BxKxD, weight_VxD, targets_BxK, temperature, chunk_positions(B, K), False)
    return logp, entropy


def _head_logps_fwd(h_BxKxD, weight_VxD, targets_BxK, temperature):
    B, K, _ = h_BxKxD.shape
    logp, entropy, log_z, z = _forward(h_BxKxD, weight_VxD, targets_BxK, temperature, chunk_positions(B, K), True)
    return (logp, entropy), (h_BxKxD, weight_VxD, targets_BxK, entropy, log_z, z)


def _head_logps_bwd(temperature, residuals, cotangents):
    h_BxKxD, weight_VxD, targets_BxK, entropy_BxK, log_z_BxK, z_BxKxV = residuals
    g_logp_BxK, g_entropy_BxK = cotangents
    B, K, D = h_BxKxD.shape
    c = chunk_positions(B, K)
    w = weight_VxD.astype(h_BxKxD.dtype)

    def body(i, carry):
        dh_BxKxD, dw_DxV = carry
        part = lambda x: jax.lax.dynamic_slice_in_dim(x, i * c, c, axis=1)  # noqa: E731
        z, log_z, entropy = part(z_BxKxV), part(log_z_BxK)[..., None], part(entropy_BxK)[..., None]
        p = jnp.exp(z - log_z)
        onehot = jax.nn.one_hot(part(targets_BxK), z.shape[-1], dtype=z.dtype)
        g_z = part(g_logp_BxK)[..., None] * (onehot - p) - part(g_entropy_BxK)[..., None] * p * (z - (log_z - entropy))
        g = mesh_lib.shard(g_z / temperature, _LOGITS_AXES).astype(h_BxKxD.dtype)  # dL/d(h W^T)
        dh = jnp.einsum("bcv,vd->bcd", g, w)
        # the weight gradient accumulates as [D, V]: contracting g over its rows into
        # [V, D] costs XLA's CPU dot a transposed copy of g
        dw_DxV = dw_DxV + jnp.einsum("bcv,bcd->dv", g, part(h_BxKxD)).astype(jnp.float32)
        return jax.lax.dynamic_update_slice_in_dim(dh_BxKxD, dh, i * c, axis=1), dw_DxV

    init = (jnp.zeros_like(h_BxKxD), jnp.zeros((D, weight_VxD.shape[0]), jnp.float32))
    dh, dw_DxV = jax.lax.fori_loop(0, K // c, body, init)
    return dh, dw_DxV.T.astype(weight_VxD.dtype), None


head_logps.defvjp(_head_logps_fwd, _head_logps_bwd)
