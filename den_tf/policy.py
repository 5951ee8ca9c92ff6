"""The selector's policy over structures: sampling, log-probabilities, Eq. (3) and Eq. (8).

Logits have shape (batch, n_blocks, h); a softmax over the last axis is the matrix C of
Eq. (2), and the blocks' levels are independent given the instance, so
P(z; x) = prod_i C_i(l_i; x) (Eq. 3). Random draws take explicit stateless seeds (shape [2]
int tensors) so that runs are reproducible and resumable.
"""

from __future__ import annotations

import tensorflow as tf

# The baselines b of the policy gradient (see ``baseline``).
BASELINES = ("none", "leave_one_out", "greedy")
# How the selector's gradient is estimated: the policy gradient of Eq. (7), or
# ``straight_through`` level weights differentiated through the estimator's masked path.
GRADIENTS = ("reinforce", "straight_through")


def log_prob(logits: tf.Tensor, structure: tf.Tensor) -> tf.Tensor:
    """log P(z; x) = sum_i log C_i(l_i; x) for each instance, shape (batch,)."""
    log_c = tf.nn.log_softmax(logits, axis=-1)
    picked = tf.gather(log_c, tf.cast(structure, tf.int32), axis=2, batch_dims=2)
    return tf.reduce_sum(picked, axis=1)


# How random draws are made: TensorFlow's own samplers, or "portable" ones, the same
# distributions built from integer draws, which XLA compiles to the same values (it does not
# for TensorFlow's float and categorical draws): the Gumbel-max trick for categorical draws.
DRAWS = ("tensorflow", "portable")
_UNIFORM_BITS = 1 << 24


def check_draws(draws: str) -> None:
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")


def split_seed(seed: tf.Tensor, count: int) -> tf.Tensor:
    """``count`` new seeds from ``seed``, shape (count, 2): the values of
    ``tf.random.experimental.stateless_split`` on CPU, which XLA also computes (for large seeds
    it does not compute stateless_split's own)."""
    seed = tf.convert_to_tensor(seed)
    return tf.random.stateless_uniform([count, 2], seed, None, None, seed.dtype, alg="philox")


def uniform_floats(shape, seed: tf.Tensor, draws: str = "tensorflow") -> tf.Tensor:
    """Floats uniform in (0, 1); 'portable': from 24-bit integer draws, centred in their bins."""
    check_draws(draws)
    if draws == "portable":
        bits = tf.random.stateless_uniform(shape, seed, 0, _UNIFORM_BITS, tf.int32, alg="philox")
        return (tf.cast(bits, tf.float32) + 0.5) / float(_UNIFORM_BITS)
    return tf.random.stateless_uniform(shape, seed)


def sample_structure(logits: tf.Tensor, seed: tf.Tensor, draws: str = "tensorflow"):
    """z ~ C: one level per block drawn from its column of C, shape (batch, n_blocks)."""
    check_draws(draws)
    if draws == "portable":
        gumbel = -tf.math.log(-tf.math.log(uniform_floats(tf.shape(logits), seed, draws)))
        return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)
    batch, n_blocks, levels = tf.unstack(tf.shape(logits))
    draws = tf.random.stateless_categorical(
        tf.reshape(logits, [-1, levels]), 1, seed=seed, dtype=tf.int32
    )
    return tf.reshape(draws, [batch, n_blocks])


def straight_through(logits: tf.Tensor, structure: tf.Tensor) -> tf.Tensor:
    """Level weights (batch, n_blocks, h) equal to one_hot(z) in value, whose gradient flows
    to the logits through C = softmax(logits) (the straight-through estimator, Bengio et al.
    2013): with g_l the loss's gradient with respect to a block's weight of level l, the
    logit of level k gets C_k (g_k - sum_l C_l g_l), so a block's levels whose first-order
    cost is below the distribution's mean gain probability. Biased, but per block and per
    instance, where the policy gradient spreads one cost over all the blocks."""
    probabilities = tf.nn.softmax(logits, axis=-1)
    hard = tf.one_hot(structure, logits.shape[-1], dtype=probabilities.dtype)
    return hard + (probabilities - tf.stop_gradient(probabilities))


def argmax_structure(logits: tf.Tensor) -> tf.Tensor:
    """The most probable structure: each block at its most probable level."""
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def uniform_structure(batch_size, n_blocks: int, levels: int, seed: tf.Tensor) -> tf.Tensor:
    """Structures drawn uniformly from all h^n models (each level uniform and independent)."""
    return tf.random.stateless_uniform(
        [batch_size, n_blocks], seed=seed, minval=0, maxval=levels, dtype=tf.int32, alg="philox"
    )


def replace_instances(
    structure: tf.Tensor, replacement: tf.Tensor, probability, seed: tf.Tensor,
    draws: str = "tensorflow",
) -> tf.Tensor:
    """Each instance's structure is swapped for ``replacement``'s with ``probability``."""
    batch = tf.shape(structure)[0]
    swap = uniform_floats([batch], seed, draws) < probability
    return tf.where(swap[:, tf.newaxis], replacement, structure)


def initial_structure(
    batch_size, n_blocks: int, levels: int, tau: float, seed, draws: str = "tensorflow"
) -> tf.Tensor:
    """Structures from the initial distribution of Eq. (8).

    With probability ``tau`` the full model z*, otherwise a uniform draw over all h^n
    models, so p(z*) = (1 - tau) / h^n + tau and p(z) = (1 - tau) / h^n for every other z.
    """
    uniform_seed, swap_seed = tf.unstack(split_seed(seed, 2))
    uniform = uniform_structure(batch_size, n_blocks, levels, uniform_seed)
    full = tf.fill([batch_size, n_blocks], tf.constant(levels - 1, tf.int32))
    return replace_instances(uniform, full, tau, swap_seed, draws)


def epsilon_greedy(
    structure: tf.Tensor, levels: int, epsilon, seed, draws: str = "tensorflow"
) -> tf.Tensor:
    """With probability ``epsilon`` per instance, a uniformly random structure instead."""
    uniform_seed, swap_seed = tf.unstack(split_seed(seed, 2))
    shape = tf.shape(structure)
    uniform = uniform_structure(shape[0], structure.shape[1], levels, uniform_seed)
    return replace_instances(structure, uniform, epsilon, swap_seed, draws)


def squash(logits: tf.Tensor, alpha: float) -> tf.Tensor:
    """BlockDrop's exploration for two levels: probabilities p -> alpha p + (1 - alpha)(1 - p),
    pulled toward 1/2 (as log-probabilities; alpha = 1 leaves them as they are)."""
    if logits.shape[-1] != 2:
        raise ValueError(f"squash is defined for two levels per block, got {logits.shape[-1]}")
    probabilities = tf.nn.softmax(logits)
    return tf.math.log(alpha * probabilities + (1.0 - alpha) * probabilities[..., ::-1])


def baseline(costs: tf.Tensor, kind: str, greedy_costs: tf.Tensor | None = None) -> tf.Tensor:
    """The baseline b subtracted from each sample's cost R (variance reduction).

    Args:
      costs: (|Z|, batch) costs of the |Z| sampled structures of each instance.
      kind: 'none' (b = 0, the paper), 'leave_one_out' (the mean cost of the instance's other
        samples) or 'greedy' (the cost of the instance's argmax structure, self-critical).
      greedy_costs: (1, batch) costs of the argmax structures, for 'greedy'.

    Returns:
      A tensor broadcastable to ``costs``; no gradient flows through it.
    """
    if kind == "none":
        return tf.zeros_like(costs[:1])
    if kind == "leave_one_out":
        samples = tf.cast(tf.shape(costs)[0], costs.dtype)
        return tf.stop_gradient((tf.reduce_sum(costs, axis=0) - costs) / (samples - 1.0))
    if kind == "greedy":
        if greedy_costs is None:
            raise ValueError("baseline 'greedy' needs the costs of the argmax structures")
        return tf.stop_gradient(greedy_costs)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def mean_entropy(logits: tf.Tensor) -> tf.Tensor:
    """The entropy of each block's level distribution, averaged over the blocks, per
    instance, shape (batch,): log h for uniform columns, 0 for certain ones."""
    log_c = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(tf.exp(log_c) * log_c, axis=-1), axis=1)


def reinforce_surrogate(log_p: tf.Tensor, costs: tf.Tensor, baselines: tf.Tensor) -> tf.Tensor:
    """A loss whose gradient is the sampled policy gradient of Eq. (7).

    mean((R - b) * log P(z)) with R and b held constant: its gradient is
    (1/|Z|) sum_z (R(z) - b) grad log P(z), an unbiased estimate of grad E_z[R(z)] when b
    does not depend on z. Minimising it lowers the expected cost.
    """
    return tf.reduce_mean(tf.stop_gradient(costs - baselines) * log_p)
