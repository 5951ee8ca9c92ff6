"""Throughput of a scenario's model: training steps, and inference at several structures.

    python -m den_tf.bench [--config=experiments/m1_wrn.py] [--batch_size=128]

Uses random images of each task's size (the input pipeline has its own benchmark,
``den_tf.datasets.bench``). Prints one JSON object: training images/s of the estimator and
selector steps (all tasks' images counted), and for inference, images/s of the full network
and of the sliced path at each uniform level and at random mixed structures, with the FLOP
fraction of each and its measured speed-up over the full network, and whether TensorFlow ran
with oneDNN (it changes CPU timings; TensorFlow leaves it off by default on some CPUs).
"""

from __future__ import annotations

import datetime
import json
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags

from den_tf import builders, cost, hardware, metrics, policy
from den_tf.steps import EstimatorStep, SelectorStep

config_flags.DEFINE_config_file("config", "experiments/m1_wrn.py", "Experiment config file.")
flags.DEFINE_integer("batch_size", 128, "Images per task per step.")
flags.DEFINE_integer("train_steps", 3, "Timed training steps per phase (after one untimed).")
flags.DEFINE_integer("repeats", 5, "Timed inference batches per structure (after one untimed).")
FLAGS = flags.FLAGS


def _median_seconds(fn, repeats: int) -> float:
    fn()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, batch_size = FLAGS.config, FLAGS.batch_size
    estimator, selector = builders.build_models(config)
    tasks = estimator.tasks
    rng = np.random.RandomState(0)
    batch = tuple(
        {
            "image": tf.constant(rng.normal(size=(batch_size, t.input_size, t.input_size, 3)),
                                 tf.float32),
            "label": tf.constant(rng.randint(0, t.num_classes, batch_size), tf.int32),
        }
        for t in tasks
    )
    est_opt = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    sel_opt = keras.optimizers.Adam(1e-5)
    est_opt.build(estimator.trainable_variables)
    sel_opt.build(selector.trainable_variables)
    settings = builders.step_settings(config)
    estimator_step = EstimatorStep(estimator, selector, est_opt, settings)
    selector_step = SelectorStep(estimator, selector, sel_opt, settings)
    seed = tf.constant([0, 1], tf.int64)
    images_per_step = batch_size * len(tasks)
    training = {
        "estimator_step_images_per_s": images_per_step / _median_seconds(
            lambda: estimator_step(batch, seed, "initial")["loss"].numpy(), FLAGS.train_steps),
        "selector_step_images_per_s": images_per_step / _median_seconds(
            lambda: selector_step(batch, seed, 0.1)["loss"].numpy(), FLAGS.train_steps),
    }

    costs = cost.cost_table(estimator)
    images = batch[0]["image"]

    def structures():
        uniform = {f"level_{level}": tf.fill([batch_size, estimator.n_blocks], level)
                   for level in range(estimator.levels)}
        uniform["mixed"] = policy.uniform_structure(
            batch_size, estimator.n_blocks, estimator.levels, tf.constant([3, 4]))
        return uniform

    infer = tf.function(
        lambda x, z, execution: estimator(x, task=0, structure=z, execution=execution)
    )
    full = estimator.full_structure(batch_size)
    full_seconds = _median_seconds(lambda: infer(images, full, "masked").numpy(), FLAGS.repeats)
    inference = {"full_network": {"images_per_s": batch_size / full_seconds, "flops_fraction": 1.0,
                                  "speedup": 1.0}}
    for name, z in structures().items():
        seconds = _median_seconds(lambda z=z: infer(images, z, "sliced").numpy(), FLAGS.repeats)
        inference[f"sliced_{name}"] = {
            "images_per_s": batch_size / seconds,
            "flops_fraction": float(np.mean(metrics.flops_fraction(z, costs).numpy())),
            "speedup": full_seconds / seconds,
        }
    result = {
        "benchmark": "model",
        "date": datetime.date.today().isoformat(),
        "device": hardware.device_description(),
        "onednn": hardware.onednn_enabled(),
        "tensorflow": tf.__version__,
        "backbone": estimator.backbone.name,
        "tasks": [t.name for t in tasks],
        "batch_size_per_task": batch_size,
        "training": {k: round(v, 1) for k, v in training.items()},
        "inference_task": tasks[0].name,
        "inference": {k: {m: round(x, 3) for m, x in v.items()} for k, v in inference.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
