"""Evaluation: accuracy and FLOPs of selected structures, controls, and the results files.

At test time an instance runs the selector's most probable structure on the sliced path.
The controls run the same estimator with every instance at the full structure, with
uniformly random structures (the paper's "rand sel") and with random structures drawn from
the per-block level frequencies of the learned selector (the same expected FLOPs).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from den_tf import cost, metrics, policy
from den_tf.estimator import Estimator
from den_tf.selector import Selector

MODES = ("selector", "full", "uniform", "marginal")
TOP_STRUCTURES = 20


def structure_ids(structures: np.ndarray, levels: int) -> np.ndarray:
    """Each structure as one integer (its levels read as base-h digits, block 0 first)."""
    weights = levels ** np.arange(structures.shape[1] - 1, -1, -1, dtype=np.int64)
    return structures.astype(np.int64) @ weights


def _structures(mode, estimator, images, seed, marginals):
    """Random or full structures for the controls."""
    batch = tf.shape(images)[0]
    if mode == "full":
        return estimator.full_structure(batch)
    if mode == "uniform":
        return policy.uniform_structure(batch, estimator.n_blocks, estimator.levels, seed)
    logits = tf.math.log(marginals + 1e-12)  # mode "marginal"
    return policy.sample_structure(tf.tile(logits[tf.newaxis], [batch, 1, 1]), seed)


class Evaluator:
    """Runs the estimator over datasets under one kind of structures (``MODES``).

    The compiled functions are built once and reused at every evaluation interval.
    """

    def __init__(self, estimator: Estimator, selector: Selector, rho: float):
        self.estimator = estimator
        self.selector = selector
        self.costs = cost.cost_table(estimator)
        self.rho = rho
        self._run = {
            mode: tf.function(self._run_fn(mode), reduce_retracing=True) for mode in MODES
        }

    def _run_fn(self, mode):
        estimator, selector = self.estimator, self.selector

        def run(images, labels, task, seed, marginals):
            logits = selector(images, task=task, training=False)
            if mode == "selector":
                z = policy.argmax_structure(logits)
            else:
                z = _structures(mode, estimator, images, seed, marginals)
            outputs = estimator(images, task=task, structure=z, training=False,
                                execution="sliced")
            return (z, metrics.cross_entropy(labels, outputs), metrics.correct(labels, outputs),
                    tf.nn.softmax(logits))

        return run

    def evaluate(
        self,
        datasets: Sequence[tf.data.Dataset],
        mode: str,
        seed: int = 0,
        marginals: Sequence[np.ndarray] | None = None,
    ) -> dict[str, dict]:
        """Per task: accuracy (%), mean cross-entropy, objective (CE + S(z)), mean FLOPs and
        density of the structures used, the structures, and the selector's mean level
        probabilities (n_blocks, h), over one pass of each dataset.

        ``marginals[t]`` (n_blocks, h) gives the level frequencies of mode 'marginal'.
        """
        if mode not in MODES:
            raise ValueError(f"evaluation mode must be one of {MODES}, got {mode!r}")
        shape = (self.estimator.n_blocks, self.estimator.levels)
        report = {}
        for t, (task, dataset) in enumerate(zip(self.estimator.tasks, datasets)):
            task_marginals = tf.constant(
                np.ones(shape) if marginals is None else marginals[t], tf.float32
            )
            outputs = [
                self._run[mode](batch["image"], batch["label"], t,
                                tf.constant([seed, t * 100_003 + b], tf.int64), task_marginals)
                for b, batch in enumerate(dataset)
            ]
            if not outputs:
                raise ValueError(f"evaluation data of task {task.name!r} is empty")
            z, ce, correct, probs = (np.concatenate([o[i].numpy() for o in outputs])
                                     for i in range(4))
            sparsity = cost.sparsity_cost(z, self.costs.density, self.rho).numpy()
            report[task.name] = {
                "accuracy": 100.0 * float(correct.mean(dtype=np.float64)),
                "cross_entropy": float(ce.mean()),
                "objective": float(ce.mean() + sparsity.mean()),
                "flops": float(self.costs.flops(z, t).numpy().mean()),
                "flops_full": 2 * self.costs.full_macs(t),
                "density": float(metrics.density(z, self.costs).numpy().mean()),
                "num": int(len(correct)),
                "structures": z,
                "level_probabilities": probs.mean(axis=0),
            }
        return report


def level_frequencies(structures: np.ndarray, levels: int) -> np.ndarray:
    """(n_blocks, h) frequency of each level in each block over a set of structures."""
    counts = np.stack([np.bincount(col, minlength=levels) for col in structures.T])
    return counts / counts.sum(axis=1, keepdims=True)


def mean_level_probabilities(report: dict[str, dict]) -> np.ndarray:
    """The selector's mean probability of each level of each block over every evaluated
    instance of every task, (h, n_blocks): the paper's Fig. 6b."""
    weighted = sum(e["level_probabilities"] * e["num"] for e in report.values())
    return (weighted / sum(e["num"] for e in report.values())).T


def _histogram(structures: np.ndarray) -> dict:
    counted = collections.Counter(",".join(map(str, z)) for z in structures)
    top = dict(counted.most_common(TOP_STRUCTURES))
    return {"distinct": len(counted), "top": top}


def _average(tasks: dict, key: str) -> float:
    return float(np.mean([entry[key] for entry in tasks.values()]))


def results(
    config: ml_collections.ConfigDict,
    estimator: Estimator,
    selector: Selector,
    test_data: Sequence[tf.data.Dataset],
) -> dict:
    """Everything results.json holds: selected structures, controls and model figures."""
    evaluator = Evaluator(estimator, selector, config.rho)
    summary = cost.model_summary(estimator, selector)
    den = evaluator.evaluate(test_data, "selector", config.seed)
    tasks = {}
    for name, entry in den.items():
        tasks[name] = {
            "accuracy": entry["accuracy"],
            "flops": entry["flops"],
            "flops_full": entry["flops_full"],
            "density": entry["density"],
            "num_test": entry["num"],
            "histogram": _histogram(entry["structures"]),
            "level_frequencies": level_frequencies(entry["structures"], estimator.levels)
            .round(4).tolist(),
        }
    marginals = [level_frequencies(e["structures"], estimator.levels) for e in den.values()]
    controls = {}
    for mode in ("full", "uniform", "marginal"):
        report = evaluator.evaluate(test_data, mode, config.seed, marginals)
        controls[mode] = {
            "tasks": {n: {"accuracy": e["accuracy"], "flops": e["flops"]}
                      for n, e in report.items()},
        }
        controls[mode]["average"] = {
            "accuracy": _average(controls[mode]["tasks"], "accuracy"),
            "flops": _average(controls[mode]["tasks"], "flops"),
        }
    return {
        "scenario": config.scenario,
        "method": f"DEN (rho={config.rho:g})",
        "backbone": summary["backbone"],
        "tasks": tasks,
        "average": {
            "accuracy": _average(tasks, "accuracy"),
            "flops": _average(tasks, "flops"),
            "flops_full": _average(tasks, "flops_full"),
        },
        "params": {key: summary["params"][key] for key in ("paper", "total")},
        "selector": summary["selector"],
        "full_structure": controls["full"],
        "random_selector": {"uniform": controls["uniform"], "marginal": controls["marginal"]},
    }


def _giga(flops: float) -> str:
    return f"{flops / 1e9:.3f}G" if flops >= 1e8 else f"{flops / 1e6:.2f}M"


def results_markdown(results: dict) -> str:
    """results.json as a table laid out like the paper's Table 2."""
    columns = [
        ("Full structure", results["full_structure"]),
        ("Random (uniform)", results["random_selector"]["uniform"]),
        ("Random (marginal)", results["random_selector"]["marginal"]),
        (results["method"], {"tasks": results["tasks"], "average": results["average"]}),
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
    params = results["params"]["paper"]
    lines.append("| No. parameters | " + " | ".join(f"{params / 1e6:.3f}M" for _ in columns) + " |")
    lines += [
        "",
        f"Accuracy in %, on the whole test split; FLOPs: mean per image (2 per multiply-add) of "
        f"the structures used, full structure {_giga(results['average']['flops_full'])}. "
        f"Selector: {results['selector']['params'] / 1e6:.3f}M parameters, "
        f"{_giga(results['selector']['flops'])} FLOPs.",
        "",
    ]
    return "\n".join(lines)
