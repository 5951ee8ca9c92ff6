"""Structures under a FLOPs budget, chosen from the selector's distribution.

The selector trained at one rho serves one operating point; a caller may ask for less. Under a
budget B (FLOPs per image) we pick, per instance, the structure that maximises the selector's
log-probability, sum_i log p_i(z_i), subject to FLOPs(z) <= B: a multiple-choice knapsack.
Its Lagrangian relaxation decouples the blocks: for a price lambda >= 0 of one FLOP, each block
takes argmax_l log p_i(l) - lambda * c_i(l) (c_i(l): the FLOPs of block i at level l). The
FLOPs of that structure never grow as lambda grows, so a bisection finds the smallest price
whose structure fits. Why this rule:

- with a budget at or above the argmax structure's FLOPs the price is 0: the argmax structure;
- the structure always fits (a high enough price picks every block's cheapest level), so a
  budget is never exceeded when it admits the cheapest structure at all;
- it lowers first the levels whose probability loss per FLOP saved is smallest, and the
  structures it returns are optimal for the budgets they use (points on the convex hull);
- it is a fixed number of batched tensor operations: it runs inside an exported model.
A relaxed solution can leave part of the budget unused (a level off the convex hull of a
block's log-probabilities is skipped), so a last pass spends it: while some block can be
raised within the budget, the raise with the largest log-probability gain per FLOP is made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from den_tf import evaluation, stats

BISECTION_STEPS = 60


def _at(table: tf.Tensor, structure: tf.Tensor) -> tf.Tensor:
    """Entries (batch, n_blocks) of a (batch, n_blocks, h) table at each block's level."""
    return tf.gather(table, structure, axis=2, batch_dims=2)


def _priced_structure(log_probs: tf.Tensor, level_flops: tf.Tensor, price: tf.Tensor):
    """Per instance and block, argmax_l log p - price * c; returns structures and their
    FLOPs (``level_flops`` broadcast to the batch)."""
    scores = log_probs - price[:, None, None] * level_flops
    structure = tf.argmax(scores, axis=-1, output_type=tf.int32)
    return structure, tf.reduce_sum(_at(level_flops, structure), axis=-1)


def structure_under_budget(
    log_probs: tf.Tensor, level_flops, budget: tf.Tensor, fixed_flops: float = 0.0
) -> tf.Tensor:
    """The structures (batch, n_blocks) of highest selector log-probability within ``budget``.

    Args:
      log_probs: (batch, n_blocks, h) log-probabilities (or logits) of each block's levels.
      level_flops: (n_blocks, h) FLOPs of block i at level l, increasing in l.
      budget: (batch,) FLOPs per image allowed, including ``fixed_flops`` (stem and head).
      fixed_flops: FLOPs every structure pays.

    Raises InvalidArgumentError if a budget is below the cheapest structure's FLOPs.
    """
    log_probs = tf.cast(log_probs, tf.float64)
    level_flops = tf.cast(tf.convert_to_tensor(level_flops), tf.float64)
    allowed = tf.cast(budget, tf.float64) - fixed_flops
    cheapest = tf.reduce_sum(tf.reduce_min(level_flops, axis=-1))
    tf.debugging.assert_greater_equal(
        allowed, cheapest, message="budget below the cheapest structure's FLOPs"
    )
    # Above this price every block takes its cheapest level: no log-probability gap can pay
    # for the smallest FLOPs step.
    gaps = level_flops[:, 1:] - level_flops[:, :-1]
    smallest_step = tf.reduce_min(tf.where(gaps > 0, gaps, tf.reduce_max(level_flops)))
    level_flops = tf.broadcast_to(level_flops, tf.shape(log_probs))
    spread = tf.reduce_max(log_probs, axis=[1, 2]) - tf.reduce_min(log_probs, axis=[1, 2])
    high = (spread + 1.0) / smallest_step

    def bisect(low, high):
        middle = (low + high) / 2
        fits = _priced_structure(log_probs, level_flops, middle)[1] <= allowed
        return tf.where(fits, low, middle), tf.where(fits, middle, high)

    _, high = tf.while_loop(lambda *_: True, bisect, (tf.zeros_like(high), high),
                            maximum_iterations=BISECTION_STEPS)
    free, free_flops = _priced_structure(log_probs, level_flops, tf.zeros_like(high))
    priced, flops = _priced_structure(log_probs, level_flops, high)
    priced = _spend_rest(log_probs, level_flops, priced, allowed - flops)
    return tf.where((free_flops <= allowed)[:, None], free, priced)


def _spend_rest(log_probs, level_flops, structure, left):
    """Raises levels while the budget allows, the largest log-probability gain per FLOP
    first; at most one raise per block and level, so a fixed number of passes."""
    n_blocks, levels = log_probs.shape[1:]

    def raise_best(structure, left):
        gain = log_probs - _at(log_probs, structure)[..., None]  # (batch, n_blocks, h)
        extra = level_flops - _at(level_flops, structure)[..., None]
        possible = (extra > 0) & (extra <= left[:, None, None]) & (gain > 0)
        ratio = tf.where(possible, gain / tf.where(extra > 0, extra, 1.0), -1.0)
        flat = tf.reshape(ratio, [-1, n_blocks * levels])
        best = tf.argmax(flat, axis=-1, output_type=tf.int32)
        raise_it = tf.reduce_max(flat, axis=-1) > 0
        block, level = best // levels, best % levels
        chosen = tf.one_hot(block, n_blocks, on_value=True, off_value=False) & raise_it[:, None]
        spent = tf.gather(tf.reshape(extra, [-1, n_blocks * levels]), best, batch_dims=1)
        return (tf.where(chosen, level[:, None], structure),
                left - tf.where(raise_it, spent, tf.zeros_like(spent)))

    structure, _ = tf.while_loop(lambda *_: True, raise_best, (structure, left),
                                 maximum_iterations=n_blocks * (levels - 1))
    return structure


def static_structure_under_budget(level_flops, budget: float, fixed_flops: float = 0.0):
    """One structure for every instance, as uniform as the budget allows: every block at the
    highest level l that fits, then blocks raised to l + 1 one by one, first block first,
    while the budget allows. (n_blocks,) int32."""
    level_flops = np.asarray(level_flops, np.float64)
    allowed = budget - fixed_flops
    levels = level_flops.shape[1]
    fitting = [lv for lv in range(levels) if level_flops[:, lv].sum() <= allowed]
    if not fitting:
        raise ValueError(f"budget {budget:g} below the cheapest uniform structure")
    level = max(fitting)
    structure = np.full(level_flops.shape[0], level, np.int32)
    if level + 1 < levels:
        used = level_flops[:, level].sum()
        for i in range(len(structure)):
            step = level_flops[i, level + 1] - level_flops[i, level]
            if used + step <= allowed:
                structure[i] = level + 1
                used += step
    return structure


CHOOSERS = ("selector", "uniform", "random")


def accuracy_against_budget(
    evaluator: evaluation.Evaluator,
    datasets: Sequence[tf.data.Dataset],
    points: int = 10,
    seed: int = 0,
) -> dict:
    """Accuracy and FLOPs of three choosers at ``points`` budgets per task, evenly spaced from
    the cheapest structure's FLOPs to the full structure's, on the same estimator:
    ``selector`` (the selector's most probable structure within the budget), ``uniform`` (one
    structure for every instance, ``static_structure_under_budget``) and ``random`` (random
    preferences in place of the selector's, the same rule: random structures within the
    budget). ``datasets``: one per task."""
    costs = evaluator.costs
    level_flops = 2.0 * costs.level_macs
    tasks = evaluator.estimator.tasks
    full = [2.0 * costs.full_macs(t) for t in range(len(tasks))]
    fixed = [2.0 * costs.fixed_macs[t] for t in range(len(tasks))]
    # In FLOPs, so that the lowest budget is the cheapest structure's FLOPs exactly (as a
    # fraction times the full FLOPs it could fall an ulp below and be refused).
    budget_flops = [np.linspace(f + level_flops.min(axis=1).sum(), total, points)
                    for f, total in zip(fixed, full)]
    n_blocks, levels = level_flops.shape
    chosen = tf.function(structure_under_budget, input_signature=[
        tf.TensorSpec([None, n_blocks, levels], tf.float32),
        tf.TensorSpec([n_blocks, levels], tf.float64),
        tf.TensorSpec([None], tf.float64),
        tf.TensorSpec([], tf.float64),
    ])
    curve = {name: [] for name in CHOOSERS}
    for k in range(points):
        for name in CHOOSERS:

            def choose(t, logits, images, batch_seed, name=name, k=k):
                allowed = budget_flops[t][k]
                batch = tf.shape(logits)[0]
                if name == "uniform":
                    structure = static_structure_under_budget(level_flops, allowed, fixed[t])
                    return tf.tile(tf.constant(structure)[None], [batch, 1])
                preferences = (tf.nn.log_softmax(logits) if name == "selector" else
                               tf.random.stateless_uniform(tf.shape(logits), batch_seed))
                budgets = tf.fill([batch], tf.constant(allowed, tf.float64))
                return chosen(preferences, level_flops, budgets, tf.constant(fixed[t], tf.float64))

            report = evaluator.evaluate_structures(datasets, choose, seed)
            point = evaluation.operating_point(report)
            point["budget_fraction"] = evaluation.fraction_of_full(
                [b[k] for b in budget_flops], full)
            point["flops_fraction"] = evaluation.fraction_of_full(
                [e["flops"] for e in report.values()],
                [e["flops_full"] for e in report.values()])
            curve[name].append(point)
    return {"points": points, "choosers": curve}


def aggregate_curves(curves: Sequence[dict], seeds: Sequence[int] | None = None) -> dict:
    """Means and 95% intervals over runs (one ``accuracy_against_budget`` curve each, of the
    same config) of each chooser's accuracy and FLOPs fraction at each budget, and of the
    selector's accuracy minus each other chooser's, run by run (one estimator serves all three
    choosers of a run, so the differences are paired); ``seeds`` names the runs' seeds."""
    if not curves:
        raise ValueError("no budget curves to aggregate")
    names, points = list(curves[0]["choosers"]), curves[0]["points"]
    budgets = [p["budget_fraction"] for p in curves[0]["choosers"][names[0]]]
    for curve in curves[1:]:
        other = [p["budget_fraction"] for p in curve["choosers"][names[0]]]
        if list(curve["choosers"]) != names or curve["points"] != points or not np.allclose(
                other, budgets):
            raise ValueError(
                "budget curves of different configs: choosers "
                f"{list(curve['choosers'])} at {other} against {names} at {budgets} (a "
                "budget.json written before 2026-12-07 gives tasks of different sizes the "
                "mean of their fractions: delete it and measure again with --mode=budget)")
    accuracy = {n: np.array([[p["average"]["accuracy"] for p in c["choosers"][n]]
                             for c in curves]) for n in names}
    fractions = {n: np.array([[p["flops_fraction"] for p in c["choosers"][n]] for c in curves])
                 for n in names}
    return {
        "runs": len(curves),
        "seeds": None if seeds is None else list(seeds),
        "points": points,
        "budget_fraction": budgets,
        "choosers": {n: [{"accuracy": stats.mean_interval(accuracy[n][:, k]),
                          "flops_fraction": stats.mean_interval(fractions[n][:, k])}
                         for k in range(points)] for n in names},
        "selector_minus": {n: [stats.paired_difference(accuracy["selector"][:, k],
                                                       accuracy[n][:, k]) for k in range(points)]
                           for n in names if n != "selector"},
    }


def aggregate_markdown(report: dict) -> str:
    """``aggregate_curves`` as a table: per budget, each chooser's accuracy @ FLOPs fraction
    (means ± 95% half-widths) and the selector's paired margins (* where the interval excludes
    zero)."""
    names, others = list(report["choosers"]), list(report["selector_minus"])
    lines = [
        stats.runs_text(report["runs"]) + " Accuracy % @ FLOPs fraction used; the selector "
        "minus each chooser paired run by run (* where the interval excludes zero)."
        + (f" Seeds {', '.join(map(str, report['seeds']))}." if report.get("seeds") else ""),
        "",
        "| budget (FLOPs / full) | " + " | ".join(names) + " | "
        + " | ".join(f"selector minus {n}" for n in others) + " |",
        "|---|" + "---|" * (len(names) + len(others)),
    ]
    for k, fraction in enumerate(report["budget_fraction"]):
        cells = [f"{stats.interval_text(report['choosers'][n][k]['accuracy'])} @ "
                 f"{report['choosers'][n][k]['flops_fraction']['mean']:.2f}" for n in names]
        cells += [stats.paired_text(report["selector_minus"][n][k]) for n in others]
        lines.append(f"| {fraction:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curve_markdown(curve: dict) -> str:
    """The budget curve as a table: per budget, each chooser's accuracy @ FLOPs fraction."""
    names = list(curve["choosers"])
    lines = ["| budget (FLOPs / full) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for k in range(curve["points"]):
        cells = [curve["choosers"][n][k] for n in names]
        lines.append(f"| {cells[0]['budget_fraction']:.2f} | " + " | ".join(
            f"{c['average']['accuracy']:.2f} @ {c['flops_fraction']:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
