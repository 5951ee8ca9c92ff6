"""TensorBoard: training scalars, selected-level histograms and the level-probability image.

TF2 writers store histograms and images as tensors; read them back with an
``EventAccumulator`` and ``Tensors(tag)`` (``Histograms()`` and ``Images()`` stay empty).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from den_tf.evaluation import structure_ids
from den_tf.tasks import Task

IMAGE_CELL = 8  # pixels per matrix entry in the level-probability image


class Writer:
    """Writes the summaries of one run into ``logdir``."""

    def __init__(self, logdir: str, tasks: Sequence[Task], levels: int):
        self.tasks = tuple(tasks)
        self.levels = levels
        self.writer = tf.summary.create_file_writer(logdir)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"{prefix}/{name}", value)

    def evaluation(self, phase: str, report: dict[str, dict], step: int) -> None:
        """Validation scalars per task, and histograms of the levels each block was given
        and of the structure ids."""
        with self.writer.as_default(step=step):
            for name, entry in report.items():
                for key in ("accuracy", "objective", "flops", "density"):
                    tf.summary.scalar(f"validation_{phase}/{name}/{key}", entry[key])
                structures = entry["structures"]
                for block in range(structures.shape[1]):
                    tf.summary.histogram(
                        f"levels/{name}/block_{block:02d}", structures[:, block],
                        buckets=self.levels,
                    )
                tf.summary.histogram(
                    f"structures/{name}", structure_ids(structures, self.levels).astype(np.float64)
                )

    def level_probabilities(self, matrix: np.ndarray, step: int) -> None:
        """The mean level-probability matrix (h x n, like the paper's Fig. 6b) as an image."""
        image = np.kron(matrix, np.ones((IMAGE_CELL, IMAGE_CELL)))[np.newaxis, ..., np.newaxis]
        with self.writer.as_default(step=step):
            tf.summary.image("level_probabilities", image.astype(np.float32))

    def flush(self) -> None:
        self.writer.flush()
