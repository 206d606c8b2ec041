"""The decoder-only transformer (Flax NNX) and `Model`, which runs it as pure functions.

A model is split once into a static `graphdef` and a `params` pytree (nested dicts of
float32 arrays); every call merges them inside the traced function, so policy, reference,
reward and value models are just parameter pytrees that jit can donate and Orbax can save.

Two layouts of the layer stack (`ModelConfig.scan_layers`): unrolled, params["layers"][i]
per layer and one traced block per layer; or scanned, one block whose every parameter has
a leading layer axis (params["layers"]["attn"]["q"]["kernel"]: [L, D, H, E]) run by
`jax.lax.scan`, so the program holds one block and its compile time does not grow with
depth. `stack_layers` / `unstack_layers` convert; the HF boundary is the same for both.

Positions come from the padding mask (position = number of real tokens before), so a
left-padded row gives exactly the logits of the same row unpadded.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.head_logps import head_logps
from rlhf_jax.models.layers import INIT_STD, Block, Norm, param, rope_tables

HEADS = ("lm", "scalar")


class Transformer(nnx.Module):
    """Token embedding, blocks, final norm and a head: `lm` (vocabulary logits) or
    `scalar` (one score per token: a reward model read at the last token, or a critic)."""

    def __init__(self, cfg: ModelConfig, head: str = "lm", *, rngs: nnx.Rngs):
        if head not in HEADS:
            raise ValueError(f"head={head!r}: expected one of {HEADS}")
        self.cfg, self.head = cfg, head
        self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"))
        self.pos_embed = param(rngs, (cfg.max_positions, cfg.d_model), (None, "embed")) if not cfg.uses_rope else None
        if cfg.scan_layers:
            self.layers = _stacked(Block(cfg, rngs), cfg.n_layers)
        else:
            self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = Norm(cfg)
        untied = head == "lm" and not cfg.tie_embeddings
        self.lm_head = param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab")) if untied else None
        self.score = param(rngs, (cfg.d_model, 1), ("embed", None)) if head == "scalar" else None

    def __call__(self, tokens_BxT, positions_BxT, mask_BxTxS, cache=None, index=0, embeds_BxTxD=None,
                 last_only: bool = False):  # fmt: skip
        """Final hidden states [B, T, D] and the updated KV cache (a list of one
        `kv_cache.KVCache` per layer; scanned: one KVCache whose arrays have a leading
        layer axis). `last_only`: hidden states [B, 1, D] of the last
        position; every layer still caches all T keys/values, but the final block runs its
        queries, output projection and MLP for that position alone (a sampler's prefill).

        With a cache, this call's keys/values are written at slots [index, index + T) and
        `mask_BxTxS` spans all S cache slots (a decode step reads only the chunks filled
        so far). `embeds_BxTxD`, if given, replaces the token
        embedding lookup (soft prompts; gradients with respect to the inputs).
        """
        dtype = jnp.dtype(self.cfg.dtype)
        if embeds_BxTxD is None:
            embeds_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0)
        x = embeds_BxTxD.astype(dtype)
        rope = None
        if self.cfg.uses_rope:
            rope = rope_tables(self.cfg, positions_BxT)
        else:
            x = x + jnp.take(self.pos_embed[...], positions_BxT, axis=0).astype(dtype)
        x = mesh_lib.shard(x, ("batch", "length", "act_embed"))
        if self.cfg.scan_layers:
            x, new_cache = self._scanned(x, rope, mask_BxTxS, cache, index, last_only)
            return self.final_norm(x), new_cache
        new_cache = []
        for i, block in enumerate(self.layers):
            last = last_only and i == len(self.layers) - 1
            if cache is None and self.cfg.remat != "none":  # training forwards: recompute in the backward
                x = _remat_block(block, x, rope, mask_BxTxS, last, self.cfg.remat)
                continue
            x, layer_cache = block(x, rope, mask_BxTxS, None if cache is None else cache[i], index, last)
            new_cache.append(layer_cache)
        return self.final_norm(x), (new_cache if cache is not None else None)

    def _scanned(self, x_BxTxD, rope, mask_BxTxS, cache, index, last_only: bool):
        """The stacked blocks as one `lax.scan` over layer indices (under `jax.checkpoint`
        with the remat policy when training): step i reads layer i's weights and cache by
        dynamic index and writes its cache back in place, so neither the weights nor the
        cache are ever copied whole. With `last_only` the final block runs outside the scan
        on the last position alone."""
        graphdef, state = nnx.split(self.layers)
        L = self.cfg.n_layers
        at = lambda tree, i: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), tree)  # noqa: E731

        def put(cache, layer_cache, i):
            return jax.tree.map(lambda a, c: jax.lax.dynamic_update_index_in_dim(a, c, i, 0), cache, layer_cache)

        def layer(x, cache, i, last_query=False):
            x, layer_cache = nnx.merge(graphdef, at(state, i))(
                x, rope, mask_BxTxS, None if cache is None else at(cache, i), index, last_query
            )
            return x, (None if cache is None else put(cache, layer_cache, i))

        def step(carry, i):
            return layer(*carry, i), None

        if cache is None and self.cfg.remat != "none":  # training forwards: recompute in the backward
            step = jax.checkpoint(step, policy=_POLICIES[self.cfg.remat], prevent_cse=False)
        n = L - 1 if last_only else L
        (x_BxTxD, cache), _ = jax.lax.scan(step, (x_BxTxD, cache), jnp.arange(n))
        if last_only:
            x_BxTxD, cache = layer(x_BxTxD, cache, L - 1, last_query=True)
        return x_BxTxD, cache

    def output_embedding(self):
        """The lm head as a [V, D] matrix: the token embedding when tied."""
        return self.embed[...] if self.lm_head is None else self.lm_head[...].T

    def readout(self, hidden_BxTxD):
        """LM head logits [B, T, V] (float32), or scalar scores [B, T] for the scalar head."""
        if self.head == "scalar":
            return jnp.einsum("btd,d->bt", hidden_BxTxD, self.score[...][:, 0].astype(hidden_BxTxD.dtype)).astype(
                jnp.float32
            )
        if self.lm_head is None:  # tied: contract the [V, D] embedding as it lies (no transpose)
            logits = jnp.einsum("btd,vd->btv", hidden_BxTxD, self.embed[...].astype(hidden_BxTxD.dtype))
        else:
            logits = jnp.einsum("btd,dv->btv", hidden_BxTxD, self.lm_head[...].astype(hidden_BxTxD.dtype))
        return mesh_lib.shard(logits.astype(jnp.float32), ("batch", "length", "act_vocab"))


_POLICIES = {
    "full": None,  # save nothing inside the block
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _remat_block(block, x_BxTxD, rope, mask_BxTxS, last: bool, policy: str):
    """A block under jax.checkpoint (nnx.remat) with the named policy: the backward pass
    recomputes what the policy does not save, trading FLOPs for activation memory."""

    def run(block, x, rope, mask):
        return block(x, rope, mask, None, 0, last)[0]

    return nnx.remat(run, policy=_POLICIES[policy])(block, x_BxTxD, rope, mask_BxTxS)


def _stacked(block: Block, n_layers: int) -> Block:
    """`block` with a leading layer axis of n_layers on every parameter (logical axis
    "layers", never sharded): the scanned layout's one block."""
    for _, var in nnx.iter_graph(block):
        if isinstance(var, nnx.Param):
            value = var.get_value()
            var.set_value(jnp.broadcast_to(value, (n_layers, *value.shape)))
            var.set_metadata(logical_axes=("layers", *var.get_metadata()["logical_axes"]))
    return block


def stack_layers(params: dict) -> dict:
    """Unrolled params (params["layers"][i]) -> scanned (each leaf stacked over layers);
    numpy in, numpy out, jax in, jax out."""
    layers = params["layers"]
    per_layer = [layers[i] for i in sorted(layers)]
    stack = np.stack if all(isinstance(x, np.ndarray) for x in jax.tree.leaves(per_layer)) else jnp.stack
    return {**params, "layers": jax.tree.map(lambda *xs: stack(xs), *per_layer)}


def unstack_layers(params: dict) -> dict:
    """Scanned params -> unrolled (params["layers"][i], i < L)."""
    L = jax.tree.leaves(params["layers"])[0].shape[0]
    return {**params, "layers": {i: jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(L)}}


def with_remat(model: Model, policy: str) -> Model:
    """The same model (same params pytree) run with another remat policy."""
    return run_as(model, remat=policy)


def with_dtype(model: Model, dtype: str) -> Model:
    """The same model (same float32 params) computing in another dtype: each weight cast
    as it is used, activations and a sampler's KV cache in `dtype` (logits in float32)."""
    return run_as(model, dtype=dtype)


def run_as(model: Model, **how) -> Model:
    """The same model (same params pytree) run with other settings of how it computes,
    by name: remat, attention (`attention.py`), dtype; a run's are `model.how_to_run`."""
    if all(getattr(model.cfg, k) == v for k, v in how.items()):
        return model
    return abstract_model(dataclasses.replace(model.cfg, **how), model.head)[0]


# ----------------------------------------------------------------------------- pure API


def positions_from_mask(mask_BxT):
    """Position of each token = number of real tokens before it (0 for left padding)."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


def causal_mask(mask_BxT):
    """[B, T, T] boolean: query t sees key s iff s <= t and s is a real token."""
    T = mask_BxT.shape[-1]
    causal_TxT = jnp.tril(jnp.ones((T, T), bool))
    return causal_TxT[None] & mask_BxT.astype(bool)[:, None, :]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A transformer as pure functions of its params pytree.

    `token_logps` uses the token-aligned convention: logps_BxT[:, t] = log pi(x_t | x_<t),
    0 where x_t or x_{t-1} is padding (so position 0 is always 0). A completion mask
    therefore applies to it directly.
    """

    cfg: ModelConfig
    head: str
    graphdef: Any

    def module(self, params) -> Transformer:
        return nnx.merge(self.graphdef, params)

    def hidden(self, params, tokens_BxT, mask_BxT):
        hidden, _ = self.module(params)(tokens_BxT, positions_from_mask(mask_BxT), causal_mask(mask_BxT))
        return hidden

    def logits(self, params, tokens_BxT, mask_BxT):
        """Vocabulary logits [B, T, V] in float32 (lm head)."""
        module = self.module(params)
        hidden, _ = module(tokens_BxT, positions_from_mask(mask_BxT), causal_mask(mask_BxT))
        return module.readout(hidden)

    def token_logps_and_entropy(self, params, tokens_BxT, mask_BxT, temperature: float = 1.0, keep_last: int = 0):
        """Token-aligned (logps_BxT, entropy_BxT), float32, from one forward:
        logps_BxT[:, t] = log softmax(z_{t-1})[x_t] and entropy_BxT[:, t] = H(softmax(z_{t-1}))
        with z = logits / temperature. With keep_last = K > 0 only the last K positions
        (the completions) get the vocabulary head (0 before them), so the head skips the
        prompt positions. The head, log-softmax and entropy are fused (`head_logps`)."""
        T = tokens_BxT.shape[1]
        K = keep_last or T - 1
        if not 0 < K < T:
            raise ValueError(f"keep_last={keep_last}: must be in [0, {T - 1}] for sequences of {T} tokens")
        module = self.module(params)
        hidden, _ = module(tokens_BxT, positions_from_mask(mask_BxT), causal_mask(mask_BxT))
        logps, entropy = head_logps(
            hidden[:, T - K - 1 : T - 1], module.output_embedding(), tokens_BxT[:, T - K :], temperature
        )
        valid = mask_BxT[:, -K:].astype(bool) & mask_BxT[:, -K - 1 : -1].astype(bool)
        pad = lambda x: jnp.pad(x, ((0, 0), (T - K, 0)))  # noqa: E731
        return pad(jnp.where(valid, logps, 0.0)), pad(entropy)

    def token_logps(self, params, tokens_BxT, mask_BxT, temperature: float = 1.0, keep_last: int = 0):
        """logps_BxT[:, t] = log softmax(logits_{t-1} / temperature)[x_t], float32; with
        keep_last = K > 0 only for the last K positions (0 before them)."""
        return self.token_logps_and_entropy(params, tokens_BxT, mask_BxT, temperature, keep_last)[0]

    def values(self, params, tokens_BxT, mask_BxT):
        """Per-token scalar scores [B, T] (scalar head: a critic's values), 0 at padding."""
        module = self.module(params)
        hidden, _ = module(tokens_BxT, positions_from_mask(mask_BxT), causal_mask(mask_BxT))
        return jnp.where(mask_BxT.astype(bool), module.readout(hidden), 0.0)

    def rewards(self, params, tokens_BxT, mask_BxT):
        """Score at each row's last real token [B] (scalar head: a reward model)."""
        values = self.values(params, tokens_BxT, mask_BxT)
        T = mask_BxT.shape[-1]
        last_B = T - 1 - jnp.argmax(mask_BxT[:, ::-1].astype(bool), axis=-1)
        return jnp.take_along_axis(values, last_B[:, None], axis=-1)[:, 0]


def _metadata(state, key: str):
    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    return nnx.to_pure_dict(jax.tree.map(lambda v: v.get_metadata()[key], state, is_leaf=is_var))


def abstract_model(cfg: ModelConfig, head: str = "lm") -> tuple[Model, Any, Any]:
    """(Model, params as ShapeDtypeStructs, logical axes per param) without allocating."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, head, rngs=nnx.Rngs(0))))
    return Model(cfg, head, graphdef), nnx.to_pure_dict(state), _metadata(state, "logical_axes")


def param_shardings(cfg: ModelConfig, head: str, mesh, rules=mesh_lib.TRAIN_RULES):
    """NamedShardings of the params pytree on `mesh` under `rules` (None without a mesh)."""
    if mesh is None:
        return None
    _, shapes, axes = abstract_model(cfg, head)
    return mesh_lib.tree_shardings(axes, shapes, mesh, rules)


def init_model(cfg: ModelConfig, head: str = "lm", seed: int = 0, mesh=None, rules=mesh_lib.TRAIN_RULES,
               existing=None):  # fmt: skip
    """A freshly initialised (Model, params): weights ~ N(0, 0.02^2), biases 0, norm scales 1.
    `existing`: a params pytree whose leaves are kept where their path exists (the same
    arrays, not copies; `lora.add_adapters` draws only the adapters around a loaded base).

    Values are drawn on the host, one generator per parameter seeded by (seed, its path), so
    they do not depend on the mesh or the layout (a scanned stack draws each layer under its
    unrolled path), and each is placed straight into its sharding. (Drawing
    them with jax.random inside jit costs seconds of compilation even for a tiny model.)
    """
    model, shapes, axes = abstract_model(cfg, head)
    _, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, head, rngs=nnx.Rngs(0))))
    inits = _metadata(state, "init")
    shardings = mesh_lib.tree_shardings(axes, shapes, mesh, rules) if mesh is not None else None
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    kinds = treedef.flatten_up_to(inits)
    placements = treedef.flatten_up_to(shardings) if shardings is not None else [None] * len(flat)
    leaves = []
    for (path, sds), kind, sharding in zip(flat, kinds, placements, strict=True):
        keys = [str(getattr(k, "key", k)) for k in path]
        kept = _lookup(existing, [getattr(k, "key", k) for k in path])
        if kept is not None:
            if kept.shape != sds.shape:
                raise ValueError(f"init_model: existing parameter {'/'.join(keys)} of shape {kept.shape}, "
                                 f"expected {sds.shape}")  # fmt: skip
            leaves.append(kept)
            continue
        if cfg.scan_layers and keys[0] == "layers":  # each layer drawn as unrolled: the same model in both layouts
            layer = lambda i: _host_init(kind, sds.shape[1:], seed, "/".join(["layers", str(i), *keys[1:]]))  # noqa: E731
            value = np.stack([layer(i) for i in range(cfg.n_layers)])
        else:
            value = _host_init(kind, sds.shape, seed, "/".join(keys))
        if sharding is None:
            leaves.append(jax.device_put(value))
        else:
            leaves.append(jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx]))
    return model, jax.tree.unflatten(treedef, leaves)


def _lookup(tree, keys):
    """tree[k0][k1]... or None where a key is missing (or no tree)."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _host_init(kind: str, shape, seed: int, name: str) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "ones":
        return np.ones(shape, np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if kind == "lora_a":
        bound = 1.0 / np.sqrt(np.prod(shape[:-1]))
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    return (INIT_STD * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
