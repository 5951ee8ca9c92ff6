"""Shared test setup: quiet TensorFlow, deterministic seeds, small helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPU devices, for MirroredStrategy tests (tests/test_distribute.py); set before
# TensorFlow initialises its devices. Ops still run on CPU:0 unless a strategy places them.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)
    np.random.seed(0)


@pytest.fixture()
def tiny_evaluator():
    """An evaluator on a tiny untrained estimator and selector for two tasks of 16 and 32 px
    (5 and 7 classes)."""
    from den_tf import backbones, evaluation
    from den_tf.estimator import Estimator
    from den_tf.selector import Selector
    from den_tf.tasks import Task

    tasks = [Task("small", "s", 16, 5), Task("large", "l", 32, 7)]
    spec = backbones.wrn(depth=8, widths=(8, 8, 16), stem_channels=8)
    estimator = Estimator(spec, tasks, levels=3, trunk_size=16)
    selector = Selector(tasks, estimator.n_blocks, estimator.levels, widths=(8,), trunk_size=16,
                        stem_channels=8)
    return evaluation.Evaluator(estimator, selector, rho=0.1)
