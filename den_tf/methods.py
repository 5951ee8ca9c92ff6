"""The compared methods of the paper (Section 4.1) as settings of one trainer.

- ``den``: the estimator and its selector, Algorithm 1.
- ``baseline``: the backbone alone, every task at the full structure, no selector. With
  ``separate_networks`` one network per task, trained independently (Tables 2 and 4); else
  one network shared by the tasks with a head per task (Table 3).
- ``nestednet``: as many nested levels as tasks; task i (in ``task_order``, lowest first)
  trains and runs every block at the i-th level, all tasks at once. With one task every
  level is trained on every image and evaluated (Table 5's rows L, M, H).
- ``packnet``: PackNet*, the same levels, tasks trained one after another, lowest first;
  a task trains only the channel groups its level adds: whatever an earlier task runs is
  frozen (its weights, batch-norm parameters and statistics stay bit-identical).
- ``blockdrop``: BlockDrop (Table 5) in Algorithm 1's machinery: two levels per residual block
  (skipped or whole), the first estimator phase on the full network (tau = 1), a policy (the
  selector) trained on BlockDrop's reward with its self-critical baseline and squashed
  exploration, one sample per instance; later stages fine-tune the network on the policy's
  samples and the policy again.

The nested levels of a multi-task network are the non-empty ones: for residual blocks level 0
skips the block, so n tasks need n + 1 levels; plain blocks need n.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from den_tf.estimator import Estimator

METHODS = ("den", "baseline", "nestednet", "packnet", "blockdrop")
# Methods whose structures are fixed per task (no selector).
FIXED_STRUCTURE_METHODS = ("baseline", "nestednet", "packnet")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def nested_levels_for(method: str, n_tasks: int, residual: bool, configured: int) -> int:
    """Levels of the estimator: NestedNet and PackNet* on several tasks have one non-empty
    level per task (plus the skip level of residual blocks); BlockDrop two (skip, whole);
    other methods, and NestedNet on one task, keep ``configured``."""
    check_method(method)
    if method == "blockdrop":
        if not residual:
            raise ValueError("blockdrop skips residual blocks; this backbone has plain ones")
        return 2
    if method in ("nestednet", "packnet") and n_tasks > 1:
        return n_tasks + int(residual)
    return configured


def nonempty_levels(estimator: Estimator) -> tuple[int, ...]:
    """The levels at which every block computes something (all but a residual level 0)."""
    first = 1 if estimator.blocks[0].level_channels[0] == 0 else 0
    return tuple(range(first, estimator.levels))


def task_order(estimator: Estimator, order: str) -> tuple[int, ...]:
    """Task ids from ``order``, comma-separated task names lowest level first ('': task-id
    order); it must name every task once."""
    names = [t.name for t in estimator.tasks]
    if not order:
        return tuple(range(len(names)))
    given = [name.strip() for name in order.split(",")]
    if sorted(given) != sorted(names):
        raise ValueError(f"task_order must name every task once ({', '.join(names)}), got "
                         f"{order!r}")
    return tuple(names.index(name) for name in given)


def task_levels(method: str, estimator: Estimator, order: str = "") -> tuple[tuple[int, ...], ...]:
    """The levels each task (by task id) trains and is evaluated at, for a fixed-structure
    method."""
    if method not in FIXED_STRUCTURE_METHODS:
        raise ValueError(f"task levels are fixed only for {FIXED_STRUCTURE_METHODS}, got "
                         f"{method!r}")
    n_tasks, top = len(estimator.tasks), estimator.levels - 1
    if method == "baseline":
        return ((top,),) * n_tasks
    nested = nonempty_levels(estimator)
    if n_tasks == 1:
        if method == "packnet":
            raise ValueError("packnet needs several tasks (one level per task)")
        return (nested,)
    if len(nested) != n_tasks:
        raise ValueError(f"{method} needs one non-empty level per task ({n_tasks}); the "
                         f"estimator has {len(nested)}: build it with "
                         f"nested_levels_for({method!r}, ...)")
    levels = [()] * n_tasks
    for level, task in zip(nested, task_order(estimator, order)):
        levels[task] = (level,)
    return tuple(levels)


def _task_layers(estimator: Estimator, task: int) -> list:
    """The layers outside the trunk's blocks that a task's instances run, whole."""
    stems = [estimator.stems[task if estimator.per_task_stems else 0]] if estimator.stems else []
    neck = [estimator.neck_bn] if estimator.backbone.neck == "gap" else []
    return [*stems, *neck, *estimator.hidden, estimator.heads[task]]


def used_masks(estimator: Estimator, task: int, level: int) -> dict[str, np.ndarray]:
    """For every weight of the estimator (by ``path``), the boolean mask of the entries that
    an instance of ``task`` running every block at ``level`` uses; weights it does not use
    are all False."""
    masks = {w.path: np.zeros(w.shape, bool) for w in estimator.weights}
    for layer in _task_layers(estimator, task):
        for weight in layer.weights:
            masks[weight.path][...] = True
    for block in estimator.blocks:
        for weight, axis, count in block.level_parts(level):
            if axis is None:
                masks[weight.path][...] = True
            else:
                index = [slice(None)] * len(weight.shape)
                index[axis] = slice(0, count)
                masks[weight.path][tuple(index)] = True
    return masks


def packnet_masks(
    estimator: Estimator, levels: Sequence[tuple[int, ...]], order: Sequence[int], position: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """PackNet*'s masks for the ``position``-th task of ``order``: (trainable, frozen) per
    weight path. Frozen: every entry an earlier task uses; trainable: the entries this task
    uses that are not frozen."""
    task = order[position]
    trainable = used_masks(estimator, task, levels[task][0])
    frozen = {path: np.zeros_like(mask) for path, mask in trainable.items()}
    for earlier in order[:position]:
        for path, mask in used_masks(estimator, earlier, levels[earlier][0]).items():
            frozen[path] |= mask
    trainable = {path: mask & ~frozen[path] for path, mask in trainable.items()}
    return trainable, frozen


def gradient_masks(variables: Sequence[tf.Variable], masks: dict[str, np.ndarray]):
    """The masks of ``variables``, in their order, as float32 constants to multiply their
    gradients by."""
    return [tf.constant(masks[v.path].astype(np.float32)) for v in variables]
