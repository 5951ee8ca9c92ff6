"""Structures under a FLOPs budget: hand-computed cases, never over budget, argmax without one."""

import collections
import itertools

import numpy as np
import pytest
import tensorflow as tf

from den_tf import budget

# Two blocks, three levels; block 0's level 1 lies below the hull of its log-probabilities.
FLOPS = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
PROBS = np.array([[[0.1, 0.2, 0.7], [0.1, 0.6, 0.3]]])


def choose(log_probs, budgets, fixed=0.0, level_flops=FLOPS):
    batch = np.repeat(log_probs, len(budgets), axis=0) if len(log_probs) == 1 else log_probs
    return budget.structure_under_budget(
        tf.constant(batch), level_flops, tf.constant(budgets, tf.float64), fixed).numpy()


def test_hand_computed_budgets():
    log_probs = np.log(PROBS)
    # 4 or 3 FLOPs: the argmax (2, 1) fits. 2: the best is (1, 1), p = 0.12 (the relaxation
    # alone gives (0, 1), p = 0.06; the last pass spends the rest). 1: (0, 1). 0: (0, 0).
    chosen = choose(log_probs, [4.0, 3.0, 2.0, 1.0, 0.0])
    assert chosen.tolist() == [[2, 1], [2, 1], [1, 1], [0, 1], [0, 0]]
    # The fixed FLOPs (stem, head) count against the budget.
    assert choose(log_probs, [12.0], fixed=10.0).tolist() == [[1, 1]]


def test_budget_below_the_cheapest_structure_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError, match="cheapest structure"):
        choose(np.log(PROBS), [9.0], fixed=10.0)


def test_never_over_budget_and_argmax_without_one():
    rng = np.random.RandomState(0)
    level_flops = np.sort(rng.uniform(0, 10, (6, 4)), axis=1)
    level_flops[:, 0] = 0.0
    log_probs = tf.nn.log_softmax(rng.normal(0, 2, (200, 6, 4))).numpy()
    budgets = rng.uniform(0, level_flops[:, -1].sum(), 200)
    chosen = choose(log_probs, budgets, level_flops=level_flops)
    spent = level_flops[np.arange(6), chosen].sum(axis=1)
    assert np.all(spent <= budgets + 1e-9)
    unlimited = choose(log_probs, np.full(200, level_flops[:, -1].sum()), level_flops=level_flops)
    assert (unlimited == log_probs.argmax(-1)).all()
    # Against the best structure within each budget, found by enumerating all 4^6 (the
    # figures the README quotes): optimal in 183 of 200, 0.06 below on average, 2.0 at worst.
    got = np.take_along_axis(log_probs, chosen[..., None], axis=2)[..., 0].sum(axis=1)
    every = np.array(list(itertools.product(range(4), repeat=6)))  # (4096, 6)
    blocks = np.arange(6)
    fits = level_flops[blocks, every].sum(axis=1)[None] <= budgets[:, None]
    scores = log_probs[:, blocks, every].sum(axis=-1)  # (200, 4096)
    best = np.where(fits, scores, -np.inf).max(axis=1)
    gap = best - got
    assert np.all(gap >= -1e-9)
    assert np.sum(np.isclose(gap, 0)) == 183
    assert abs(gap.mean() - 0.06) < 0.005 and 1.95 < gap.max() < 2.0
    # A budget of exactly the argmax structure's FLOPs (whole numbers, as FLOPs are) gives it.
    whole = np.round(level_flops * 1000)
    argmax = log_probs.argmax(-1)
    exact = choose(log_probs, whole[blocks, argmax].sum(axis=1), level_flops=whole)
    assert (exact == argmax).all()


def test_static_structure_fills_the_budget_from_the_first_block():
    level_flops = np.array([[0.0, 1.0, 2.0, 4.0]] * 3)
    assert budget.static_structure_under_budget(level_flops, 12.0).tolist() == [3, 3, 3]
    assert budget.static_structure_under_budget(level_flops, 7.0).tolist() == [2, 2, 2]
    assert budget.static_structure_under_budget(level_flops, 9.0).tolist() == [3, 2, 2]
    assert budget.static_structure_under_budget(level_flops, 5.0, fixed_flops=1.0).tolist() \
        == [2, 1, 1]  # 4 FLOPs left: level 1 everywhere (3), block 0 raised (+1)
    assert budget.static_structure_under_budget(level_flops, 4.5, fixed_flops=1.0).tolist() \
        == [1, 1, 1]
    with pytest.raises(ValueError, match="cheapest uniform"):
        budget.static_structure_under_budget(level_flops, 0.5, fixed_flops=1.0)


def test_accuracy_against_budget_keeps_every_chooser_within_the_budget(tiny_evaluator,
                                                                        monkeypatch):
    evaluator = tiny_evaluator
    rng = np.random.RandomState(0)
    datasets = [tf.data.Dataset.from_tensor_slices(
        {"image": rng.normal(size=(12, size, size, 3)).astype(np.float32),
         "label": rng.randint(0, 5, 12).astype(np.int32)}).batch(5) for size in (16, 32)]
    # Every image's FLOPs, per evaluation (budget point k, then chooser) and task.
    spent = []
    evaluate = evaluator.evaluate_structures

    def recording(datasets, choose, seed=0, **options):
        calls = collections.defaultdict(list)
        spent.append(calls)

        def recorded(t, logits, images, batch_seed):
            structure = choose(t, logits, images, batch_seed)
            calls[t] += evaluator.costs.flops(structure, t).numpy().tolist()
            return structure

        return evaluate(datasets, recorded, seed, **options)

    monkeypatch.setattr(evaluator, "evaluate_structures", recording)

    curve = budget.accuracy_against_budget(evaluator, datasets, points=4)
    assert len(spent) == 4 * 3

    # No image over its task's budget: from the cheapest structure's FLOPs (exactly, so the
    # lowest budget admits it) to the full structure's.
    costs = evaluator.costs
    for t in range(2):
        cheapest = costs.flops(tf.zeros([1, 3], tf.int32), t).numpy()[0]
        budgets = np.linspace(cheapest, 2.0 * costs.full_macs(t), 4)
        for k, budget_k in enumerate(budgets):
            for calls in spent[3 * k:3 * k + 3]:
                assert len(calls[t]) == 12 and max(calls[t]) <= budget_k * (1 + 1e-12)

    assert set(curve["choosers"]) == {"selector", "uniform", "random"}
    for points in curve["choosers"].values():
        assert len(points) == 4
        fractions = [p["budget_fraction"] for p in points]
        assert fractions[-1] == 1.0 and fractions == sorted(fractions)
        for point in points:
            assert point["flops_fraction"] <= point["budget_fraction"] + 1e-9
    # At the full budget: the selector's argmax, and the full structure for "uniform".
    argmax = evaluator.evaluate(datasets, "selector")
    assert np.isclose(curve["choosers"]["selector"][-1]["average"]["flops"],
                      np.mean([e["flops"] for e in argmax.values()]))
    assert curve["choosers"]["uniform"][-1]["flops_fraction"] == 1.0


def _curve(accuracies: dict, budgets=(0.2, 1.0)):
    """A budget curve whose chooser ``name`` has the given accuracies, at FLOPs 0.9 x budget."""
    return {"points": len(budgets), "choosers": {
        name: [{"budget_fraction": b, "flops_fraction": 0.9 * b, "average": {"accuracy": a}}
               for b, a in zip(budgets, values)] for name, values in accuracies.items()}}


def test_aggregate_curves_by_hand():
    curves = [_curve({"selector": (60.0, 90.0), "uniform": (50.0, 89.0), "random": (40.0, 80.0)}),
              _curve({"selector": (62.0, 91.0), "uniform": (50.0, 92.0), "random": (44.0, 81.0)}),
              _curve({"selector": (64.0, 92.0), "uniform": (53.0, 89.0), "random": (42.0, 79.0)})]

    report = budget.aggregate_curves(curves)

    assert report["runs"] == 3 and report["budget_fraction"] == [0.2, 1.0]
    selector = report["choosers"]["selector"]
    # 60, 62, 64: mean 62, sd 2, t(2) = 4.303.
    assert selector[0]["accuracy"]["mean"] == pytest.approx(62.0)
    assert selector[0]["accuracy"]["half_width"] == pytest.approx(4.303 * 2 / np.sqrt(3))
    assert selector[1]["flops_fraction"]["mean"] == pytest.approx(0.9)
    # Paired, run by run: 10, 12, 11 over the uniform structure at 0.2 (mean 11, sd 1) ...
    margin = report["selector_minus"]["uniform"][0]
    assert margin["mean"] == pytest.approx(11.0)
    assert margin["half_width"] == pytest.approx(4.303 / np.sqrt(3))
    assert margin["excludes_zero"]
    # ... and 1, -1, 3 at the full budget (mean 1, sd 2): inside the noise.
    assert report["selector_minus"]["uniform"][1]["mean"] == pytest.approx(1.0)
    assert not report["selector_minus"]["uniform"][1]["excludes_zero"]
    assert set(report["selector_minus"]) == {"uniform", "random"}

    lines = budget.aggregate_markdown(report).splitlines()
    assert lines[2] == ("| budget (FLOPs / full) | selector | uniform | random | "
                        "selector minus uniform | selector minus random |")
    assert lines[4] == ("| 0.20 | 62.00 ± 4.97 @ 0.18 | 51.00 ± 4.30 @ 0.18 | 42.00 ± 4.97 @ 0.18"
                        " | 11.00 ± 2.48 * | 20.00 ± 4.97 * |")
    assert lines[5].endswith("| 1.00 ± 4.97 | 11.00 ± 4.30 * |")


def test_aggregate_curves_refuses_curves_of_other_budgets():
    with pytest.raises(ValueError, match="budget curves of different configs"):
        budget.aggregate_curves([_curve({"selector": (1.0, 2.0)}),
                                 _curve({"selector": (1.0, 2.0)}, budgets=(0.3, 1.0))])
    with pytest.raises(ValueError, match="no budget curves"):
        budget.aggregate_curves([])
