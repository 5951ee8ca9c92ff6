"""The selector g(x; theta_sel): a small CNN giving a distribution over levels per block.

Per-task stems, one residual block per stage, global pooling and a linear map to logits of
shape (batch, n_blocks, h). A softmax over the last axis gives the matrix C of Eq. (2),
one column per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from den_tf import blocks
from den_tf.network import MultiTaskNetwork, task_from_config
from den_tf.tasks import Task


@keras.saving.register_keras_serializable(package="den_tf")
class Selector(MultiTaskNetwork):
    """Maps an image of a task to level logits for each of ``n_blocks`` blocks.

    Args:
      tasks: the tasks in task-id order.
      n_blocks: blocks of the estimator.
      levels: levels per block, h.
      widths: width of the residual block of each stage (the first at stride 1, the rest
        at stride 2).
      trunk_size, stem_channels, stem_kernel, per_task_stems, kernel_initializer: as for the
        estimator.
      per_task_heads: one logits layer per task, so that the task id reaches the selector
        even when the tasks share a stem (M2's ten tasks); else one shared layer.
    """

    def __init__(
        self,
        tasks: Sequence[Task | dict],
        n_blocks: int,
        levels: int,
        widths: Sequence[int] = (32, 64, 128),
        trunk_size: int | None = None,
        stem_channels: int = 16,
        stem_kernel: int = 3,
        per_task_stems: bool = True,
        bn_momentum: float = 0.9,
        per_task_heads: bool = False,
        **kwargs,
    ):
        tasks = [task_from_config(t) for t in tasks]
        if trunk_size is None:
            trunk_size = min(t.input_size for t in tasks)
        super().__init__(tasks, trunk_size, stem_channels, stem_kernel, per_task_stems, **kwargs)
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"selector widths must be positive ints, got {tuple(widths)}")
        self.n_blocks = int(n_blocks)
        self.levels = int(levels)
        self.widths = tuple(int(w) for w in widths)
        self.bn_momentum = bn_momentum
        shape = self.trunk_input_shape()
        trunk = []
        for s, width in enumerate(self.widths):
            block = blocks.ResidualBasicBlock(
                width, width, (width,), stride=1 if s == 0 else 2, bn_momentum=bn_momentum,
                kernel_initializer=self.kernel_initializer, name=f"block_{s}",
            )
            block.build(shape)
            trunk.append(block)
            shape = block.compute_output_shape(shape)
        self.blocks = tuple(trunk)  # a tuple, so that checkpoints track the layers
        self.neck_bn = blocks.MaskedBatchNorm(momentum=bn_momentum, name="neck_bn")
        self.neck_bn.build(shape)
        self.per_task_heads = bool(per_task_heads)
        names = [f"logits_{t.name}" for t in self.tasks] if self.per_task_heads else ["logits"]
        heads = []
        for name in names:
            head = keras.layers.Dense(self.n_blocks * self.levels, name=name)
            head.build((None, width))
            heads.append(head)
        # Checkpoints name the shared layer ``logits`` (as before per-task heads existed).
        if self.per_task_heads:
            self.task_logits = tuple(heads)
        else:
            self.logits = heads[0]
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "n_blocks": self.n_blocks,
            "levels": self.levels,
            "widths": list(self.widths),
            "bn_momentum": self.bn_momentum,
            "per_task_heads": self.per_task_heads,
        }

    def call(self, images, task=0, training=False):
        """Level logits (batch, n_blocks, h) for one task's batch: ``selector(x, task=t)``."""
        return self.call_task(images, task, training=training)

    def _trunk(self, x, training=False):
        for block in self.blocks:
            x = block(x, training=training)
        return tf.reduce_mean(tf.nn.relu(self.neck_bn(x, training=training)), axis=[1, 2])

    def _head(self, features, task):
        logits = self.output_layers(task)[0](features)
        return tf.reshape(logits, [-1, self.n_blocks, self.levels])

    def output_layers(self, task: int) -> list:
        return [self.task_logits[task] if self.per_task_heads else self.logits]
