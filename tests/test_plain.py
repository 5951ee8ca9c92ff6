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
