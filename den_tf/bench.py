"""Speed of a scenario's model against a plain Keras network of the same shape.

    python -m den_tf.bench [--config=experiments/m1_wrn.py] [--batch_size=32]
        [--inference_batch_sizes=128,1] [--parts=training,inference,export,lite]
        [--structures=RUN/predictions.npz,...]

Random images of each task's size (the input pipeline has its own benchmark,
``den_tf.datasets.bench``). Prints one JSON object:

- training: images/s of the estimator's masked step (all tasks' images counted), of the same
  step on the plain network (``den_tf.plain``: the full structure from standard Keras layers,
  same loss, optimizer and weight decay), their time ratio, and the selector's step;
- inference on the first task, per batch size: images/s of the plain network (the reference)
  and of the estimator as exported (the sliced path on folded weights, ``Estimator.fold``) at
  the full structure, at every uniform level, at uniformly random structures and at
  structures drawn like a trained selector's (``SELECTOR_LIKE``), with ``--structures`` at
  the structures each given run's selector chose (``trained_selector_1``, ``_2``, ...) (rows
  ``<kind>_folded``),
  and, for comparison, at the full structure on the masked path and at the full and
  selector-like structures on the sliced path with the layers' own weights (``<kind>_sliced``:
  what evaluation runs), and, for the kinds whose batches share one structure (all at batch
  1, the uniform levels at any batch), on folded weights in a graph traced for each structure
  (``<kind>_fixed``: no control flow, so the difference from ``<kind>_folded`` is what
  choosing the levels at run time costs); each with its FLOPs
  fraction (stem, trunk and head), its speed-up over the plain network and ``ratio`` =
  speed-up x FLOPs fraction (1.0: time falls as FLOPs do);
- folding: the sliced path on folded weights against the same path on the layers' own, at
  the full structure, level 1 and selector-like structures, per batch size: the two alternate
  in ``--rounds`` rounds (so that the machine's drift falls on both), and the time ratio gets
  a 95% interval over the rounds;
- choice, per batch size: the plain network, the folded path as exported and (where a batch
  shares one structure: every kind at batch 1, the uniform levels at any batch) the folded
  path in a graph traced for each structure and the structure's compact network built from
  Keras layers (``den_tf.plain``), alternated in ``--rounds`` rounds per structure kind (the
  full structure, every uniform lower level, selector-like, a run's selector's); each path's
  ratio is taken against the same round's plain network, with a 95% interval over the rounds
  (the ratios without the drift between rows, and what choosing the levels at run time
  costs), and the ratio the mixed batches would reach if partitioning cost nothing
  (``partition_free_ratio``, from the uniform levels' ratios); above ``CHUNK`` images, each
  ratio also against the plain network in two halves at once, timed in the same rounds
  (``<path>_ratio_against_halves``), and the plain network on the whole batch against in chunks
  one after another (``plain_in_chunks``);
- export: the exported serving signature (``den_tf.export``; at batch 1 the one-image
  signature) against the same function in process;
- lite: batch 1 on TensorFlow Lite (``den_tf.lite``, a signature per block and level): the
  plain network as one TFLite model, the same network in TensorFlow and the elastic network
  at the full structure, level 1 and selector-like structures, alternated in ``--rounds``
  rounds; ratios against both plain networks, with 95% intervals;
- strategies: images/s of the estimator and selector steps (global batch ``batch_size`` per
  task) under each strategy this machine offers: one device, and ``MirroredStrategy`` over
  ``--cpu_devices`` logical CPU devices when there is no GPU (else over the GPUs);
- the device, whether TensorFlow ran with oneDNN (it changes CPU timings; TensorFlow leaves
  it off by default on some CPUs) and its thread counts (``--threads``).
"""

from __future__ import annotations

import datetime
import gc
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags

from den_tf import builders, cost, distribute, export, hardware, lite, metrics, plain, stats
from den_tf.datasets import pipeline, sources
from den_tf.steps import EstimatorStep, SelectorStep

# Level probabilities of the "selector-like" structures with four levels: mostly levels 1-2,
# as the demo's trained selectors choose (41% of the full structure's FLOPs; the demo's seeds
# 0-2 chose 0.4-5.8/29-41/39-41/20-25% on 2026-12-03, 50-53%: ``--structures`` benches runs'
# own).
SELECTOR_LIKE = (0.05, 0.45, 0.40, 0.10)
# The chunk size at which the choice part also times the plain network on a larger batch.
CHUNK = 32
PARTS = ("training", "inference", "folding", "choice", "export", "lite", "strategies")


def speedup_ratio(reference_seconds: float, seconds: float, flops_fraction: float) -> float:
    """Measured speed-up over the reference divided by the FLOP reduction (1 / fraction)."""
    if min(reference_seconds, seconds) <= 0 or not 0 < flops_fraction <= 1:
        raise ValueError(f"need positive times and a FLOPs fraction in (0, 1], got "
                         f"{reference_seconds}, {seconds}, {flops_fraction}")
    return reference_seconds / seconds * flops_fraction


def partition_free_ratio(level_shares: Sequence[float], level_fractions: Sequence[float],
                         level_ratios: Sequence[float]) -> float:
    """The ratio a batch of mixed levels would reach if partitioning it cost nothing: each
    block of each instance at level l taking its time in a batch whose blocks are all at
    level l. ``level_shares[l]``: the share of (instance, block) pairs at level l;
    ``level_fractions[l]`` and ``level_ratios[l]``: the FLOPs fraction and the measured ratio
    of the structure with every block at level l, whose time relative to the reference is
    fraction / ratio. The result is the ratios' harmonic mean weighted by FLOPs (shares x
    fractions); exact when a block's time does not depend on the other blocks' levels and
    every block's levels are drawn alike, since the stem and head, in every structure, then
    weigh the same on both sides."""
    if not len(level_shares) == len(level_fractions) == len(level_ratios):
        raise ValueError("need a share, a FLOPs fraction and a ratio per level")
    if not np.isclose(sum(level_shares), 1.0) or min(level_shares) < 0:
        raise ValueError(f"level shares must be non-negative and sum to 1, got {level_shares}")
    if min(level_fractions) <= 0 or min(level_ratios) <= 0:
        raise ValueError("FLOPs fractions and ratios must be positive")
    flops = sum(s * f for s, f in zip(level_shares, level_fractions))
    time = sum(s * f / r for s, f, r in zip(level_shares, level_fractions, level_ratios))
    return flops / time


def selector_like_probabilities(levels: int) -> tuple[float, ...]:
    """``SELECTOR_LIKE`` for four levels; otherwise most mass on the levels between the
    lowest and the top one."""
    if levels == len(SELECTOR_LIKE):
        return SELECTOR_LIKE
    weights = np.array([1.0] + [8.0] * (levels - 2) + [2.0])
    return tuple(weights / weights.sum())


def mean_seconds(fn: Callable[[int], object], calls: int) -> float:
    """Mean wall time of ``fn(i)`` over ``calls`` calls, after one untimed call (tracing).
    Python's garbage collector runs before the timed calls and is held off during them: a
    full collection of a process holding TensorFlow's objects took about 0.2 s on the 2-core
    Intel Xeon of docs/benchmarks.md, half a batch-1 round, and fell on whichever path
    was running."""
    fn(0)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        return (time.perf_counter() - start) / calls
    finally:
        if enabled:
            gc.enable()


def load_trained_structures(path: str, n_blocks: int,
                            levels: int) -> tuple[np.ndarray, np.ndarray]:
    """The structures a run's selector chose on its test images and each image's task, from
    the run's ``predictions.npz`` (``den_tf.evaluation``), checked against a network of
    ``n_blocks`` blocks and ``levels`` levels."""
    if not os.path.isfile(path):
        raise ValueError(f"--structures: no file {path!r} (a run's predictions.npz)")
    with np.load(path) as saved:
        missing = {"structure", "task"} - set(saved.files)
        if missing:
            raise ValueError(f"--structures: {path!r} has no {sorted(missing)}: give the "
                             "predictions.npz of a run evaluated with a selector")
        structures, tasks = saved["structure"], saved["task"]
    if structures.ndim != 2 or structures.shape[1] != n_blocks or tasks.shape != (
            structures.shape[0],):
        raise ValueError(f"--structures: {path!r} holds structures of shape {structures.shape} "
                         f"for {tasks.shape} tasks; the benchmark's network needs [images, "
                         f"{n_blocks}] (one level per block) and a task per image")
    if structures.size and (structures.min() < 0 or structures.max() >= levels):
        raise ValueError(f"--structures: {path!r} has levels {structures.min()} to "
                         f"{structures.max()}; the benchmark's network has levels 0 to "
                         f"{levels - 1}")
    return structures.astype(np.int32), tasks


def trained_structure_batches(structures: np.ndarray, tasks: np.ndarray, batch: int,
                              count: int) -> list[np.ndarray]:
    """``count`` batches of ``batch`` consecutive images of one task each (a deployment serves
    a task's images together, and a trained selector's structures are what they are, levels
    correlated across blocks), the tasks taking turns from their first images; with fewer
    full batches than ``count``, they repeat from the first."""
    per_task = [structures[tasks == t] for t in np.unique(tasks)]
    turns = [[z[i:i + batch] for i in range(0, len(z) - batch + 1, batch)] for z in per_task]
    batches = [b for group in itertools.zip_longest(*turns) for b in group if b is not None]
    if not batches:
        raise ValueError(f"--structures: no task has {batch} images (the batch size); tasks "
                         f"have {[len(z) for z in per_task]}")
    return [batches[i % len(batches)] for i in range(count)]


def trained_kinds(paths: Sequence[str], n_blocks: int, levels: int
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each run's selector's structures (``load_trained_structures``) as a structure kind,
    ``trained_selector_1`` for the first path and so on."""
    return {f"trained_selector_{i}": load_trained_structures(path, n_blocks, levels)
            for i, path in enumerate(paths, start=1)}


def _structures(estimator, batch: int, count: int, lowest_level: int = 1,
                trained: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                ) -> dict[str, list[tf.Tensor]]:
    """``count`` structure batches of each kind (the uniform ones, from ``lowest_level`` up,
    repeat one batch); with ``trained`` (``trained_kinds``), also its kinds: each run's
    structures in ``trained_structure_batches``."""
    n, h = estimator.n_blocks, estimator.levels
    rng = np.random.RandomState(1)
    kinds = {"full": [tf.fill([batch, n], h - 1)]}
    for level in range(lowest_level, h - 1):
        kinds[f"level_{level}"] = [tf.fill([batch, n], level)]
    kinds["random_uniform"] = [tf.constant(rng.randint(0, h, (batch, n)), tf.int32)
                               for _ in range(count)]
    probabilities = selector_like_probabilities(h)
    kinds["selector_like"] = [tf.constant(rng.choice(h, (batch, n), p=probabilities), tf.int32)
                              for _ in range(count)]
    for kind, (structures, tasks) in (trained or {}).items():
        kinds[kind] = [tf.constant(z) for z in
                       trained_structure_batches(structures, tasks, batch, count)]
    return {k: v * count if len(v) == 1 else v for k, v in kinds.items()}


def inference(estimator, reference: plain.PlainNetwork, batch: int, calls: int,
              trained: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
              ) -> dict[str, dict[str, float]]:
    """Images/s, FLOPs fraction, speed-up over ``reference`` and ratio of each structure kind
    (``_structures``) on task 0."""
    task = 0
    size = estimator.tasks[task].input_size
    images = tf.random.normal([batch, size, size, 3], seed=0)
    run_plain = _plain_path(reference, task)
    paths = _paths(estimator, task)
    costs = cost.cost_table(estimator)
    reference_seconds = mean_seconds(lambda i: run_plain(images).numpy(), calls)
    result = {"plain_network": {"images_per_s": batch / reference_seconds,
                                "flops_fraction": 1.0, "speedup": 1.0, "ratio": 1.0}}
    kinds = _structures(estimator, batch, calls, trained=trained)
    rows = [("full_masked", "masked", kinds["full"]), ("full_sliced", "sliced", kinds["full"]),
            ("selector_like_sliced", "sliced", kinds["selector_like"])]
    rows += [(f"{name}_folded", "folded", structures) for name, structures in kinds.items()]
    rows += [(f"{name}_fixed", "fixed", structures) for name, structures in kinds.items()
             if all(_one_structure(z) for z in structures)]
    for label, path, structures in rows:
        run = paths[path]
        if path == "fixed":
            structures = _traced_fixed(run, images, structures)
        seconds = mean_seconds(
            lambda i, z=structures, run=run: run(images, z[i]).numpy(), calls
        )
        fraction = _flops_fraction(estimator, costs, structures, task)
        result[label] = {
            "images_per_s": batch / seconds,
            "flops_fraction": fraction,
            "speedup": reference_seconds / seconds,
            "ratio": speedup_ratio(reference_seconds, seconds, fraction),
        }
    return result


def _traced_fixed(run_fixed: Callable, images: tf.Tensor,
                  structures: Sequence[tf.Tensor]) -> list[tuple[int, ...]]:
    """Batches that share one structure, as the tuples the ``fixed`` path takes, each
    structure's graph traced by one untimed call (so that no timing includes a trace)."""
    fixed = [tuple(int(v) for v in z.numpy()[0]) for z in structures]
    for z in set(fixed):
        run_fixed(images, z)
    return fixed


def _flops_fraction(estimator, costs, structures: Sequence, task: int) -> float:
    """Mean FLOPs of the structure batches (tensors or tuples) over the full structure's."""
    return float(np.mean([
        np.mean(costs.macs(tf.reshape(z, [-1, estimator.n_blocks]), task).numpy())
        for z in structures
    ])) / costs.full_macs(task)


def _one_structure(structures: tf.Tensor) -> bool:
    """Whether every instance of a structure batch has the same structure."""
    values = structures.numpy()
    return bool((values == values[:1]).all())


def _plain_path(reference: plain.PlainNetwork, task: int, pieces: int = 1) -> Callable:
    """The plain network on task ``task`` as a compiled function of the images; with
    ``pieces`` > 1, on that many parts of the batch in one graph (sizes differing by at most
    one image), which TensorFlow may run at the same time."""
    if pieces == 1:
        return tf.function(lambda x: reference(x, task=task))

    def in_pieces(x):
        n = x.shape[0]
        sizes = [n // pieces + (i < n % pieces) for i in range(pieces)]
        return tf.concat([reference(part, task=task) for part in tf.split(x, sizes)], 0)

    return tf.function(in_pieces)


def _compact_path(estimator, task: int) -> Callable:
    """Task ``task`` on the compact network of a structure given as a tuple of ints
    (``plain.PlainNetwork(estimator, structure)`` with the estimator's weights), a network
    and a compiled function per structure: no levels and no control flow."""
    graphs = {}

    def compact(x, z: tuple):
        if z not in graphs:
            network = plain.PlainNetwork(estimator, structure=z)
            plain.copy_weights(estimator, network)
            graphs[z] = _plain_path(network, task)
        return graphs[z](x)

    return compact


def _paths(estimator, task: int) -> dict[str, Callable]:
    """The estimator on task ``task`` as a function of (images, structure), compiled, on the
    masked path, the sliced path, the sliced path on folded weights, and (``fixed``) on folded
    weights under one structure given as a tuple of ints, a graph per structure with no
    control flow (the floor of the folded path's time: what choosing levels at run time
    costs)."""
    folded = estimator.fold()
    weights = {"masked": None, "sliced": None, "folded": folded}
    paths = {
        path: tf.function(lambda x, z, e="masked" if path == "masked" else "sliced", f=f:
                          estimator(x, task=task, structure=z, execution=e, folded=f))
        for path, f in weights.items()
    }
    graphs = {}

    def fixed(x, z: tuple):
        if z not in graphs:  # a function per structure: no retracing of one function
            graphs[z] = tf.function(lambda x: estimator(
                x, task=task, structure=z, execution="sliced", folded=folded))
        return graphs[z](x)

    paths["fixed"] = fixed
    return paths


def alternating(runs: dict[str, Callable[[int], object]], calls: int,
                rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each run in each of ``rounds`` rounds of ``calls`` calls; the order
    of the runs reverses every round, so that the machine's drift falls on all of them."""
    seconds = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[::1 if r % 2 == 0 else -1]:
            seconds[name].append(mean_seconds(runs[name], calls))
    return seconds


def folding(estimator, batch: int, calls: int, rounds: int) -> dict[str, dict]:
    """Per structure kind on task 0, ms per call of the sliced path on the layers' weights and
    on folded ones, timed alternately in ``rounds`` rounds of ``calls`` calls, and the time
    ratio folded / sliced (mean and 95% interval over the rounds)."""
    size = estimator.tasks[0].input_size
    images = tf.random.normal([batch, size, size, 3], seed=0)
    paths = _paths(estimator, 0)
    kinds = _structures(estimator, batch, calls)
    result = {}
    for kind in [k for k in ("full", "level_1", "selector_like") if k in kinds]:
        seconds = alternating(
            {path: lambda i, z=kinds[kind], run=paths[path]: run(images, z[i]).numpy()
             for path in ("sliced", "folded")}, calls, rounds)
        result[kind] = {"sliced_ms": 1e3 * float(np.mean(seconds["sliced"])),
                        "folded_ms": 1e3 * float(np.mean(seconds["folded"])),
                        **_interval_fields("folded_over_sliced_time", [
                            f / s for f, s in zip(seconds["folded"], seconds["sliced"])])}
    return result


def choice(estimator, reference: plain.PlainNetwork, batch: int, calls: int, rounds: int,
           trained: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
           ) -> dict[str, dict]:
    """The ratios at one batch size with the machine's drift taken out: per structure kind on
    task 0 (the full structure, every block at each lower level, selector-like structures),
    the plain network, the folded path as exported (levels chosen by ``tf.switch_case`` per
    block, a mixed batch partitioned; traced per batch size, so at batch 1 with no test of a
    shared structure, as the one-image signature) and, where each batch shares one structure
    (every kind at batch 1, the uniform levels at any batch), the folded path in a graph
    traced for that structure (``fixed``: what choosing the levels at run time costs) and that
    structure's compact network built from Keras layers (``compact``: what a static network of
    those widths gets from Keras, with nothing chosen at run time) alternate in ``rounds``
    rounds of ``calls`` calls (a structure batch per call); each path's ratio (speed-up over
    the plain network x FLOPs fraction) is taken per round, against the same round's plain
    network, with its 95% interval over the rounds. With ``trained`` (``trained_kinds``),
    its kinds follow: each run's selector's own structures. The mixed rows (selector-like,
    trained selectors) also get, for the folded
    and compact paths, ``partition_free_<path>_ratio``: per round, the ratio their mixed
    batches would reach from the uniform levels' ratios of that round if partitioning
    cost nothing (``partition_free_ratio``); for ``compact``, what static Keras networks of
    each level's widths would give. Above ``CHUNK`` images, the plain network also runs in
    two halves in one graph (``plain_halves``) in every round, and each path's ratio is also
    taken against it (``<path>_ratio_against_halves``): with oneDNN on, the README's
    Benchmarks found the halves faster than the whole batch, so the plain ratios are taken
    against a reference slower than it could be; and ``plain_in_chunks`` times the plain
    network on the batch in one call against in chunks of ``CHUNK`` one after another (faster
    with oneDNN off), alternated."""
    task = 0
    size = estimator.tasks[task].input_size
    images = tf.random.normal([batch, size, size, 3], seed=0)
    paths = _paths(estimator, task)
    compact = _compact_path(estimator, task)
    run_plain = _plain_path(reference, task)
    run_halves = _plain_path(reference, task, pieces=2) if batch > CHUNK else None
    costs = cost.cost_table(estimator)
    kinds = _structures(estimator, batch, calls, lowest_level=0, trained=trained)
    uniform = [f"level_{level}" for level in range(estimator.levels - 1)] + ["full"]
    mixed = ["selector_like", *(trained or {})]
    result, round_ratios = {}, {}
    for kind in ["full", *uniform[:-1], *mixed]:
        structures = kinds[kind]
        runs = {"plain": lambda i: run_plain(images).numpy()}
        if run_halves:
            runs["plain_halves"] = lambda i: run_halves(images).numpy()
        runs["folded"] = lambda i, z=structures: paths["folded"](images, z[i]).numpy()
        if all(_one_structure(z) for z in structures):
            fixed = _traced_fixed(paths["fixed"], images, structures)
            _traced_fixed(compact, images, structures)
            runs["fixed"] = lambda i, z=fixed: paths["fixed"](images, z[i]).numpy()
            runs["compact"] = lambda i, z=fixed: compact(images, z[i]).numpy()
        seconds = alternating(runs, calls, rounds)
        fraction = _flops_fraction(estimator, costs, structures, task)
        row = {"flops_fraction": fraction}
        row.update({f"{name}_ms": 1e3 * float(np.mean(seconds[name]))
                    for name in runs if name.startswith("plain")})
        round_ratios[kind] = {}
        for path in (name for name in runs if not name.startswith("plain")):
            round_ratios[kind][path] = [
                speedup_ratio(p, s, fraction) for p, s in zip(seconds["plain"], seconds[path])]
            row[f"{path}_ms"] = 1e3 * float(np.mean(seconds[path]))
            row.update(_interval_fields(f"{path}_ratio", round_ratios[kind][path]))
            if run_halves:
                row.update(_interval_fields(f"{path}_ratio_against_halves", [
                    speedup_ratio(p, s, fraction)
                    for p, s in zip(seconds["plain_halves"], seconds[path])]))
        result[kind] = row
    fractions = [result[kind]["flops_fraction"] for kind in uniform]
    for kind in mixed:
        levels = np.concatenate([z.numpy().ravel() for z in kinds[kind]])
        shares = np.bincount(levels, minlength=estimator.levels) / levels.size
        for path in ("folded", "compact"):
            estimates = [partition_free_ratio(shares, fractions, [round_ratios[k][path][r]
                                                                  for k in uniform])
                         for r in range(rounds)]
            result[kind].update(_interval_fields(f"partition_free_{path}_ratio", estimates))
    if batch > CHUNK:
        remainder = [batch % CHUNK] if batch % CHUNK else []
        chunks = tf.split(images, [CHUNK] * (batch // CHUNK) + remainder)
        seconds = alternating({"whole": lambda i: run_plain(images).numpy(),
                               "chunks": lambda i: [run_plain(c).numpy() for c in chunks]},
                              calls, rounds)
        result["plain_in_chunks"] = {"chunk": CHUNK}
        for name in seconds:
            result["plain_in_chunks"][f"{name}_ms"] = 1e3 * float(np.mean(seconds[name]))
        result["plain_in_chunks"].update(_interval_fields("chunks_over_whole_time", [
            t / w for t, w in zip(seconds["chunks"], seconds["whole"])]))
    return result


def _interval_fields(name: str, values: Sequence[float]) -> dict[str, float]:
    """``name`` and ``name_half_width``: the mean of ``values`` and its 95% interval."""
    interval = stats.mean_interval(values)
    return {name: interval["mean"], f"{name}_half_width": interval["half_width"]}


def exported_speed(estimator, selector, batches: Sequence[int],
                   calls: Callable[[int], int]) -> dict:
    """Per batch size, images/s of task 0's exported serving signature (at batch 1 the
    one-image signature ``<name>_single``; its name is recorded) and of the same function in
    process (``calls(batch)`` timed calls each), and their time ratio."""
    task = estimator.tasks[0]
    class_names = [[str(c) for c in range(t.num_classes)] for t in estimator.tasks]
    serve = export.serving_function(estimator, selector, 0, class_names[0])
    result = {}
    with tempfile.TemporaryDirectory() as path:
        name = export.export(estimator, selector, os.path.join(path, "model"), class_names)[0]
        loaded = tf.saved_model.load(os.path.join(path, "model"))
        for batch in batches:
            single = batch == 1
            signature = f"{name}_single" if single else name
            served = getattr(loaded, signature)
            spec = tf.TensorSpec([1 if single else None, task.input_size, task.input_size, 3],
                                 tf.uint8)
            in_process = tf.function(serve, input_signature=[spec])
            images = tf.constant(np.random.RandomState(2).randint(
                0, 256, (batch, task.input_size, task.input_size, 3)), tf.uint8)
            exported = mean_seconds(
                lambda i, x=images, run=served: run(x)["logits"].numpy(), calls(batch))
            local = mean_seconds(
                lambda i, x=images, run=in_process: run(x)["logits"].numpy(), calls(batch))
            result[f"batch_{batch}"] = {
                "signature": signature,
                "exported_images_per_s": batch / exported,
                "in_process_images_per_s": batch / local,
                "exported_over_in_process_time": exported / local,
            }
    return result


def lite_speed(estimator, selector, reference: plain.PlainNetwork, calls: int, rounds: int,
               threads: int | None = None) -> dict[str, dict]:
    """Batch 1 on TensorFlow Lite (``den_tf.lite``), task 0: per structure kind, the plain
    network converted to one TFLite model, the same network in TensorFlow, and the elastic
    network's signatures (``LiteNetwork.logits``; ``threads`` threads, None: every core)
    alternate in ``rounds`` rounds of ``calls`` calls; each round's ratio (speed-up x FLOPs
    fraction) is taken against the TFLite plain network (``ratio``) and against the
    TensorFlow one (``ratio_over_tensorflow``), with 95% intervals over the rounds."""
    task = estimator.tasks[0]
    size = task.input_size
    class_names = [[str(c) for c in range(t.num_classes)] for t in estimator.tasks]
    normalisation = sources.preprocessing(task.dataset)
    image = np.random.RandomState(2).randint(0, 256, (1, size, size, 3)).astype(np.uint8)
    run_plain = _plain_path(reference, 0)
    normalized = pipeline.normalize(tf.constant(image, tf.float32), normalisation)
    costs = cost.cost_table(estimator)
    kinds = _structures(estimator, 1, calls)
    result = {}
    with tempfile.TemporaryDirectory() as path:
        lite.export(estimator, selector, path, class_names)
        network = lite.LiteNetwork(path, threads)
        plain_file = os.path.join(path, "plain.tflite")
        lite.write_model(plain_file, lite.convert({"plain": (
            lambda x: reference(pipeline.normalize(tf.cast(x, tf.float32), normalisation), task=0),
            tf.TensorSpec(image.shape, tf.uint8, name="x"))}))
        plain_lite = lite.checked_signature(plain_file, "plain", network.threads, image,
                                            run_plain(normalized).numpy())
        for kind in [k for k in ("full", "level_1", "selector_like") if k in kinds]:
            structures = [tuple(int(v) for v in z.numpy()[0]) for z in kinds[kind]]
            seconds = alternating({
                "plain_tensorflow": lambda i: run_plain(normalized).numpy(),
                "plain_lite": lambda i: plain_lite(image),
                "lite": lambda i, z=structures: network.logits(image, task.name, z[i]),
            }, calls, rounds)
            fraction = _flops_fraction(estimator, costs, kinds[kind], 0)
            row = {"flops_fraction": fraction}
            for name, values in seconds.items():
                row[f"{name}_ms"] = 1e3 * float(np.mean(values))
            for key, plain_path in (("ratio", "plain_lite"),
                                    ("ratio_over_tensorflow", "plain_tensorflow")):
                row.update(_interval_fields(key, [speedup_ratio(p, s, fraction) for p, s in
                                                  zip(seconds[plain_path], seconds["lite"])]))
            result[kind] = row
    return result


def _training_batch(tasks, batch_size: int) -> tuple[dict, ...]:
    rng = np.random.RandomState(0)
    return tuple(
        {"image": tf.constant(rng.normal(size=(batch_size, t.input_size, t.input_size, 3)),
                              tf.float32),
         "label": tf.constant(rng.randint(0, t.num_classes, batch_size), tf.int32)}
        for t in tasks
    )


def _sgd(variables):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    optimizer.build(variables)
    return optimizer


def _phase_steps(config, estimator, selector) -> tuple[EstimatorStep, SelectorStep]:
    """The two training steps, with optimizers (under the current strategy's scope)."""
    settings = builders.step_settings(config)
    selector_optimizer = keras.optimizers.Adam(1e-5)
    selector_optimizer.build(selector.trainable_variables)
    return (EstimatorStep(estimator, selector, _sgd(estimator.trainable_variables), settings),
            SelectorStep(estimator, selector, selector_optimizer, settings))


def _step_seconds(estimator_step, selector_step, batch, steps: int) -> dict[str, float]:
    seed = tf.constant([0, 1], tf.int64)
    return {
        "estimator_step": mean_seconds(
            lambda i: estimator_step(batch, seed, "initial")["loss"].numpy(), steps),
        "selector_step": mean_seconds(
            lambda i: selector_step(batch, seed, 0.1)["loss"].numpy(), steps),
    }


def training(config, estimator, selector, batch_size: int, steps: int) -> dict[str, float]:
    """Images/s of the estimator step, the plain network's step and the selector step."""
    batch = _training_batch(estimator.tasks, batch_size)
    estimator_step, selector_step = _phase_steps(config, estimator, selector)
    reference = plain.PlainNetwork(estimator)
    plain_step = plain_training_step(reference, _sgd(reference.trainable_variables),
                                     estimator_step.settings.weight_decay)
    times = _step_seconds(estimator_step, selector_step, batch, steps)
    times["plain_network_step"] = mean_seconds(lambda i: plain_step(batch).numpy(), steps)
    images = batch_size * len(estimator.tasks)
    result = {f"{k}_images_per_s": images / v for k, v in times.items()}
    result["estimator_over_plain_time"] = times["estimator_step"] / times["plain_network_step"]
    return result


def strategies(config, batch_size: int, steps: int) -> dict[str, dict[str, float]]:
    """Images/s of both steps (global batch ``batch_size`` per task) under one device and,
    when there are several devices, under ``MirroredStrategy`` over all of them."""
    result = {}
    for name in ("one_device", "mirrored"):
        strategy = distribute.make_strategy(name)
        count = strategy.num_replicas_in_sync
        if name == "mirrored" and count < 2:
            continue
        with strategy.scope():
            estimator, selector = builders.build_models(config)
            estimator_step, selector_step = _phase_steps(config, estimator, selector)
        batch = _training_batch(estimator.tasks, batch_size)
        if distribute.is_distributed(strategy):
            batch = distribute.split_batch(strategy, batch)
        times = _step_seconds(estimator_step, selector_step, batch, steps)
        images = batch_size * len(estimator.tasks)
        result[f"{name}_{count}_replicas"] = {
            f"{k}_images_per_s": images / v for k, v in times.items()}
    return result


def plain_training_step(network: plain.PlainNetwork, optimizer, weight_decay: float):
    """The estimator step's loss (mean cross-entropy per task, summed, plus L2 on kernels)
    and update on the plain network."""

    @tf.function
    def step(batch: Sequence[dict]):
        variables = network.trainable_variables
        with tf.GradientTape() as tape:
            logits = network.call_tasks([b["image"] for b in batch], training=True)
            loss = tf.add_n([tf.reduce_mean(metrics.cross_entropy(b["label"], out))
                             for b, out in zip(batch, logits)])
            loss += weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in variables
                                             if v.shape.rank > 1])
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def _calls(batch: int) -> int:
    """Timed calls at a batch size: more for small batches, whose calls are short and each
    of which has its own structure."""
    return FLAGS.repeats * (8 if batch < 8 else 1)


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    parts = set(FLAGS.parts)
    if FLAGS.rounds < 2:
        raise app.UsageError(f"--rounds must be >= 2 (an interval needs two), got {FLAGS.rounds}")
    if unknown := parts - set(PARTS):
        raise app.UsageError(f"--parts: unknown {sorted(unknown)}; allowed: {PARTS}")
    # Only the strategy lines split the CPU (before TensorFlow initialises its devices).
    if ("strategies" in parts and FLAGS.cpu_devices > 1
            and not tf.config.list_physical_devices("GPU")):
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices,
        )
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    config = FLAGS.config
    builders.require_selector(config, "the benchmark")
    estimator, selector = builders.build_models(config)
    batches = [int(b) for b in FLAGS.inference_batch_sizes]
    try:
        trained = trained_kinds(FLAGS.structures or [], estimator.n_blocks, estimator.levels)
        for (structures, tasks), b in itertools.product(trained.values(), batches):
            trained_structure_batches(structures, tasks, b, 1)  # too few images: say so now
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    result = {
        "benchmark": "model",
        "date": datetime.date.today().isoformat(),
        "device": hardware.device_description(),
        "onednn": hardware.onednn_enabled(),
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "tensorflow": tf.__version__,
        "backbone": estimator.backbone.name,
        "tasks": [t.name for t in estimator.tasks],
        "structures": dict(zip(trained, FLAGS.structures or [])),
    }
    if "training" in parts:
        result["training_batch_size_per_task"] = FLAGS.batch_size
        result["training"] = training(
            config, estimator, selector, FLAGS.batch_size, FLAGS.train_steps
        )
    if parts & {"inference", "choice", "lite"}:
        result["inference_task"] = estimator.tasks[0].name
        reference = plain.PlainNetwork(estimator)
        plain.copy_weights(estimator, reference)
    if "inference" in parts:
        result["inference"] = {f"batch_{b}": inference(estimator, reference, b, _calls(b),
                                                       trained) for b in batches}
    if "folding" in parts:
        result["folding"] = {f"batch_{b}": folding(estimator, b, _calls(b), FLAGS.rounds)
                             for b in batches}
    if "choice" in parts:
        result["choice"] = {f"batch_{b}": choice(estimator, reference, b, _calls(b),
                                                 FLAGS.rounds, trained) for b in batches}
    if "export" in parts:
        result["export"] = exported_speed(estimator, selector, batches, _calls)
    if "lite" in parts:
        result["lite"] = {"threads": FLAGS.threads or os.cpu_count(), "batch_1": lite_speed(
            estimator, selector, reference, _calls(1), FLAGS.rounds, FLAGS.threads or None)}
    if "strategies" in parts:
        result["strategies"] = strategies(config, FLAGS.batch_size, FLAGS.train_steps)
    print(json.dumps(_rounded(result), indent=1))


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", "experiments/m1_wrn.py", "Experiment config file.")
    flags.DEFINE_integer("batch_size", 32, "Training images per task per step.")
    flags.DEFINE_list("inference_batch_sizes", ["128", "1"], "Inference batch sizes.")
    flags.DEFINE_integer("train_steps", 3, "Timed training steps per phase (after one untimed).")
    flags.DEFINE_integer("repeats", 5, "Timed inference calls per structure (after one untimed).")
    flags.DEFINE_list("parts", list(PARTS), f"What to measure, of {PARTS}.")
    flags.DEFINE_integer("rounds", 6, "Alternating rounds of the folding, choice and lite "
                         "comparisons.")
    flags.DEFINE_integer("threads", 0, "TensorFlow's intra-op and inter-op threads and the "
                         "TFLite interpreter's (0: their defaults, which size them to the "
                         "machine).")
    flags.DEFINE_list("structures", None, "Runs' predictions.npz (den_tf.evaluation, a "
                      "network of the config's blocks and levels), comma-separated: each "
                      "selector's structures, batches of consecutive images of one task, "
                      "become the kind 'trained_selector_<i>' (i from 1, in the order given) "
                      "of the inference and choice parts.")
    flags.DEFINE_integer("cpu_devices", 2, "Logical CPU devices for the mirrored strategy "
                         "line (without a GPU); 1: no mirrored line.")
    FLAGS = flags.FLAGS
    app.run(main)
