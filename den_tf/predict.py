"""Classifies image files with an exported elastic network (``--mode=export``, or the TFLite
model of ``--mode=export_lite``).

    python -m den_tf.predict --export=DIR/export --task=NAME FILES_OR_FOLDERS...
    python -m den_tf.predict --workdir=DIR [--lite] --task=NAME FILES_OR_FOLDERS...
        [--max_flops=F | --max_fraction=X]

``--export`` may name either kind of export (a TFLite one holds ``manifest.json``); with
``--workdir``, ``--lite`` takes DIR/export_lite instead of DIR/export. The TFLite model serves
one image at a time (``den_tf.lite``).

Prints one JSON line per image: the file, the top classes with names and probabilities, the
structure the selector chose and its FLOPs. With a budget (FLOPs per image, or a fraction of
the full structure's) each image runs the selector's most probable structure within it
(``den_tf.budget``). Images are resized to the task's input size as
the input pipeline does. Files that cannot be read or decoded are reported by name on stderr
and skipped; the others still run, and the exit status is 1 if any file was skipped.
Folders are searched recursively, in sorted order.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags

from den_tf import export, lite

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags; called only when run, so that importing this module
    never collides with other commands' flags of the same name."""
    flags.DEFINE_string("export", None, "Directory of the exported SavedModel, or of the "
                        "TFLite export (--mode=export_lite).")
    flags.DEFINE_string("workdir", None, "Run directory whose export/ (or with --lite, "
                        "export_lite/) holds the export.")
    flags.DEFINE_bool("lite", False, "With --workdir: the TFLite model of DIR/export_lite.")
    flags.DEFINE_string("task", None, "Task name (as in the export's task list).")
    flags.DEFINE_integer("batch_size", 32, "Images per call of the model.")
    flags.DEFINE_float("max_flops", None, "FLOPs budget per image.")
    flags.DEFINE_float("max_fraction", None, "Budget as a fraction of the full structure.")


def image_files(paths: Sequence[str]) -> list[str]:
    """The files named, and every file under the folders named (recursively, sorted). Raises
    ``app.UsageError`` naming each path that does not exist or holds no file (a mistyped
    name, which skipping would hide among unreadable images)."""
    found, empty = [], []
    for path in paths:
        # A URL (gs://, file://...) through TensorFlow's file systems, which read_file uses;
        # local paths through Python's (a file name that is not UTF-8 stays readable).
        url = "://" in path
        isdir, exists, walk = ((tf.io.gfile.isdir, tf.io.gfile.exists, tf.io.gfile.walk) if url
                               else (os.path.isdir, os.path.lexists, os.walk))
        if isdir(path):
            files = []
            for root, dirs, names in walk(path):
                dirs.sort()
                files.extend(os.path.join(root, name) for name in sorted(names))
        else:
            files = [path] if exists(path) else []
        if not files:
            empty.append(path)
        found.extend(files)
    if empty:
        raise app.UsageError(f"no files in {', '.join(empty)}")
    return found


def decoder_message(message: str) -> str:
    """The reason in an eager TensorFlow op's error message, without the op's wrapping: the
    leading ``{{function_node ...}}`` and the trailing ``[Op:DecodeImage] name:``."""
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message.splitlines()[0])
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", message)


def load_image(path: str, size: int) -> np.ndarray:
    """The image at ``path`` as uint8 (size, size, 3); raises ValueError if it is not one."""
    try:
        # (the name as bytes: a name that is not UTF-8 is still a file)
        name = path if "://" in path else os.fsencode(path)
        image = tf.io.decode_image(tf.io.read_file(name), channels=3,
                                   expand_animations=False)
    except tf.errors.OpError as error:  # (not found, not permitted, not an image...)
        raise ValueError(decoder_message(error.message)) from None
    if tuple(image.shape[:2]) != (size, size):
        image = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image.numpy()


def predictions(outputs: dict[str, np.ndarray], files: Sequence[str]) -> Iterator[dict]:
    """One record per image of a batch of the model's outputs."""
    for i, path in enumerate(files):
        yield {
            "file": path,
            "top": [
                {"class": int(c), "name": name.decode(), "probability": round(float(p), 6)}
                for c, name, p in zip(outputs["top_classes"][i], outputs["top_names"][i],
                                      outputs["top_probabilities"][i])
            ],
            "structure": outputs["structure"][i].tolist(),
            "flops": float(outputs["flops"][i]),
        }


Classifier = tuple[int, Callable[[np.ndarray], dict[str, np.ndarray]]]


def check_budget(max_flops: float, cheapest: float, full: float, task: str) -> None:
    """Refuses, before any image runs, a budget below the task's cheapest structure."""
    if not max_flops >= cheapest:
        raise app.UsageError(
            f"a budget of {max_flops:.6g} FLOPs per image is below task {task!r}'s cheapest "
            f"structure, {cheapest:.6g} FLOPs ({cheapest / full:.4f} of the full structure's "
            f"{full:.6g})")


def _saved_model_classifier(model_dir: str, task: str, max_flops: float | None,
                            max_fraction: float | None) -> Classifier:
    """(input size, classify): the SavedModel's signature for ``task`` on a uint8 batch."""
    model = tf.saved_model.load(model_dir)
    name = export.signature_name(task)
    signatures = set(model.signatures) - {"serving_default"}
    tasks = export.served_tasks(signatures)
    if name not in tasks:
        raise app.UsageError(f"--task={task!r} is not in {model_dir}; its tasks: {tasks}")
    serve = model.signatures[name]
    size = serve.structured_input_signature[1]["images"].shape[1]
    bounds = serve(images=tf.zeros([1, size, size, 3], tf.uint8))
    if max_fraction is not None:
        max_flops = max_fraction * float(bounds["full_flops"][0])
    if max_flops is not None and "cheapest_flops" in bounds:  # (exports before 2026-12-07
        # lack it; their budget signature still refuses such a budget, when it runs)
        check_budget(max_flops, float(bounds["cheapest_flops"][0]),
                     float(bounds["full_flops"][0]), task)
    budgeted = model.signatures[f"{name}_budget"]

    def classify(images: np.ndarray) -> dict[str, np.ndarray]:
        if max_flops is None:
            outputs = serve(images=tf.constant(images))
        else:
            budgets = tf.fill([len(images)], tf.constant(max_flops, tf.float64))
            outputs = budgeted(images=tf.constant(images), max_flops=budgets)
        return {k: v.numpy() for k, v in outputs.items()}

    return size, classify


def _lite_classifier(model_dir: str, task: str, max_flops: float | None,
                     max_fraction: float | None) -> Classifier:
    """(input size, classify): ``lite.LiteNetwork`` on ``task``, image by image."""
    network = lite.LiteNetwork(model_dir)
    if task not in network.tasks:
        raise app.UsageError(f"--task={task!r} is not in {model_dir}; its tasks: "
                             f"{sorted(network.tasks)}")
    if max_fraction is not None:
        max_flops = max_fraction * network.full_flops(task)
    if max_flops is not None:
        check_budget(max_flops, network.cheapest_flops(task), network.full_flops(task), task)

    def classify(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = [network.predict(image, task, max_flops) for image in images]
        return {key: np.stack([np.char.encode(o[key]) if key == "top_names" else o[key]
                               for o in outputs]) for key in outputs[0]}

    return network.tasks[task]["input_size"], classify


def run(
    model_dir: str,
    task: str,
    paths: Sequence[str],
    batch_size: int = 32,
    max_flops: float | None = None,
    max_fraction: float | None = None,
) -> int:
    """Prints the predictions of every readable image; returns how many files were skipped.
    ``model_dir``: a SavedModel, or a TFLite export (``lite.MANIFEST`` in it). Raises
    ``app.UsageError``, before any image runs, if a path holds no file (``image_files``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise app.UsageError(f"--batch_size must be a positive int, got {batch_size!r}")
    paths = image_files(paths)
    if max_flops is not None and max_fraction is not None:
        raise app.UsageError("give at most one of --max_flops and --max_fraction")
    if max_fraction is not None and not 0 < max_fraction <= 1:
        raise app.UsageError(f"--max_fraction must be in (0, 1], got {max_fraction}")
    uses_lite = os.path.exists(os.path.join(model_dir, lite.MANIFEST))
    classifier = _lite_classifier if uses_lite else _saved_model_classifier
    size, classify = classifier(model_dir, task, max_flops, max_fraction)
    skipped = 0
    batch, files = [], []

    def flush():
        for record in predictions(classify(np.stack(batch)), files):
            print(json.dumps(record), flush=True)
        batch.clear()
        files.clear()

    for path in paths:
        try:
            batch.append(load_image(path, size))
        except ValueError as error:
            print(f"skipped {path}: {error}", file=sys.stderr, flush=True)
            skipped += 1
            continue
        files.append(path)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return skipped


def main(argv):
    if (FLAGS.export is None) == (FLAGS.workdir is None):
        raise app.UsageError("give exactly one of --export and --workdir")
    if not FLAGS.task:
        raise app.UsageError("--task is required")
    if len(argv) < 2:
        raise app.UsageError("name at least one image file or folder")
    if FLAGS.lite and FLAGS.workdir is None:
        raise app.UsageError("--lite goes with --workdir (--export names either kind)")
    model_dir = FLAGS.export or os.path.join(FLAGS.workdir,
                                             "export_lite" if FLAGS.lite else "export")
    if not os.path.isdir(model_dir):
        mode = "export_lite" if FLAGS.lite or model_dir.rstrip("/").endswith("export_lite") \
            else "export"
        raise app.UsageError(f"{model_dir} holds no export: run --mode={mode} first")
    skipped = run(model_dir, FLAGS.task, argv[1:], FLAGS.batch_size, FLAGS.max_flops,
                  FLAGS.max_fraction)
    return 1 if skipped else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
