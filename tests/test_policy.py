"""Policy math against hand-computed values and sampling frequencies."""

import math

import numpy as np
import pytest
import tensorflow as tf

from den_tf import policy

SEED = tf.constant([3, 7])


def test_log_prob_matches_hand_computation():
    # One instance, two blocks, three levels.
    logits = tf.math.log(tf.constant([[[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]]]))
    z = tf.constant([[2, 0]])
    assert np.isclose(policy.log_prob(logits, z).numpy()[0], math.log(0.5 * 0.6), atol=1e-6)
    z = tf.constant([[1, 1]])
    assert np.isclose(policy.log_prob(logits, z).numpy()[0], math.log(0.3 * 0.1), atol=1e-6)


def test_log_prob_sums_to_one_over_all_structures():
    logits = tf.random.normal((1, 2, 3))
    structures = tf.constant([[a, b] for a in range(3) for b in range(3)])
    total = tf.reduce_sum(tf.exp(policy.log_prob(tf.repeat(logits, 9, axis=0), structures)))
    assert np.isclose(total.numpy(), 1.0, atol=1e-6)


def test_argmax_structure():
    logits = tf.constant([[[0.0, 2.0, 1.0], [5.0, 1.0, 1.0]]])
    assert policy.argmax_structure(logits).numpy().tolist() == [[1, 0]]


@pytest.mark.parametrize("draws", policy.DRAWS)
def test_sample_structure_frequencies(draws):
    probs = np.array([0.1, 0.2, 0.7])
    n = 20000
    logits = tf.math.log(tf.constant(np.tile(probs, (n, 1, 1)), tf.float32))
    z = policy.sample_structure(logits, SEED, draws).numpy()[:, 0]
    freq = np.bincount(z, minlength=3) / n
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) < 4 * sigma)
    # Stateless: the same seed gives the same draw.
    assert np.array_equal(policy.sample_structure(logits, SEED, draws).numpy()[:, 0], z)
    with pytest.raises(ValueError, match="draws must be one of"):
        policy.sample_structure(logits, SEED, "xla")


def test_split_seed_is_stateless_split_and_the_same_under_xla():
    """Runs made before the portable draws existed draw the same values now."""
    seed = tf.constant([-6388493064227189565, 1728873083863573776], tf.int64)
    # Pinned: the values these draws gave when they were made (oneDNN on and off alike).
    assert policy.uniform_structure(4, 3, 4, seed).numpy().tolist() == [
        [0, 0, 2], [0, 2, 2], [2, 3, 0], [2, 0, 2]]
    expected = tf.random.experimental.stateless_split(seed, 3).numpy()
    np.testing.assert_array_equal(policy.split_seed(seed, 3).numpy(), expected)
    compiled = tf.function(lambda s: policy.split_seed(s, 3), jit_compile=True)(seed)
    np.testing.assert_array_equal(compiled.numpy(), expected)


def test_portable_draws_are_the_same_under_xla():
    """XLA compiles the portable draws (structures, Eq. 8, epsilon-greedy) to the same
    values; uniform floats lie strictly inside (0, 1)."""
    logits = tf.random.normal((64, 5, 4))
    seed = tf.constant([-6388493064227189565, 1728873083863573776], tf.int64)  # a large one

    def draw(x):
        z = policy.sample_structure(x, seed, "portable")
        return (z, policy.initial_structure(64, 5, 4, 0.5, seed, "portable"),
                policy.epsilon_greedy(z, 4, 0.5, seed, "portable"),
                policy.uniform_floats([1000], seed, "portable"))

    eager = draw(logits)
    compiled = tf.function(draw, jit_compile=True)(logits)
    for a, b in zip(eager, compiled):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    floats = eager[3].numpy()
    assert floats.min() > 0 and floats.max() < 1 and abs(floats.mean() - 0.5) < 0.05


def test_initial_distribution_eq8():
    n_blocks, levels, tau, n = 2, 3, 0.75, 20000
    z = policy.initial_structure(n, n_blocks, levels, tau, SEED).numpy()
    full = np.all(z == levels - 1, axis=1).mean()
    expected = (1 - tau) / levels**n_blocks + tau
    assert abs(full - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    # Every other structure has probability (1 - tau) / h^n.
    ids = z[:, 0] * levels + z[:, 1]
    other = (1 - tau) / levels**n_blocks
    counts = np.bincount(ids, minlength=levels**n_blocks)[:-1] / n
    assert np.all(np.abs(counts - other) < 4 * np.sqrt(other * (1 - other) / n))


def test_epsilon_greedy():
    z = tf.zeros((20000, 3), tf.int32)
    assert np.array_equal(policy.epsilon_greedy(z, 4, 0.0, SEED).numpy(), z.numpy())
    mixed = policy.epsilon_greedy(z, 4, 0.5, SEED).numpy()
    changed = np.any(mixed != 0, axis=1).mean()
    # An instance changes unless it was replaced by all zeros (probability 0.5 * 4^-3).
    expected = 0.5 * (1 - 4.0**-3)
    assert abs(changed - expected) < 4 * np.sqrt(expected * (1 - expected) / 20000)


def test_mean_entropy_by_hand():
    uniform = tf.zeros([1, 3, 4])
    certain_first = tf.constant([[[100.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    two_levels = tf.math.log(tf.constant([[[0.75, 0.25]], [[0.5, 0.5]]]))
    np.testing.assert_allclose(policy.mean_entropy(uniform), [np.log(4)], rtol=1e-6)
    np.testing.assert_allclose(policy.mean_entropy(certain_first), [2 * np.log(4) / 3], rtol=1e-5)
    np.testing.assert_allclose(policy.mean_entropy(two_levels),
                               [-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)), np.log(2)],
                               rtol=1e-6)


def test_straight_through_by_hand():
    """Value one_hot(z); gradient with respect to the logits C_k (g_k - sum_l C_l g_l), where
    g is the loss's gradient with respect to the level weights."""
    logits = tf.constant([[[0.0, np.log(2.0), np.log(5.0)]]])  # C = (1/8, 2/8, 5/8)
    g = tf.constant([1.0, 2.0, 3.0])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        weights = policy.straight_through(logits, tf.constant([[1]]))
        loss = tf.reduce_sum(weights * g)
    assert weights.numpy().tolist() == [[[0.0, 1.0, 0.0]]]
    mean_g = (1 * 1 + 2 * 2 + 5 * 3) / 8  # 2.5
    expected = [1 / 8 * (1 - mean_g), 2 / 8 * (2 - mean_g), 5 / 8 * (3 - mean_g)]
    np.testing.assert_allclose(tape.gradient(loss, logits)[0, 0], expected, atol=1e-6)
