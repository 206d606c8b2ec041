"""The sampler's KV cache for one layer: keys and values in chunks along the slots, so a
decode step reads only the chunks filled so far.

Slots [bounds[c], bounds[c + 1]) live in chunk c, an array [B, K, S_c, E] (heads-major, so
attention contracts it in place). A decode step at slot s writes its key and value into the
chunk holding s and attends over chunks 0..c(s); later chunks are skipped (`attend`). With
the prompt as chunk 0 and the completion split into n chunks, step i reads
P + ceil((i + 1) / (L / n)) * L / n slots instead of P + L.
A single dynamic prefix of one array would not do: XLA copies a sliced dot operand.
"""

from __future__ import annotations

import bisect
import itertools
import math

import jax
import jax.numpy as jnp
from flax import struct

from rlhf_jax.models.attention import attention


@struct.dataclass
class KVCache:
    k: tuple  # chunk c: [B, K, S_c, E]
    v: tuple
    bounds: tuple[int, ...] = struct.field(pytree_node=False)  # chunk c holds slots [bounds[c], bounds[c + 1])

    @classmethod
    def zeros(cls, batch: int, kv_heads: int, head_dim: int, bounds, dtype, shard=lambda x: x, layers: int = 0
              ) -> KVCache:  # fmt: skip
        """Empty chunks [B, K, S_c, E]; with `layers` = L, [L, B, K, S_c, E]: the caches of a
        scanned layer stack in one (a scan step sees its layer's slice). `shard` places
        each chunk (it gets the layer axis too when there is one)."""
        lead = (layers,) if layers else ()

        def chunks():
            return tuple(
                shard(jnp.zeros((*lead, batch, kv_heads, b - a, head_dim), dtype))
                for a, b in itertools.pairwise(bounds)
            )

        return cls(k=chunks(), v=chunks(), bounds=tuple(bounds))

    def chunk_of(self, index):
        """The chunk holding slot `index` (a Python int, or a traced one)."""
        if isinstance(index, int):
            return bisect.bisect_right(self.bounds, index) - 1
        return jnp.sum(jnp.asarray(self.bounds[1:-1]) <= index).astype(jnp.int32)

    def write(self, k_BxKxTxE, v_BxKxTxE, index) -> KVCache:
        """The keys/values of slots [index, index + T). A static index may span one chunk
        only (the prefill); a traced one is a single decode slot (T = 1), written into its
        chunk while every other chunk keeps its value at the same offset."""
        T = k_BxKxTxE.shape[2]
        if isinstance(index, int):
            c = self.chunk_of(index)
            if index + T > self.bounds[c + 1]:
                raise ValueError(f"KVCache: slots [{index}, {index + T}) cross the chunk boundary {self.bounds[c + 1]}")
            offset = index - self.bounds[c]

            def put(chunks, x):
                new = jax.lax.dynamic_update_slice(chunks[c], x.astype(chunks[c].dtype), (0, 0, offset, 0))
                return (*chunks[:c], new, *chunks[c + 1 :])

            return self.replace(k=put(self.k, k_BxKxTxE), v=put(self.v, v_BxKxTxE))
        if T != 1:
            raise ValueError(f"KVCache: a traced write index takes one slot, got {T}")
        c = self.chunk_of(index)

        def put(chunks, x):
            out = []
            for j, chunk in enumerate(chunks):
                offset = jnp.clip(index - self.bounds[j], 0, chunk.shape[2] - 1)
                old = jax.lax.dynamic_slice_in_dim(chunk, offset, 1, axis=2)
                new = jnp.where(c == j, x.astype(chunk.dtype), old)
                out.append(jax.lax.dynamic_update_slice_in_dim(chunk, new, offset, axis=2))
            return tuple(out)

        return self.replace(k=put(self.k, k_BxKxTxE), v=put(self.v, v_BxKxTxE))

    def attend(self, q_BxTxHxE, mask_BxTxS, index):
        """Attention of the queries written at `index` over chunks 0..chunk_of(index);
        `mask_BxTxS` spans all the cache's slots.

        Static index: one softmax over the chunks (`attention.attention`). Traced index (a
        decode step): each chunk's part (m_c = max score, l_c = sum exp(s - m_c),
        o_c = sum exp(s - m_c) v) under a `lax.cond` that skips unfilled chunks, merged as
        o = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c with M = max_c m_c. Each chunk's
        program is compiled once, so the compile grows with the chunk count, not its square.
        """
        if isinstance(index, int):
            n = self.chunk_of(index) + 1
            return attention(q_BxTxHxE, self.k[:n], self.v[:n], mask_BxTxS[..., : self.bounds[n]])
        B, T, H, E = q_BxTxHxE.shape
        K = self.k[0].shape[1]
        q_BxKxGxTxE = q_BxTxHxE.reshape(B, T, K, H // K, E).transpose(0, 2, 3, 1, 4) / math.sqrt(E)
        c = self.chunk_of(index)

        def part(j):
            k, v = self.k[j], self.v[j]
            mask = mask_BxTxS[:, None, None, :, self.bounds[j] : self.bounds[j + 1]]
            s = jnp.einsum("bkgte,bkse->bkgts", q_BxKxGxTxE, k, preferred_element_type=jnp.float32)
            s = jnp.where(mask, s, -jnp.inf)
            m = jnp.max(s, axis=-1, keepdims=True)
            m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
            p = jnp.exp(s - m_safe)
            o = jnp.einsum("bkgts,bkse->bkgte", p.astype(v.dtype), v).astype(jnp.float32)
            return m, jnp.sum(p, axis=-1, keepdims=True), o

        def skipped(j):
            shape = (B, K, H // K, T, 1)
            return jnp.full(shape, -jnp.inf), jnp.zeros(shape), jnp.zeros((B, K, H // K, T, E))

        parts = [part(0)] + [
            jax.lax.cond(j <= c, lambda j=j: part(j), lambda j=j: skipped(j)) for j in range(1, len(self.k))
        ]
        m_all = jnp.max(jnp.stack([m for m, _, _ in parts]), axis=0)
        m_all = jnp.where(jnp.isfinite(m_all), m_all, 0.0)
        scale = [jnp.exp(m - m_all) for m, _, _ in parts]
        denom = sum(w * l for w, (_, l, _) in zip(scale, parts, strict=True))
        out = sum(w * o for w, (_, _, o) in zip(scale, parts, strict=True)) / jnp.maximum(denom, 1e-30)
        return out.astype(q_BxTxHxE.dtype).transpose(0, 3, 1, 2, 4).reshape(B, T, H, E)
