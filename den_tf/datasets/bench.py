"""Input-pipeline throughput of the M1 mix (CIFAR-100 32, Tiny-ImageNet 64, STL-10 96).

    python -m den_tf.datasets.bench [--data_dir=...] [--steps=40] [--batch_size=128]

Reads the prepared datasets when all three are in ``--data_dir``; otherwise random uint8 images
of the same sizes, served from memory through the same pipeline (no image decoding, so faster
than real data). Prints one JSON line; ``images_per_second`` counts the images of all tasks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
from absl import app, flags

from den_tf import hardware
from den_tf.datasets import pipeline, sources, testing
from den_tf.tasks import get_tasks

FLAGS = flags.FLAGS
M1_TASKS = ("cifar100", "tiny_imagenet", "stl10")
RANDOM_PREFIX = "bench_random/"


def define_flags() -> None:
    """Defines the command's flags (only when run: importing never collides with other flags)."""
    flags.DEFINE_string("data_dir", sources.DATA_DIR,
                        "TFDS data directory with the M1 datasets, if prepared (default: the "
                        "project's, as make data and make bench use).")
    flags.DEFINE_integer("batch_size", 128, "Batch size per task.")
    flags.DEFINE_integer("steps", 40, "Timed steps (one batch of every task each).")
    flags.DEFINE_integer("warmup", 5, "Untimed steps first (pipeline start-up, buffer filling).")
    flags.DEFINE_integer("random_examples", 2048, "Examples per dataset for random in-memory data.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tasks = get_tasks(M1_TASKS)
    if all(sources.is_prepared(t.dataset, FLAGS.data_dir) for t in tasks):
        data = f"prepared TFDS data in {FLAGS.data_dir or 'the default TFDS directory'}"
    else:
        data = "random uint8 images in memory (no decoding: real data is slower)"
        sizes = {t.dataset: (t.input_size, t.num_classes) for t in tasks}

        def random_source(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
            size, num_classes = sizes[dataset.removeprefix(RANDOM_PREFIX)]
            images = testing.random_images(FLAGS.random_examples, size, seed=size)
            return images, np.arange(FLAGS.random_examples) % num_classes

        sources.register_source(RANDOM_PREFIX, random_source)
        tasks = [dataclasses.replace(t, dataset=RANDOM_PREFIX + t.dataset) for t in tasks]

    dataset = pipeline.multitask_dataset(
        tasks, "train", FLAGS.batch_size, seed=0, training=True, data_dir=FLAGS.data_dir
    )
    iterator = iter(dataset)
    for _ in range(FLAGS.warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        next(iterator)
    seconds = time.perf_counter() - start
    images = FLAGS.steps * FLAGS.batch_size * len(tasks)
    result = {
        "benchmark": "input_pipeline_m1",
        "data": data,
        "tasks": [f"{t.name} ({t.input_size}x{t.input_size})" for t in tasks],
        "batch_size_per_task": FLAGS.batch_size,
        "steps": FLAGS.steps,
        "images_per_second": round(images / seconds, 1),
        "steps_per_second": round(FLAGS.steps / seconds, 2),
        "cpus": os.cpu_count(),
        "onednn": hardware.onednn_enabled(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
