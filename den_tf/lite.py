"""Per-image deployment with TensorFlow Lite: each block's levels as signatures of one model.

An image served alone runs one structure, and what it costs is its convolutions. TensorFlow's
CPU convolutions on narrow channel counts take several times longer per FLOP than wide ones
(README, Benchmarks), which held the SavedModel's batch-1 speed-ups well under the FLOP
reduction; TensorFlow Lite's XNNPACK convolutions run narrow and wide ones at about the same
rate. TFLite's control flow (``If``) leaves its branches outside XNNPACK, so the structure is
chosen here, in Python: the task's selector picks the levels, then the task's stem, each
block's signature at its level, and the task's head run in turn. All are signatures of one
model in one interpreter, so they share XNNPACK's threads (an interpreter per part left each
one's threads to wake up on every call: about 5-8% slower on two threads).

``export(estimator, selector, directory)`` writes, from the estimator's folded weights
(``Estimator.fold``):
  model.tflite    signatures block_<i>_level_<l> (the block at that level), and per task t
                  task_<t>_selector (uint8 image (1, S, S, 3) -> level logits (1, n, h)),
                  task_<t>_stem (uint8 image, normalised inside -> the trunk's input) and
                  task_<t>_head (the trunk's output -> logits (1, classes))
  manifest.json   tasks, class names, levels and FLOPs
  probes.npz      per signature an input and the output TensorFlow computed for it
and ``LiteNetwork(directory)`` serves them with ``tf.lite`` and numpy (den_tf installed for its
budget rule; no Keras model is built). Loading runs every signature on its probe: one that
XNNPACK computes wrongly runs on TFLite's built-in kernels, and one that neither computes is
an error. One image a call; a batch is served image by image.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

# TensorFlow's own freezing of a concrete function: TFLite's converter keeps Keras 3
# variables as resource variables that its interpreter leaves uninitialised (NaN outputs).
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from den_tf import budget, cost, files
from den_tf.datasets import pipeline, sources
from den_tf.estimator import Estimator
from den_tf.selector import Selector

MANIFEST = "manifest.json"
MODEL = "model.tflite"
PROBES = "probes.npz"
TOP_K = 5


def convert(functions: dict[str, tuple[Callable, tf.TensorSpec]]) -> bytes:
    """One TFLite model with a signature per entry of ``functions`` (name: (function, input
    spec)), each traced for its spec with its variables frozen to constants (TFLite's
    converter otherwise keeps Keras 3 variables as resource variables that its interpreter
    leaves uninitialised: NaN outputs)."""
    module = tf.Module()
    signatures = {}
    for name, (fn, spec) in functions.items():
        concrete = tf.function(fn, input_signature=[spec]).get_concrete_function()
        signatures[name] = convert_variables_to_constants_v2(concrete)
        setattr(module, name, signatures[name])
    with tempfile.TemporaryDirectory() as path:
        tf.saved_model.save(module, path, signatures=signatures)
        return tf.lite.TFLiteConverter.from_saved_model(
            path, signature_keys=list(signatures)).convert()


def block_signature(block: int, level: int) -> str:
    """The signature of block ``block`` at level ``level``."""
    return f"block_{block}_level_{level}"


def task_signature(task: int, part: str) -> str:
    """The signature of task ``task``'s ``part`` (selector, stem or head)."""
    return f"task_{task}_{part}"


def write_model(path: str, model: bytes) -> None:
    """Writes a converted model's bytes to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(model)


def _at_level(block, level: int, weights: list, h: tf.Tensor) -> tf.Tensor:
    return block.at_level(h, level, weights)


def _probe(spec: tf.TensorSpec, rng: np.random.RandomState) -> np.ndarray:
    """An input for a signature's check: random pixels, or activations of about unit scale."""
    if spec.dtype == tf.uint8:
        return rng.randint(0, 256, spec.shape).astype(np.uint8)
    return rng.normal(size=spec.shape).astype(np.float32)


def probes(functions: dict[str, tuple[Callable, tf.TensorSpec]], seed: int = 0) -> dict:
    """Per signature a random input (``name:input``) and TensorFlow's output for it
    (``name:output``)."""
    rng = np.random.RandomState(seed)
    result = {}
    for name, (fn, spec) in functions.items():
        result[f"{name}:input"] = _probe(spec, rng)
        result[f"{name}:output"] = fn(tf.constant(result[f"{name}:input"])).numpy()
    return result


def export(estimator: Estimator, selector: Selector, directory: str,
           class_names: Sequence[Sequence[str]]) -> dict:
    """Writes the TFLite model, the manifest and the probes to ``directory``; returns the
    manifest. ``class_names[t]`` names task t's classes."""
    if len(class_names) != len(estimator.tasks):
        raise ValueError(f"class names for {len(estimator.tasks)} tasks, got {len(class_names)}")
    task_names = [task.name for task in estimator.tasks]
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"task names must differ (LiteNetwork serves tasks by name): "
                         f"{task_names}")
    folded_weights = estimator.fold()  # (kept alive while tracing: freezing reads its variables)
    folded = folded_weights.check(estimator)
    costs = cost.cost_table(estimator)
    functions = {}
    shape = [1, *estimator.trunk_input_shape()[1:]]
    for i, block in enumerate(estimator.blocks):
        for level in range(block.levels):
            functions[block_signature(i, level)] = (
                functools.partial(_at_level, block, level, folded[i]),
                tf.TensorSpec(shape, tf.float32, name="x"))
        shape = list(block.compute_output_shape(shape))
    tasks = []
    for t, (task, names) in enumerate(zip(estimator.tasks, class_names)):
        if len(names) != task.num_classes:
            raise ValueError(f"task {task.name!r} has {task.num_classes} classes, got "
                             f"{len(names)} class names")
        normalisation = sources.preprocessing(task.dataset)
        image = tf.TensorSpec([1, task.input_size, task.input_size, 3], tf.uint8, name="x")

        def normalized(images, n=normalisation):
            return pipeline.normalize(tf.cast(images, tf.float32), n)

        functions[task_signature(t, "selector")] = (
            functools.partial(_selector_logits, selector, t, normalized), image)
        functions[task_signature(t, "stem")] = (
            functools.partial(_stem, estimator, t, normalized), image)
        functions[task_signature(t, "head")] = (
            functools.partial(_head, estimator, t),
            tf.TensorSpec(shape, tf.float32, name="x"))
        tasks.append({"name": task.name, "input_size": task.input_size,
                      "class_names": list(names), "fixed_flops": 2.0 * costs.fixed_macs[t]})
    manifest = {"tasks": tasks, "levels": [b.levels for b in estimator.blocks],
                "level_flops": (2.0 * costs.level_macs).tolist()}
    with files.replaced_directory(directory) as partial:
        write_model(os.path.join(partial, MODEL), convert(functions))
        np.savez(os.path.join(partial, PROBES), **probes(functions))
        with open(os.path.join(partial, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
    return manifest


def _selector_logits(selector, task: int, normalized: Callable, images):
    return selector(normalized(images), task=task, training=False)


def _stem(estimator, task: int, normalized: Callable, images):
    return estimator.stem(normalized(images), task)


def _head(estimator, task: int, h):
    return estimator._output(estimator.neck(h), task)


def interpreter(path: str, threads: int, xnnpack: bool = True) -> tf.lite.Interpreter:
    """The model at ``path`` in an interpreter of ``threads`` threads, with TFLite's default
    XNNPACK delegate or (``xnnpack=False``) its built-in kernels only."""
    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():  # (TF 2.21 warns that tf.lite.Interpreter is deprecated)
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(
            model_path=path, num_threads=threads, experimental_op_resolver_type=(
                resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


class Signature:
    """One signature of an interpreter, with one input and one output."""

    def __init__(self, interpreter: tf.lite.Interpreter, name: str):
        self.runner = interpreter.get_signature_runner(name)
        (self.input_name,) = self.runner.get_input_details()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (output,) = self.runner(**{self.input_name: x}).values()
        return output

    def error(self, x: np.ndarray, expected: np.ndarray) -> float:
        """The largest difference from ``expected`` on ``x``, divided by the largest value of
        ``expected`` where that exceeds 1 (an absolute difference below it)."""
        got = self(x).astype(np.float64)
        return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


def checked_signature(path: str, name: str, threads: int, probe: np.ndarray,
                      expected: np.ndarray, interpreters: dict | None = None,
                      tolerance: float = 1e-3) -> Signature:
    """Signature ``name`` of the model at ``path`` with XNNPACK if it computes ``expected``
    on ``probe`` (within ``tolerance`` of the output's scale), else with TFLite's built-in
    kernels if they do (with a warning); an error if neither does. (On this project's
    machines XNNPACK returned zeros for a 3x3 convolution of stride 4.) ``interpreters``
    caches the two interpreters of ``path`` across calls (keys True and False: XNNPACK)."""
    interpreters = {} if interpreters is None else interpreters
    errors = []
    for xnnpack in (True, False):
        if xnnpack not in interpreters:
            interpreters[xnnpack] = interpreter(path, threads, xnnpack)
        signature = Signature(interpreters[xnnpack], name)
        errors.append(signature.error(probe, expected))
        if errors[-1] <= tolerance:
            if not xnnpack:
                logging.warning("%s, %s: XNNPACK's output is off by %.3g of its scale; it runs "
                                "on TFLite's built-in kernels", path, name, errors[0])
            return signature
    raise ValueError(f"{path}, {name}: does not compute its probe's output (relative error "
                     f"{errors[0]:.3g} with XNNPACK, {errors[1]:.3g} without)")


class LiteNetwork:
    """The model ``export`` wrote, served one image at a time with ``threads`` threads
    (default: every core, as TensorFlow's own default). One interpreter serves every call:
    not for concurrent calls from several Python threads."""

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
        n, h = len(self.levels), max(self.levels)
        # The budget rule traced once (eagerly, its loops would run op by op for each image).
        self._budgeted = tf.function(
            lambda logits, max_flops, fixed: budget.structure_under_budget(
                tf.nn.log_softmax(logits), self.level_flops, max_flops, fixed),
            input_signature=[tf.TensorSpec([1, n, h], tf.float32),
                             tf.TensorSpec([1], tf.float64), tf.TensorSpec([], tf.float64)])
        interpreters = {}
        with np.load(os.path.join(directory, PROBES)) as probe:
            def load(name: str) -> Signature:
                return checked_signature(os.path.join(directory, MODEL), name, threads,
                                         probe[f"{name}:input"], probe[f"{name}:output"],
                                         interpreters)

            self.blocks = [[load(block_signature(i, level)) for level in range(levels)]
                           for i, levels in enumerate(self.levels)]
            self.parts = {name: {part: load(task_signature(t, part))
                                 for part in ("selector", "stem", "head")}
                          for t, name in enumerate(self.tasks)}

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(self.tasks)}")

    def _image(self, image: np.ndarray, task: str) -> np.ndarray:
        self._check_task(task)
        size = self.tasks[task]["input_size"]
        image = np.asarray(image)
        if image.shape == (size, size, 3):
            image = image[np.newaxis]
        if image.dtype != np.uint8 or image.shape != (1, size, size, 3):
            raise ValueError(f"an image for task {task!r} must be uint8 of shape ({size}, "
                             f"{size}, 3) or (1, {size}, {size}, 3), got {image.dtype} "
                             f"{image.shape}")
        return image

    def _check_structure(self, structure: Sequence[int]) -> None:
        if len(structure) != len(self.blocks) or not all(
                isinstance(level, int | np.integer) and 0 <= level < levels
                for level, levels in zip(structure, self.levels)):
            raise ValueError(f"a structure is one level per block, levels below {self.levels}; "
                             f"got {list(structure)}")

    def structure(self, image: np.ndarray, task: str,
                  max_flops: float | None = None) -> np.ndarray:
        """The selector's most probable structure for the image, (n_blocks,) levels; with
        ``max_flops``, the most probable within that many FLOPs (``budget``, as the
        SavedModel's ``<task>_budget``)."""
        image = self._image(image, task)
        logits = self.parts[task]["selector"](image)
        if max_flops is None:
            return np.argmax(logits[0], axis=-1).astype(np.int32)
        return self._budgeted(logits, np.array([max_flops]),
                              np.array(self.tasks[task]["fixed_flops"]))[0].numpy()

    def logits(self, image: np.ndarray, task: str, structure: Sequence[int]) -> np.ndarray:
        """The task's logits (classes,) for the image under ``structure`` (a level per
        block)."""
        image = self._image(image, task)
        self._check_structure(structure)
        parts = self.parts[task]
        output = parts["stem"](image)
        for signatures, level in zip(self.blocks, structure):
            output = signatures[level](output)
        return parts["head"](output)[0]

    def flops(self, structure: Sequence[int], task: str) -> float:
        """FLOPs per image of the task under ``structure`` (``cost.CostTable.flops``)."""
        self._check_task(task)
        self._check_structure(structure)
        per_block = self.level_flops[np.arange(len(self.blocks)), np.asarray(structure)]
        return float(self.tasks[task]["fixed_flops"] + per_block.sum())

    def full_flops(self, task: str) -> float:
        """FLOPs per image of the task's full structure."""
        return self.flops([levels - 1 for levels in self.levels], task)

    def cheapest_flops(self, task: str) -> float:
        """FLOPs per image of the task's cheapest structure: the lowest budget."""
        return self.flops([0] * len(self.levels), task)

    def predict(self, image: np.ndarray, task: str, max_flops: float | None = None) -> dict:
        """The selector's structure (within ``max_flops``, if given), the logits under it, the
        top classes with their names and probabilities, and the structure's FLOPs."""
        structure = self.structure(image, task, max_flops)
        logits = self.logits(image, task, structure)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        top = np.argsort(-probabilities, kind="stable")[:TOP_K]
        names = self.tasks[task]["class_names"]
        return {"logits": logits, "structure": structure, "flops": self.flops(structure, task),
                "top_classes": top, "top_names": [names[c] for c in top],
                "top_probabilities": probabilities[top]}
