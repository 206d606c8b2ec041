"""Orbax checkpoints (round trip, keep-K, fallback past a corrupt save, restore into a
sharding) and command-line overrides of frozen configs."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlhf_jax import config as C
from rlhf_jax import mesh as mesh_lib
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.experiment import RLSection
from rlhf_jax.train_step import OptimConfig


def state(x):
    return {"step": jnp.asarray(x, jnp.int32), "params": {"w": jnp.full((4, 2), float(x)), "b": jnp.arange(3.0) + x}}


def test_round_trip_keeps_the_latest_k(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=2)
    for s in (1, 2, 3):
        ckpt.save(s, state(s), {"data_position": 10 * s, "rng": [s, 0]})
    ckpt.wait()
    assert ckpt.steps() == [2, 3]
    step, restored, meta = ckpt.restore(jax.eval_shape(lambda: state(0)))
    assert step == 3 and meta == {"data_position": 30, "rng": [3, 0]}
    jax.tree.map(np.testing.assert_array_equal, restored, state(3))
    ckpt.close()


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=3)
    ckpt.save(1, state(1), {"k": 1})
    ckpt.save(2, state(2), {"k": 2})
    ckpt.close()
    latest = tmp_path / "2" / "state"
    for root, _, files in os.walk(latest):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")
    with pytest.warns(RuntimeWarning, match="step 2 .* cannot be restored"):
        step, restored, meta = Checkpointer(str(tmp_path)).restore(jax.eval_shape(lambda: state(0)))
    assert step == 1 and meta == {"k": 1}
    np.testing.assert_array_equal(restored["params"]["w"], state(1)["params"]["w"])


def test_restore_goes_straight_into_the_target_sharding(tmp_path):
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(5, state(5), {})
    ckpt.close()
    mesh = mesh_lib.make_mesh((2, 2, 2))
    sharding = NamedSharding(mesh, P("data", "tensor"))
    target = jax.eval_shape(lambda: state(0))
    target["params"]["w"] = jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=sharding)
    _, restored, _ = Checkpointer(str(tmp_path)).restore(target)
    assert restored["params"]["w"].sharding == sharding
    np.testing.assert_array_equal(restored["params"]["w"], state(5)["params"]["w"])
    assert Checkpointer(str(tmp_path / "empty")).restore(target) is None


@dataclasses.dataclass(frozen=True)
class Section:
    beta: float = 0.05
    k: int = 4
    estimator: str = "rloo"
    eos_ids: tuple[int, ...] = (1,)
    limit: int | None = None
    whiten: bool = False


@dataclasses.dataclass(frozen=True)
class Experiment:
    rl: Section = Section()
    optim: OptimConfig = OptimConfig()
    seed: int = 0


def test_overrides_parse_by_field_type():
    cfg = C.override(
        Experiment(),
        ["rl.beta=0.1", "rl.k=8", "rl.estimator=ppo", "rl.eos_ids=2,3", "rl.limit=448", "rl.whiten=true", "seed=3"],
    )
    assert cfg.rl == Section(beta=0.1, k=8, estimator="ppo", eos_ids=(2, 3), limit=448, whiten=True)
    assert cfg.seed == 3
    assert C.override(cfg, ["rl.limit=none"]).rl.limit is None
    assert C.differences(C.to_dict(Experiment()), C.to_dict(cfg))[0] == "rl.beta: 0.05 -> 0.1"


@dataclasses.dataclass(frozen=True)
class Grown(Experiment):
    new_option: str = ""  # added later, off by default


def test_non_default_keeps_only_the_fields_that_differ_from_their_defaults():
    cfg = C.override(Experiment(), ["rl.beta=0.1", "rl.eos_ids=2,3", "seed=3"])
    assert C.non_default(cfg) == {"rl": {"beta": 0.1, "eos_ids": [2, 3]}, "optim": {}, "seed": 3}
    assert C.non_default(Experiment(rl=Section(beta=0.05))) == {"rl": {}, "optim": {}}  # set, but to the default
    assert C.non_default(Grown(rl=cfg.rl, seed=3)) == C.non_default(cfg)  # a new option at its default: unseen
    assert C.non_default(Grown(new_option="x"))["new_option"] == "x"


def test_override_errors_name_the_key():
    with pytest.raises(ValueError, match=r"--set rl.bta: unknown key; did you mean rl.beta"):
        C.override(Experiment(), ["rl.bta=0.1"])
    with pytest.raises(ValueError, match=r"--set rl.k='four': expected int"):
        C.override(Experiment(), ["rl.k=four"])
    with pytest.raises(ValueError, match=r"--set rl.whiten='maybe': expected a bool"):
        C.override(Experiment(), ["rl.whiten=maybe"])
    with pytest.raises(ValueError, match="is a section"):
        C.override(Experiment(), ["rl=3"])
    with pytest.raises(ValueError, match=r"--set optim.learning_rate=-1: must be positive"):  # the key said once
        C.override(Experiment(), ["optim.learning_rate=-1"])
    with pytest.raises(ValueError, match="expected key=value"):
        C.override(Experiment(), ["seed"])


def test_a_sections_assignments_are_checked_together_in_any_order():
    # each alone breaks a cross-field check of rl (rollout_batch a multiple of k); together they fit
    for order in (
        ["rl.k=8", "rl.rollout_batch=16", "rl.minibatch=16"],
        ["rl.minibatch=16", "rl.rollout_batch=16", "rl.k=8"],
    ):
        cfg = C.override(Holder(), order)
        assert (cfg.rl.k, cfg.rl.rollout_batch, cfg.rl.minibatch) == (8, 16, 16)
    with pytest.raises(ValueError, match=r"--set rl.k=8, rl.rollout_batch=12: .*multiple of rl.k=8"):
        C.override(Holder(), ["rl.k=8", "rl.rollout_batch=12", "seed=1"])


@dataclasses.dataclass(frozen=True)
class Holder:
    rl: RLSection = RLSection(rollout_batch=64, minibatch=64, k=4)
    seed: int = 0
