"""Sharded forward on 8 fake CPU devices equals the single-device forward."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.models.hf import load_hf
from rlhf_jax.models.transformer import param_shardings


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_sharded_forward_equals_single_device(shape, family, hf_checkpoints):
    assert len(jax.devices()) == 8
    directory, _ = hf_checkpoints[family]
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 97, size=(8, 12))
    mask = (np.arange(12)[None] >= rng.integers(0, 5, size=(8, 1))).astype(np.int32)
    model, params = load_hf(directory)
    expected = np.asarray(jax.jit(model.logits)(params, tokens, mask))

    mesh = mesh_lib.make_mesh(shape)
    model, sharded = load_hf(directory, mesh=mesh)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    tokens_s, mask_s = jax.device_put((tokens, mask), batch_sharding)
    with mesh_lib.use_mesh(mesh):
        logits = jax.jit(model.logits)(sharded, tokens_s, mask_s)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5)

    want = param_shardings(model.cfg, "lm", mesh)
    for got, exp in zip(jax.tree.leaves(sharded), jax.tree.leaves(want), strict=True):
        assert got.sharding.spec == exp.spec


def test_rules_declare_the_expected_specs():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    rules = mesh_lib.TRAIN_RULES
    assert mesh_lib.logical_to_spec(("embed", "heads", "head_dim"), rules) == P("fsdp", "tensor", None)
    assert mesh_lib.logical_to_spec(("batch", "length", "act_embed"), rules) == P(("data", "fsdp"), None, None)
    # a dimension the mesh axes do not divide stays replicated
    assert mesh_lib.logical_to_spec(("kv_heads",), rules, (3,), mesh) == P(None)
    # sampling keeps parameters whole along fsdp
    assert mesh_lib.logical_to_spec(("embed", "mlp"), mesh_lib.SAMPLE_RULES) == P(None, "tensor")


def test_make_mesh_fills_minus_one_and_rejects_bad_shapes():
    assert dict(mesh_lib.make_mesh((2, -1, 2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="needs 16 devices"):
        mesh_lib.make_mesh((4, 2, 2))
    with pytest.raises(ValueError, match="at most one -1"):
        mesh_lib.make_mesh((-1, -1, 2))
    with pytest.raises(ValueError, match="not divisible"):
        mesh_lib.make_mesh((3, -1, 1))


def test_shard_is_identity_without_a_mesh():
    x = np.ones((4, 3))
    assert mesh_lib.shard(x, ("batch", None)) is x


def test_init_model_on_a_mesh_gives_the_same_values_in_their_shardings():
    from rlhf_jax.models.config import ModelConfig
    from rlhf_jax.models.transformer import init_model

    cfg = ModelConfig(family="llama", vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64)
    _, plain = init_model(cfg, seed=5)
    mesh = mesh_lib.make_mesh((2, 2, 2))
    _, sharded = init_model(cfg, seed=5, mesh=mesh)
    assert sharded["layers"][0]["mlp"]["up"]["kernel"].sharding.spec == P("fsdp", "tensor")
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_array_equal(a, b)
    _, other = init_model(cfg, seed=6)
    assert not np.array_equal(plain["embed"], other["embed"])
