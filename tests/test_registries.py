"""Every registered algorithm has a hand-computed case: the advantage estimators here,
through the registry itself (jitted and eager); the policy and preference objectives in
the hand-value tests named below. A new registration without a case fails this file."""

import ast
import os

import chex
import jax.numpy as jnp
import numpy as np

from rlhf_jax import rollout as R
from rlhf_jax.losses import policy as policy_losses
from rlhf_jax.losses import preference as preference_losses

HERE = os.path.dirname(os.path.abspath(__file__))
SEQ = jnp.array([1.0, 3.0, 0.0, 2.0])  # 2 prompts x k = 2
MASK = jnp.ones((4, 3), jnp.int32)
GROUP = np.sqrt(2.0)  # each group's standard deviation (Bessel): |R - mean| = 1
# name -> (inputs beyond rewards / mask / k, the rewards, expected advantages, expected returns)
ESTIMATOR_CASES = {
    "rloo": ({}, SEQ, [-2.0, 2.0, -2.0, 2.0], None),  # R_i - R_other
    "moving_average": ({"baseline": R.BaselineState.init()}, SEQ, [1.0, 3.0, 0.0, 2.0], None),  # baseline 0
    "grpo": ({}, SEQ, [-1 / (GROUP + 1e-4), 1 / (GROUP + 1e-4)] * 2, None),
    "remax": ({"greedy_rewards_P": jnp.array([1.5, 0.5])}, SEQ, [-0.5, 1.5, -0.5, 1.5], None),
    "dr_grpo": ({}, SEQ, [-1.0, 1.0, -1.0, 1.0], None),  # centred, not scaled
    # centred (-1, 1, -1, 1), then over the batch: std (Bessel) sqrt(4 / 3)
    "reinforce_pp_baseline": ({}, SEQ, [-(3**0.5) / 2, 3**0.5 / 2] * 2, None),
    # returns-to-go (1, 1, 1) and (3, 3, 3) over the batch: mean 2, std (Bessel) sqrt(6 / 5)
    "reinforce_pp": (
        {},
        jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]]),
        [[-((5 / 6) ** 0.5)] * 3, [(5 / 6) ** 0.5] * 3],
        None,
    ),  # fmt: skip
    "best_of_k": ({}, SEQ, [0.0, 1.0, 0.0, 1.0], None),
    # one row, reward 1 on the last token, V = 0.5, gamma 1, lambda 0.5: deltas (0, 0, 0.5);
    # A_2 = 0.5, A_1 = 0 + 0.5 A_2 = 0.25, A_0 = 0.125; returns A + V
    "gae": (
        {"values_BxT": jnp.full((1, 3), 0.5), "lam": 0.5},
        jnp.array([[0.0, 0.0, 1.0]]),
        [[0.125, 0.25, 0.5]],
        [[0.625, 0.75, 1.0]],
    ),
    "reward_to_go": (
        {"values_BxT": jnp.full((1, 3), 0.5)},
        jnp.array([[0.0, 0.0, 1.0]]),
        [[0.5, 0.5, 0.5]],
        [[1.0, 1.0, 1.0]],
    ),
    # returns-to-go (3, 3, 2) and (4, 4, 4); each less the other row's return (4, then 3)
    "rloo_to_go": ({}, jnp.array([[0.0, 1.0, 2.0], [0.0, 0.0, 4.0]]), [[-1.0, -1.0, -2.0], [1.0, 1.0, 1.0]], None),
}
GSPO_TEST = "test_gspo_sequence_ratio_on_hand_values_and_gspo_token_agrees_on_constant_advantages"
POLICY_CASES = {  # objective -> the test that checks it on hand values
    "reinforce": "test_policy_losses.py::test_reinforce_objective_plain_and_clipped",
    "ppo": "test_policy_losses.py::test_ppo_objective_hand_values",
    "vanilla_pg": "test_policy_losses.py::test_vanilla_pg_and_raft_objectives",
    "raft": "test_policy_losses.py::test_vanilla_pg_and_raft_objectives",
    "gspo": f"test_grpo_family.py::{GSPO_TEST}",
    "gspo_token": f"test_grpo_family.py::{GSPO_TEST}",
    "cispo": "test_grpo_family.py::test_cispo_weights_are_clipped_and_stopped_and_every_token_keeps_its_gradient",
}
PREFERENCE_CASES = {
    "dpo": "test_preference_losses.py::test_dpo_is_log2_when_policy_equals_reference_and_hand_values",
    "ipo": "test_preference_losses.py::test_ipo_minimiser_sits_at_margin_one_over_two_beta",
    "cpo": "test_preference_losses.py::test_cpo_orpo_simpo_hand_values",
    "orpo": "test_preference_losses.py::test_cpo_orpo_simpo_hand_values",
    "simpo": "test_preference_losses.py::test_cpo_orpo_simpo_hand_values",
    "kto": "test_preference_losses.py::test_kto_hand_values_and_reference_point",
}


class EstimatorsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_registered_estimator_matches_its_hand_computed_case(self):
        assert set(ESTIMATOR_CASES) == set(R.ESTIMATORS), "a registered estimator has no hand-computed case here"
        for name, (extra, rewards, advantages, returns) in ESTIMATOR_CASES.items():
            k = 2 if R.ESTIMATORS[name].min_k > 1 or rewards.shape[0] == 4 else 1
            mask = MASK[: rewards.shape[0]]

            def call(r, m, e, f=R.ESTIMATORS[name].fn, k=k):
                out = f(R.AdvantageInputs(r, m, k, **e))
                return out.advantages, out.returns_BxT

            got, got_returns = self.variant(call)(rewards, mask, extra)
            chex.assert_trees_all_close(got, jnp.asarray(advantages, jnp.float32), atol=1e-5)
            if returns is not None:
                chex.assert_trees_all_close(got_returns, jnp.asarray(returns, jnp.float32), atol=1e-5)


def defined_tests(filename: str) -> set[str]:
    with open(os.path.join(HERE, filename)) as f:
        tree = ast.parse(f.read())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_registered_objective_has_a_hand_value_test():
    assert set(POLICY_CASES) == set(policy_losses.OBJECTIVES), "a policy objective has no hand-value test"
    assert set(PREFERENCE_CASES) == set(preference_losses.OBJECTIVES), "a preference objective has no hand-value test"
    for where in (*POLICY_CASES.values(), *PREFERENCE_CASES.values()):
        filename, name = where.split("::")
        assert name in defined_tests(filename), f"{where}: no such test"
