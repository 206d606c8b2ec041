"""Hugging Face checkpoint directories <-> (Model, params), without torch.

A directory holds `config.json`, `model.safetensors` (or shards listed in
`model.safetensors.index.json`) and tokenizer files. One table per family (`_specs`)
says which HF tensor feeds which of our parameters and how the layout changes; loading
and saving both read it, so the two directions cannot drift apart.

Layouts: GPT-2 `Conv1D` weights are (in, out) and its q/k/v are fused along `out`;
GPT-NeoX fuses q/k/v interleaved per head ([H, 3, E] along `out`); Llama / Qwen2 `Linear`
weights are (out, in). Our kernels are (in..., out...), e.g. q: [D, H, E], o: [H, E, D].
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.models import lora
from rlhf_jax.models.config import ModelConfig, from_hf_config, to_hf_config
from rlhf_jax.models.transformer import Model, abstract_model, unstack_layers

Path = tuple[Any, ...]

_PREFIX = {"gpt2": "transformer.", "gpt_neox": "gpt_neox.", "llama": "model.", "qwen2": "model."}


class Spec(NamedTuple):
    """HF tensor `hf` <-> our params at `paths`: split(hf) -> ours, join(ours) -> hf."""

    hf: str
    paths: tuple[Path, ...]
    split: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    join: Callable[[tuple[np.ndarray, ...]], np.ndarray]


def _copy(hf: str, path: Path, shape=None) -> Spec:
    return Spec(
        hf,
        (path,),
        lambda w: (w.reshape(shape) if shape else w,),
        lambda o: o[0].reshape(-1) if shape else o[0],
    )


def _linear(hf: str, path: Path, kshape: tuple[int, ...], n_in: int) -> Spec:
    """torch Linear weight (out, in) <-> kernel (in..., out...)."""
    n = math.prod(kshape[:n_in])
    return Spec(hf, (path,), lambda w: (w.T.reshape(kshape),), lambda o: o[0].reshape(n, -1).T)


def _conv1d(hf: str, path: Path, kshape: tuple[int, ...], n_in: int) -> Spec:
    """GPT-2 Conv1D weight (in, out) <-> kernel (in..., out...)."""
    n = math.prod(kshape[:n_in])
    return Spec(hf, (path,), lambda w: (w.reshape(kshape),), lambda o: o[0].reshape(n, -1))


def _norm(cfg: ModelConfig, hf: str, path: Path) -> list[Spec]:
    specs = [_copy(f"{hf}.weight", path + ("scale",))]
    if cfg.norm_bias:
        specs.append(_copy(f"{hf}.bias", path + ("bias",)))
    return specs


def _specs(cfg: ModelConfig, head: str) -> list[Spec]:
    """The tensor table of one family; names are without the base-model prefix unless
    they start with '/' (top-level names such as `lm_head.weight`)."""
    D, H, K, E, F = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    fam = cfg.family
    specs: list[Spec] = []
    embed = {"gpt2": "wte.weight", "gpt_neox": "embed_in.weight"}.get(fam, "embed_tokens.weight")
    specs.append(_copy(embed, ("embed",)))
    if fam == "gpt2":
        specs.append(_copy("wpe.weight", ("pos_embed",)))
    for i in range(cfg.n_layers):
        p: Path = ("layers", i)
        if fam == "gpt2":
            specs += _gpt2_layer(cfg, f"h.{i}", p)
        elif fam == "gpt_neox":
            specs += _neox_layer(cfg, f"layers.{i}", p)
        else:
            pre = f"layers.{i}"
            specs += _norm(cfg, f"{pre}.input_layernorm", p + ("attn_norm",))
            specs += _norm(cfg, f"{pre}.post_attention_layernorm", p + ("mlp_norm",))
            for name, n_heads in (("q", H), ("k", K), ("v", K)):
                path = p + ("attn", name)
                specs.append(_linear(f"{pre}.self_attn.{name}_proj.weight", path + ("kernel",), (D, n_heads, E), 1))
                if cfg.qkv_bias:
                    specs.append(_copy(f"{pre}.self_attn.{name}_proj.bias", path + ("bias",), (n_heads, E)))
            specs.append(_linear(f"{pre}.self_attn.o_proj.weight", p + ("attn", "o", "kernel"), (H, E, D), 2))
            if cfg.o_bias:
                specs.append(_copy(f"{pre}.self_attn.o_proj.bias", p + ("attn", "o", "bias")))
            for name, kshape in (("gate", (D, F)), ("up", (D, F)), ("down", (F, D))):
                specs.append(_linear(f"{pre}.mlp.{name}_proj.weight", p + ("mlp", name, "kernel"), kshape, 1))
                if cfg.mlp_bias:
                    specs.append(_copy(f"{pre}.mlp.{name}_proj.bias", p + ("mlp", name, "bias")))
    final = {"gpt2": "ln_f", "gpt_neox": "final_layer_norm"}.get(fam, "norm")
    specs += _norm(cfg, final, ("final_norm",))
    if head == "scalar":
        specs.append(_linear("/score.weight", ("score",), (D, 1), 1))
    elif not cfg.tie_embeddings:
        name = "/embed_out.weight" if fam == "gpt_neox" else "/lm_head.weight"
        specs.append(_linear(name, ("lm_head",), (D, cfg.vocab_size), 1))
    return specs


def _gpt2_layer(cfg: ModelConfig, pre: str, p: Path) -> list[Spec]:
    D, H, E, F = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
    qkv = tuple(p + ("attn", n, "kernel") for n in "qkv")
    qkv_b = tuple(p + ("attn", n, "bias") for n in "qkv")
    return [
        *_norm(cfg, f"{pre}.ln_1", p + ("attn_norm",)),
        *_norm(cfg, f"{pre}.ln_2", p + ("mlp_norm",)),
        Spec(
            f"{pre}.attn.c_attn.weight",
            qkv,
            lambda w: tuple(w.reshape(D, 3, H, E)[:, j] for j in range(3)),
            lambda o: np.stack(o, axis=1).reshape(D, 3 * H * E),
        ),
        Spec(
            f"{pre}.attn.c_attn.bias",
            qkv_b,
            lambda b: tuple(b.reshape(3, H, E)[j] for j in range(3)),
            lambda o: np.stack(o).reshape(-1),
        ),
        _conv1d(f"{pre}.attn.c_proj.weight", p + ("attn", "o", "kernel"), (H, E, D), 2),
        _copy(f"{pre}.attn.c_proj.bias", p + ("attn", "o", "bias")),
        _conv1d(f"{pre}.mlp.c_fc.weight", p + ("mlp", "up", "kernel"), (D, F), 1),
        _copy(f"{pre}.mlp.c_fc.bias", p + ("mlp", "up", "bias")),
        _conv1d(f"{pre}.mlp.c_proj.weight", p + ("mlp", "down", "kernel"), (F, D), 1),
        _copy(f"{pre}.mlp.c_proj.bias", p + ("mlp", "down", "bias")),
    ]


def _neox_layer(cfg: ModelConfig, pre: str, p: Path) -> list[Spec]:
    D, H, E, F = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
    qkv = tuple(p + ("attn", n, "kernel") for n in "qkv")
    qkv_b = tuple(p + ("attn", n, "bias") for n in "qkv")
    specs = [
        *_norm(cfg, f"{pre}.input_layernorm", p + ("attn_norm",)),
        *_norm(cfg, f"{pre}.post_attention_layernorm", p + ("mlp_norm",)),
        Spec(  # out dim laid out [H, 3, E]; ours [D, H, E]
            f"{pre}.attention.query_key_value.weight",
            qkv,
            lambda w: tuple(w.reshape(H, 3, E, D)[:, j].transpose(2, 0, 1) for j in range(3)),
            lambda o: np.stack([x.transpose(1, 2, 0) for x in o], axis=1).reshape(3 * H * E, D),
        ),
        _linear(f"{pre}.attention.dense.weight", p + ("attn", "o", "kernel"), (H, E, D), 2),
        _linear(f"{pre}.mlp.dense_h_to_4h.weight", p + ("mlp", "up", "kernel"), (D, F), 1),
        _copy(f"{pre}.mlp.dense_h_to_4h.bias", p + ("mlp", "up", "bias")),
        _linear(f"{pre}.mlp.dense_4h_to_h.weight", p + ("mlp", "down", "kernel"), (F, D), 1),
        _copy(f"{pre}.mlp.dense_4h_to_h.bias", p + ("mlp", "down", "bias")),
    ]
    if cfg.qkv_bias:
        specs.append(
            Spec(
                f"{pre}.attention.query_key_value.bias",
                qkv_b,
                lambda b: tuple(b.reshape(H, 3, E)[:, j] for j in range(3)),
                lambda o: np.stack(o, axis=1).reshape(-1),
            )
        )
    if cfg.o_bias:
        specs.append(_copy(f"{pre}.attention.dense.bias", p + ("attn", "o", "bias")))
    return specs


# ----------------------------------------------------------------------------- reading


class _Tensors:
    """Lazy access to the tensors of a checkpoint directory, single file or sharded."""

    def __init__(self, directory: str):
        self.directory = directory
        index = os.path.join(directory, "model.safetensors.index.json")
        single = os.path.join(directory, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                self.where = {k: os.path.join(directory, v) for k, v in json.load(f)["weight_map"].items()}
        elif os.path.exists(single):
            with _opened(single) as f:
                self.where = {k: single for k in f.keys()}
        else:
            raise FileNotFoundError(
                f"{directory}: no model.safetensors or model.safetensors.index.json (only safetensors are read)"
            )
        for path in sorted(set(self.where.values())):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: shard listed in model.safetensors.index.json is missing")
        self._open: dict[str, Any] = {}

    def resolve(self, name: str, prefix: str) -> str | None:
        if name.startswith("/"):
            return name[1:] if name[1:] in self.where else None
        for candidate in (prefix + name, name):
            if candidate in self.where:
                return candidate
        return None

    def get(self, key: str) -> np.ndarray:
        path = self.where[key]
        if path not in self._open:
            self._open[path] = _opened(path)
        try:
            return self._open[path].get_tensor(key)
        except Exception as e:  # noqa: BLE001 - safetensors' own errors name no file
            raise ValueError(f"{path}: tensor {key!r} cannot be read ({e}); the file is damaged") from None


def _opened(path: str):
    """safe_open, with a damaged file (empty, truncated, not safetensors) named."""
    try:
        return safe_open(path, framework="numpy")
    except Exception as e:  # noqa: BLE001 - SafetensorError and friends name no file
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def read_config(directory: str) -> ModelConfig:
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing (a Hugging Face checkpoint directory needs config.json)")
    with open(path) as f:
        try:
            hf = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    return from_hf_config(hf, source=path)


def check_tensors(directory: str, head: str) -> None:
    """Every tensor the directory's config.json asks for is in its safetensors files (names
    only: no tensor is read), so that a config of another family, or weights of another
    model, are refused by file before any work."""
    cfg = read_config(directory)
    tensors = _Tensors(directory)
    missing = [s.hf.lstrip("/") for s in _specs(cfg, head) if tensors.resolve(s.hf, _PREFIX[cfg.family]) is None]
    if missing:
        raise ValueError(
            f"{os.path.join(directory, 'config.json')} describes a {cfg.family} model, but the safetensors files lack "
            f"{len(missing)} of its tensors (e.g. {', '.join(repr(m) for m in missing[:3])}): a config of another "
            "model beside these weights?"
        )


def checkpoint_head(directory: str) -> str:
    """ "scalar" for a checkpoint with a score head (a reward model or critic), else "lm";
    reads only the tensor names."""
    return "scalar" if "score.weight" in _Tensors(directory).where else "lm"


def load_hf(directory: str, head: str = "lm", mesh=None, rules=mesh_lib.TRAIN_RULES, scan_layers: bool = False
            ) -> tuple[Model, Any]:  # fmt: skip
    """(Model, params) from a Hugging Face checkpoint directory; with a mesh, every
    parameter is placed straight into its sharding (each device gets only its slice).

    head="scalar" reads a `*ForSequenceClassification` checkpoint with one label (`score`).
    scan_layers: the scanned layout (`transformer.stack_layers`); each stacked parameter is
    assembled on the host from its L layers' tensors, then placed (one at a time).
    """
    cfg = dataclasses.replace(read_config(directory), scan_layers=scan_layers)
    model, shapes, axes = abstract_model(cfg, head)
    shardings = mesh_lib.tree_shardings(axes, shapes, mesh, rules) if mesh is not None else None
    tensors = _Tensors(directory)
    flat: dict[Path, jax.Array] = {}
    for specs in _by_role(_specs(cfg, head)) if scan_layers else ([s] for s in _specs(cfg, head)):
        parts: dict[Path, list[np.ndarray]] = {}
        for spec in specs:
            for path, part in zip(
                spec.paths, _read(tensors, directory, spec, cfg.family, shapes, scan_layers), strict=True
            ):
                parts.setdefault(_stacked_path(path) if scan_layers else path, []).append(part)
        for path, arrays in parts.items():
            value = np.stack(arrays) if scan_layers and path[0] == "layers" else arrays[0]
            flat[path] = _place(value, _at(shardings, path) if shardings else None)
    return model, _unflatten(flat)


def _read(tensors, directory: str, spec: Spec, family: str, shapes, scanned: bool) -> tuple[np.ndarray, ...]:
    """The float32 parameters one HF tensor feeds, each checked against its shape."""
    key = tensors.resolve(spec.hf, _PREFIX[family])
    if key is None:
        raise KeyError(f"{directory}: tensor {spec.hf.lstrip('/')!r} not found in the safetensors files")
    hf_arr = tensors.get(key)
    try:
        parts = spec.split(hf_arr)
    except ValueError:
        parts = None
    out = []
    for path, part in zip(spec.paths, parts or [None] * len(spec.paths), strict=True):
        if scanned and path[0] == "layers":  # one layer's slice of the stacked parameter
            expected = _at(shapes, _stacked_path(path)).shape[1:]
        else:
            expected = _at(shapes, path).shape
        if part is None or part.shape != expected:
            raise ValueError(
                f"{tensors.where[key]}: tensor {key!r} has shape {hf_arr.shape}, which does not fit "
                f"the config (expected parameter {'/'.join(map(str, path))} of shape {expected})"
            )
        out.append(part.astype(np.float32))
    return tuple(out)


def _stacked_path(path: Path) -> Path:
    """("layers", i, *rest) -> ("layers", *rest); other paths unchanged."""
    return ("layers", *path[2:]) if path[0] == "layers" else path


def _by_role(specs: list[Spec]) -> list[list[Spec]]:
    """The specs grouped by what they feed within a layer (every layer's q/k/v, ...), in
    order; a spec outside the layers is a group of its own."""
    groups: dict[Any, list[Spec]] = {}
    for spec in specs:
        role = tuple(_stacked_path(p) for p in spec.paths) if spec.paths[0][0] == "layers" else spec.hf
        groups.setdefault(role, []).append(spec)
    return list(groups.values())


def _place(arr: np.ndarray, sharding) -> jax.Array:
    if sharding is None:
        return jax.device_put(arr)
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def _at(tree, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def _unflatten(flat: dict[Path, Any]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def load_tokenizer(directory: str):
    """The HF tokenizer saved in a checkpoint directory (no download)."""
    from transformers import AutoTokenizer  # transformers takes seconds to import

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


# ----------------------------------------------------------------------------- writing


def save_hf(
    model: Model,
    params,
    directory: str,
    tokenizer=None,
    token_ids: dict[str, int] | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Write a directory that `transformers` `from_pretrained` loads with the same logits.

    `token_ids` (pad_token_id, bos_token_id, eos_token_id) go into config.json; by default
    they are the tokenizer's, and null when unknown or outside the vocabulary. Only
    process 0 writes; params are gathered to the host first.
    With `max_shard_bytes` the tensors are split over `model-0000i-of-0000n.safetensors`
    files with an index.
    """
    host = jax.tree.map(lambda x: mesh_lib.to_host(x).astype(np.float32), params)
    if model.cfg.scan_layers:
        host = unstack_layers(host)
    if model.cfg.lora_rank:  # W + (alpha / r) A B: the base architecture, which transformers loads
        host = lora.merge(host, model.cfg.lora_alpha / model.cfg.lora_rank)
    if jax.process_index() != 0:
        return
    os.makedirs(directory, exist_ok=True)
    prefix = _PREFIX[model.cfg.family]
    tensors: dict[str, np.ndarray] = {}
    for spec in _specs(model.cfg, model.head):
        name = spec.hf[1:] if spec.hf.startswith("/") else prefix + spec.hf
        tensors[name] = np.ascontiguousarray(spec.join(tuple(_at(host, p) for p in spec.paths)))
    _write_tensors(tensors, directory, max_shard_bytes)
    hf_config = to_hf_config(model.cfg, model.head)
    if tokenizer is not None:  # the tokenizer's ids, null where it has none
        for name in ("pad", "bos", "eos"):
            hf_config[f"{name}_token_id"] = getattr(tokenizer, f"{name}_token_id", None)
    hf_config.update(token_ids or {})
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        # written even when unknown: a missing key makes transformers fill in the family's
        # default (GPT-2's 50256), which may lie outside a small vocabulary
        if not (isinstance(hf_config.get(name), int) and 0 <= hf_config[name] < model.cfg.vocab_size):
            hf_config[name] = None
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def _write_tensors(tensors: dict[str, np.ndarray], directory: str, max_shard_bytes: int | None) -> None:
    if max_shard_bytes is None:
        save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(directory, fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
