"""Weak-to-strong losses: hand values and the zero-weight reduction to plain cross-entropy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import weak_to_strong as W


class WeakToStrongObjectivesTest(chex.TestCase):
    """Each test runs twice, jitted and eagerly (chex.variants)."""

    def call(self, fn, *args, **static):
        """fn(*args, **static) under the variant: jitted with the keyword arguments static."""
        return self.variant(lambda *a: fn(*a, **static))(*args)

    @chex.variants(with_jit=True, without_jit=True)
    def test_aux_confidence_with_weight_zero_is_cross_entropy_on_weak_labels(self):
        logits = jnp.array([[0.3, -0.2], [1.0, 2.0], [-1.0, 0.5]])
        weak = jnp.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
        loss, _ = self.call(W.aux_confidence_objective, logits, weak, 0.0)
        np.testing.assert_allclose(loss, self.call(W.soft_cross_entropy, logits, weak), rtol=1e-6)
        logp = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
        np.testing.assert_allclose(loss, -np.mean((np.asarray(weak) * logp).sum(-1)), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hardened_predictions_threshold_at_the_batch_median(self):
        logits = jnp.array([[0.0, 1.0], [0.0, 2.0], [0.0, -1.0], [0.0, -2.0]])
        np.testing.assert_array_equal(self.call(W.hardened_predictions, logits)[:, 1], [1, 1, 0, 0])
        # shifted so that every row prefers class 1: the adaptive threshold still splits the batch
        np.testing.assert_array_equal(
            self.call(W.hardened_predictions, logits + jnp.array([0.0, 5.0]))[:, 1], [1, 1, 0, 0]
        )
        three = jnp.array([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
        np.testing.assert_array_equal(self.call(W.hardened_predictions, three), [[0, 0, 1], [1, 0, 0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_aux_confidence_hand_value_and_no_gradient_through_the_hardened_labels(self):
        logits = jnp.array([[0.0, 1.0], [0.0, -1.0]])
        weak = jnp.array([[1.0, 0.0], [1.0, 0.0]])
        loss, _ = self.call(W.aux_confidence_objective, logits, weak, 0.5)
        target = np.array([[0.5, 0.5], [1.0, 0.0]])
        logp = np.asarray(jax.nn.log_softmax(logits))
        np.testing.assert_allclose(loss, -np.mean((target * logp).sum(-1)), rtol=1e-6)
        g = jax.grad(lambda x: W.aux_confidence_objective(x, weak, 0.5)[0])(logits)
        np.testing.assert_allclose(g, (np.exp(logp) - target) / 2, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_warmup_and_pgr(self):
        np.testing.assert_allclose(self.call(W.aux_confidence_weight, 5, alpha_max=0.75, warmup_steps=10), 0.375)
        np.testing.assert_allclose(self.call(W.aux_confidence_weight, 50, alpha_max=0.75, warmup_steps=10), 0.75)
        np.testing.assert_allclose(W.performance_gap_recovered(0.6, 0.7, 0.8), 0.5, rtol=1e-6)
        with pytest.raises(ValueError, match="no gap"):
            W.performance_gap_recovered(0.6, 0.7, 0.6)
        with pytest.raises(ValueError, match="targets must be probabilities"):
            W.soft_cross_entropy(jnp.zeros((1, 2)), jnp.array([[0.7, 0.7]]))
