"""Blocks with nested channel groups, executed masked (training) or sliced (inference).

A block's internal channels nest by level (see ``structure.py``). Two execution paths share
the same weights:

- ``masked``: every instance runs the block at full width and the channels beyond its level
  are multiplied by zero. Batch norm moments count only the entries that are active, so the
  moving statistics describe each channel as it is when it runs. Used for training.
- ``sliced``: the batch is partitioned by level, each part runs with kernels sliced to its
  kept channels, and the parts are stitched back (in a network, a few blocks run on slices
  of one another's outputs, ``run_span``, and are stitched straight into the grouping of the
  next few: ``Estimator``). Fewer FLOPs take less time.
  Inference only (batch norm uses its moving statistics). Deployment can also pass each
  level's weights cut and with batch norm folded into the convolutions once
  (``folded_level``), instead of on every call.

Levels are always tensors, so one trace serves every structure.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import keras
import tensorflow as tf

from den_tf import distribute

EXECUTIONS = ("masked", "sliced")


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """What one convolution of a block computes: the base of FLOP and parameter counts."""

    kernel_size: int
    in_channels_per_group: int
    out_channels: int
    out_hw: tuple[int, int]


def check_execution(execution: str) -> None:
    """Raises ValueError unless ``execution`` is one of ``EXECUTIONS``."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")


@functools.cache
def native_grouped_gradients() -> bool:
    """Whether TensorFlow can differentiate a grouped convolution natively on this machine.

    On a GPU it can, and on a CPU when oneDNN is on; TensorFlow's own CPU kernels raise
    ``InvalidArgumentError: Gradients for grouped convolutions are not supported on CPU``, and
    TensorFlow leaves oneDNN off by default on some CPUs (AMD EPYC among them). So this is
    probed once, with a tiny convolution, instead of guessed from the CPU or an environment
    variable.
    """
    if tf.config.list_logical_devices("GPU"):
        return True
    # The two gradient ops themselves, run eagerly (init_scope also pauses gradient tapes).
    with tf.init_scope():
        x, kernel, grad = tf.ones([1, 3, 3, 4]), tf.ones([3, 3, 2, 4]), tf.ones([1, 3, 3, 4])
        try:
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=grad,
                strides=[1, 1, 1, 1], padding="SAME",
            )
            tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), out_backprop=grad,
                strides=[1, 1, 1, 1], padding="SAME",
            )
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def conv(x: tf.Tensor, kernel: tf.Tensor, stride: int = 1) -> tf.Tensor:
    """SAME convolution; grouped when the kernel's input depth divides x's channels.

    Where grouped convolutions cannot be differentiated natively (``native_grouped_gradients``)
    each group runs as its own convolution and the outputs are concatenated: the same result,
    trainable on every CPU.
    """
    groups = x.shape[-1] // kernel.shape[2]
    if groups == 1 or native_grouped_gradients():
        return tf.nn.conv2d(x, kernel, stride, "SAME")
    return tf.concat(
        [
            tf.nn.conv2d(part, group_kernel, stride, "SAME")
            for part, group_kernel in zip(tf.split(x, groups, -1), tf.split(kernel, groups, -1))
        ],
        axis=-1,
    )


def leading(weight, count: int, axis: int):
    """The first ``count`` entries of ``weight`` along ``axis``: a level's slice of a kernel or
    of batch-norm parameters. All of them is the weight itself (a slice would copy it on every
    call)."""
    if count == weight.shape[axis]:
        return weight
    index = [slice(None)] * len(weight.shape)
    index[axis] = slice(0, count)
    return weight[tuple(index)]


def fold_batch_norm(kernel: tf.Tensor, bn: MaskedBatchNorm) -> list[tf.Tensor]:
    """``kernel`` (its output channels the first of ``bn``'s) and a bias such that
    convolving with them and adding the bias equals the convolution followed by ``bn`` at
    inference."""
    scale, shift = bn.inference_affine(kernel.shape[-1])
    return [kernel * scale, shift]


def conv_bias_relu(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, stride: int = 1) -> tf.Tensor:
    """A convolution with a folded batch norm, then ReLU, in ``x``'s dtype."""
    kernel, bias = tf.cast(kernel, x.dtype), tf.cast(bias, x.dtype)
    return tf.nn.relu(tf.nn.bias_add(conv(x, kernel, stride), bias))


# 1 - 2**-10 and 2**-10 are exact in float32 and sum to exactly 1, so a fused batch norm
# with this variance and epsilon divides by exactly one.
_UNIT_EPSILON = 2.0**-10


def affine_relu(x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """ReLU of a batch norm given as scale and shift (NHWC ``x``), computed in float32 as
    ``MaskedBatchNorm`` does (a layer's call under mixed precision casts them to its compute
    dtype), returned in ``x``'s dtype.

    Unless the batch is statically one image it runs as TensorFlow's fused batch norm (mean
    0, variance 1 - epsilon), which TensorFlow with oneDNN fuses with the ReLU into one pass
    over ``x`` instead of three (multiply, add, ReLU). On the 2-core AMD EPYC of
    docs/benchmarks.md (2026-12-03, later) WRN-32-4 with every block at level 1 took 0.96-0.97
    of the time at batch 128 (two runs); a single image took 1.10 times as long (one run), so
    it keeps the three."""
    scale, shift = tf.cast(scale, tf.float32), tf.cast(shift, tf.float32)
    x32 = tf.cast(x, tf.float32)
    if x.shape[0] == 1:
        return tf.cast(tf.nn.relu(x32 * scale + shift), x.dtype)
    normalized, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x32, scale=scale, offset=shift, mean=tf.zeros_like(scale),
        variance=tf.fill(tf.shape(scale), 1.0 - _UNIT_EPSILON), epsilon=_UNIT_EPSILON,
        is_training=False)
    return tf.cast(tf.nn.relu(normalized), x.dtype)


def shortcut(x: tf.Tensor, stride: int, out_channels: int) -> tf.Tensor:
    """A residual block's shortcut: average pooling for the stride and zero padding for extra
    channels, no weights."""
    if stride > 1:
        x = tf.nn.avg_pool2d(x, stride, stride, "SAME")
    extra = out_channels - x.shape[-1]
    if extra:
        x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
    return x


Initializer = str | dict | keras.initializers.Initializer


def level_grouping(levels: tf.Tensor, n_levels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The instances grouped by the levels of a span of k consecutive blocks ((batch, k) int32):
    their indices ordered by level in the span's first block, then in its second, and so on
    (instances with the same levels in the batch's order), and the number of instances at each
    combination of levels, (n_levels ** k,) in that order (``run_span``)."""
    key = tf.zeros_like(levels[:, 0])
    for i in range(levels.shape[1]):
        key = key * n_levels + levels[:, i]
    combinations = n_levels ** levels.shape[1]
    order = tf.argsort(key, stable=True)
    return order, tf.math.bincount(key, minlength=combinations, maxlength=combinations)


def run_span(span: Sequence[NestedBlock], x: tf.Tensor, counts: tf.Tensor,
             folded: Sequence | None = None) -> list[tf.Tensor]:
    """Inference on a batch of mixed levels through a span of consecutive blocks, with no copy
    between them. ``x`` comes grouped by the span's levels and ``counts`` counts each
    combination (``level_grouping``). The first block runs each of its levels' parts, slices of
    ``x``; each later block splits each of the previous block's outputs by its own levels, so
    that every piece it runs is a slice of one output. Returns the last block's outputs, one
    per combination of levels (possibly empty), in the grouping's order. ``folded``: each
    block's ``folded_level`` weights, or None."""
    levels = span[0].levels
    counts = tf.reshape(counts, [levels] * len(span))
    pieces = [x]
    for depth, (block, weights) in enumerate(zip(span, folded or [None] * len(span))):
        later = list(range(depth + 1, len(span)))  # (none for the last block: no sum)
        per_piece = tf.reshape(tf.reduce_sum(counts, later), [-1, levels])
        pieces = block(pieces, execution="sliced", folded=weights, counts=per_piece)
    return pieces


def initializer_identifier(initializer: Initializer) -> str | dict:
    """A Keras initializer as a name or a config: what ``get_config`` stores, and what each
    kernel instantiates afresh (one unseeded instance called twice repeats its values)."""
    if isinstance(initializer, str | dict):
        return initializer
    return keras.initializers.serialize(initializer)


def _out_size(size: int | None, stride: int) -> int | None:
    return None if size is None else -(-size // stride)


@keras.saving.register_keras_serializable(package="den_tf")
class MaskedBatchNorm(keras.layers.Layer):
    """Batch normalisation whose batch moments count only active entries.

    ``active`` (broadcastable to the input, shape (batch, 1, 1, C) or (batch, 1, 1, 1)) marks
    the entries that run; each channel's mean and variance are taken over those, and a
    channel's moving statistics change only when some instance uses it. Under a distribution
    strategy the moments are those of the global batch (sums and counts all-reduced): one
    replica's slice is a poor sample of the instances that use a channel. An input with fewer
    channels than the layer (the sliced path) uses the first statistics and parameters.

    ``frozen`` (None, or a (C,) bool tensor; PackNet*, set by its step before the step traces)
    marks channels whose statistics belong to an earlier task: in training they normalise with
    their moving statistics, which stay as they are, while the other channels use and update
    batch statistics.
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon
        self.frozen = None

    def build(self, input_shape):
        channels = input_shape[-1]
        # float32 under mixed precision too (autocast=False): the layer computes in float32.
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma",
                                     autocast=False)
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta",
                                    autocast=False)
        # Every replica computes the same moments (all-reduced), so "mean" keeps them.
        self.moving_mean = self.add_weight(
            shape=(channels,), initializer="zeros", trainable=False, name="moving_mean",
            aggregation="mean", autocast=False,
        )
        self.moving_variance = self.add_weight(
            shape=(channels,), initializer="ones", trainable=False, name="moving_variance",
            aggregation="mean", autocast=False,
        )

    def call(self, x, training=False, active=None):
        """Normalised ``x`` in its own dtype; moments and scaling in float32 (mixed precision
        keeps batch norm in float32, as Keras's own layer does)."""
        dtype = x.dtype
        x = tf.cast(x, tf.float32)
        if active is not None:
            active = tf.cast(active, tf.float32)
        return tf.cast(self._normalize(x, training, active), dtype)

    def _normalize(self, x, training, active):
        channels = x.shape[-1]
        if training:
            if channels != self.gamma.shape[0]:
                raise ValueError(
                    f"{self.name}: training needs all {self.gamma.shape[0]} channels, "
                    f"got {channels}"
                )
            mean, variance, count = masked_moments(x, active)
            used = count > 0
            # A channel no instance uses is normalised with the moving statistics: its output
            # is masked out, but its variance of 0 would scale by 1/sqrt(epsilon), which
            # overflows float16 before the mask (inf x 0 is NaN, in every instance's output).
            mean = tf.where(used, mean, self.moving_mean)
            variance = tf.where(used, variance, self.moving_variance)
            if self.frozen is not None:
                mean = tf.where(self.frozen, self.moving_mean, mean)
                variance = tf.where(self.frozen, self.moving_variance, variance)
                used = tf.logical_and(used, tf.logical_not(self.frozen))
            self._update_moving(mean, variance, used)
            scale, shift = self._affine(self.gamma, self.beta, mean, variance)
        else:
            scale, shift = self.inference_affine(channels)
        return x * scale + shift

    def inference_affine(self, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Scale and shift of the first ``channels`` channels at inference (moving
        statistics): the layer then computes ``x * scale + shift``."""
        return self._affine(*(leading(w, channels, 0) for w in (
            self.gamma, self.beta, self.moving_mean, self.moving_variance)))

    def _affine(self, gamma, beta, mean, variance) -> tuple[tf.Tensor, tf.Tensor]:
        scale = gamma * tf.math.rsqrt(variance + self.epsilon)
        return scale, beta - mean * scale

    def _update_moving(self, mean, variance, used):
        for stat, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            updated = self.momentum * stat + (1.0 - self.momentum) * value
            stat.assign(tf.where(used, updated, stat))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}

    def compute_output_shape(self, input_shape):
        return input_shape


def masked_moments(x: tf.Tensor, mask: tf.Tensor | None) -> tuple[tf.Tensor, ...]:
    """Per-channel mean, (biased) variance and entry count of ``x`` over the masked entries,
    over the global batch when replicas run in sync."""
    hw = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype)
    if mask is None and distribute.replicas() == 1:
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        count = tf.fill(tf.shape(mean), tf.cast(tf.shape(x)[0], x.dtype) * hw)
        return mean, variance, count
    if mask is None:
        mask = tf.ones([tf.shape(x)[0], 1, 1, 1], x.dtype)
    count = distribute.sum_over_replicas(
        tf.reduce_sum(mask, axis=[0, 1, 2]) * hw * tf.ones([x.shape[-1]], x.dtype))
    safe = tf.maximum(count, 1.0)
    mean = distribute.sum_over_replicas(tf.reduce_sum(x * mask, axis=[0, 1, 2])) / safe
    variance = distribute.sum_over_replicas(
        tf.reduce_sum(tf.square(x - mean) * mask, axis=[0, 1, 2])) / safe
    return mean, variance, count


class NestedBlock(keras.layers.Layer):
    """Base of the nested blocks: level bookkeeping and the two execution paths.

    Subclasses define ``_branch(x, channels, mask, instance_mask, training)``: the block's
    computation keeping the first ``channels`` internal channels (``mask`` zeroes further
    channels per instance in the masked path), ``conv_shapes(channels, input_shape)``, the
    same computation at inference on folded weights (``_folded_weights``,
    ``_folded_branch``) and, for residual blocks, the shortcut.

    Args:
      width: internal channels (the nested dimension).
      out_channels: channels of the block's output.
      level_channels: channels kept at each level, strictly increasing, ending at ``width``
        (a residual block's level 0 keeps 0). A single entry makes a non-nested block.
      stride: spatial stride of the block.
      bn_momentum: momentum of the batch-norm moving statistics.
      kernel_initializer: initializer of the convolution kernels (a Keras identifier or
        object; serialized by ``get_config``).
    """

    residual = True

    def __init__(
        self,
        width: int,
        out_channels: int,
        level_channels: Sequence[int],
        stride: int = 1,
        bn_momentum: float = 0.9,
        kernel_initializer: Initializer = "he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        level_channels = tuple(int(c) for c in level_channels)
        if not level_channels or level_channels[-1] != width:
            raise ValueError(
                f"level_channels must end at the block width {width}, got {level_channels}"
            )
        if any(b <= a for a, b in zip(level_channels, level_channels[1:])):
            raise ValueError(f"level_channels must increase strictly, got {level_channels}")
        if level_channels[0] == 0 and not self.residual:
            raise ValueError("the lowest level of a plain block must keep some channels")
        self.width = width
        self.out_channels = out_channels
        self.level_channels = level_channels
        self.stride = stride
        self.bn_momentum = bn_momentum
        self.kernel_initializer = initializer_identifier(kernel_initializer)

    @property
    def levels(self) -> int:
        return len(self.level_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "out_channels": self.out_channels,
            "level_channels": list(self.level_channels),
            "stride": self.stride,
            "bn_momentum": self.bn_momentum,
            "kernel_initializer": self.kernel_initializer,
        }

    def _batch_norm(self, name: str) -> MaskedBatchNorm:
        return MaskedBatchNorm(momentum=self.bn_momentum, name=name)

    @staticmethod
    def _activate(bn: MaskedBatchNorm, h, mask, training):
        """BN-ReLU of nested channels; masked channels stay exactly zero."""
        h = tf.nn.relu(bn(h, training=training, active=mask))
        return h if mask is None else h * mask

    def _kernel(self, name: str, shape: tuple[int, ...]):
        initializer = keras.initializers.get(self.kernel_initializer)
        return self.add_weight(shape=shape, initializer=initializer, name=name)

    def call(self, x, levels=None, training=False, execution="masked", folded=None,
             counts=None, level_weights=None):
        """Runs the block; ``levels`` (batch,) int32 or None for the full block; on the sliced
        path a scalar level (a Python int: traced for that level alone) runs the whole batch at
        that level (``at_level``), ``counts``
        (pieces, levels) runs a list of pieces that each come grouped by level, ``counts[i, l]``
        instances of piece i at level l, and returns each piece's level parts' outputs in
        order (``run_span``), and ``folded`` (each level's ``folded_level`` weights) replaces
        the layer's own. On the masked path ``level_weights`` (batch, h) may replace
        ``levels``: each channel's mask is the weight of the levels that keep it
        (``relaxed_masks``)."""
        check_execution(execution)
        if counts is not None:
            if execution != "sliced" or training:
                raise ValueError("a grouped batch runs on the sliced path, at inference")
            return [out for i, piece in enumerate(x)
                    for out in self.run_parts(tf.split(piece, counts[i], num=self.levels), folded)]
        if level_weights is not None:
            if levels is not None or execution != "masked":
                raise ValueError("level_weights replace levels, on the masked path")
            masks = self.relaxed_masks(tf.cast(level_weights, x.dtype))
            return self._finish(x, self._branch(x, self.width, *masks, training))
        if folded is not None and (execution != "sliced" or levels is None):
            raise ValueError("folded weights run on the sliced path with levels")
        if levels is None:
            return self._finish(x, self._branch(x, self.width, None, None, training))
        if execution == "sliced":
            if training:
                raise ValueError("the sliced path is for inference; train with 'masked'")
            if isinstance(levels, int):  # a fixed level, traced for it alone
                return self.at_level(x, levels, folded)
            levels = tf.convert_to_tensor(levels, tf.int32)
            if levels.shape.rank == 0:
                return self.at_level(x, levels, folded)
            return self.partitioned(x, levels, folded)
        kept = tf.gather(tf.constant(self.level_channels, tf.int32), levels)
        mask = tf.cast(tf.range(self.width)[tf.newaxis, :] < kept[:, tf.newaxis], x.dtype)
        mask = mask[:, tf.newaxis, tf.newaxis, :]
        instance_mask = tf.cast(kept > 0, x.dtype)[:, tf.newaxis, tf.newaxis, tf.newaxis]
        return self._finish(x, self._branch(x, self.width, mask, instance_mask, training))

    def relaxed_masks(self, level_weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The masked path's channel and instance masks for level weights (batch, h): channel
        c's mask is the total weight of the levels that keep it, an instance's the weight of
        the levels that run the branch. One-hot weights give the masks of those levels
        exactly. In a basic residual block at inference the mask meets only the last
        convolution's input, so the output is linear in the weights and the gradient with
        respect to level l's weight is the first-order change of the loss from running level
        l (the straight-through selector gradient, ``policy.straight_through``)."""
        dtype = level_weights.dtype
        kept = tf.constant(self.level_channels)[:, tf.newaxis]
        keeps = tf.cast(tf.range(self.width)[tf.newaxis, :] < kept, dtype)  # (h, width)
        mask = tf.matmul(level_weights, keeps)[:, tf.newaxis, tf.newaxis, :]
        runs = tf.cast(tf.constant(self.level_channels) > 0, dtype)
        instance_mask = tf.reduce_sum(level_weights * runs, axis=1)
        return mask, instance_mask[:, tf.newaxis, tf.newaxis, tf.newaxis]

    def at_level(self, x, level, folded=None):
        """The whole batch at one level, inference only: only that level's branch runs, at its
        kept width, with no partition. ``level``: a scalar int32 tensor (``tf.switch_case``
        chooses the branch when run) or a Python int (the branch alone is traced: no control
        flow). ``folded``: each level's ``folded_level`` weights, used instead of the layer's
        own."""
        if isinstance(level, int):
            if not 0 <= level < self.levels:
                raise ValueError(f"{self.name}: level must lie in [0, {self.levels}), got {level}")
            return self._at_level(x, level, folded)
        return tf.switch_case(
            level, [functools.partial(self._at_level, x, i, folded) for i in range(self.levels)]
        )

    def _at_level(self, x, level: int, folded=None):
        channels = self.level_channels[level]
        if not channels:
            return self._finish(x, None)
        if folded is None:
            return self._finish(x, self._branch(x, channels, None, None, False))
        return self._finish(x, self._folded_branch(x, folded[level]))

    def partitioned(self, x, levels, folded=None):
        """Inference on a batch of mixed levels ((batch,) int32): grouped by level, each part
        run at its kept width, stitched back in order (``folded`` as in ``at_level``)."""
        order, counts = level_grouping(levels[:, tf.newaxis], self.levels)
        parts = run_span([self], tf.gather(x, order), counts, [folded])
        return tf.dynamic_stitch(tf.split(order, counts, num=self.levels), parts)

    def run_parts(self, parts: Sequence[tf.Tensor], folded=None) -> list[tf.Tensor]:
        """Each level's part of a batch (the instances at that level, possibly none) run at
        its level. TensorFlow's convolution returns a wrongly shaped result for an empty
        batch, so a level no instance chose is not run: its output is an empty tensor of the
        output shape."""
        _, height, width, channels = self.compute_output_shape(parts[0].shape)
        if height is None or width is None:
            raise ValueError(f"{self.name}: the sliced path needs static spatial dimensions")
        empty = tf.zeros([0, height, width, channels], parts[0].dtype)
        return [
            tf.cond(tf.shape(part)[0] > 0,
                    functools.partial(self._at_level, part, level, folded), lambda: empty)
            for level, part in enumerate(parts)
        ]

    def folded_level(self, level: int) -> list[tf.Tensor]:
        """Level ``level``'s weights for inference, computed once: cut to its kept channels,
        and each convolution that a batch norm follows multiplied by the norm's scale, with its
        shift as a bias (``_folded_branch`` runs them; empty for a skipped level). The sliced
        path does both on every call."""
        channels = self.level_channels[level]
        return self._folded_weights(channels) if channels else []

    def _folded_weights(self, channels: int) -> list[tf.Tensor]:
        raise NotImplementedError

    def _folded_branch(self, x, weights: Sequence[tf.Tensor]) -> tf.Tensor:
        """``_branch`` at inference on ``folded_level``'s weights."""
        raise NotImplementedError

    def level_parts(self, level: int) -> list[tuple[tf.Variable, int | None, int]]:
        """What level ``level`` runs of each weight: (weight, axis, count), the first ``count``
        entries along ``axis`` (None: the whole weight); nothing for a skipped level. The same
        prefixes ``_branch`` slices with ``leading``, so a weight's other entries never touch
        an instance at this level."""
        channels = self.level_channels[level]
        if not channels:
            return []
        parts = []
        for layer, axis in self._nested_axes():
            weights = layer.weights if isinstance(layer, MaskedBatchNorm) else [layer]
            parts += [(w, axis, channels) for w in weights]
        return parts

    def batch_norms(self) -> list[MaskedBatchNorm]:
        return [layer for layer, _ in self._nested_axes() if isinstance(layer, MaskedBatchNorm)]

    def _nested_axes(self) -> list[tuple]:
        """Each weight (or batch norm) of the block with the axis its levels nest along (None:
        every level runs all of it)."""
        raise NotImplementedError

    def _finish(self, x, branch):
        """Adds the shortcut to the branch output (a level-0 branch is None: a true skip)."""
        shortcut = self.shortcut(x)
        return shortcut if branch is None else shortcut + branch

    def shortcut(self, x):
        return shortcut(x, self.stride, self.out_channels)

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        return (batch, _out_size(height, self.stride), _out_size(width, self.stride),
                self.out_channels)

    def level_conv_shapes(self, input_shape) -> list[list[ConvShape]]:
        """The convolutions run at each level (an empty list for a skipped block)."""
        return [self.conv_shapes(c, input_shape) if c else [] for c in self.level_channels]

    def _check_input(self, input_shape):
        if self.residual and input_shape[-1] > self.out_channels:
            raise ValueError(
                f"{self.name}: input has {input_shape[-1]} channels, more than the "
                f"{self.out_channels} output channels a zero-padded shortcut can carry"
            )


@keras.saving.register_keras_serializable(package="den_tf")
class ResidualBasicBlock(NestedBlock):
    """Pre-activation basic block (WRN, ResNet): BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut.

    Both convolutions shrink with the kept internal channels; level 0 is the shortcut alone.
    """

    def build(self, input_shape):
        self._check_input(input_shape)
        in_channels = input_shape[-1]
        self.bn_in = self._batch_norm("bn_in")
        self.bn_in.build(input_shape)
        self.conv1 = self._kernel("conv1", (3, 3, in_channels, self.width))
        self.bn_mid = self._batch_norm("bn_mid")
        self.bn_mid.build((None, None, None, self.width))
        self.conv2 = self._kernel("conv2", (3, 3, self.width, self.out_channels))

    def _branch(self, x, channels, mask, instance_mask, training):
        h = tf.nn.relu(self.bn_in(x, training=training, active=instance_mask))
        h = conv(h, leading(self.conv1, channels, 3), self.stride)
        h = self._activate(self.bn_mid, h, mask, training)
        return conv(h, leading(self.conv2, channels, 2))

    def _folded_weights(self, channels):
        return [*self.bn_in.inference_affine(self.bn_in.gamma.shape[0]),
                *fold_batch_norm(leading(self.conv1, channels, 3), self.bn_mid),
                leading(self.conv2, channels, 2)]

    def _folded_branch(self, x, weights):
        scale, shift, kernel1, bias1, kernel2 = weights
        h = conv_bias_relu(affine_relu(x, scale, shift), kernel1, bias1, self.stride)
        return conv(h, tf.cast(kernel2, h.dtype))

    def _nested_axes(self):
        return [(self.bn_in, None), (self.conv1, 3), (self.bn_mid, 0), (self.conv2, 2)]

    def conv_shapes(self, channels, input_shape):
        out_hw = self.compute_output_shape(input_shape)[1:3]
        return [
            ConvShape(3, self.conv1.shape[2], channels, out_hw),
            ConvShape(3, channels, self.out_channels, out_hw),
        ]


@keras.saving.register_keras_serializable(package="den_tf")
class ResidualBottleneckBlock(NestedBlock):
    """Pre-activation ResNeXt block: 1x1, grouped 3x3 (``groups`` cardinal groups), 1x1.

    Levels keep whole cardinal groups, so all three convolutions shrink with the level.
    """

    def __init__(self, *args, groups: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if self.width % groups or any(c % (self.width // groups) for c in self.level_channels):
            raise ValueError(
                f"ResNeXt levels must keep whole groups: width {self.width}, groups {groups}, "
                f"level channels {self.level_channels}"
            )
        self.groups = groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}

    def build(self, input_shape):
        self._check_input(input_shape)
        in_channels = input_shape[-1]
        group_width = self.width // self.groups
        self.bn_in = self._batch_norm("bn_in")
        self.bn_in.build(input_shape)
        self.conv_reduce = self._kernel("conv_reduce", (1, 1, in_channels, self.width))
        self.bn_reduce = self._batch_norm("bn_reduce")
        self.bn_reduce.build((None, None, None, self.width))
        self.conv_grouped = self._kernel("conv_grouped", (3, 3, group_width, self.width))
        self.bn_grouped = self._batch_norm("bn_grouped")
        self.bn_grouped.build((None, None, None, self.width))
        self.conv_expand = self._kernel("conv_expand", (1, 1, self.width, self.out_channels))

    def _branch(self, x, channels, mask, instance_mask, training):
        h = tf.nn.relu(self.bn_in(x, training=training, active=instance_mask))
        h = conv(h, leading(self.conv_reduce, channels, 3))
        h = self._activate(self.bn_reduce, h, mask, training)
        h = conv(h, leading(self.conv_grouped, channels, 3), self.stride)
        h = self._activate(self.bn_grouped, h, mask, training)
        return conv(h, leading(self.conv_expand, channels, 2))

    def _folded_weights(self, channels):
        return [*self.bn_in.inference_affine(self.bn_in.gamma.shape[0]),
                *fold_batch_norm(leading(self.conv_reduce, channels, 3), self.bn_reduce),
                *fold_batch_norm(leading(self.conv_grouped, channels, 3), self.bn_grouped),
                leading(self.conv_expand, channels, 2)]

    def _folded_branch(self, x, weights):
        scale, shift, reduce, reduce_bias, grouped, grouped_bias, expand = weights
        h = conv_bias_relu(affine_relu(x, scale, shift), reduce, reduce_bias)
        h = conv_bias_relu(h, grouped, grouped_bias, self.stride)
        return conv(h, tf.cast(expand, h.dtype))

    def _nested_axes(self):
        return [(self.bn_in, None), (self.conv_reduce, 3), (self.bn_reduce, 0),
                (self.conv_grouped, 3), (self.bn_grouped, 0), (self.conv_expand, 2)]

    def conv_shapes(self, channels, input_shape):
        out_hw = self.compute_output_shape(input_shape)[1:3]
        return [
            ConvShape(1, self.conv_reduce.shape[2], channels, tuple(input_shape[1:3])),
            ConvShape(3, self.conv_grouped.shape[2], channels, out_hw),
            ConvShape(1, channels, self.out_channels, out_hw),
        ]


@keras.saving.register_keras_serializable(package="den_tf")
class PlainConvBlock(NestedBlock):
    """Plain block (VGG, SimpleConvNet): conv-BN-ReLU, optionally a second conv-BN-ReLU.

    The first convolution's output channels nest. With two convolutions the second maps the
    kept channels back to ``out_channels``; with one, the output is the kept channels
    followed by zeros. An optional 2x2 max pooling (floor) follows. The lowest level keeps
    one group: a plain block cannot be skipped.
    """

    residual = False

    def __init__(self, *args, convs: int = 2, pool: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if convs not in (1, 2):
            raise ValueError(f"convs must be 1 or 2, got {convs!r}")
        if convs == 1 and self.out_channels != self.width:
            raise ValueError("a one-conv plain block outputs its width: out_channels == width")
        if self.stride != 1:
            raise ValueError("plain blocks downsample by pooling; stride must be 1")
        self.convs = convs
        self.pool = pool

    def get_config(self):
        return {**super().get_config(), "convs": self.convs, "pool": self.pool}

    def build(self, input_shape):
        self.conv_a = self._kernel("conv_a", (3, 3, input_shape[-1], self.width))
        self.bn_a = self._batch_norm("bn_a")
        self.bn_a.build((None, None, None, self.width))
        if self.convs == 2:
            self.conv_b = self._kernel("conv_b", (3, 3, self.width, self.out_channels))
            self.bn_b = self._batch_norm("bn_b")
            self.bn_b.build((None, None, None, self.out_channels))

    def _branch(self, x, channels, mask, instance_mask, training):
        h = conv(x, leading(self.conv_a, channels, 3))
        h = self._activate(self.bn_a, h, mask, training)
        if self.convs == 2:
            h = conv(h, leading(self.conv_b, channels, 2))
            return tf.nn.relu(self.bn_b(h, training=training))
        return self._pad(h)

    def _pad(self, h):
        """A one-conv block's kept channels, then zeros up to its width."""
        return tf.pad(h, [[0, 0], [0, 0], [0, 0], [0, self.width - h.shape[-1]]])

    def _folded_weights(self, channels):
        weights = fold_batch_norm(leading(self.conv_a, channels, 3), self.bn_a)
        if self.convs == 2:
            weights += fold_batch_norm(leading(self.conv_b, channels, 2), self.bn_b)
        return weights

    def _folded_branch(self, x, weights):
        h = conv_bias_relu(x, *weights[:2])
        if self.convs == 2:
            return conv_bias_relu(h, *weights[2:])
        return self._pad(h)

    def _nested_axes(self):
        nested = [(self.conv_a, 3), (self.bn_a, 0)]
        return nested + ([(self.conv_b, 2), (self.bn_b, None)] if self.convs == 2 else [])

    def _finish(self, x, branch):
        if self.pool:
            return tf.nn.max_pool2d(branch, 2, 2, "VALID")
        return branch

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        if self.pool:
            height = None if height is None else height // 2
            width = None if width is None else width // 2
        return (batch, height, width, self.out_channels)

    def conv_shapes(self, channels, input_shape):
        input_hw = tuple(input_shape[1:3])
        shapes = [ConvShape(3, self.conv_a.shape[2], channels, input_hw)]
        if self.convs == 2:
            shapes.append(ConvShape(3, channels, self.out_channels, input_hw))
        return shapes
