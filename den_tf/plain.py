"""The estimator's full structure built from standard Keras layers: the speed reference.

``den_tf.bench`` measures the elastic network against this network (same stems, blocks,
neck and heads, no levels): the sliced path's speed-ups, the full structure through the
sliced path, and the masked training step's overhead. ``copy_weights`` loads an estimator's
weights into it, so the tests can check that both compute the same function.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from den_tf import blocks
from den_tf.backbones import BlockSpec
from den_tf.estimator import Estimator, features
from den_tf.network import MultiTaskNetwork


def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               name=name)


class PlainBlock(keras.layers.Layer):
    """One block of a ``BlockSpec`` at full width: Keras Conv2D and BatchNormalization."""

    def __init__(self, spec: BlockSpec, bn_momentum: float, **kwargs):
        super().__init__(**kwargs)
        if spec.kind == "bottleneck":
            # Keras' grouped Conv2D cannot be trained on CPUs without oneDNN (blocks.conv).
            raise ValueError("the plain reference network has no bottleneck (ResNeXt) blocks")
        self.spec = spec
        norm = dict(momentum=bn_momentum, epsilon=1e-5)
        if spec.kind == "basic":
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
        else:
            raise ValueError(f"unknown block kind {spec.kind!r}")

    def call(self, x, training=False):
        spec = self.spec
        if spec.kind == "basic":
            h = self.conv1(tf.nn.relu(self.bn_in(x, training=training)))
            h = self.conv2(tf.nn.relu(self.bn_mid(h, training=training)))
            return blocks.shortcut(x, spec.stride, spec.out_channels) + h
        h = tf.nn.relu(self.bn_a(self.conv_a(x), training=training))
        if spec.convs == 2:
            h = tf.nn.relu(self.bn_b(self.conv_b(h), training=training))
        return tf.nn.max_pool2d(h, 2, 2, "VALID") if spec.pool else h


class PlainNetwork(MultiTaskNetwork):
    """The full structure of ``estimator``'s architecture as an ordinary Keras network."""

    def __init__(self, estimator: Estimator, **kwargs):
        super().__init__(
            estimator.tasks, estimator.trunk_size, estimator.stem_channels,
            estimator.stem_kernel, estimator.per_task_stems, **kwargs,
        )
        spec = estimator.backbone
        self.neck = spec.neck
        self.blocks = tuple(
            PlainBlock(block, estimator.bn_momentum, name=f"block_{i}")
            for i, block in enumerate(spec.blocks)
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
    """Loads the estimator's weights into ``plain`` (its full structure, layer by layer)."""

    def bn(source, target):
        target.set_weights([source.gamma, source.beta, source.moving_mean,
                            source.moving_variance])

    for source, target in zip(estimator.stems, plain.stems):
        target.set_weights(source.get_weights())
    for source, target in zip(estimator.blocks, plain.blocks):
        if target.spec.kind == "basic":
            bn(source.bn_in, target.bn_in)
            bn(source.bn_mid, target.bn_mid)
            target.conv1.set_weights([source.conv1])
            target.conv2.set_weights([source.conv2])
        else:
            target.conv_a.set_weights([source.conv_a])
            bn(source.bn_a, target.bn_a)
            if target.spec.convs == 2:
                target.conv_b.set_weights([source.conv_b])
                bn(source.bn_b, target.bn_b)
    if plain.neck == "gap":
        bn(estimator.neck_bn, plain.neck_bn)
    for source, target in zip((*estimator.hidden, *estimator.heads),
                              (*plain.hidden, *plain.heads)):
        target.set_weights(source.get_weights())
