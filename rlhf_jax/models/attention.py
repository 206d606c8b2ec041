"""Attention: the einsum reference (`attention`, every path's, and the decode step's over the
KV cache) and the self-attention of a training forward or a sampler's prefill by a fused
kernel, chosen by `model.attention` (`ATTENTION`, `self_attention`).

    einsum  softmax(q k^T / sqrt(E) + mask) v as two einsums, every [B, K, G, T, S] score in
            float32 (`attention`): the reference, and the decode step's path.
    xla     `jax.nn.dot_product_attention(implementation="xla")`: one op XLA fuses as it can.
    cudnn   the same op by cuDNN's flash-attention kernel (GPU; bfloat16 or float16 only):
            scores are never written to memory.
    splash  Pallas splash attention (TPU; Dao et al. 2022's tiling, `jax.experimental.pallas.
            ops.tpu.splash_attention`): causal by block, padding as segment ids, sequences
            padded to its 128-token blocks. Inside a mesh it runs per device (`shard_map`
            over the batch and head axes), since XLA cannot partition a custom kernel.
    auto    by the platform the program is compiled for (`lax.platform_dependent`, so that
            `--dry-run --target` picks the target's): splash on TPU, cuDNN on GPU when the
            model computes in bfloat16, einsum elsewhere.

All take the training forward's mask (query t sees key s iff s <= t and s is a real token)
and agree on every real query's output. A padding query sees no key; the einsum gives it
the uniform average of the values, the fused kernels let it see itself (cuDNN's kernel has
no defined output for a row with no key), and splash gives the left padding one segment.
Those rows feed only other padding rows, so nothing a loss reads differs.

Decode steps keep the chunked einsum over the KV cache (`kv_cache.py`): one query against
the cache is bound by reading the cache, which that path already does once.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rlhf_jax import mesh as mesh_lib

ATTENTION = ("einsum", "xla", "cudnn", "splash", "auto")
SPLASH_BLOCK = 128  # splash's tile along the sequence; sequences are padded to a multiple


def attention(q_BxTxHxE, k_BxKxSxE, v_BxKxSxE, mask_BxTxS):
    """softmax(q k^T / sqrt(E) + mask) v with grouped-query heads; scores in float32.

    Keys and values are heads-major [B, K, S, E] (the KV cache's layout), so a decode step
    contracts the cache in place instead of transposing all of it every token. They may
    also come as tuples of chunks [B, K, S_c, E] along the slots (the sampler's cache, see
    `kv_cache.py`), with the mask spanning sum(S_c): each chunk is contracted where it lies,
    so no chunk is copied into one array.
    Masked scores get the most negative float, so a row with no visible key (a padding
    query) becomes a uniform average rather than NaN; its output is never used.
    """
    k_chunks = k_BxKxSxE if isinstance(k_BxKxSxE, tuple) else (k_BxKxSxE,)
    v_chunks = v_BxKxSxE if isinstance(v_BxKxSxE, tuple) else (v_BxKxSxE,)
    B, T, H, E = q_BxTxHxE.shape
    K = k_chunks[0].shape[1]
    q_BxKxGxTxE = q_BxTxHxE.reshape(B, T, K, H // K, E).transpose(0, 2, 3, 1, 4)
    scores = jnp.concatenate(
        [jnp.einsum("bkgte,bkse->bkgts", q_BxKxGxTxE, k, preferred_element_type=jnp.float32) for k in k_chunks],
        axis=-1,
    )
    scores = scores / math.sqrt(E)
    scores = jnp.where(mask_BxTxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_chunks[0].dtype)
    out_BxKxGxTxE, start = 0, 0
    for v in v_chunks:
        stop = start + v.shape[2]
        out_BxKxGxTxE = out_BxKxGxTxE + jnp.einsum("bkgts,bkse->bkgte", probs[..., start:stop], v)
        start = stop
    return out_BxKxGxTxE.transpose(0, 3, 1, 2, 4).reshape(B, T, H, E)


def self_attention(q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, mask_BxTxS, impl: str, interpret: bool = False):
    """Attention of T queries over S = T keys (or of the last query alone, T = 1) under the
    causal-and-padding mask, by `impl`; [B, T, H, E]. `interpret` runs splash's kernel in
    Pallas' interpreter (any platform: the tests' parity check)."""
    if impl not in ATTENTION:
        raise ValueError(f"model.attention={impl!r}: expected one of {ATTENTION}")
    if impl == "auto":
        return jax.lax.platform_dependent(
            q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, mask_BxTxS,
            tpu=functools.partial(_auto, "splash"), cuda=functools.partial(_auto, "cudnn"),
            default=functools.partial(_auto, "einsum"),
        )  # fmt: skip
    if impl == "einsum" or (impl == "splash" and q_BxTxHxE.shape[1] != k_BxSxKxE.shape[1]):
        # one query row (a prefill's last position) reads each key once: nothing to fuse
        return attention(q_BxTxHxE, k_BxSxKxE.transpose(0, 2, 1, 3), v_BxSxKxE.transpose(0, 2, 1, 3), mask_BxTxS)
    if impl == "splash":
        return _splash(q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, mask_BxTxS[:, -1, :], interpret)
    if impl == "cudnn" and q_BxTxHxE.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"model.attention=cudnn: cuDNN's kernel takes bfloat16 or float16, not {q_BxTxHxE.dtype}")
    T, S = q_BxTxHxE.shape[1], k_BxSxKxE.shape[1]
    visible_BxTxS = mask_BxTxS | jnp.eye(T, S, dtype=bool)[None] if T == S else mask_BxTxS
    return jax.nn.dot_product_attention(
        q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, mask=visible_BxTxS[:, None], implementation=impl
    ).astype(q_BxTxHxE.dtype)


def _auto(preferred: str, q, k, v, mask):
    if preferred == "cudnn" and (q.dtype not in (jnp.bfloat16, jnp.float16) or not _on_a_gpu_host()):
        preferred = "einsum"  # cuDNN's kernel is traced only where cuDNN is (every branch is traced)
    return self_attention(q, k, v, mask, preferred)


@functools.cache
def _on_a_gpu_host() -> bool:
    return any(d.platform == "gpu" for d in jax.devices())


def _splash(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, valid_BxT, interpret: bool):
    """Causal splash attention with the left padding as segment 0 and the real tokens as
    segment 1 (the positions added to fill the last block: segment 2)."""
    B, T, H, E = q_BxTxHxE.shape
    Tp = -(-T // SPLASH_BLOCK) * SPLASH_BLOCK
    segments_BxT = jnp.pad(valid_BxT.astype(jnp.int32), ((0, 0), (0, Tp - T)), constant_values=2)

    def heads_major(x):  # [B, T, N, E] -> [B, H, Tp, E], grouped kv heads repeated to H
        x = jnp.repeat(x, H // x.shape[2], axis=2) if x.shape[2] != H else x
        return jnp.pad(x, ((0, 0), (0, Tp - T), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    q = heads_major(q_BxTxHxE * jnp.asarray(1 / math.sqrt(E), q_BxTxHxE.dtype))
    k, v = heads_major(k_BxTxKxE), heads_major(v_BxTxKxE)
    run = functools.partial(_splash_local, interpret=interpret)
    active = mesh_lib.active_mesh()
    if active is not None and active[0].size > 1:
        mesh, rules = active
        spec = mesh_lib.logical_to_spec(("batch", "act_heads", None, None), rules, q.shape, mesh)
        rows = jax.sharding.PartitionSpec(spec[0], None)
        run = jax.shard_map(run, mesh=mesh, in_specs=(spec, spec, spec, rows), out_specs=spec, check_vma=False)
    out_BxHxTxE = run(q, k, v, segments_BxT)
    return out_BxHxTxE.transpose(0, 2, 1, 3)[:, :T].astype(q_BxTxHxE.dtype)


def _splash_local(q_BxHxTxE, k_BxHxTxE, v_BxHxTxE, segments_BxT, interpret: bool):
    # Pallas' TPU kernels: imported where splash is traced, not by every run that builds a model
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # (as above)

    H, T = q_BxHxTxE.shape[1], q_BxHxTxE.shape[2]
    block = next(b for b in (512, 256, SPLASH_BLOCK) if T % b == 0)
    sizes = sk.BlockSizes(block_q=block, block_kv=block, block_q_dkv=block, block_kv_dkv=block,
                          block_q_dq=block, block_kv_dq=block)  # fmt: skip
    mask = sm.MultiHeadMask([sm.CausalMask((T, T)) for _ in range(H)])
    kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
    segments = sk.SegmentIds(q=segments_BxT, kv=segments_BxT)
    return jax.vmap(kernel)(q_BxHxTxE, k_BxHxTxE, v_BxHxTxE, segment_ids=segments)
