"""What a structure costs: FLOPs, parameters, d_i(l) and the sparsity cost S(z) of Eq. (5).

Everything is counted from the layers' own shapes, so the summary, the sparsity cost and
the reported FLOPs cannot disagree with the network. Conventions (README, Model figures): a
multiply-add is 2 FLOPs; only convolution and fully connected weights count; shortcuts
(average pooling, zero padding), batch norm and pooling cost nothing; a level-0 residual
block costs nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from den_tf.blocks import ConvShape
from den_tf.estimator import Estimator
from den_tf.network import MultiTaskNetwork
from den_tf.selector import Selector


def conv_macs(shape: ConvShape) -> int:
    """Multiply-adds of a convolution: output pixels x kernel area x inputs x outputs."""
    out_h, out_w = shape.out_hw
    return out_h * out_w * conv_params(shape)


def conv_params(shape: ConvShape) -> int:
    """Weights of a convolution (grouped convolutions see their group's inputs only)."""
    return shape.kernel_size**2 * shape.in_channels_per_group * shape.out_channels


def dense_macs(layer) -> int:
    """Multiply-adds (= weights) of a fully connected layer."""
    return int(np.prod(layer.kernel.shape))


def stem_macs(network: MultiTaskNetwork, task: int) -> int:
    """Multiply-adds of a task's stem convolution (0 without a stem)."""
    if not network.stems:
        return 0
    stem = network.stems[task if network.per_task_stems else 0]
    kernel_h, kernel_w, inputs, outputs = stem.kernel.shape
    return network.trunk_size**2 * kernel_h * kernel_w * inputs * outputs


def block_tables(network: MultiTaskNetwork) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-adds and weights of every block at every level: two (n_blocks, h) arrays."""
    shape = network.trunk_input_shape()
    macs, params = [], []
    for block in network.blocks:
        levels = block.level_conv_shapes(shape)
        macs.append([sum(conv_macs(s) for s in shapes) for shapes in levels])
        params.append([sum(conv_params(s) for s in shapes) for shapes in levels])
        shape = block.compute_output_shape(shape)
    return np.array(macs, np.int64), np.array(params, np.int64)


def trainable_params(network: MultiTaskNetwork) -> int:
    """Every trainable weight (stems, blocks, batch norm, heads, biases)."""
    return int(sum(np.prod(v.shape) for v in network.trainable_weights))


@dataclasses.dataclass(frozen=True)
class CostTable:
    """Costs of a network's structures.

    Attributes:
      level_macs: (n_blocks, h) multiply-adds of block i at level l, at the trunk resolution.
      level_params: (n_blocks, h) convolution weights block i uses at level l.
      fixed_macs: per task, the multiply-adds outside the nested blocks (stem, FC layers,
        head), which every structure pays.
    """

    level_macs: np.ndarray
    level_params: np.ndarray
    fixed_macs: tuple[int, ...]

    @property
    def density(self) -> np.ndarray:
        """d_i(l): the fraction of block i's parameters that level l keeps (Eq. 5)."""
        return self.level_params / self.level_params[:, -1:]

    def full_macs(self, task: int) -> int:
        return int(self.fixed_macs[task] + self.level_macs[:, -1].sum())

    def macs(self, structure: tf.Tensor, task: int) -> tf.Tensor:
        """Multiply-adds of each instance's structure, (batch,) float64."""
        per_block = lookup_per_block(tf.constant(self.level_macs, tf.float64), structure)
        return self.fixed_macs[task] + tf.reduce_sum(per_block, axis=1)

    def flops(self, structure: tf.Tensor, task: int) -> tf.Tensor:
        return 2.0 * self.macs(structure, task)


def fully_connected_macs(network: MultiTaskNetwork, task: int) -> int:
    """Multiply-adds of the fully connected layers a task's instances run (hidden + head)."""
    return sum(dense_macs(layer) for layer in network.output_layers(task))


def cost_table(network: MultiTaskNetwork) -> CostTable:
    """The cost table of an estimator (or of a selector, whose blocks have one level)."""
    macs, params = block_tables(network)
    fixed = tuple(
        stem_macs(network, t) + fully_connected_macs(network, t)
        for t in range(len(network.tasks))
    )
    return CostTable(macs, params, fixed)


def _weights(layers) -> int:
    return int(sum(np.prod(layer.kernel.shape) for layer in layers))


def paper_params_by_part(estimator: Estimator) -> dict[str, int]:
    """The weights the paper's parameter count adds up, per part of the network: conv and FC
    kernels of the stems, the blocks (at their top level) and the hidden FC layers, and the
    task heads only where the paper counts them (SimpleConvNet); no BN or biases."""
    _, params = block_tables(estimator)
    parts = {
        "stems": _weights(estimator.stems),
        "blocks": int(params[:, -1].sum()),
        "hidden": _weights(estimator.hidden),
    }
    if estimator.backbone.heads_in_paper_params:
        parts["heads"] = _weights(estimator.heads)
    return parts


def paper_params(estimator: Estimator) -> int:
    """Parameters under the paper's convention (``paper_params_by_part`` summed)."""
    return sum(paper_params_by_part(estimator).values())


def params_used(estimator: Estimator, structures: np.ndarray, task: int) -> np.ndarray:
    """The weights each instance of ``task`` runs under its structure (paper convention, as
    ``paper_params``): its stem, its blocks' convolutions at their levels, the hidden FC
    layers, and its head where the paper counts heads. (batch,) int64."""
    _, params = block_tables(estimator)
    stems = [estimator.stems[task if estimator.per_task_stems else 0]] if estimator.stems else []
    fixed = _weights(stems) + _weights(estimator.hidden)
    if estimator.backbone.heads_in_paper_params:
        fixed += _weights(estimator.heads[task:task + 1])
    structures = np.asarray(structures)
    return fixed + params[np.arange(params.shape[0]), structures].sum(axis=1)


def lookup_per_block(table: tf.Tensor, structure: tf.Tensor) -> tf.Tensor:
    """table[i, z[b, i]] for every instance b and block i: shape (batch, n_blocks)."""
    n_blocks, levels = table.shape
    flat_index = tf.range(n_blocks) * levels + tf.cast(structure, tf.int32)
    return tf.gather(tf.reshape(table, [-1]), flat_index)


def mean_density(structure: tf.Tensor, density: np.ndarray) -> tf.Tensor:
    """(1/n) sum_i d_i(l_i) per instance: the mean over blocks of the fraction of each
    block's weights its level keeps (Eq. 5's inner term; blocks of different sizes weigh
    alike, so it is not the fraction of the trunk's weights).
    ``structure`` may also be level weights w (batch, n_blocks, h), floating: then d_i is
    sum_l w_il d_i(l) (one-hot rows give the levels' own values, differentiably)."""
    structure = tf.convert_to_tensor(structure)
    if structure.shape.rank == 3:
        density = tf.constant(density, structure.dtype)
        return tf.reduce_mean(tf.reduce_sum(structure * density, axis=2), axis=1)
    return tf.reduce_mean(lookup_per_block(tf.constant(density, tf.float32), structure), axis=1)


def sparsity_cost(structure: tf.Tensor, density: np.ndarray, rho: float) -> tf.Tensor:
    """S(z) = rho * ((1/n) sum_i d_i(l_i))^2 per instance (Eq. 5), shape (batch,)."""
    return rho * tf.square(mean_density(structure, density))


COSTS = ("den", "den_error", "blockdrop")


@dataclasses.dataclass(frozen=True)
class InstanceCost:
    """R, the per-instance cost the selector minimises (and validation averages).

    'den': cross-entropy + S(z) (Eqs. 5-6). 'den_error': the 0/1 error + S(z) (not in the paper:
    the cost then counts only the FLOPs that change whether the instance is classified
    correctly, not those that raise the confidence of a right answer). 'blockdrop': BlockDrop's
    reward negated: a correct prediction costs kept^2 - 1 and a wrong one ``gamma``, where kept
    is the fraction of the network the structure runs (mean d_i(l_i), the fraction of blocks
    kept when each block is skipped or whole).
    """

    kind: str = "den"
    rho: float = 1.0
    gamma: float = 5.0

    def __post_init__(self):
        if self.kind not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {self.kind!r}")
        if self.rho < 0 or self.gamma < 0:
            raise ValueError(f"rho and gamma must be >= 0, got {self.rho}, {self.gamma}")

    def __call__(self, cross_entropy, correct, structure, density: np.ndarray) -> tf.Tensor:
        if self.kind == "den":
            return cross_entropy + sparsity_cost(structure, density, self.rho)
        if self.kind == "den_error":
            error = 1.0 - tf.cast(correct, tf.float32)
            return error + sparsity_cost(structure, density, self.rho)
        kept = mean_density(structure, density)
        return tf.where(tf.cast(correct, tf.bool), tf.square(kept) - 1.0, self.gamma)


COUNTING = (
    "params.paper: conv and fully connected kernels of the stems, the blocks and the hidden FC "
    "layers, plus the task heads only for SimpleConvNet (paper_by_part); params.total: every "
    "trainable weight. macs_full / flops_full (2 per multiply-add) per task at the full "
    "structure: its stem convolution, every block's convolutions and its FC layers and head "
    "(macs_full_by_part); batch norm, pooling and the parameter-free shortcuts count nothing."
)


def model_summary(estimator: Estimator, selector: Selector | None) -> dict:
    """The figures of ``--mode=summary``: parameters, FLOPs per task and per block level, and
    the selector's (when there is one)."""
    table = cost_table(estimator)
    summary = {
        "backbone": estimator.backbone.name,
        "n_blocks": estimator.n_blocks,
        "levels": estimator.levels,
        "fractions": list(estimator.fractions),
        "trunk_size": estimator.trunk_size,
        "counts": COUNTING,
        "params": {
            "paper": paper_params(estimator),
            "paper_by_part": paper_params_by_part(estimator),
            "total": trainable_params(estimator),
        },
        "tasks": {
            task.name: {
                "input_size": task.input_size,
                "num_classes": task.num_classes,
                "macs_full": table.full_macs(t),
                "flops_full": 2 * table.full_macs(t),
                "macs_full_by_part": {
                    "stem": stem_macs(estimator, t),
                    "blocks": int(table.level_macs[:, -1].sum()),
                    "fully_connected": fully_connected_macs(estimator, t),
                },
            }
            for t, task in enumerate(estimator.tasks)
        },
        "blocks": [
            {
                "level_macs": table.level_macs[i].tolist(),
                "level_flops": (2 * table.level_macs[i]).tolist(),
                "level_params": table.level_params[i].tolist(),
                "density": table.density[i].round(6).tolist(),
            }
            for i in range(estimator.n_blocks)
        ],
    }
    if selector is not None:
        macs = [cost_table(selector).full_macs(t) for t in range(len(selector.tasks))]
        summary["selector"] = {
            "params": trainable_params(selector),
            "macs": int(np.mean(macs)),
            "flops": int(2 * np.mean(macs)),
        }
    return summary
