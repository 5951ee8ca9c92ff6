"""TensorBoard: training scalars, selected-level histograms and the level-probability image.

TF2 writers store histograms and images as tensors; read them back with an
``EventAccumulator`` and ``Tensors(tag)`` (``Histograms()`` and ``Images()`` stay empty).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata

from den_tf.evaluation import structure_ids
from den_tf.tasks import Task

IMAGE_CELL = 8  # pixels per matrix entry in the level-probability image


def level_histogram(levels: np.ndarray, count: int) -> np.ndarray:
    """TensorBoard's histogram rows (left edge, right edge, instances) with one bucket per
    level l, [l - 0.5, l + 0.5), whatever levels occur (``tf.summary.histogram`` would spread
    its buckets over the data's range instead, so bucket i would not be level i)."""
    left = np.arange(count, dtype=np.float64) - 0.5
    instances = np.bincount(np.asarray(levels, np.int64), minlength=count)
    if len(instances) > count:
        raise ValueError(f"levels must be in [0, {count}), got {int(np.max(levels))}")
    return np.stack([left, left + 1.0, instances.astype(np.float64)], axis=1)


def written_steps(logdir: str) -> dict[str, int]:
    """The highest step written for each tag in ``logdir``'s event files, reading each file
    up to a record cut short by a crash."""
    last: dict[str, int] = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        records = iter(tf.data.TFRecordDataset(path))
        while True:
            try:
                record = next(records)
            except (StopIteration, tf.errors.DataLossError):
                break
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                last[value.tag] = max(last.get(value.tag, event.step), event.step)
    return last


class Writer:
    """Writes the summaries of one run into ``logdir``.

    A run resumed from a checkpoint repeats the steps its interrupted process made after that
    checkpoint; ``skip_written`` keeps their summaries from being written twice (readers
    would show both: TF2 writers mark no restart)."""

    def __init__(self, logdir: str, tasks: Sequence[Task], levels: int):
        self.tasks = tuple(tasks)
        self.levels = levels
        self.logdir = logdir
        self.writer = tf.summary.create_file_writer(logdir)
        self.written: dict[str, int] = {}

    def skip_written(self) -> None:
        """From now on, writes a tag only at steps after the last one ``logdir`` holds for
        it (``written_steps``): a step the stopped process wrote in part (its writer flushes
        every few events) gets the tags it lacks."""
        self.written = written_steps(self.logdir)

    def _new(self, tag: str, step: int) -> bool:
        return step > self.written.get(tag, -1)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if self._new(f"{prefix}/{name}", step):
                    tf.summary.scalar(f"{prefix}/{name}", value)

    def evaluation(self, phase: str, report: dict[str, dict], step: int) -> None:
        """Validation scalars per task, and histograms of the level each block was given (a
        bucket per level) and of the structure ids, under the phase's tag: the estimator
        phase validates the full structure in stage 1, which must not be read as the
        selector's choice."""
        with self.writer.as_default(step=step):
            for name, entry in report.items():
                prefix = f"validation_{phase}/{name}"
                for key in ("accuracy", "objective", "flops", "density"):
                    if self._new(f"{prefix}/{key}", step):
                        tf.summary.scalar(f"{prefix}/{key}", entry[key])
                structures = entry["structures"]
                for block in range(structures.shape[1]):
                    tag = f"{prefix}/levels/block_{block:02d}"
                    if self._new(tag, step):
                        tf.summary.write(
                            tag, level_histogram(structures[:, block], self.levels),
                            metadata=histogram_metadata.create_summary_metadata(tag, ""))
                if self._new(f"{prefix}/structures", step):
                    tf.summary.histogram(f"{prefix}/structures", structure_ids(
                        structures, self.levels).astype(np.float64))

    def level_probabilities(self, matrix: np.ndarray, step: int) -> None:
        """The mean level-probability matrix (h x n, like the paper's Fig. 6b) as an image,
        level 0 in the top row."""
        if not self._new("level_probabilities", step):
            return
        image = np.kron(matrix, np.ones((IMAGE_CELL, IMAGE_CELL)))[np.newaxis, ..., np.newaxis]
        with self.writer.as_default(step=step):
            tf.summary.image("level_probabilities", image.astype(np.float32))

    def flush(self) -> None:
        self.writer.flush()
