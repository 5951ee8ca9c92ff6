"""Multi-task plumbing shared by the estimator and the selector.

Each task has its own stem, sized so that every task enters the shared trunk at the same
resolution (a 96-pixel task gets stride 3 to reach a 32-pixel trunk). So one call can run
each task's stem on its own batch, concatenate the results, pass the whole multi-task batch
through the trunk once, split it and apply each task's head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import tensorflow as tf

from den_tf import blocks
from den_tf.tasks import Task


def task_from_config(config: dict | Task) -> Task:
    """A ``Task`` from itself or from its dict (as stored in a Keras config)."""
    return config if isinstance(config, Task) else Task(**config)


class MultiTaskNetwork(keras.Model):
    """Per-task stems, a shared trunk (``_trunk``) and per-task outputs (``_head``).

    Args:
      tasks: the tasks, in task-id order (``Task`` objects or their dicts).
      trunk_size: input resolution of the trunk; every task's input size must be a multiple
        of it when there is a stem, and equal to it when there is none.
      stem_channels: output channels of the stems; 0 for no stem.
      stem_kernel: stem kernel size.
      per_task_stems: one stem per task (True) or one shared stem (False).
      kernel_initializer: initializer of the stems' and blocks' convolution kernels.

    The task id picks a stem and a head, so it is a Python int passed by keyword:
    ``network(images, task=1)``.
    """

    def __init__(
        self,
        tasks: Sequence[dict | Task],
        trunk_size: int,
        stem_channels: int,
        stem_kernel: int,
        per_task_stems: bool = True,
        kernel_initializer: blocks.Initializer = "he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Keras gives the layers made below the global policy, not this model's.
        if "dtype" in kwargs and self.dtype_policy.name != keras.config.dtype_policy().name:
            raise ValueError(
                f"{type(self).__name__} with dtype policy {self.dtype_policy.name!r} must be "
                f"built under that policy (den_tf.builders.precision"
                f"({self.dtype_policy.name!r})); its layers would take the global one, "
                f"{keras.config.dtype_policy().name!r}")
        self.tasks = tuple(task_from_config(t) for t in tasks)
        if not self.tasks:
            raise ValueError("tasks: at least one task is required")
        self.trunk_size = int(trunk_size)
        self.stem_channels = int(stem_channels)
        self.stem_kernel = int(stem_kernel)
        self.per_task_stems = bool(per_task_stems)
        self.kernel_initializer = blocks.initializer_identifier(kernel_initializer)
        strides = []
        for task in self.tasks:
            stride, rest = divmod(task.input_size, self.trunk_size)
            if rest or stride < 1 or (stride > 1 and not self.stem_channels):
                raise ValueError(
                    f"task {task.name!r}: input size {task.input_size} cannot enter a trunk of "
                    f"size {self.trunk_size} (needs a stem and an integer stride)"
                )
            strides.append(stride)
        if not self.per_task_stems and len(set(strides)) > 1:
            raise ValueError("per_task_stems=False needs every task at the same input size")
        # Layers are kept in tuples: TensorFlow checkpoints track the layers in a tuple
        # attribute of a Keras 3 model, not those in a list.
        stems = []
        if self.stem_channels:
            count = len(self.tasks) if self.per_task_stems else 1
            for t in range(count):
                stem = keras.layers.Conv2D(
                    self.stem_channels, self.stem_kernel, strides=strides[t], padding="same",
                    use_bias=False, kernel_initializer=self.kernel_initializer,
                    name=f"stem_{self.tasks[t].name}" if self.per_task_stems else "stem",
                )
                size = self.tasks[t].input_size
                stem.build((None, size, size, 3))
                stems.append(stem)
        self.stems = tuple(stems)

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": [dataclasses.asdict(t) for t in self.tasks],
            "trunk_size": self.trunk_size,
            "stem_channels": self.stem_channels,
            "stem_kernel": self.stem_kernel,
            "per_task_stems": self.per_task_stems,
            "kernel_initializer": self.kernel_initializer,
        }

    def check_task(self, task) -> int:
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(self.tasks):
            raise ValueError(
                f"task id must be an int in [0, {len(self.tasks)}) "
                f"({', '.join(t.name for t in self.tasks)}), got {task!r}"
            )
        return task

    def stem(self, images: tf.Tensor, task: int) -> tf.Tensor:
        """The task's stem on its images (validated against the task's input size)."""
        task = self.check_task(task)
        size = self.tasks[task].input_size
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or tuple(images.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"images for task {self.tasks[task].name!r} must have shape (batch, {size}, "
                f"{size}, 3), got {images.shape.as_list()}"
            )
        if not self.stems:
            return images
        return self.stems[task if self.per_task_stems else 0](images)

    def trunk_input_shape(self) -> tuple[None, int, int, int]:
        """Shape of the trunk's input: the stems' output (or the image without a stem)."""
        return (None, self.trunk_size, self.trunk_size, self.stem_channels or 3)

    def call_tasks(self, images: Sequence[tf.Tensor], *args, **kwargs) -> list[tf.Tensor]:
        """One batch per task (in task order) through one trunk pass; outputs per task.

        Extra arguments go to the trunk; per-instance ones (a structure) cover the
        concatenation of the task batches, in task order.
        """
        if len(images) != len(self.tasks):
            raise ValueError(f"call_tasks needs {len(self.tasks)} image batches, got {len(images)}")
        return self.call_features([self.stem(x, t) for t, x in enumerate(images)], *args,
                                  **kwargs)

    def call_features(self, features: Sequence[tf.Tensor], *args, **kwargs) -> list[tf.Tensor]:
        """``call_tasks`` from the stems' outputs, one batch per task: the selector's scoring
        runs each image's stem once and repeats its features for every sampled structure."""
        if len(features) != len(self.tasks):
            raise ValueError(f"call_features needs {len(self.tasks)} feature batches, got "
                             f"{len(features)}")
        sizes = [tf.shape(f)[0] for f in features]
        shared = self._trunk(tf.concat(features, axis=0), *args, **kwargs)
        parts = tf.split(shared, sizes, axis=0)
        return [self._output(part, t) for t, part in enumerate(parts)]

    def call_task(self, images: tf.Tensor, task: int, *args, **kwargs) -> tf.Tensor:
        """One task's batch: stem, trunk, head."""
        return self._output(self._trunk(self.stem(images, task), *args, **kwargs), task)

    def _output(self, features, task: int) -> tf.Tensor:
        """The task's head, in float32 (under mixed precision the layers compute in 16 bits;
        losses, probabilities and costs stay float32)."""
        return tf.cast(self._head(features, task), tf.float32)

    def _trunk(self, features, *args, **kwargs):
        raise NotImplementedError

    def output_layers(self, task: int) -> list:
        """The fully connected layers a task's instances run after the trunk (for costs)."""
        raise NotImplementedError

    def _head(self, features, task):
        raise NotImplementedError
