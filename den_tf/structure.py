"""Levels and structures: how a block's channels nest, and what a structure z is.

A block's internal channels are split into groups along the channel axis. Level ``l`` keeps
the first groups of the block (its kept channels are a prefix of the channel axis), so the
levels of a block are nested: every channel of level ``l`` is also in level ``l + 1``.

- Residual blocks (WRN, ResNet, ResNeXt): ``h`` levels from ``h - 1`` groups; level 0 keeps
  no channels (the block returns its shortcut) and level ``l`` keeps the first ``l`` groups.
- Plain blocks (VGG, SimpleConvNet): ``h`` levels from ``h`` groups; level ``l`` keeps the
  first ``l + 1`` groups, so the lowest level still computes something.

A structure ``z`` is an integer tensor of shape (batch, n_blocks): one level per block for
every instance (paper Section 3.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

MIN_LEVELS = 2
MAX_LEVELS = 5


def default_fractions(levels: int, residual: bool) -> tuple[float, ...]:
    """Group fractions that halve the kept channels level by level.

    Four residual levels give (1/4, 1/4, 1/2): levels keep 0, 1/4, 1/2 and all channels, the
    split behind the paper's NestedNet FLOPs (7/12 of the full model on average).
    """
    check_levels(levels)
    groups = levels - 1 if residual else levels
    cumulative = [2.0 ** -(groups - 1 - g) for g in range(groups)]
    return tuple(c - p for c, p in zip(cumulative, [0.0] + cumulative[:-1]))


def check_levels(levels: int) -> None:
    """Raises ValueError unless ``levels`` is an int in [MIN_LEVELS, MAX_LEVELS]."""
    if not isinstance(levels, (int, np.integer)) or not MIN_LEVELS <= levels <= MAX_LEVELS:
        raise ValueError(
            f"levels must be an integer in [{MIN_LEVELS}, {MAX_LEVELS}], got {levels!r}"
        )


def check_fractions(fractions: Sequence[float], levels: int, residual: bool) -> None:
    """Raises ValueError unless the fractions are positive, sum to 1 and fit ``levels``."""
    check_levels(levels)
    groups = levels - 1 if residual else levels
    kind = "residual" if residual else "plain"
    if len(fractions) != groups:
        raise ValueError(
            f"fractions: {kind} blocks with {levels} levels need {groups} group fractions, "
            f"got {len(fractions)}: {tuple(fractions)}"
        )
    if any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must all be positive, got {tuple(fractions)}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {tuple(fractions)} (sum {sum(fractions)})")


def level_channels(
    width: int, fractions: Sequence[float], residual: bool, unit: int = 1
) -> tuple[int, ...]:
    """Channels kept at each level of a block whose internal width is ``width``.

    Args:
      width: internal channels of the block.
      fractions: group sizes as fractions of ``width`` (summing to 1).
      residual: True for residual blocks (level 0 keeps nothing).
      unit: kept channels must be whole multiples of ``unit`` (a ResNeXt block keeps whole
        cardinal groups, so its unit is the group width).

    Returns:
      A strictly increasing tuple of length ``levels``, ending with ``width``.
    """
    if width % unit:
        raise ValueError(f"width {width} is not a multiple of the channel unit {unit}")
    units = width // unit
    cumulative = np.cumsum(fractions)
    kept = [int(round(c * units)) * unit for c in cumulative]
    kept = ([0] if residual else []) + kept
    if kept[-1] != width or any(step <= 0 for step in np.diff([0] + kept)[residual:]):
        raise ValueError(
            f"fractions {tuple(fractions)} cannot split a block of width {width} "
            f"(in units of {unit}) into non-empty groups: kept channels would be {kept}"
        )
    return tuple(kept)


def full_structure(batch_size: int | tf.Tensor, n_blocks: int, levels: int) -> tf.Tensor:
    """The full model z* (every block at its highest level) for a batch."""
    return tf.fill([batch_size, n_blocks], tf.constant(levels - 1, tf.int32))


def check_fixed_structure(structure: Sequence[int], n_blocks: int, levels: int) -> tuple[int, ...]:
    """Validates one structure given as Python ints (a level per block) and returns it as a
    tuple: the structure a fixed-structure graph is traced for."""
    values = tuple(structure)
    if len(values) != n_blocks or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"a fixed structure is {n_blocks} ints (a level per block), got {values}")
    if not all(0 <= v < levels for v in values):
        raise ValueError(f"structure levels must lie in [0, {levels}), got {values}")
    return tuple(int(v) for v in values)


def check_structure(structure: tf.Tensor, n_blocks: int, levels: int) -> tf.Tensor:
    """Validates a structure and returns it as int32.

    Shape and dtype are checked when traced; values are checked eagerly with a ValueError
    and, inside a tf.function, by an assertion that raises InvalidArgumentError at run time.
    """
    structure = tf.convert_to_tensor(structure)
    if not structure.dtype.is_integer:
        raise ValueError(f"structure must be an integer tensor, got dtype {structure.dtype.name}")
    if structure.shape.rank != 2 or structure.shape[1] not in (None, n_blocks):
        raise ValueError(
            f"structure must have shape (batch, {n_blocks}), got {structure.shape.as_list()}"
        )
    structure = tf.cast(structure, tf.int32)
    message = f"structure levels must lie in [0, {levels})"
    if tf.executing_eagerly():
        values = structure.numpy()
        if values.size and (values.min() < 0 or values.max() >= levels):
            raise ValueError(f"{message}, got values in [{values.min()}, {values.max()}]")
        return structure
    with tf.control_dependencies(
        [
            tf.debugging.assert_non_negative(structure, message=message),
            tf.debugging.assert_less(structure, levels, message=message),
        ]
    ):
        return tf.identity(structure)


def check_level_weights(level_weights: tf.Tensor, n_blocks: int, levels: int) -> tf.Tensor:
    """Validates per-instance level weights, shape (batch, n_blocks, levels), floating (the
    masked path's relaxation of a structure); shape and dtype are checked when traced."""
    level_weights = tf.convert_to_tensor(level_weights)
    if not level_weights.dtype.is_floating:
        raise ValueError(f"level_weights must be floating, got dtype {level_weights.dtype.name}")
    shape = level_weights.shape
    if shape.rank != 3 or shape[1] not in (None, n_blocks) or shape[2] not in (None, levels):
        raise ValueError(f"level_weights must have shape (batch, {n_blocks}, {levels}), got "
                         f"{shape}")
    return level_weights
