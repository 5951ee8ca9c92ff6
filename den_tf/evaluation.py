"""Evaluation: accuracy and FLOPs of selected structures, controls, and the results files.

At test time an instance runs the selector's most probable structure on the sliced path.
The controls run the same estimator with every instance at the full structure, with
uniformly random structures (the paper's "rand sel"), with random structures drawn from
the per-block level frequencies of the learned selector (the same expected FLOPs), and with
the selector's own structures shuffled among the task's instances (the same structures and
FLOPs exactly; only which instance runs which is random).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from den_tf import cost, files, metrics, policy, stats
from den_tf.estimator import Estimator
from den_tf.selector import Selector

MODES = ("selector", "full", "uniform", "marginal", "level_<l>")
# The controls of results.json's "random_selector", by key, with their names in sweep.md.
CONTROLS = {
    "uniform": "random (uniform)",
    "marginal": "random (selector's level frequencies)",
    "shuffled": "random (selector's structures, shuffled)",
}
# (task, selector logits, images, seed) -> structures (batch, n_blocks)
Chooser = Callable[[int, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
TOP_STRUCTURES = 20
QUINTILES = 5


def structure_ids(structures: np.ndarray, levels: int) -> np.ndarray:
    """Each structure as one integer (its levels read as base-h digits, block 0 first), as
    Python integers: h ** n_blocks outgrows int64 from 32 blocks of 4 levels."""
    weights = np.array([levels ** k for k in range(structures.shape[1] - 1, -1, -1)], object)
    return np.asarray(structures).astype(np.int64).astype(object) @ weights


def check_mode(mode: str, levels: int) -> None:
    """Raises ValueError unless ``mode`` is one of ``MODES`` ('level_<l>': every block at l)."""
    if mode in MODES[:-1]:
        return
    level = mode.removeprefix("level_")
    if mode.startswith("level_") and level.isdigit() and int(level) < levels:
        return
    raise ValueError(f"evaluation mode must be one of {MODES} (l < {levels}), got {mode!r}")


def _structures(mode, estimator, images, seed, marginals):
    """The structures of a control: full, one uniform level, or random."""
    batch = tf.shape(images)[0]
    if mode == "full":
        return estimator.full_structure(batch)
    if mode.startswith("level_"):
        return tf.fill([batch, estimator.n_blocks], int(mode.removeprefix("level_")))
    if mode == "uniform":
        return policy.uniform_structure(batch, estimator.n_blocks, estimator.levels, seed)
    logits = tf.math.log(marginals + 1e-12)  # mode "marginal"
    return policy.sample_structure(tf.tile(logits[tf.newaxis], [batch, 1, 1]), seed)


class Evaluator:
    """Runs the estimator over datasets under one kind of structures (``MODES``).

    Compiled functions shared by every mode: per task the selector's level logits (none
    without a selector: the fixed-structure methods), the estimator's stem, and its head with
    the per-instance scores; one estimator trunk on the sliced path under given structures per
    trunk input shape (one for all tasks when they have stems: the sliced blocks are most of
    the tracing and graph-optimising time). A mode only decides the structures (eagerly, a
    few integers per image), so each function is traced once, with the batch dimension left
    open (a last partial batch does not retrace), and reused at every evaluation.
    """

    def __init__(self, estimator: Estimator, selector: Selector | None, rho: float,
                 instance_cost: cost.InstanceCost | None = None):
        self.estimator = estimator
        self.selector = selector
        self.costs = cost.cost_table(estimator)
        # The objective's per-instance cost R (BlockDrop's for its runs), DEN's by default.
        self.instance_cost = instance_cost or cost.InstanceCost("den", rho)
        self.compiled: dict[tuple, tf.types.experimental.GenericFunction] = {}

    def _compiled(self, key: tuple, build: Callable[[], tf.types.experimental.GenericFunction]):
        if key not in self.compiled:
            self.compiled[key] = build()
        return self.compiled[key]

    def _select(self, task: int):
        """The compiled selector of a task: level logits of its images."""
        return self._compiled(("select", task), lambda: tf.function(
            lambda x: self.selector(x, task=task, training=False),
            input_signature=[self._images_spec(task)]))

    def _score(self, task: int):
        """Scores of a task's images under given structures: its compiled stem, the shared
        compiled trunk and its compiled head, each called from Python."""
        estimator = self.estimator
        stem = self._compiled(("stem", task), lambda: tf.function(
            lambda x: estimator.stem(x, task), input_signature=[self._images_spec(task)]))
        spec = stem.get_concrete_function().structured_outputs
        trunk = self._compiled(("trunk", *spec.shape[1:]), lambda: tf.function(
            lambda x, z: estimator._trunk(x, z, training=False, execution="sliced"),
            input_signature=[tf.TensorSpec([None, *spec.shape[1:]], spec.dtype),
                             tf.TensorSpec([None, estimator.n_blocks], tf.int32)]))

        def scores(features, labels):
            outputs = estimator._output(features, task)
            return {
                "cross_entropy": metrics.cross_entropy(labels, outputs),
                "correct": metrics.correct(labels, outputs),
                "predictions": tf.argmax(outputs, -1, output_type=tf.int32),
            }

        features = trunk.get_concrete_function().structured_outputs
        head = self._compiled(("head", task), lambda: tf.function(
            scores, input_signature=[tf.TensorSpec(features.shape, features.dtype),
                                     tf.TensorSpec([None], tf.int32)]))
        return lambda images, labels, structures: head(trunk(stem(images), structures), labels)

    def _images_spec(self, task: int) -> tf.TensorSpec:
        size = self.estimator.tasks[task].input_size
        return tf.TensorSpec([None, size, size, 3], tf.float32)

    def evaluate(
        self,
        datasets: Sequence[tf.data.Dataset],
        mode: str,
        seed: int = 0,
        marginals: Sequence[np.ndarray] | None = None,
    ) -> dict[str, dict]:
        """Per task: accuracy (%), mean cross-entropy, objective (the mean cost R: CE + S(z) for
        DEN), mean FLOPs and density of the structures used, and per instance
        (``instances``): label, prediction, correct, structure, FLOPs and the data's extra
        features (``difficulty``); in mode 'selector' also the selector's level probabilities,
        per instance and their mean (``level_probabilities``, (n_blocks, h)).

        ``marginals[t]`` (n_blocks, h) gives the level frequencies of mode 'marginal'.
        """
        check_mode(mode, self.estimator.levels)
        if mode == "selector" and self.selector is None:
            raise ValueError("mode 'selector' needs a selector (a fixed-structure method has none)")
        shape = (self.estimator.n_blocks, self.estimator.levels)
        tasks = len(self.estimator.tasks)
        if mode == "marginal" and (marginals is None or len(marginals) != tasks or any(
                np.shape(m) != shape for m in marginals)):
            raise ValueError(f"mode 'marginal' draws from given level frequencies: marginals "
                             f"must be {tasks} arrays of shape {shape}")
        frequencies = [tf.constant(marginals[t] if mode == "marginal" else np.ones(shape),
                                   tf.float32) for t in range(tasks)]

        def choose(t, logits, images, batch_seed):
            if mode == "selector":
                return policy.argmax_structure(logits)
            return _structures(mode, self.estimator, images, batch_seed, frequencies[t])

        return self.evaluate_structures(datasets, choose, seed,
                                        uses_selector=mode == "selector")

    def evaluate_assigned(
        self, datasets: Sequence[tf.data.Dataset], structures: Sequence[np.ndarray]
    ) -> dict[str, dict]:
        """``evaluate`` with every instance's structure given: ``structures[t]`` (instances of
        task t in the dataset's order, n_blocks), one array per task, as many rows as the
        task's dataset has instances."""
        if len(structures) != len(self.estimator.tasks):
            raise ValueError(f"structures for {len(structures)} tasks given, the estimator has "
                             f"{len(self.estimator.tasks)}")
        used = [0] * len(structures)

        def mismatch(t: int, instances: str) -> ValueError:
            return ValueError(f"task {self.estimator.tasks[t].name!r}: {len(structures[t])} "
                              f"structures given for {instances} instances")

        def choose(t, logits, images, seed):
            start = used[t]
            used[t] += int(images.shape[0])
            if used[t] > len(structures[t]):
                raise mismatch(t, "more")
            return tf.constant(structures[t][start:used[t]], tf.int32)

        report = self.evaluate_structures(datasets, choose, uses_selector=False)
        for t, count in enumerate(used):
            if count != len(structures[t]):
                raise mismatch(t, str(count))
        return report

    def evaluate_structures(
        self, datasets: Sequence[tf.data.Dataset], choose: Chooser, seed: int = 0,
        tasks: Sequence[int] | None = None, uses_selector: bool = True,
    ) -> dict[str, dict]:
        """``evaluate`` with the structures of each batch given by ``choose(task, selector
        logits, images, seed)`` (a seed per batch, derived from ``seed``), on the tasks
        ``tasks`` (ids; None: all). The selector runs only where ``uses_selector`` and there is
        one: otherwise the logits are None and the report has no selector probabilities (the
        controls do not pay for a network they do not use)."""
        report = {}
        for t in range(len(self.estimator.tasks)) if tasks is None else tasks:
            task, dataset = self.estimator.tasks[t], datasets[t]
            score = self._score(t)
            select = self._select(t) if uses_selector and self.selector is not None else None
            outputs, extras = collections.defaultdict(list), collections.defaultdict(list)
            for b, batch in enumerate(dataset):
                logits = None if select is None else select(batch["image"])
                z = choose(t, logits, batch["image"], tf.constant([seed, t * 100_003 + b],
                                                                  tf.int64))
                scored = score(batch["image"], batch["label"], z)
                scored["structures"] = z
                if logits is not None:
                    scored["probabilities"] = tf.nn.softmax(logits)
                for key, value in scored.items():
                    outputs[key].append(value.numpy())
                outputs["labels"].append(batch["label"].numpy())
                for key in batch.keys() - {"image", "label", "task"}:
                    extras[key].append(batch[key].numpy())
            if not outputs:
                raise ValueError(f"evaluation data of task {task.name!r} is empty")
            instances = {key: np.concatenate(value) for key, value in outputs.items()}
            instances.update({key: np.concatenate(value) for key, value in extras.items()})
            z, ce, correct = (instances[k] for k in ("structures", "cross_entropy", "correct"))
            instances["flops"] = self.costs.flops(z, t).numpy()
            objective = self.instance_cost(ce, correct, z, self.costs.density).numpy()
            report[task.name] = {
                "accuracy": 100.0 * float(correct.mean(dtype=np.float64)),
                "cross_entropy": float(ce.mean()),
                "objective": float(objective.mean()),
                "flops": float(instances["flops"].mean()),
                "flops_full": 2 * self.costs.full_macs(t),
                "density": float(metrics.density(z, self.costs).numpy().mean()),
                "num": int(len(correct)),
                "structures": z,
                "instances": instances,
            }
            if "probabilities" in instances:
                report[task.name]["level_probabilities"] = instances["probabilities"].mean(0)
        return report


def evaluate_levels(
    evaluator: Evaluator,
    datasets: Sequence[tf.data.Dataset],
    task_levels: Sequence[Sequence[int]],
    seed: int = 0,
    tasks: Sequence[int] | None = None,
) -> dict[str, dict]:
    """Every task (of ``tasks``; None: all) at each of its fixed levels (every block at that
    level): the report of ``Evaluator.evaluate`` keyed by task name, or ``name@level_<l>``
    for a task with several levels."""
    ids = range(len(task_levels)) if tasks is None else tasks
    report = {}
    for level in sorted({level for t in ids for level in task_levels[t]}):
        chosen = [t for t in ids if level in task_levels[t]]
        part = evaluator.evaluate_structures(
            datasets, lambda t, logits, images, s, level=level: tf.fill(
                [tf.shape(images)[0], evaluator.estimator.n_blocks], level), seed, chosen,
            uses_selector=False)
        for t, (name, entry) in zip(chosen, part.items()):
            report[name if len(task_levels[t]) == 1 else f"{name}@level_{level}"] = entry
    return report


def shuffled_structures(structures: np.ndarray, seed: Sequence[int]) -> np.ndarray:
    """The rows of ``structures`` (one per instance) in a random order drawn from ``seed``:
    the same structures, each given to a random instance."""
    return np.random.default_rng(list(seed)).permutation(structures)


def level_frequencies(structures: np.ndarray, levels: int) -> np.ndarray:
    """(n_blocks, h) frequency of each level in each block over a set of structures."""
    counts = np.stack([np.bincount(col, minlength=levels) for col in structures.T])
    return counts / counts.sum(axis=1, keepdims=True)


def mean_level_probabilities(report: dict[str, dict]) -> np.ndarray:
    """The selector's mean probability of each level of each block over every evaluated
    instance of every task, (h, n_blocks): the paper's Fig. 6b."""
    if any("level_probabilities" not in e for e in report.values()):
        raise ValueError("the report has no selector probabilities (a fixed-structure method)")
    weighted = sum(e["level_probabilities"] * e["num"] for e in report.values())
    return (weighted / sum(e["num"] for e in report.values())).T


def _histogram(structures: np.ndarray) -> dict:
    counted = collections.Counter(",".join(map(str, z)) for z in structures)
    top = dict(counted.most_common(TOP_STRUCTURES))
    return {"distinct": len(counted), "top": top}


def _average(tasks: dict, key: str) -> float:
    return float(np.mean([entry[key] for entry in tasks.values()]))


def operating_point(report: dict[str, dict], estimator: Estimator | None = None) -> dict:
    """Accuracy and FLOPs per task and on average: one operating point of the estimator; with
    the estimator, also the parameters an instance runs (``params_used``)."""
    keys = ("accuracy", "flops") + (("params_used",) if estimator is not None else ())
    tasks = {}
    for t, (name, e) in enumerate(report.items()):
        tasks[name] = {"accuracy": e["accuracy"], "flops": e["flops"]}
        if estimator is not None:
            tasks[name]["params_used"] = float(
                cost.params_used(estimator, e["structures"], t).mean())
    return {"tasks": tasks, "average": {key: _average(tasks, key) for key in keys}}


def oracle(level_reports: dict[int, dict[str, dict]]) -> dict:
    """The oracle over uniform structures: each test instance runs the cheapest uniform level
    that classifies it correctly (it knows the label), or the cheapest level when none does.
    An upper bound on what choosing among these structures per instance can give."""
    levels = sorted(level_reports)
    tasks = {}
    for name in level_reports[levels[0]]:
        instances = [level_reports[level][name]["instances"] for level in levels]
        correct = np.stack([i["correct"] > 0 for i in instances])
        flops = np.stack([i["flops"] for i in instances])
        chosen = np.where(correct.any(axis=0), correct.argmax(axis=0), 0)
        columns = np.arange(correct.shape[1])
        tasks[name] = {
            "accuracy": 100.0 * float(correct.any(axis=0).mean()),
            "flops": float(flops[chosen, columns].mean()),
        }
    return {
        "rule": "cheapest uniform level that is correct, else the cheapest",
        "levels": levels,
        "tasks": tasks,
        "average": {"accuracy": _average(tasks, "accuracy"), "flops": _average(tasks, "flops")},
    }


def sorted_allocation(correct: np.ndarray, level_flops: np.ndarray, key: np.ndarray,
                      budget: float, steps: int = 50) -> dict | None:
    """The most accurate way to give uniform levels to instances in the order of ``key``
    (lowest key: cheapest level; levels never decrease along the order), within a mean-FLOPs
    ``budget``; cut points on a grid of ``steps`` + 1 positions. ``correct``: (levels, n)
    whether each instance is right at each uniform level; ``level_flops``: (levels,), each
    level's FLOPs, increasing. Returns accuracy (%), FLOPs, the share of instances at each
    level, and ``random_accuracy``: the expected accuracy of the same shares given at random;
    None when even the cheapest level exceeds the budget."""
    correct = np.asarray(correct, bool)
    level_flops = np.asarray(level_flops, np.float64)
    levels, n = correct.shape
    if level_flops.shape != (levels,) or np.any(np.diff(level_flops) < 0):
        raise ValueError(f"level_flops: expected {levels} increasing values, got {level_flops}")
    ordered = correct[:, np.argsort(key, kind="stable")]
    hits = np.concatenate([np.zeros((levels, 1)), np.cumsum(ordered, axis=1)], axis=1)
    cuts = np.unique(np.linspace(0, n, steps + 1).round().astype(int))
    inner = np.array(list(itertools.combinations_with_replacement(cuts, levels - 1)), int)
    bounds = np.concatenate([np.zeros((len(inner), 1), int), inner.reshape(len(inner), -1),
                             np.full((len(inner), 1), n)], axis=1)
    counts = np.diff(bounds, axis=1)
    flops = counts @ level_flops / n
    right = sum(hits[level, bounds[:, level + 1]] - hits[level, bounds[:, level]]
                for level in range(levels))
    feasible = flops <= budget * (1 + 1e-9)
    if not feasible.any():
        return None
    # The most correct instances, then the fewest FLOPs.
    best = np.lexsort((flops, -right, ~feasible))[0]
    shares = counts[best] / n
    return {
        "accuracy": 100.0 * float(right[best]) / n,
        "flops": float(flops[best]),
        "shares": shares.round(4).tolist(),
        "random_accuracy": 100.0 * float(shares @ correct.mean(axis=1)),
    }


def difficulty_allocation(level_reports: dict[int, dict[str, dict]],
                          budgets: dict[str, float]) -> dict | None:
    """Per task, ``sorted_allocation`` of the uniform levels by the instances' known
    difficulty within ``budgets[task]`` (the selector's FLOPs): what a chooser that knew each
    test image's difficulty could reach with uniform structures (its cut points fitted on the
    test split itself, so an optimistic bound), and the same level shares given at random.
    None without a known difficulty, or when a task's budget is below its cheapest uniform
    level (the selector chose cheaper structures than any uniform one)."""
    levels = sorted(level_reports)
    first = level_reports[levels[0]]
    if any("difficulty" not in entry["instances"] for entry in first.values()):
        return None
    tasks = {}
    for name, entry in first.items():
        instances = [level_reports[level][name]["instances"] for level in levels]
        allocation = sorted_allocation(
            np.stack([i["correct"] > 0 for i in instances]),
            np.array([i["flops"].mean() for i in instances]),
            entry["instances"]["difficulty"], budgets[name])
        if allocation is None:
            return None
        tasks[name] = allocation
    return {
        "rule": "uniform levels by known difficulty (easiest cheapest), within the selector's "
                "FLOPs per task; cut points fitted on the test split",
        "levels": levels,
        "tasks": tasks,
        "average": {key: _average(tasks, key) for key in ("accuracy", "flops", "random_accuracy")},
    }


def difficulty_points(allocation: dict) -> dict[str, dict]:
    """``difficulty_allocation`` as two operating points: by known difficulty, and the same
    shares of levels at random."""
    def point(key):
        tasks = {name: {"accuracy": entry[key], "flops": entry["flops"]}
                 for name, entry in allocation["tasks"].items()}
        return {"tasks": tasks, "average": {"accuracy": allocation["average"][key],
                                            "flops": allocation["average"]["flops"]}}

    return {"Uniform levels by known difficulty": point("accuracy"),
            "Same level shares at random": point("random_accuracy")}


def instance_awareness(instances: dict[str, np.ndarray], flops_full: float) -> dict:
    """How the chosen structures follow the known difficulty of the instances: the rank
    correlation of difficulty and FLOPs, and per difficulty quintile (easiest first) the mean
    difficulty, FLOPs fraction and accuracy (%)."""
    difficulty, flops = instances["difficulty"], instances["flops"] / flops_full
    correct = instances["correct"]
    bins = stats.quantile_bins(difficulty, QUINTILES)
    rho = stats.spearman(difficulty, flops)
    return {
        "spearman_difficulty_flops": None if np.isnan(rho) else rho,
        "quintile_difficulty": [float(difficulty[b].mean()) for b in bins],
        "quintile_flops_fraction": [float(flops[b].mean()) for b in bins],
        "quintile_accuracy": [100.0 * float(correct[b].mean(dtype=np.float64)) for b in bins],
    }


def lowest_useful_level(estimator: Estimator) -> int:
    """The cheapest uniform level worth reporting: 1 when level 0 skips every residual block."""
    return 1 if estimator.blocks[0].level_channels[0] == 0 else 0


def results(
    config: ml_collections.ConfigDict,
    evaluator: Evaluator,
    test_data: Sequence[tf.data.Dataset],
) -> tuple[dict, dict[str, dict], dict[int, dict[str, dict]]]:
    """Everything results.json holds (selected structures, controls, uniform levels, the
    oracle, instance-awareness where the data knows difficulty, model figures), the per-task
    report of the selected structures and those of the uniform levels by level (their
    ``instances`` make predictions.npz), for a
    method with a selector (DEN, BlockDrop: the evaluator's ``instance_cost`` is its
    objective's R). The evaluator's compiled functions (a trainer's, traced for validation)
    are reused."""
    estimator, selector = evaluator.estimator, evaluator.selector
    summary = cost.model_summary(estimator, selector)
    den = evaluator.evaluate(test_data, "selector", config.seed)
    tasks = {}
    for t, (name, entry) in enumerate(den.items()):
        tasks[name] = {
            **_cost_fields(estimator, entry, t),
            "density": entry["density"],
            "num_test": entry["num"],
            "distinct_flops": int(len(np.unique(entry["instances"]["flops"]))),
            "histogram": _histogram(entry["structures"]),
            "level_frequencies": level_frequencies(entry["structures"], estimator.levels)
            .round(4).tolist(),
        }
        if "difficulty" in entry["instances"]:
            tasks[name]["instance_awareness"] = instance_awareness(
                entry["instances"], entry["flops_full"]
            )
    marginals = [level_frequencies(e["structures"], estimator.levels) for e in den.values()]
    controls = {
        mode: operating_point(evaluator.evaluate(test_data, mode, config.seed, marginals),
                              estimator)
        for mode in ("uniform", "marginal")
    }
    controls["shuffled"] = operating_point(evaluator.evaluate_assigned(test_data, [
        shuffled_structures(e["structures"], (config.seed, t)) for t, e in enumerate(den.values())
    ]), estimator)
    top = estimator.levels - 1
    level_reports = {
        level: evaluator.evaluate(test_data, "full" if level == top else f"level_{level}",
                                  config.seed)
        for level in range(lowest_useful_level(estimator), estimator.levels)
    }
    allocation = difficulty_allocation(level_reports,
                                       {name: entry["flops"] for name, entry in den.items()})
    return {
        **_header(config, summary, METHOD_NAMES.get(config.method, f"DEN (rho={config.rho:g})"),
                  config.method),
        "tasks": tasks,
        "average": _averages(tasks),
        "params": {**{key: summary["params"][key] for key in ("paper", "total")},
                   "networks": 1, "used": _average(tasks, "params_used")},
        "selector": summary["selector"],
        "full_structure": operating_point(level_reports[top], estimator),
        "random_selector": controls,
        "uniform_levels": {str(level): operating_point(r, estimator)
                           for level, r in level_reports.items()},
        "oracle": oracle(level_reports),
        **({} if allocation is None else {"difficulty_allocation": allocation}),
    }, den, level_reports


def _header(config: ml_collections.ConfigDict, summary: dict, name: str, method: str) -> dict:
    return {"scenario": config.scenario, "method": name, "method_id": method,
            "rho": config.rho if method == "den" else None,
            "backbone": summary["backbone"], "seed": config.seed}


def _cost_fields(estimator: Estimator, entry: dict, task: int) -> dict:
    """Accuracy and the costs of a task's evaluated structures: FLOPs, multiply-adds and the
    parameters an instance runs (means over its instances), and the full structure's FLOPs."""
    return {
        "accuracy": entry["accuracy"],
        "flops": entry["flops"],
        "macs": entry["flops"] / 2,
        "flops_full": entry["flops_full"],
        "params_used": float(cost.params_used(estimator, entry["structures"], task).mean()),
    }


def fraction_of_full(flops: Sequence[float], flops_full: Sequence[float]) -> float:
    """The tasks' FLOPs averaged over tasks (the paper's average) as a fraction of their full
    structures' average: every FLOPs fraction over several tasks is this one. The mean of the
    per-task fractions would weigh a 32-pixel task's fraction as much as a 96-pixel task's,
    though the latter's FLOPs are nine times more."""
    return float(np.sum(flops) / np.sum(flops_full))


def _averages(tasks: dict) -> dict:
    """Means over tasks (the paper's "FLOPs averaged over tasks"), the FLOPs fraction of the
    full structure (``fraction_of_full``) and the compression ratio against the baseline (the
    full backbone)."""
    average = {key: _average(tasks, key)
               for key in ("accuracy", "flops", "macs", "flops_full", "params_used")}
    average["flops_fraction"] = fraction_of_full(
        [e["flops"] for e in tasks.values()], [e["flops_full"] for e in tasks.values()])
    average["compression"] = average["flops_full"] / average["flops"]
    return average


METHOD_NAMES = {"baseline": "Baseline", "nestednet": "NestedNet", "packnet": "PackNet*",
                "blockdrop": "BlockDrop"}


def fixed_structure_results(
    config: ml_collections.ConfigDict,
    evaluator: Evaluator,
    test_data: Sequence[tf.data.Dataset],
    task_levels: Sequence[Sequence[int]],
    method: str,
) -> tuple[dict, dict[str, dict]]:
    """results.json of a fixed-structure method (``methods.py``): each task at its level; a
    task with several levels (NestedNet on one task) is reported at its highest under
    ``tasks`` and at every level under ``levels`` (Table 5's rows L, M, H). Also the
    per-task report of the ``tasks`` entries (for predictions.npz)."""
    estimator = evaluator.estimator
    summary = cost.model_summary(estimator, None)
    report = evaluate_levels(evaluator, test_data, task_levels, config.seed)
    tasks, per_level, top_report = {}, collections.defaultdict(dict), {}
    for t, (task, levels) in enumerate(zip(estimator.tasks, task_levels)):
        for level in levels:
            key = task.name if len(levels) == 1 else f"{task.name}@level_{level}"
            per_level[str(level)][task.name] = {**_cost_fields(estimator, report[key], t),
                                                "level": level}
        tasks[task.name] = per_level[str(levels[-1])][task.name]
        top_report[task.name] = report[task.name if len(levels) == 1
                                       else f"{task.name}@level_{levels[-1]}"]
    results = {
        **_header(config, summary, METHOD_NAMES[method], method),
        "tasks": tasks,
        "average": _averages(tasks),
        "params": {**{key: summary["params"][key] for key in ("paper", "total")},
                   "networks": 1, "used": _average(tasks, "params_used")},
    }
    if any(len(levels) > 1 for levels in task_levels):
        results["levels"] = {level: {"tasks": entries, "average": _averages(entries)}
                             for level, entries in per_level.items()}
    return results, top_report


def combine_networks(parts: Sequence[dict]) -> dict:
    """The results of a method that needs one network per task (the separate baseline) from
    each network's: every task's figures, their averages, and the parameters of all the
    networks with their number."""
    tasks = {name: entry for part in parts for name, entry in part["tasks"].items()}
    return {
        **{key: parts[0][key] for key in ("scenario", "method", "method_id", "rho", "backbone",
                                          "seed")},
        "tasks": tasks,
        "average": _averages(tasks),
        "params": {
            **{key: sum(p["params"][key] for p in parts) for key in ("paper", "total",
                                                                     "networks")},
            "used": _average(tasks, "params_used"),
        },
    }


def write_predictions(path: str, report: dict[str, dict],
                      level_reports: dict[int, dict[str, dict]] | None = None) -> None:
    """The per-instance record of an evaluation as one .npz: task id and names, label,
    prediction, correct, the selector's level probabilities (N, n_blocks, h; absent without
    a selector), the structure and its FLOPs, difficulty (NaN where the data has none), and
    per task the full structure's FLOPs (``task_flops_full``). With ``level_reports`` (the
    same instances at each uniform level) also ``uniform_levels`` (L,), and
    ``uniform_correct`` and ``uniform_flops`` (N, L): each instance's result at each of those
    levels. Replaced atomically (``files.replaced_atomically``)."""
    names = list(report)
    parts = [report[name]["instances"] for name in names]
    count = [len(p["labels"]) for p in parts]
    uniform = {}
    if level_reports:
        levels = sorted(level_reports)
        for name, part in zip(names, parts):
            for level in levels:
                if not np.array_equal(level_reports[level][name]["instances"]["labels"],
                                      part["labels"]):
                    raise ValueError(f"level {level} of task {name!r} was evaluated on other "
                                     "instances than the selector's structures")
        uniform = {
            "uniform_levels": np.array(levels),
            **{f"uniform_{key}": np.concatenate([
                np.stack([level_reports[level][name]["instances"][key] for level in levels], 1)
                for name in names]) for key in ("correct", "flops")},
        }
        uniform["uniform_correct"] = uniform["uniform_correct"] > 0
    with files.replaced_atomically(path, binary=True) as f:  # a file: no ".npz" appended
        np.savez_compressed(
            f,
            task_names=np.array(names),
            task_flops_full=np.array([float(report[name].get("flops_full", np.nan))
                                      for name in names]),
            task=np.repeat(np.arange(len(names)), count),
            label=np.concatenate([p["labels"] for p in parts]),
            prediction=np.concatenate([p["predictions"] for p in parts]),
            correct=np.concatenate([p["correct"] > 0 for p in parts]),
            **({"probabilities": np.concatenate([p["probabilities"] for p in parts])}
               if all("probabilities" in p for p in parts) else {}),
            structure=np.concatenate([p["structures"] for p in parts]),
            flops=np.concatenate([p["flops"] for p in parts]),
            difficulty=np.concatenate([
                p.get("difficulty", np.full(n, np.nan, np.float32)) for p, n in zip(parts, count)
            ]),
            **uniform,
        )


def _giga(flops: float) -> str:
    return f"{flops / 1e9:.3f}G" if flops >= 1e8 else f"{flops / 1e6:.2f}M"


def _params_cell(params: dict) -> str:
    return f"{params['paper'] / 1e6:.3f}M [{params['networks']}]"


def fixed_structure_markdown(results: dict) -> str:
    """results.json of a fixed-structure method as a Table-2-style column, and its levels."""
    average = results["average"]
    lines = [
        f"# {results['scenario']} on {results['backbone']}: {results['method']}",
        "",
        f"| Dataset | {results['method']} | level | FLOPs / full |",
        "|---|---|---|---|",
    ]
    for task, entry in results["tasks"].items():
        level = entry.get("level", "separate network")
        lines.append(f"| {task} | {entry['accuracy']:.2f} | {level} | "
                     f"{entry['flops'] / entry['flops_full']:.2f} |")
    lines += [
        f"| Average | {average['accuracy']:.2f} | | {average['flops_fraction']:.2f} |",
        f"| FLOPs | {_giga(average['flops'])} | | |",
        f"| No. parameters | {_params_cell(results['params'])} | | |",
        "",
        f"Accuracy in %, on the whole test split; FLOPs: mean per image (2 per multiply-add), "
        f"full structure {_giga(average['flops_full'])}; parameters under the paper's "
        f"convention, of all [n] networks the method needs; an instance runs "
        f"{results['params']['used'] / 1e6:.3f}M of them on average.",
    ]
    if "levels" in results:
        lines += ["", "| level | accuracy % | parameters used | FLOPs compression |",
                  "|---|---|---|---|"]
        for level, point in results["levels"].items():
            lines.append(f"| {level} | {point['average']['accuracy']:.2f} | "
                         f"{point['average']['params_used'] / 1e6:.3f}M | "
                         f"{point['average']['compression']:.1f}x |")
    lines.append("")
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    """results.json as a table laid out like the paper's Table 2 (with DEN's controls and
    operating points), or a fixed-structure method's column."""
    if "random_selector" not in results:
        return fixed_structure_markdown(results)
    den = {"tasks": results["tasks"], "average": results["average"]}
    columns = [
        ("Full structure", results["full_structure"]),
        *((f"Random ({key})", point) for key, point in results["random_selector"].items()),
        (results["method"], den),
    ]
    lines = [
        f"# {results['scenario']} on {results['backbone']}",
        "",
        "| Dataset | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for task in results["tasks"]:
        cells = [f"{c['tasks'][task]['accuracy']:.2f}" for _, c in columns]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append("| Average | " + " | ".join(
        f"{c['average']['accuracy']:.2f}" for _, c in columns) + " |")
    lines.append("| FLOPs | " + " | ".join(_giga(c["average"]["flops"]) for _, c in columns) + " |")
    lines.append("| No. parameters | " + " | ".join(_params_cell(results["params"])
                                                  for _ in columns) + " |")
    lines += [
        "",
        f"Accuracy in %, on the whole test split; FLOPs: mean per image (2 per multiply-add) of "
        f"the structures used, full structure {_giga(results['average']['flops_full'])}. "
        f"Selector: {results['selector']['params'] / 1e6:.3f}M parameters, "
        f"{_giga(results['selector']['flops'])} FLOPs.",
        "",
        "## Operating points of the same estimator",
        "",
        "Accuracy % @ FLOPs as a fraction of the full structure's. Uniform level l: every block "
        "at level l. Oracle: each instance at the cheapest uniform level that classifies it "
        "correctly (it knows the label): the headroom that choosing per instance could reach."
        + (" By known difficulty: uniform levels given by the data's difficulty (easiest "
           "cheapest) within the selector's FLOPs, cut points fitted on the test split; at "
           "random: the same shares of levels given to random instances."
           if "difficulty_allocation" in results else ""),
        "",
    ]
    points = [(f"Uniform level {level}", point)
              for level, point in results["uniform_levels"].items()]
    points.append(("Oracle over uniform levels", results["oracle"]))
    if "difficulty_allocation" in results:
        points += list(difficulty_points(results["difficulty_allocation"]).items())
    points.append((results["method"], den))
    lines.append("| Dataset | " + " | ".join(name for name, _ in points) + " |")
    lines.append("|---|" + "---|" * len(points))
    for task, entry in results["tasks"].items():
        cells = [f"{p['tasks'][task]['accuracy']:.2f} @ "
                 f"{p['tasks'][task]['flops'] / entry['flops_full']:.2f}" for _, p in points]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    full = results["average"]["flops_full"]
    lines.append("| Average | " + " | ".join(
        f"{p['average']['accuracy']:.2f} @ {p['average']['flops'] / full:.2f}" for _, p in points
    ) + " |")
    aware = {t: e["instance_awareness"] for t, e in results["tasks"].items()
             if "instance_awareness" in e}
    if aware:
        lines += [
            "",
            "## Instance-awareness against the known difficulty",
            "",
            "| Dataset | rank correlation (difficulty, FLOPs) | FLOPs fraction by difficulty "
            "quintile, easiest first | accuracy % by quintile | distinct FLOPs values |",
            "|---|---|---|---|---|",
        ]
        for task, entry in aware.items():
            rho = entry["spearman_difficulty_flops"]
            lines.append(
                f"| {task} | {'n/a' if rho is None else f'{rho:+.2f}'} | "
                + " ".join(f"{x:.2f}" for x in entry["quintile_flops_fraction"]) + " | "
                + " ".join(f"{x:.0f}" for x in entry["quintile_accuracy"]) + " | "
                + f"{results['tasks'][task]['distinct_flops']} |"
            )
    lines.append("")
    return "\n".join(lines)
