"""The estimator's full structure built from standard Keras layers: the speed reference.

``den_tf.bench`` measures the elastic network against this network (same stems, blocks,
neck and heads, no levels): the sliced path's speed-ups, the full structure through the
sliced path, and the masked training step's overhead. Given one structure, the same class
builds the compact network that structure runs, as a static Keras network: the speed Keras
gives that sub-model with nothing chosen at run time. ``copy_weights`` loads an estimator's
weights into either, so the tests can check that both compute the estimator's function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import tensorflow as tf

from den_tf import blocks
from den_tf import structure as structure_lib
from den_tf.backbones import BlockSpec
from den_tf.estimator import Estimator, features
from den_tf.network import MultiTaskNetwork


def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               name=name)


class PlainBlock(keras.layers.Layer):
    """One block of a ``BlockSpec`` at the spec's width: Keras Conv2D and BatchNormalization.
    A basic block of width 0 is its shortcut alone (a skipped block); a one-conv plain block
    narrower than its output pads with zeros, as ``blocks.PlainConvBlock`` does."""

    def __init__(self, spec: BlockSpec, bn_momentum: float, **kwargs):
        super().__init__(**kwargs)
        if spec.kind == "bottleneck":
            # Keras' grouped Conv2D cannot be trained on CPUs without oneDNN (blocks.conv).
            raise ValueError("the plain reference network has no bottleneck (ResNeXt) blocks")
        if spec.width == 0 and spec.kind != "basic":
            raise ValueError(f"only a residual block can have width 0, got a {spec.kind} block")
        self.spec = spec
        norm = dict(momentum=bn_momentum, epsilon=1e-5)
        if spec.kind == "basic" and spec.width:
            self.bn_in = keras.layers.BatchNormalization(**norm, name="bn_in")
            self.conv1 = _conv(spec.width, 3, spec.stride, "conv1")
            self.bn_mid = keras.layers.BatchNormalization(**norm, name="bn_mid")
            self.conv2 = _conv(spec.out_channels, 3, 1, "conv2")
        elif spec.kind == "plain":
            self.conv_a = _conv(spec.width, 3, 1, "conv_a")
            self.bn_a = keras.layers.BatchNormalization(**norm, name="bn_a")
            if spec.convs == 2:
                self.conv_b = _conv(spec.out_channels, 3, 1, "conv_b")
                self.bn_b = keras.layers.BatchNormalization(**norm, name="bn_b")
        elif spec.kind != "basic":
            raise ValueError(f"unknown block kind {spec.kind!r}")

    def call(self, x, training=False):
        spec = self.spec
        if spec.kind == "basic":
            shortcut = blocks.shortcut(x, spec.stride, spec.out_channels)
            if not spec.width:
                return shortcut
            h = self.conv1(tf.nn.relu(self.bn_in(x, training=training)))
            h = self.conv2(tf.nn.relu(self.bn_mid(h, training=training)))
            return shortcut + h
        h = tf.nn.relu(self.bn_a(self.conv_a(x), training=training))
        if spec.convs == 2:
            h = tf.nn.relu(self.bn_b(self.conv_b(h), training=training))
        elif spec.width < spec.out_channels:
            h = tf.pad(h, [[0, 0], [0, 0], [0, 0], [0, spec.out_channels - spec.width]])
        return tf.nn.max_pool2d(h, 2, 2, "VALID") if spec.pool else h


class PlainNetwork(MultiTaskNetwork):
    """``estimator``'s architecture as an ordinary Keras network: its full structure, or with
    ``structure`` (a level per block, Python ints) the compact network that structure runs,
    each block's nested width cut to its level's channels."""

    def __init__(self, estimator: Estimator, structure: Sequence[int] | None = None, **kwargs):
        super().__init__(
            estimator.tasks, estimator.trunk_size, estimator.stem_channels,
            estimator.stem_kernel, estimator.per_task_stems, **kwargs,
        )
        spec = estimator.backbone
        widths = [block.width for block in spec.blocks]
        if structure is not None:
            levels = structure_lib.check_fixed_structure(structure, estimator.n_blocks,
                                                         estimator.levels)
            widths = [block.level_channels[level]
                      for block, level in zip(estimator.blocks, levels)]
        self.neck = spec.neck
        self.blocks = tuple(
            PlainBlock(dataclasses.replace(block, width=width), estimator.bn_momentum,
                       name=f"block_{i}")
            for i, (block, width) in enumerate(zip(spec.blocks, widths))
        )
        if spec.neck == "gap":
            self.neck_bn = keras.layers.BatchNormalization(
                momentum=estimator.bn_momentum, epsilon=1e-5, name="neck_bn"
            )
        self.hidden = tuple(
            keras.layers.Dense(units, activation="relu", name=f"hidden_{j}")
            for j, units in enumerate(spec.hidden_units)
        )
        self.heads = tuple(
            keras.layers.Dense(task.num_classes, name=f"head_{task.name}") for task in self.tasks
        )
        size = self.tasks[0].input_size
        self.call_task(tf.zeros([1, size, size, 3]), 0)  # builds the trunk and the first head
        for head in self.heads[1:]:
            head.build((None, self.heads[0].kernel.shape[0]))

    def call(self, images, task=0, training=False):
        return self.call_task(images, task, training=training)

    def _trunk(self, x, training=False):
        for block in self.blocks:
            x = block(x, training=training)
        return features(x, self.neck_bn if self.neck == "gap" else None, self.hidden, training)

    def _head(self, features, task):
        return self.heads[task](features)


def copy_weights(estimator: Estimator, plain: PlainNetwork) -> None:
    """Loads the estimator's weights into ``plain``, layer by layer; each block's nested
    weights cut to the plain block's width (their leading channels, as the sliced path cuts
    them)."""

    def bn(source, target, channels=None):
        weights = [source.gamma, source.beta, source.moving_mean, source.moving_variance]
        target.set_weights([w if channels is None else blocks.leading(w, channels, 0)
                            for w in weights])

    for source, target in zip(estimator.stems, plain.stems):
        target.set_weights(source.get_weights())
    for source, target in zip(estimator.blocks, plain.blocks):
        width = target.spec.width
        if target.spec.kind == "basic" and width:
            bn(source.bn_in, target.bn_in)
            target.conv1.set_weights([blocks.leading(source.conv1, width, 3)])
            bn(source.bn_mid, target.bn_mid, width)
            target.conv2.set_weights([blocks.leading(source.conv2, width, 2)])
        elif target.spec.kind != "basic":
            target.conv_a.set_weights([blocks.leading(source.conv_a, width, 3)])
            bn(source.bn_a, target.bn_a, width)
            if target.spec.convs == 2:
                target.conv_b.set_weights([blocks.leading(source.conv_b, width, 2)])
                bn(source.bn_b, target.bn_b)
    if plain.neck == "gap":
        bn(estimator.neck_bn, plain.neck_bn)
    for source, target in zip((*estimator.hidden, *estimator.heads),
                              (*plain.hidden, *plain.heads)):
        target.set_weights(source.get_weights())
