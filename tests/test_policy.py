"""Policy math against hand-computed values and sampling frequencies."""

import math

import numpy as np
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


def test_sample_structure_frequencies():
    probs = np.array([0.1, 0.2, 0.7])
    n = 20000
    logits = tf.math.log(tf.constant(np.tile(probs, (n, 1, 1)), tf.float32))
    z = policy.sample_structure(logits, SEED).numpy()[:, 0]
    freq = np.bincount(z, minlength=3) / n
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) < 4 * sigma)
    # Stateless: the same seed gives the same draw.
    assert np.array_equal(policy.sample_structure(logits, SEED).numpy()[:, 0], z)


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
