"""Autoregressive sampling as one compiled program: a prefill over the prompts, then a
`lax.while_loop` of one-token decode steps over a fixed-size KV cache, until every row has
emitted an EOS id or `max_new_tokens` tokens. No host round-trip per token; the same
shapes never recompile (the sampler keeps its compiled function).

Distribution. At step t the policy's logits z_t give p_t = softmax(z_t / T). With top-k
and/or top-p the draw is from p_t restricted to the k most likely tokens and/or the
smallest set whose mass reaches p (renormalised); `greedy` takes argmax z_t. The returned
`logps` are always log p_t(y_t) of the *untruncated* temperature-T distribution: the
policy at that temperature, which is what the RL losses' ratios and KL terms use.

Draws use exact inverse-CDF sampling with one uniform per row (on CPU, Gumbel-max over
the whole vocabulary per step costs ~20x more). Rows are grouped by prompt: the
`n_samples` completions of prompt i are rows i*n .. i*n + n - 1.

The KV cache is created inside the compiled program and updated in place by the loop (it
never leaves the device, so there is no buffer to hand back between calls). It is held in
chunks (`models/kv_cache.py`): the prompt, then `cache_chunks` parts of the completion, and
a decode step reads only the chunks filled so far (at 64 + 128 tokens with 4 chunks, 144
slots on average instead of 192).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.models.kv_cache import KVCache
from rlhf_jax.models.transformer import Model, positions_from_mask


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k
    top_p: float = 1.0
    greedy: bool = False
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0
    n_samples: int = 1
    max_cache_len: int = 0  # 0 = the model's max_positions
    return_logits: bool = False  # keep each step's logits [N, max_new, V] (tests, analysis)
    cache_chunks: int = 4  # the completion's KV cache in this many chunks; a step reads those filled so far

    def __post_init__(self):
        if self.max_new_tokens <= 0:
            raise ValueError(f"SamplingConfig.max_new_tokens={self.max_new_tokens}: must be positive")
        if not self.temperature > 0:
            raise ValueError(f"SamplingConfig.temperature={self.temperature}: must be positive")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k={self.top_k}: must be >= 0 (0 = off)")
        if self.cache_chunks < 1:
            raise ValueError(f"SamplingConfig.cache_chunks={self.cache_chunks}: must be >= 1")
        if self.n_samples < 1:
            raise ValueError(f"SamplingConfig.n_samples={self.n_samples}: must be >= 1")
        object.__setattr__(self, "eos_ids", tuple(int(e) for e in self.eos_ids))


@struct.dataclass
class Samples:
    """prompt_tokens/mask [N, P] (prompts repeated n_samples times); tokens [N, L] the
    completions, pad_id after the end; mask [N, L] up to and including the first EOS;
    logps [N, L] log p_t(y_t) at the sampling temperature (0 outside the mask)."""

    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    mask: jax.Array
    logps: jax.Array
    logits: jax.Array | None = None

    def sequences(self):
        """(tokens, mask, completion_mask) of prompt + completion, [N, P + L]: the
        layout the losses take."""
        tokens = jnp.concatenate([self.prompt_tokens, self.tokens], axis=1)
        mask = jnp.concatenate([self.prompt_mask, self.mask], axis=1)
        completion = jnp.concatenate([jnp.zeros_like(self.prompt_mask), self.mask], axis=1)
        return tokens, mask, completion


# ----------------------------------------------------------------------------- drawing


def truncate_logits(logits_BxV, top_k: int, top_p: float):
    """Set logits outside the top-k / top-p (nucleus) sets to -inf."""
    neg_inf = jnp.finfo(logits_BxV.dtype).min
    if top_k and top_k < logits_BxV.shape[-1]:
        kth_B1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_B1, neg_inf, logits_BxV)
    if top_p < 1.0:
        sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_BxV, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # the smallest logit still inside the nucleus (mass before it < p)
        n_keep_B = jnp.sum(mass_before < top_p, axis=-1)
        cutoff_B1 = jnp.take_along_axis(sorted_BxV, n_keep_B[:, None] - 1, axis=-1)
        logits_BxV = jnp.where(logits_BxV < cutoff_B1, neg_inf, logits_BxV)
    return logits_BxV


def inverse_cdf_draw(key, logits_BxV, block: int = 128):
    """(token_B, log_z_B): one token per row from softmax(logits) with one uniform per row
    (the first index whose cumulative mass reaches u * total, u in (0, 1], so zero-mass
    tokens are never drawn), and log_z = logsumexp(logits), a by-product of the draw.

    Two levels (block sums, then one block), because a cumulative sum over the whole
    vocabulary costs milliseconds per step on CPU while two of length ~sqrt(V) do not.
    """
    B, V = logits_BxV.shape
    n_full, n_blocks = V // block, -(-V // block)
    max_B1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
    # block masses straight from the logits: no [B, V] array of probabilities is written
    # (nor a padded copy of one when block does not divide V; the last block is then short)
    full_BxNxK = logits_BxV[:, : n_full * block].reshape(B, n_full, block)
    block_mass_BxN = jnp.exp(full_BxNxK - max_B1[:, :, None]).sum(-1)
    if n_blocks > n_full:
        tail_B1 = jnp.exp(logits_BxV[:, n_full * block :] - max_B1).sum(-1, keepdims=True)
        block_mass_BxN = jnp.concatenate([block_mass_BxN, tail_B1], axis=-1)
    block_cdf_BxN = jnp.cumsum(block_mass_BxN, axis=-1)
    total_B = block_cdf_BxN[:, -1]
    u_B = (1.0 - jax.random.uniform(key, (B,))) * total_B
    blk_B = jnp.minimum(jnp.sum(block_cdf_BxN < u_B[:, None], axis=-1), n_blocks - 1)
    before_B = jnp.take_along_axis(block_cdf_BxN - block_mass_BxN, blk_B[:, None], axis=-1)[:, 0]
    index_BxK = blk_B[:, None] * block + jnp.arange(block)[None]
    inner_BxK = jnp.take_along_axis(logits_BxV, jnp.minimum(index_BxK, V - 1), axis=-1)
    inner_BxK = jnp.where(index_BxK < V, jnp.exp(inner_BxK - max_B1), 0.0)
    inner_cdf_BxK = jnp.cumsum(inner_BxK, axis=-1)
    u_in_B = jnp.minimum(u_B - before_B, inner_cdf_BxK[:, -1])  # rounding must not pass the block
    tok_B = jnp.minimum(jnp.sum(inner_cdf_BxK < u_in_B[:, None], axis=-1), block - 1)
    token_B = jnp.minimum(blk_B * block + tok_B, V - 1).astype(jnp.int32)
    return token_B, max_B1[:, 0] + jnp.log(total_B)


def choose(key, logits_BxV, cfg: SamplingConfig):
    """(token_B, logp_B): the draw of `cfg` and its log-prob under softmax(logits / T),
    logp = z_y / T - logsumexp(z / T). Without truncation the draw's own normaliser serves
    (one pass over the vocabulary fewer per step)."""
    scaled = logits_BxV.astype(jnp.float32) / cfg.temperature
    truncated = cfg.top_k or cfg.top_p < 1.0
    if cfg.greedy or truncated:
        if cfg.greedy:
            token = jnp.argmax(scaled, axis=-1).astype(jnp.int32)
        else:
            token, _ = inverse_cdf_draw(key, truncate_logits(scaled, cfg.top_k, cfg.top_p))
        log_z = jax.nn.logsumexp(scaled, axis=-1)
    else:
        token, log_z = inverse_cdf_draw(key, scaled)
    return token, jnp.take_along_axis(scaled, token[:, None], axis=-1)[:, 0] - log_z


# ----------------------------------------------------------------------------- the program


def cache_bounds(prompt_len: int, max_new_tokens: int, completion_chunks: int) -> tuple[int, ...]:
    """Chunk boundaries of the KV cache's slots: the prompt, then the completion in chunks of
    ceil(L / completion_chunks) slots (the last may be shorter)."""
    step = -(-max_new_tokens // completion_chunks)
    total = prompt_len + max_new_tokens
    return (0, *range(prompt_len, total, step), total)


def mean_slots_read(prompt_len: int, max_new_tokens: int, completion_chunks: int) -> float:
    """The cache slots a decode step attends over, averaged over the completion's steps:
    step i (slot P + i) reads every chunk up to the one holding its slot."""
    bounds = cache_bounds(prompt_len, max_new_tokens, completion_chunks)
    return sum(next(b for b in bounds[1:] if b > prompt_len + i) for i in range(max_new_tokens)) / max_new_tokens


class _LoopState(NamedTuple):
    """The decode loop's carry: step i, the caches, the token drawn for step i and its
    log-prob, which cache slots hold keys, which rows have ended, the PRNG key, the tokens
    and log-probs recorded so far, and the logits kept (return_logits) or a placeholder."""

    i: jax.Array
    cache: Any  # a list of per-layer KVCaches, or one with a layer axis (scanned)
    token_N: jax.Array
    logp_N: jax.Array
    key_valid_NxS: jax.Array
    done_N: jax.Array
    key: jax.Array
    tokens_NxL: jax.Array
    logps_NxL: jax.Array
    kept: jax.Array


def _generate(model: Model, cfg: SamplingConfig, params, prompt_BxP, prompt_mask_BxP, key):
    n = cfg.n_samples
    prompt = jnp.repeat(prompt_BxP, n, axis=0)
    pmask = jnp.repeat(prompt_mask_BxP, n, axis=0).astype(jnp.int32)
    N, P = prompt.shape
    L = cfg.max_new_tokens
    S = P + L
    mc = model.cfg
    module = model.module(params)
    bounds = cache_bounds(P, L, cfg.cache_chunks)
    if mc.scan_layers:  # one cache with a layer axis, sliced by the scan
        shard = functools.partial(mesh_lib.shard, axes=(None, "batch", "act_kv_heads", None, None))
        cache = KVCache.zeros(N, mc.n_kv_heads, mc.head_dim, bounds, jnp.dtype(mc.dtype), shard, mc.n_layers)
    else:
        shard = functools.partial(mesh_lib.shard, axes=("batch", "act_kv_heads", None, None))
        cache = [
            KVCache.zeros(N, mc.n_kv_heads, mc.head_dim, bounds, jnp.dtype(mc.dtype), shard) for _ in range(mc.n_layers)
        ]
    key_valid_NxS = jnp.concatenate([pmask.astype(bool), jnp.zeros((N, L), bool)], axis=1)
    causal_PxS = jnp.arange(S)[None, :] <= jnp.arange(P)[:, None]
    mask_NxPxS = causal_PxS[None] & key_valid_NxS[:, None]
    hidden, cache = module(prompt, positions_from_mask(pmask), mask_NxPxS, cache, 0, last_only=True)
    logits_NxV = module.readout(hidden)[:, 0]
    next_pos_N = jnp.sum(pmask, axis=-1)
    eos = jnp.asarray(cfg.eos_ids or (-1,), jnp.int32)
    kept = jnp.zeros((N, L, mc.vocab_size), jnp.float32) if cfg.return_logits else jnp.zeros((), jnp.float32)

    def draw(i, logits, key, kept):
        key, sub = jax.random.split(key)
        token, logp = choose(sub, logits, cfg)
        if cfg.return_logits:
            kept = kept.at[:, i].set(logits)
        return token, logp, key, kept

    def record(i, token, logp, done, tokens, logps):
        tokens = tokens.at[:, i].set(jnp.where(done, cfg.pad_id, token))
        logps = logps.at[:, i].set(jnp.where(done, 0.0, logp))
        return done | jnp.any(token[:, None] == eos[None, :], axis=-1), tokens, logps

    # The loop carries the token drawn for step i, not the logits it came from: the [N, V]
    # logits live and die inside one iteration, and the last step runs no forward.
    def cond(st: _LoopState):
        return (st.i < L - 1) & ~jnp.all(st.done_N)

    def body(st: _LoopState) -> _LoopState:
        i = st.i
        done, tokens, logps = record(i, st.token_N, st.logp_N, st.done_N, st.tokens_NxL, st.logps_NxL)
        key_valid = st.key_valid_NxS.at[:, P + i].set(True)
        hidden, cache = module(st.token_N[:, None], (next_pos_N + i)[:, None], key_valid[:, None, :], st.cache, P + i)
        token, logp, key, kept = draw(i + 1, module.readout(hidden)[:, 0], st.key, st.kept)
        return _LoopState(i + 1, cache, token, logp, key_valid, done, key, tokens, logps, kept)

    token, logp, key, kept = draw(0, logits_NxV, key, kept)
    start = _LoopState(
        i=jnp.asarray(0),
        cache=cache,
        token_N=token,
        logp_N=logp,
        key_valid_NxS=key_valid_NxS,
        done_N=jnp.zeros((N,), bool),
        key=key,
        tokens_NxL=jnp.full((N, L), cfg.pad_id, jnp.int32),
        logps_NxL=jnp.zeros((N, L), jnp.float32),
        kept=kept,
    )
    end = jax.lax.while_loop(cond, body, start)
    i, token, logp, done, tokens, logps, kept = (
        end.i, end.token_N, end.logp_N, end.done_N, end.tokens_NxL, end.logps_NxL, end.kept
    )  # fmt: skip
    _, tokens, logps = record(i, token, logp, done, tokens, logps)  # step i's token, drawn in the loop's last pass
    n_steps = i + 1
    mask = _completion_mask(tokens, eos, n_steps)
    return Samples(
        prompt_tokens=prompt,
        prompt_mask=pmask,
        tokens=jnp.where(mask, tokens, cfg.pad_id),
        mask=mask.astype(jnp.int32),
        logps=jnp.where(mask, logps, 0.0),
        logits=kept if cfg.return_logits else None,
    )


def _completion_mask(tokens_NxL, eos, n_steps):
    """1 up to and including the first EOS, and only over the steps that ran."""
    is_eos = jnp.any(tokens_NxL[..., None] == eos, axis=-1)
    ended_before = jnp.cumsum(is_eos, axis=1) - is_eos
    return (ended_before == 0) & (jnp.arange(tokens_NxL.shape[1])[None] < n_steps)


class Sampler:
    """A compiled sampler for one model and config: `sampler(params, prompts, mask, seed)`.

    With a mesh, the program is traced under `rules`: SAMPLE_RULES (parameters whole along
    fsdp: a decode step gathers nothing; the default) or TRAIN_RULES (parameters sharded as
    trained: no copy of the weights, each layer gathered inside the decode loop as it is
    used); params should be placed with the same rules. The batch goes over the data axes.
    """

    def __init__(self, model: Model, cfg: SamplingConfig, mesh=None, rules=mesh_lib.SAMPLE_RULES):
        self.model, self.cfg, self.mesh, self.rules = model, cfg, mesh, rules
        self._fn = jax.jit(functools.partial(_generate, model, cfg))

    def __call__(self, params, prompt_BxP, prompt_mask_BxP, seed) -> Samples:
        args = self._inputs(params, prompt_BxP, prompt_mask_BxP, seed)
        with mesh_lib.use_mesh(self.mesh, self.rules):
            return self._fn(*args)

    def compile(self, params, prompt_BxP, prompt_mask_BxP, seed=0) -> None:
        """Trace and compile the program for these shapes without running it (ahead of
        time, e.g. before a timed loop); a later call with the same shapes finds it."""
        args = self._inputs(params, prompt_BxP, prompt_mask_BxP, seed)
        with mesh_lib.use_mesh(self.mesh, self.rules):
            self._fn.lower(*args).compile()

    def _inputs(self, params, prompt_BxP, prompt_mask_BxP, seed):
        self.check(prompt_BxP, prompt_mask_BxP)
        key = seed if isinstance(seed, jax.Array) and seed.dtype != jnp.int32 else jax.random.key(seed)
        if self.mesh is not None:
            sharding = mesh_lib.batch_sharding(self.mesh, self.rules, shape=np.shape(prompt_BxP))
            prompt_BxP, prompt_mask_BxP = jax.device_put((prompt_BxP, prompt_mask_BxP), sharding)
        return params, prompt_BxP, prompt_mask_BxP, key

    def check(self, prompt_BxP, prompt_mask_BxP) -> None:
        if prompt_BxP.ndim != 2 or prompt_BxP.shape != prompt_mask_BxP.shape:
            raise ValueError(
                f"sampler: prompts {tuple(prompt_BxP.shape)} and mask {tuple(prompt_mask_BxP.shape)} "
                "must both be [B, P]"
            )
        limit = self.cfg.max_cache_len or self.model.cfg.max_positions
        total = prompt_BxP.shape[1] + self.cfg.max_new_tokens
        if total > limit:
            raise ValueError(
                f"sampler: prompt length {prompt_BxP.shape[1]} + max_new_tokens {self.cfg.max_new_tokens} = {total} "
                f"exceeds the cache limit {limit}"
            )
        if not isinstance(prompt_mask_BxP, jax.core.Tracer):
            mask = mesh_lib.local_value(prompt_mask_BxP)
            empty = np.flatnonzero(mask.sum(-1) == 0)
            if empty.size:
                raise ValueError(f"sampler: prompt rows {empty[:10].tolist()} are empty (mask all 0)")
            if (np.diff(mask.astype(np.int8), axis=-1) < 0).any():
                raise ValueError("sampler: prompts must be left-padded (mask 0...0 1...1 in every row)")
