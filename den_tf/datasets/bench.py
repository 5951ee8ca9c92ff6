"""Input-pipeline throughput of a scenario's mix: M1 (CIFAR-100 32, Tiny-ImageNet 64, STL-10 96)
or M2 (the ten five-class tasks of Mini-ImageNet 84).

    python -m den_tf.datasets.bench [--scenario=m1|m2] [--data_dir=...] [--steps=40]
        [--batch_size=128] [--shuffle_buffer=10000] [--fake_images_per_class=N]

Reads the prepared datasets when all of the mix's are in ``--data_dir``. Otherwise, for M2 with
``--fake_images_per_class``, a fake Mini-ImageNet 84 prepared by the real builder in a temporary
directory from a fake ILSVRC-2012 (flat-colour JPEGs, N training images per class, one file);
else random uint8 images of the same sizes, served from memory through the same pipeline (no
file reading or image decoding, so faster than real data). Prints one JSON line;
``images_per_second`` counts the images of all tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from den_tf import hardware
from den_tf.datasets import mini_imagenet, pipeline, sources, testing
from den_tf.tasks import MINI_IMAGENET_TASKS, Task, get_tasks

FLAGS = flags.FLAGS
SCENARIO_TASKS = {
    "m1": ("cifar100", "tiny_imagenet", "stl10"),
    "m2": tuple(f"mini_imagenet84_task{k}" for k in range(MINI_IMAGENET_TASKS)),
}
RANDOM_PREFIX = "bench_random/"
FAKE_DATASET = "mini_imagenet/84"


def define_flags() -> None:
    """Defines the command's flags (only when run: importing never collides with other flags)."""
    flags.DEFINE_enum("scenario", "m1", sorted(SCENARIO_TASKS), "The mix of tasks read.")
    flags.DEFINE_string("data_dir", sources.DATA_DIR,
                        "TFDS data directory with the mix's datasets, if prepared (default: the "
                        "project's, as make data and make bench use).")
    flags.DEFINE_integer("batch_size", 128, "Batch size per task.")
    flags.DEFINE_integer("steps", 40, "Timed steps (one batch of every task each).")
    flags.DEFINE_integer("warmup", 5, "Untimed steps first (pipeline start-up, buffer filling).")
    flags.DEFINE_integer("shuffle_buffer", pipeline.DEFAULT_SHUFFLE_BUFFER,
                         "Shuffle buffer of each task's pipeline.")
    flags.DEFINE_integer("random_examples", 2048, "Examples per dataset for random in-memory data.")
    flags.DEFINE_integer("fake_images_per_class", 0,
                         "M2 without a prepared Mini-ImageNet: prepare a fake one with this many "
                         "training images per class (0: random in-memory data instead).")


def prepare_fake_mini_imagenet(root: Path, images_per_class: int) -> str:
    """A Mini-ImageNet 84 prepared by the real builder under ``root`` from a fake ILSVRC-2012 of
    the 50 stored classes (``images_per_class`` training images and one validation image
    each); returns its TFDS data directory."""
    manual = testing.fake_ilsvrc(root / "manual", mini_imagenet.default_wnids(),
                                 images_per_class, 1)
    data_dir = str(root / "tfds")
    tfds.builder(FAKE_DATASET, data_dir=data_dir, train_images_per_class=images_per_class,
                 val_images_per_class=1).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return data_dir


def random_tasks(tasks: list[Task], examples: int) -> list[Task]:
    """``tasks`` on random uint8 images of their sizes, served from memory
    (``RANDOM_PREFIX`` + their dataset), each dataset with the labels its tasks read."""
    sizes = {t.dataset: (t.input_size, max(u.first_class + u.num_classes for u in tasks
                                           if u.dataset == t.dataset)) for t in tasks}

    @functools.cache  # (the ten M2 tasks read one dataset)
    def random_source(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        size, num_classes = sizes[dataset.removeprefix(RANDOM_PREFIX)]
        return testing.random_images(examples, size, seed=size), np.arange(examples) % num_classes

    sources.register_source(RANDOM_PREFIX, random_source)
    return [dataclasses.replace(t, dataset=RANDOM_PREFIX + t.dataset) for t in tasks]


def images_per_second(tasks: list[Task], data_dir: str | None, *, batch_size: int, steps: int,
                      warmup: int, shuffle_buffer: int) -> dict:
    """Times ``steps`` training steps of the mix (a batch of every task each) after ``warmup``
    untimed ones: images (of all tasks) and steps per second."""
    dataset = pipeline.multitask_dataset(tasks, "train", batch_size, seed=0, training=True,
                                         data_dir=data_dir, shuffle_buffer=shuffle_buffer)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"images_per_second": round(steps * batch_size * len(tasks) / seconds, 1),
            "steps_per_second": round(steps / seconds, 2)}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.fake_images_per_class and FLAGS.scenario != "m2":
        raise app.UsageError("--fake_images_per_class prepares a fake Mini-ImageNet: it goes "
                             "with --scenario=m2")
    tasks = get_tasks(SCENARIO_TASKS[FLAGS.scenario])
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = FLAGS.data_dir
        if all(sources.is_prepared(t.dataset, data_dir) for t in tasks):
            data = f"prepared TFDS data in {data_dir or 'the default TFDS directory'}"
        elif FLAGS.scenario == "m2" and FLAGS.fake_images_per_class > 0:
            data_dir = prepare_fake_mini_imagenet(Path(scratch), FLAGS.fake_images_per_class)
            data = (f"a fake {FAKE_DATASET} of {FLAGS.fake_images_per_class} flat-colour "
                    "training images per class, prepared by the real builder")
        else:
            data = "random uint8 images in memory (no decoding: real data is slower)"
            tasks = random_tasks(tasks, FLAGS.random_examples)
        timing = images_per_second(tasks, data_dir, batch_size=FLAGS.batch_size,
                                   steps=FLAGS.steps, warmup=FLAGS.warmup,
                                   shuffle_buffer=FLAGS.shuffle_buffer)
    print(json.dumps({
        "benchmark": f"input_pipeline_{FLAGS.scenario}",
        "data": data,
        "tasks": [f"{t.name} ({t.input_size}x{t.input_size})" for t in tasks],
        "batch_size_per_task": FLAGS.batch_size,
        "shuffle_buffer": FLAGS.shuffle_buffer,
        "steps": FLAGS.steps,
        **timing,
        "cpus": os.cpu_count(),
        "onednn": hardware.onednn_enabled(),
    }))


if __name__ == "__main__":
    define_flags()
    app.run(main)
