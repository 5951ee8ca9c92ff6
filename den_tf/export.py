"""Export: the trained estimator and selector as one TensorFlow SavedModel.

One serving signature per task, named after the task: uint8 images of the task's size in,
normalised inside as in training; the selector's most probable structure runs on the sliced
path, so each image pays only for the channel groups its structure keeps, with each level's
weights cut and batch norm folded into them once, at export (``Estimator.fold``). Outputs: the
logits, the top-k classes with their names and probabilities, the structure and its FLOPs. The
SavedModel loads with ``tf.saved_model.load`` alone: den_tf need not be installed where it is
served. (Keras also names the first task's signature ``serving_default``.) Each task also has
``<name>_budget`` (a FLOPs budget per image) and ``<name>_single``: the same function for a
batch of exactly one image, traced for that size, so it skips the test of whether the batch
shares one structure (0.4-0.8 ms a call on the Intel Xeon of docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from den_tf import budget, builders, cost, files, lite, policy, train
from den_tf.datasets import pipeline, sources
from den_tf.estimator import Estimator, FoldedWeights
from den_tf.selector import Selector
from den_tf.tasks import Task

TOP_K = 5


def signature_name(task_name: str) -> str:
    """The task's name as a SavedModel signature key (letters, digits and underscores)."""
    name = re.sub(r"\W", "_", task_name)
    return name if re.match(r"[A-Za-z_]", name) else f"task_{name}"


EXTRA_SIGNATURES = ("budget", "single")
BUDGET_SHAPE = "max_flops must hold one budget per image: shape (batch,)"


def extra_signatures(names: Sequence[str]) -> list[str]:
    """The signatures that the tasks named ``names`` have besides their own."""
    return [f"{name}_{suffix}" for name in names for suffix in EXTRA_SIGNATURES]


def served_tasks(signatures: Collection[str]) -> list[str]:
    """The tasks of an export with these signature names: each name that has its budget
    signature (every export has one per task; exports before 2026-12-02 lack '_single'), so a
    task may itself be named like another's extra signature, e.g. 'a_budget_single'."""
    return sorted(name for name in signatures if f"{name}_budget" in signatures)


def task_class_names(task: Task, data_dir: str | None = None) -> list[str]:
    """The names of the task's classes, by class id; their ids as text (with a warning) where
    the dataset's names are not known here (a TFDS dataset not prepared in ``data_dir``)."""
    names = sources.class_names(task.dataset, task.label_key, data_dir)
    if names is None:
        logging.warning("class names of %s are not known here (dataset not prepared in %s): "
                        "the export names its classes by id", task.dataset, data_dir)
        return [str(c) for c in range(task.num_classes)]
    return names[task.first_class:task.first_class + task.num_classes]


def serving_function(
    estimator: Estimator,
    selector: Selector,
    task: int,
    class_names: Sequence[str],
    folded: FoldedWeights | None = None,
    budgeted: bool = False,
):
    """The task's serving function: uint8 images (batch, S, S, 3) -> a dict of outputs; the
    estimator runs ``folded`` (default: ``estimator.fold()`` now; pass one to share it).

    ``budgeted``: it also takes ``max_flops`` (batch,) float64, each image's FLOPs budget,
    and runs the selector's most probable structure within it (``budget``)."""
    spec = estimator.tasks[task]
    if len(class_names) != spec.num_classes:
        raise ValueError(f"task {spec.name!r} has {spec.num_classes} classes, got "
                         f"{len(class_names)} class names")
    names = tf.constant(list(class_names))
    normalisation = sources.preprocessing(spec.dataset)
    costs = cost.cost_table(estimator)
    k = min(TOP_K, spec.num_classes)
    size = spec.input_size
    folded = estimator.fold() if folded is None else folded
    level_flops = 2.0 * costs.level_macs
    fixed_flops = 2.0 * costs.fixed_macs[task]
    cheapest_flops = fixed_flops + float(level_flops.min(axis=1).sum())  # the lowest budget

    def serve(images, max_flops=None):
        # A SavedModel's signature does not check its inputs' shapes, and an assertion on a
        # shape the graph takes as known is folded away: an image without its batch axis
        # reached the convolutions (and aborted the process under oneDNN). EnsureShape checks
        # when it runs, and everything below is computed from its output.
        images = tf.ensure_shape(images, [images.shape[0], size, size, 3])
        with tf.control_dependencies([tf.debugging.assert_positive(
                tf.shape(images)[0], message="a batch must hold at least one image")]):
            images = tf.identity(images)
        x = pipeline.normalize(tf.cast(images, tf.float32), normalisation)
        level_logits = selector(x, task=task, training=False)
        if max_flops is None:
            structure = policy.argmax_structure(level_logits)
        else:
            max_flops = tf.ensure_shape(max_flops, [None])
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(max_flops), tf.shape(images)[:1], message=BUDGET_SHAPE)]):
                max_flops = tf.identity(max_flops)
            structure = budget.structure_under_budget(
                tf.nn.log_softmax(level_logits), level_flops, max_flops, fixed_flops)
        logits = estimator(x, task=task, structure=structure, training=False,
                           execution="sliced", folded=folded)
        top = tf.math.top_k(tf.nn.softmax(logits), k)
        return {
            "logits": logits,
            "top_classes": top.indices,
            "top_names": tf.gather(names, top.indices),
            "top_probabilities": top.values,
            "structure": structure,
            "flops": costs.flops(structure, task),
            "full_flops": tf.fill([tf.shape(images)[0]],
                                  tf.constant(2.0 * costs.full_macs(task), tf.float64)),
            "cheapest_flops": tf.fill([tf.shape(images)[0]],
                                      tf.constant(cheapest_flops, tf.float64)),
        }

    if budgeted:
        return serve
    return lambda images: serve(images)


def export(
    estimator: Estimator,
    selector: Selector,
    path: str,
    class_names: Sequence[Sequence[str]] | None = None,
) -> list[str]:
    """Writes the SavedModel to ``path``; returns its signature names, in task order. Each
    task has two more signatures: ``<name>_budget``, that takes a FLOPs budget per image, and
    ``<name>_single``, for a batch of exactly one image.

    ``class_names[t]`` names task t's classes (default: ``task_class_names``).
    """
    if class_names is None:
        class_names = [task_class_names(task) for task in estimator.tasks]
    names = [signature_name(task.name) for task in estimator.tasks]
    if len(set(names)) != len(names) or set(names) & set(extra_signatures(names)):
        raise ValueError(f"task names give clashing signature names: {names}")
    folded = estimator.fold()
    archive = keras.export.ExportArchive()
    archive.track(estimator)
    archive.track(selector)
    archive.track(folded)
    for t, (task, name) in enumerate(zip(estimator.tasks, names)):
        size = task.input_size
        images = tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")
        serve = serving_function(estimator, selector, t, class_names[t], folded)
        archive.add_endpoint(name, serve, input_signature=[images])
        archive.add_endpoint(f"{name}_single", serve, input_signature=[
            tf.TensorSpec([1, size, size, 3], tf.uint8, name="images")])
        archive.add_endpoint(
            f"{name}_budget",
            serving_function(estimator, selector, t, class_names[t], folded, budgeted=True),
            input_signature=[images, tf.TensorSpec([None], tf.float64, name="max_flops")],
        )
    with files.replaced_directory(path) as partial:
        archive.write_out(partial, verbose=False)
    return names


def _restored(config: ml_collections.ConfigDict, workdir: str,
              what: str) -> tuple[Estimator, Selector, list[list[str]]]:
    """The latest checkpoint of ``workdir``, whose training must have finished, computing in
    float32 whatever precision it trained in (its weights are float32), and its tasks' class
    names (from the config's data directory)."""
    builders.require_selector(config, what)
    estimator, selector = train.restore_for_evaluation(config, workdir, finished=True,
                                                       precision="float32")
    names = [task_class_names(task, config.data.data_dir or None) for task in estimator.tasks]
    return estimator, selector, names


def export_run(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, list[str]]:
    """Exports the latest checkpoint of ``workdir`` to ``workdir/export``; returns the path
    and the signature names."""
    estimator, selector, names = _restored(config, workdir, "an export")
    path = os.path.join(workdir, "export")
    return path, export(estimator, selector, path, names)


def export_lite_run(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Exports the latest checkpoint of ``workdir`` as a TFLite model (``den_tf.lite``) to
    ``workdir/export_lite``; returns the path."""
    estimator, selector, names = _restored(config, workdir, "an export")
    path = os.path.join(workdir, "export_lite")
    lite.export(estimator, selector, path, names)
    return path
