"""Per-instance metrics shared by the training steps, the evaluation and the benchmarks.

Each is computed here and nowhere else: cross-entropy, correctness, the density of a structure
(the mean kept fraction of the blocks' weights, Eq. 5's inner term) and the FLOPs fraction of
its trunk.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from den_tf import cost


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-instance softmax cross-entropy, shape (batch,)."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """1.0 where the most probable class is the label, else 0.0; shape (batch,)."""
    predictions = tf.argmax(logits, -1, output_type=tf.int32)
    return tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)


def density(structure: tf.Tensor, costs: cost.CostTable) -> tf.Tensor:
    """(1/n) sum_i d_i(l_i) per instance: the mean over blocks of the fraction of each
    block's weights kept (``cost.mean_density``), not the fraction of the trunk's weights."""
    return cost.mean_density(structure, costs.density)


def flops_fraction(structure: tf.Tensor, costs: cost.CostTable) -> tf.Tensor:
    """Trunk FLOPs of each instance's structure over the full trunk's, float32 (batch,)."""
    table = tf.constant(costs.level_macs, tf.float64)
    trunk = tf.reduce_sum(cost.lookup_per_block(table, structure), axis=1)
    return tf.cast(trunk / float(costs.level_macs[:, -1].sum()), tf.float32)
