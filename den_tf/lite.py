"""Per-image deployment with TensorFlow Lite: every block's levels as interpreters of their own.

An image served alone runs one structure, and what it costs is its convolutions. TensorFlow's
CPU convolutions on narrow channel counts take several times longer per FLOP than wide ones
(README, Benchmarks), which held the SavedModel's batch-1 speed-ups well under the FLOP
reduction; TensorFlow Lite's XNNPACK convolutions run narrow and wide ones at about the same
rate. TFLite's control flow (``If``) leaves its branches outside XNNPACK, so the structure is
chosen here, in Python: the task's selector picks the levels, then the task's stem, each block's
interpreter at its level, and the task's head run in turn, each output copied straight into
the next interpreter's input.

``export(estimator, selector, directory)`` writes, from the estimator's folded weights
(``Estimator.fold``):
  manifest.json                  tasks, class names, blocks, levels and FLOPs
  probes.npz                     per model an input and the output TensorFlow computed for it
  <task>/selector.tflite         uint8 image (1, S, S, 3) -> level logits (1, n_blocks, levels)
  <task>/stem.tflite             uint8 image (1, S, S, 3) -> the trunk's input
  <task>/head.tflite             the trunk's output -> logits (1, classes)
  blocks/block_<i>_level_<l>.tflite
and ``LiteNetwork(directory)`` serves them; it needs TensorFlow (``tf.lite``) and numpy, not
den_tf's models. Loading runs every model on its probe: one that XNNPACK computes wrongly
runs on TFLite's built-in kernels, and one that neither computes is an error. One image a
call; a batch is served image by image.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

# TensorFlow's own freezing of a concrete function: TFLite's converter keeps Keras 3
# variables as resource variables that its interpreter leaves uninitialised (NaN outputs).
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from den_tf import cost
from den_tf.datasets import pipeline, sources
from den_tf.estimator import Estimator, features
from den_tf.selector import Selector

MANIFEST = "manifest.json"
PROBES = "probes.npz"
TOP_K = 5


def convert(fn: Callable, *specs: tf.TensorSpec) -> bytes:
    """``fn`` traced for ``specs``, its variables frozen to constants, as a TFLite model."""
    concrete = tf.function(fn, input_signature=list(specs)).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()


def _at_level(block, level: int, weights: list, h: tf.Tensor) -> tf.Tensor:
    return block.at_level(h, level, weights)


def block_file(block: int, level: int) -> str:
    return os.path.join("blocks", f"block_{block}_level_{level}.tflite")


def task_file(task: str, part: str) -> str:
    return os.path.join(task, f"{part}.tflite")


def write_model(path: str, model: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model)


def _probe(spec: tf.TensorSpec, rng: np.random.RandomState) -> np.ndarray:
    """An input for a model's check: random pixels, or activations of about unit scale."""
    if spec.dtype == tf.uint8:
        return rng.randint(0, 256, spec.shape).astype(np.uint8)
    return rng.normal(size=spec.shape).astype(np.float32)


def export(estimator: Estimator, selector: Selector, directory: str,
           class_names: Sequence[Sequence[str]]) -> dict:
    """Writes the TFLite models, the manifest and each model's probe (an input and the
    output TensorFlow computes for it, ``PROBES``) to ``directory``; returns the manifest.
    ``class_names[t]`` names task t's classes."""
    if len(class_names) != len(estimator.tasks):
        raise ValueError(f"class names for {len(estimator.tasks)} tasks, got {len(class_names)}")
    folded_weights = estimator.fold()  # (kept alive while tracing: freezing reads its variables)
    folded = folded_weights.check(estimator)
    costs = cost.cost_table(estimator)
    neck_bn = estimator.neck_bn if estimator.backbone.neck == "gap" else None
    rng = np.random.RandomState(0)
    probes = {}

    def save(name: str, fn: Callable, spec: tf.TensorSpec) -> None:
        write_model(os.path.join(directory, name), convert(fn, spec))
        probes[f"{name}:input"] = _probe(spec, rng)
        probes[f"{name}:output"] = fn(tf.constant(probes[f"{name}:input"])).numpy()

    shape = [1, *estimator.trunk_input_shape()[1:]]
    for i, block in enumerate(estimator.blocks):
        for level in range(block.levels):
            save(block_file(i, level), functools.partial(_at_level, block, level, folded[i]),
                 tf.TensorSpec(shape, tf.float32))
        shape = list(block.compute_output_shape(shape))
    tasks = []
    for t, (task, names) in enumerate(zip(estimator.tasks, class_names)):
        if len(names) != task.num_classes:
            raise ValueError(f"task {task.name!r} has {task.num_classes} classes, got "
                             f"{len(names)} class names")
        normalisation = sources.preprocessing(task.dataset)
        image = tf.TensorSpec([1, task.input_size, task.input_size, 3], tf.uint8)

        def normalized(images, n=normalisation):
            return pipeline.normalize(tf.cast(images, tf.float32), n)

        save(task_file(task.name, "selector"),
             lambda x, t=t: selector(normalized(x), task=t, training=False), image)
        save(task_file(task.name, "stem"), lambda x, t=t: estimator.stem(normalized(x), t), image)
        save(task_file(task.name, "head"),
             lambda h, t=t: estimator._output(features(h, neck_bn, estimator.hidden, False), t),
             tf.TensorSpec(shape, tf.float32))
        tasks.append({"name": task.name, "input_size": task.input_size,
                      "class_names": list(names), "fixed_flops": 2.0 * costs.fixed_macs[t]})
    manifest = {"tasks": tasks, "levels": [b.levels for b in estimator.blocks],
                "level_flops": (2.0 * costs.level_macs).tolist()}
    with open(os.path.join(directory, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    np.savez(os.path.join(directory, PROBES), **probes)
    return manifest


class Model:
    """One interpreter with one input and one output, and accessors of their buffers;
    ``xnnpack``: with TFLite's default XNNPACK delegate (else its built-in kernels)."""

    def __init__(self, path: str, threads: int, xnnpack: bool = True):
        resolver = tf.lite.experimental.OpResolverType
        with warnings.catch_warnings():  # tf.lite.Interpreter's notice of its move to LiteRT
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(
                model_path=path, num_threads=threads, experimental_op_resolver_type=(
                    resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        self.interpreter.allocate_tensors()
        (inp,), (out,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self.input = self.interpreter.tensor(inp["index"])
        self.output = self.interpreter.tensor(out["index"])

    def run(self, x: np.ndarray) -> Callable[[], np.ndarray]:
        """Runs on ``x``; returns the output's accessor (the interpreter refuses to run while a
        view of its buffers is held, so views are taken and dropped at once)."""
        np.copyto(self.input(), x)
        self.interpreter.invoke()
        return self.output

    def error(self, x: np.ndarray, expected: np.ndarray) -> float:
        """The largest difference from ``expected`` on ``x``, relative to its largest value."""
        got = self.run(x)().astype(np.float64)
        return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


def checked_model(path: str, threads: int, probe: np.ndarray, expected: np.ndarray,
                  tolerance: float = 1e-3) -> Model:
    """The model with XNNPACK if it computes ``expected`` on ``probe`` (within ``tolerance``
    of the output's scale), else with TFLite's built-in kernels if they do (with a warning);
    an error if neither does. (On this project's machines XNNPACK returned zeros for a 3x3
    convolution of stride 4.)"""
    model = Model(path, threads)
    error = model.error(probe, expected)
    if error <= tolerance:
        return model
    fallback = Model(path, threads, xnnpack=False)
    fallback_error = fallback.error(probe, expected)
    if fallback_error > tolerance:
        raise ValueError(f"{path} does not compute its probe's output (relative error "
                         f"{error:.3g} with XNNPACK, {fallback_error:.3g} without)")
    logging.warning("%s: XNNPACK's output is off by %.3g of its scale; it runs on TFLite's "
                    "built-in kernels", path, error)
    return fallback


class LiteNetwork:
    """The models ``export`` wrote, served one image at a time with ``threads`` threads per
    interpreter (default: every core, as TensorFlow's own default)."""

    def __init__(self, directory: str, threads: int | None = None):
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory} holds no TFLite export ({MANIFEST} missing)")
        with open(path) as f:
            self.manifest = json.load(f)
        self.threads = threads = threads or os.cpu_count() or 1
        self.levels = self.manifest["levels"]
        self.level_flops = np.array(self.manifest["level_flops"])
        self.tasks = {task["name"]: task for task in self.manifest["tasks"]}
        with np.load(os.path.join(directory, PROBES)) as probes:
            def load(name: str) -> Model:
                return checked_model(os.path.join(directory, name), threads,
                                     probes[f"{name}:input"], probes[f"{name}:output"])

            self.blocks = [[load(block_file(i, level)) for level in range(levels)]
                           for i, levels in enumerate(self.levels)]
            self.parts = {name: {part: load(task_file(name, part))
                                 for part in ("selector", "stem", "head")}
                          for name in self.tasks}

    def _image(self, image: np.ndarray, task: str) -> np.ndarray:
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(self.tasks)}")
        size = self.tasks[task]["input_size"]
        image = np.asarray(image)
        if image.shape == (size, size, 3):
            image = image[np.newaxis]
        if image.dtype != np.uint8 or image.shape != (1, size, size, 3):
            raise ValueError(f"an image for task {task!r} must be uint8 of shape ({size}, "
                             f"{size}, 3) or (1, {size}, {size}, 3), got {image.dtype} "
                             f"{image.shape}")
        return image

    def structure(self, image: np.ndarray, task: str) -> np.ndarray:
        """The selector's most probable structure for the image: (n_blocks,) levels."""
        image = self._image(image, task)
        logits = self.parts[task]["selector"].run(image)()
        return np.argmax(logits[0], axis=-1).astype(np.int32)

    def logits(self, image: np.ndarray, task: str, structure: Sequence[int]) -> np.ndarray:
        """The task's logits (classes,) for the image under ``structure`` (a level per
        block)."""
        image = self._image(image, task)
        if len(structure) != len(self.blocks) or not all(
                0 <= level < levels for level, levels in zip(structure, self.levels)):
            raise ValueError(f"a structure is one level per block, levels below {self.levels}; "
                             f"got {list(structure)}")
        parts = self.parts[task]
        output = parts["stem"].run(image)
        for models, level in zip(self.blocks, structure):
            output = models[level].run(output())
        return parts["head"].run(output())()[0].copy()

    def flops(self, structure: Sequence[int], task: str) -> float:
        """FLOPs per image of the task under ``structure`` (``cost.CostTable.flops``)."""
        per_block = self.level_flops[np.arange(len(self.blocks)), np.asarray(structure)]
        return float(self.tasks[task]["fixed_flops"] + per_block.sum())

    def predict(self, image: np.ndarray, task: str) -> dict:
        """The selector's structure, the logits under it, the top classes with their names and
        probabilities, and the structure's FLOPs."""
        structure = self.structure(image, task)
        logits = self.logits(image, task, structure)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        top = np.argsort(-probabilities, kind="stable")[:TOP_K]
        names = self.tasks[task]["class_names"]
        return {"logits": logits, "structure": structure, "flops": self.flops(structure, task),
                "top_classes": top, "top_names": [names[c] for c in top],
                "top_probabilities": probabilities[top]}
