"""The plain Keras reference network: the estimator's full structure, weight for weight."""

import numpy as np
import pytest
import tensorflow as tf

from den_tf import backbones, plain
from den_tf.estimator import Estimator
from den_tf.tasks import Task

TASKS = [Task("small", "s", 16, 5), Task("large", "l", 32, 7)]
SPECS = {
    "wrn": (backbones.wrn(depth=8, widths=(8, 8, 16), stem_channels=8), 16),
    "simple_convnet": (backbones.simple_convnet(channels=8, num_blocks=2, hidden_units=(12,)), 16),
}


def _shapes(weights):
    return sorted(tuple(w.shape) for w in weights)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_plain_network_computes_the_full_structure(name):
    spec, trunk_size = SPECS[name]
    tasks = TASKS if spec.stem_channels else [TASKS[0], Task("other", "o", 16, 7)]
    estimator = Estimator(spec, tasks, levels=3, trunk_size=trunk_size)
    images = [tf.random.normal((4, t.input_size, t.input_size, 3)) for t in tasks]
    for seed in range(2):  # move the batch-norm statistics away from their initial values
        structure = tf.random.stateless_uniform([8, estimator.n_blocks], [seed, 0], 0, 3, tf.int32)
        estimator.call_tasks([x * (seed + 1.0) for x in images], structure, training=True)
    network = plain.PlainNetwork(estimator)
    assert _shapes(network.trainable_weights) == _shapes(estimator.trainable_weights)
    assert _shapes(network.weights) == _shapes(estimator.weights)
    plain.copy_weights(estimator, network)
    expected = estimator.call_tasks(images, training=False)
    got = network.call_tasks(images, training=False)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-4)
    np.testing.assert_allclose(network(images[1], task=1), expected[1], atol=1e-4)


def test_plain_network_refuses_bottleneck_blocks():
    spec = backbones.resnext(depth=11, widths=(16, 16, 16), cardinality=2, base_width=4,
                             stem_channels=8)
    estimator = Estimator(spec, TASKS[:1], levels=2, trunk_size=16)
    with pytest.raises(ValueError, match="no bottleneck"):
        plain.PlainNetwork(estimator)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_compact_network_computes_its_structure(name):
    """Given one structure, the plain network is that structure's compact network: each
    block at its level's width (a level-0 residual block its shortcut alone, with no
    weights), computing what the estimator's sliced path computes under that structure."""
    spec, trunk_size = SPECS[name]
    tasks = TASKS if spec.stem_channels else [TASKS[0], Task("other", "o", 16, 7)]
    estimator = Estimator(spec, tasks, levels=3, trunk_size=trunk_size)
    images = [tf.random.normal((4, t.input_size, t.input_size, 3)) for t in tasks]
    structure = tf.random.stateless_uniform([8, estimator.n_blocks], [1, 0], 0, 3, tf.int32)
    estimator.call_tasks([2.0 * x for x in images], structure, training=True)
    levels = {"wrn": (0, 2, 1), "simple_convnet": (1, 0)}[name]
    network = plain.PlainNetwork(estimator, structure=levels)
    plain.copy_weights(estimator, network)
    widths = [block.spec.width for block in network.blocks]
    assert widths == [block.level_channels[level]
                      for block, level in zip(estimator.blocks, levels)]
    assert widths != [block.width for block in estimator.blocks]
    for block, width in zip(network.blocks, widths):
        assert bool(block.weights) == bool(width)
    for task, x in enumerate(images):
        expected = estimator(x, task=task, structure=levels, execution="sliced")
        np.testing.assert_allclose(network(x, task=task), expected, atol=1e-4)
    with pytest.raises(ValueError, match="levels must lie"):
        plain.PlainNetwork(estimator, structure=(3,) * estimator.n_blocks)
