"""Shared test setup: quiet TensorFlow, deterministic seeds, small helpers."""

import os
import pathlib

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


def image_folder(folder: pathlib.Path, exact: np.ndarray) -> pathlib.Path:
    """A folder of files to classify: ``exact`` (an image of the task's size) as a_exact.png,
    a larger image in a nested folder (b_larger.png), a truncated PNG and a text file."""
    (folder / "nested").mkdir(parents=True)
    tf.io.write_file(str(folder / "a_exact.png"), tf.io.encode_png(exact))
    larger = np.random.RandomState(1).randint(0, 256, (40, 48, 3)).astype(np.uint8)
    tf.io.write_file(str(folder / "nested" / "b_larger.png"), tf.io.encode_png(larger))
    (folder / "c_truncated.png").write_bytes(tf.io.encode_png(exact).numpy()[:40])
    (folder / "d_notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def served_models():
    """A tiny estimator and selector for two synthetic tasks (32 and 64 px) ready to serve,
    and 16 uint8 images per task (keyed by signature name): batch-norm statistics away from
    their initial values, and a selector whose argmax structure changes from image to
    image."""
    import keras

    from den_tf import backbones
    from den_tf.datasets import pipeline, sources
    from den_tf.estimator import Estimator
    from den_tf.selector import Selector
    from den_tf.tasks import SYNTHETIC_TASKS

    tasks = list(SYNTHETIC_TASKS[:2])  # 32 and 64 px
    spec = backbones.wrn(depth=8, widths=(8, 8, 16), stem_channels=8)
    keras.utils.set_random_seed(0)
    estimator = Estimator(spec, tasks, levels=3, trunk_size=16)
    selector = Selector(tasks, estimator.n_blocks, estimator.levels, widths=(8,), trunk_size=16,
                        stem_channels=8)
    rng = np.random.RandomState(0)
    # Batch-norm statistics and scales away from their initial values: the export folds them.
    for bn in estimator.batch_norms():
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
        bn.moving_mean.assign(rng.normal(0, 0.2, bn.moving_mean.shape))
        bn.gamma.assign(rng.uniform(0.5, 2.0, bn.gamma.shape))
    # Images of different colours, so that the selector's pooled features point different ways.
    images = {signature: (rng.uniform(0, 1, (16, 1, 1, 3)) * rng.randint(
        0, 256, (16, t.input_size, t.input_size, 3))).astype(np.uint8)
        for signature, t in zip(("synthetic_shapes", "synthetic_textures"), tasks)}
    # Large logits weights centred on these images' features, so that the argmax structure
    # changes from image to image.
    features = tf.concat([
        selector._trunk(selector.stem(pipeline.normalize(
            tf.cast(batch, tf.float32), sources.preprocessing(task.dataset)), t))
        for t, (task, batch) in enumerate(zip(tasks, images.values()))], axis=0)
    kernel = tf.random.stateless_normal(selector.logits.kernel.shape, seed=[1, 2]) * 30.0
    selector.logits.kernel.assign(kernel)
    selector.logits.bias.assign(-tf.reduce_mean(features @ kernel, axis=0))
    return estimator, selector, images
