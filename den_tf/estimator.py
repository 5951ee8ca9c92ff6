"""The estimator f(x; theta_est, z, t): a backbone whose blocks hold nested channel groups.

Per-task stems, a shared trunk of nested blocks that runs any structure z, a neck and one
classifier head per task (paper Section 3.1, Eq. 1).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import keras
import tensorflow as tf

from den_tf import blocks
from den_tf import structure as structure_lib
from den_tf.backbones import BackboneSpec, BlockSpec
from den_tf.network import MultiTaskNetwork, task_from_config
from den_tf.tasks import Task

# On the sliced path a mixed batch is regrouped (one copy of the activations) every this many
# blocks. Regrouping after every block made the copy 6-9% of a batch's time on 2-core CPUs;
# every second block, each second block running up to levels**2 pieces, took 0.95-0.98 of the
# time (docs/benchmarks.md, 2026-12-03 night); spans of three ran as fast, of five slower.
BLOCKS_PER_MERGE = 2


def make_block(
    spec: BlockSpec,
    fractions: Sequence[float],
    bn_momentum: float,
    name: str,
    kernel_initializer: blocks.Initializer = "he_normal",
) -> blocks.NestedBlock:
    """A nested block for ``spec`` whose levels split its width by ``fractions``."""
    residual = spec.kind != "plain"
    unit = spec.width // spec.groups if spec.kind == "bottleneck" else 1
    channels = structure_lib.level_channels(spec.width, fractions, residual, unit)
    common = dict(
        width=spec.width, out_channels=spec.out_channels, level_channels=channels,
        stride=spec.stride, bn_momentum=bn_momentum, kernel_initializer=kernel_initializer,
        name=name,
    )
    if spec.kind == "basic":
        return blocks.ResidualBasicBlock(**common)
    if spec.kind == "bottleneck":
        return blocks.ResidualBottleneckBlock(**common, groups=spec.groups)
    if spec.kind == "plain":
        return blocks.PlainConvBlock(**common, convs=spec.convs, pool=spec.pool)
    raise ValueError(f"unknown block kind {spec.kind!r}; allowed: basic, bottleneck, plain")


def _rows_for(x: tf.Tensor, rows: tf.Tensor, name: str) -> tf.Tensor:
    """``rows`` (one per instance), checked to have ``x``'s batch size: on the masked path a
    single row would broadcast over the batch, and training would divide its statistics by
    one instance's count."""
    expected = f"{name} must have one row per instance of the batch"
    if rows.shape[0] is not None and x.shape[0] is not None:
        if rows.shape[0] != x.shape[0]:
            raise ValueError(f"{expected}: {rows.shape[0]} rows for {x.shape[0]} instances")
        return rows
    with tf.control_dependencies([tf.debugging.assert_equal(
            tf.shape(rows)[0], tf.shape(x)[0], message=expected)]):
        return tf.identity(rows)


def features(x, neck_bn, hidden: Sequence, training: bool) -> tf.Tensor:
    """The trunk's output to the heads' input: the neck (BN-ReLU-global average pooling with
    ``neck_bn``, or flattening without it), then the hidden fully connected layers."""
    if neck_bn is not None:
        x = tf.reduce_mean(tf.nn.relu(neck_bn(x, training=training)), axis=[1, 2])
    else:
        x = tf.reshape(x, [tf.shape(x)[0], -1])
    for dense in hidden:
        x = dense(x)
    return x


@keras.saving.register_keras_serializable(package="den_tf")
class Estimator(MultiTaskNetwork):
    """The elastic network: every structure z of its blocks is a model (h^n of them).

    Args:
      backbone: a ``BackboneSpec`` (or its config dict).
      tasks: the tasks in task-id order (``Task`` objects or their dicts).
      levels: levels per block, h (2 to 5).
      fractions: group fractions of each block's width (default: halving, e.g. 1/4, 1/4,
        1/2 for four residual levels).
      trunk_size: input resolution of the trunk (default: the smallest task input size).
      per_task_stems: one stem per task, or one shared stem.
      bn_momentum: momentum of the batch-norm moving statistics.
      kernel_initializer: initializer of every convolution kernel.
    """

    def __init__(
        self,
        backbone: BackboneSpec | dict,
        tasks: Sequence[Task | dict],
        levels: int = 4,
        fractions: Sequence[float] | None = None,
        trunk_size: int | None = None,
        per_task_stems: bool = True,
        bn_momentum: float = 0.9,
        **kwargs,
    ):
        spec = backbone
        if not isinstance(spec, BackboneSpec):
            spec = BackboneSpec.from_config(spec)
        tasks = [task_from_config(t) for t in tasks]
        if trunk_size is None:
            trunk_size = min(t.input_size for t in tasks) if tasks else 0
        super().__init__(
            tasks, trunk_size, spec.stem_channels, spec.stem_kernel, per_task_stems,
            **kwargs,
        )
        kinds = {b.kind == "plain" for b in spec.blocks}
        if len(kinds) != 1:
            raise ValueError("a backbone mixes plain and residual blocks; levels would differ")
        residual = not kinds.pop()
        structure_lib.check_levels(levels)
        fractions = (
            tuple(float(f) for f in fractions)
            if fractions
            else structure_lib.default_fractions(levels, residual)
        )
        structure_lib.check_fractions(fractions, levels, residual)
        self.backbone = spec
        self.levels = int(levels)
        self.fractions = fractions
        self.bn_momentum = bn_momentum

        shape = self.trunk_input_shape()
        trunk = []
        for i, block_spec in enumerate(spec.blocks):
            block = make_block(
                block_spec, fractions, bn_momentum, f"block_{i}", self.kernel_initializer
            )
            block.build(shape)
            trunk.append(block)
            shape = block.compute_output_shape(shape)
        self.blocks = tuple(trunk)  # a tuple, so that checkpoints track the layers
        if spec.neck == "gap":
            self.neck_bn = blocks.MaskedBatchNorm(momentum=bn_momentum, name="neck_bn")
            self.neck_bn.build(shape)
            features = shape[-1]
        elif spec.neck == "flatten":
            features = shape[1] * shape[2] * shape[3]
        else:
            raise ValueError(f"unknown neck {spec.neck!r}; allowed: gap, flatten")
        hidden = []
        for j, units in enumerate(spec.hidden_units):
            dense = keras.layers.Dense(units, activation="relu", name=f"hidden_{j}")
            dense.build((None, features))
            hidden.append(dense)
            features = units
        self.hidden = tuple(hidden)
        heads = []
        for task in self.tasks:
            head = keras.layers.Dense(task.num_classes, name=f"head_{task.name}")
            head.build((None, features))
            heads.append(head)
        self.heads = tuple(heads)
        self.built = True

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def get_config(self):
        config = super().get_config()
        # The backbone decides the stems.
        for key in ("stem_channels", "stem_kernel"):
            del config[key]
        return {
            **config,
            "backbone": self.backbone.to_config(),
            "levels": self.levels,
            "fractions": list(self.fractions),
            "bn_momentum": self.bn_momentum,
        }

    def full_structure(self, batch_size) -> tf.Tensor:
        return structure_lib.full_structure(batch_size, self.n_blocks, self.levels)

    def call(self, images, task=0, structure=None, training=False, execution="masked",
             folded=None, level_weights=None):
        """Logits of one task's batch under structure z (None: the full model).

        Call as ``estimator(images, task=t, structure=z)``. ``folded``: weights from
        ``fold``, run on the sliced path instead of the layers' own. On the sliced path z may
        also be a tuple of ints, one structure for the whole batch fixed when traced: each
        block's level is traced alone, with no control flow (one graph per structure). On
        the masked path ``level_weights`` (batch, n_blocks, h) may replace z (``_trunk``).
        """
        return self.call_task(
            images, task, structure, training=training, execution=execution, folded=folded,
            level_weights=level_weights,
        )

    def fold(self) -> FoldedWeights:
        """The blocks' weights as they are now, cut per level and with batch norm folded in
        (``NestedBlock.folded_level``) and kept as variables, for fast inference on the sliced
        path: ``estimator(x, task=t, structure=z, execution="sliced", folded=estimator.fold())``.
        A snapshot: fold again after the weights change."""
        return FoldedWeights(self)

    def _trunk(self, x, structure=None, training=False, execution="masked", folded=None,
               level_weights=None):
        """The blocks and the neck. ``level_weights`` (batch, n_blocks, h), on the masked path
        instead of a structure: each block's masks weigh its levels
        (``NestedBlock.relaxed_masks``; one-hot rows run those levels)."""
        blocks.check_execution(execution)
        if level_weights is not None:
            if structure is not None or execution != "masked":
                raise ValueError("level_weights replace the structure, on the masked path")
            level_weights = _rows_for(x, structure_lib.check_level_weights(
                level_weights, self.n_blocks, self.levels), "level_weights")
        if structure is not None and not isinstance(structure, tuple):
            structure = _rows_for(x, structure_lib.check_structure(
                structure, self.n_blocks, self.levels), "structure")
        if folded is not None and (execution != "sliced" or structure is None):
            raise ValueError("folded weights run on the sliced path with a structure")
        if isinstance(structure, tuple):
            x = self._fixed_blocks(x, structure, training, execution, folded)
        elif structure is not None and execution == "sliced":
            x = self._sliced_blocks(x, structure, training, folded)
        else:
            for i, block in enumerate(self.blocks):
                levels = None if structure is None else structure[:, i]
                weights = None if level_weights is None else level_weights[:, i]
                x = block(x, levels, training=training, execution=execution,
                          level_weights=weights)
        return self.neck(x, training)

    def neck(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The heads' input from the last block's output (``features``)."""
        neck_bn = self.neck_bn if self.backbone.neck == "gap" else None
        return features(x, neck_bn, self.hidden, training)

    def _block_weights(self, folded) -> list:
        """Each block's folded weights (checked to be this estimator's), or None per block."""
        return [None] * self.n_blocks if folded is None else folded.check(self)

    def _fixed_blocks(self, x, structure: tuple, training, execution, folded=None):
        """The blocks on the sliced path under one structure of Python ints (``call``)."""
        if execution != "sliced" or training:
            raise ValueError("a fixed structure (a tuple) runs on the sliced path, at inference")
        levels = structure_lib.check_fixed_structure(structure, self.n_blocks, self.levels)
        weights = self._block_weights(folded)
        for block, level, weight in zip(self.blocks, levels, weights):
            # Through the layer's call, which casts its weights under mixed precision.
            x = block(x, levels=int(level), execution="sliced", folded=weight)
        return x

    def _sliced_blocks(self, x, structure, training, folded=None):
        """The blocks on the sliced path. A batch whose instances share one structure (always
        a batch of one) runs each block at its level directly (``NestedBlock.at_level``);
        otherwise the batch is grouped by the levels of a few blocks at a time
        (``blocks.run_span``).
        A batch traced with a static size of one (images and structure) runs the first way
        with no test: on the Intel Xeon of docs/benchmarks.md, the test's untaken
        partitioned branch cost a batch-1 call 0.4-0.8 ms."""
        if training:
            raise ValueError("the sliced path is for inference; train with 'masked'")
        weights = self._block_weights(folded)
        lowest, highest = tf.reduce_min(structure, 0), tf.reduce_max(structure, 0)

        def shared():  # (from the per-block maxima: a static batch of 0 traces this too)
            h = x
            for i, block in enumerate(self.blocks):
                h = block(h, highest[i], execution="sliced", folded=weights[i])
            return h

        def partitioned():
            # The blocks run in spans of BLOCKS_PER_MERGE. A span's input comes grouped by its
            # blocks' levels, so that every piece its blocks run is a slice of the input or of
            # the previous block's output (``blocks.run_span``), and its outputs are stitched
            # straight into the next span's grouping (the last: the batch's order): one copy of
            # the activations per span.
            starts = range(0, self.n_blocks, BLOCKS_PER_MERGE)
            spans = [slice(start, start + BLOCKS_PER_MERGE) for start in starts]
            orders, counts = zip(*(blocks.level_grouping(structure[:, span], self.levels)
                                   for span in spans))
            orders += (tf.range(tf.shape(x)[0]),)
            h = tf.gather(x, orders[0])
            for i, span in enumerate(spans):
                destination = tf.gather(tf.math.invert_permutation(orders[i + 1]), orders[i])
                parts = blocks.run_span(self.blocks[span], h, counts[i], weights[span])
                h = tf.dynamic_stitch(tf.split(destination, counts[i], num=len(parts)), parts)
            return h

        if x.shape[0] == 1 and structure.shape[0] == 1:
            return shared()
        shares_one_structure = tf.logical_and(tf.shape(structure)[0] > 0,
                                              tf.reduce_all(lowest == highest))
        return tf.cond(shares_one_structure, shared, partitioned)

    def batch_norms(self) -> list[blocks.MaskedBatchNorm]:
        """Every batch norm of the network (the blocks' and the neck's)."""
        norms = [bn for block in self.blocks for bn in block.batch_norms()]
        return norms + ([self.neck_bn] if self.backbone.neck == "gap" else [])

    def _head(self, features, task):
        return self.heads[task](features)

    def output_layers(self, task: int) -> list:
        return [*self.hidden, self.heads[task]]


class FoldedWeights(tf.Module):
    """``Estimator.fold``'s snapshot: per block and level, the level's ``folded_level``
    weights as non-trainable variables (so that a SavedModel stores them). Each level has its
    own copy, cut to its channels (with four residual levels, 1.75 times the trunk's kernels):
    cutting on every call is what folding saves."""

    def __init__(self, estimator: Estimator):
        super().__init__(name="folded_weights")
        self._estimator = weakref.ref(estimator)  # not tracked: the weights are a snapshot
        with self.name_scope:
            self.levels = [
                [[tf.Variable(w, trainable=False, name=f"{block.name}_level_{level}_{j}")
                  for j, w in enumerate(block.folded_level(level))]
                 for level in range(block.levels)]
                for block in estimator.blocks
            ]

    def check(self, estimator: Estimator) -> list:
        """The weights per block, after checking that they were folded from ``estimator``."""
        if self._estimator() is not estimator:
            raise ValueError("folded weights of another estimator: use that estimator's "
                             "own, estimator.fold()")
        return self.levels
