"""Aggregation of runs over seeds, against hand-computed means and intervals."""

import json
import math

import pytest

from den_tf import stats, sweep


def _point(acc_a, acc_b, flops):
    return {"tasks": {"a": {"accuracy": acc_a, "flops": flops},
                      "b": {"accuracy": acc_b, "flops": flops}},
            "average": {"accuracy": (acc_a + acc_b) / 2, "flops": flops}}


def _run(seed, den, full, marginal, spread):
    den_point = _point(*den, 50.0)
    tasks = {
        name: {**entry, "flops_full": 100.0, "instance_awareness": {
            "spearman_difficulty_flops": 0.1 * (seed + 1),
            "quintile_flops_fraction": [0.4, 0.45, 0.5, 0.55, 0.4 * (1 + spread)],
        }}
        for name, entry in den_point["tasks"].items()
    }
    return {
        "seed": seed, "method": "DEN (rho=0.3)",
        "tasks": tasks, "average": {**den_point["average"], "flops_full": 100.0},
        "full_structure": _point(*full, 100.0),
        "random_selector": {"uniform": _point(70.0, 70.0, 45.0),
                            "marginal": _point(*marginal, 50.0)},
        "uniform_levels": {"1": _point(60.0, 60.0, 25.0), "3": _point(*full, 100.0)},
        "oracle": _point(95.0, 95.0, 30.0),
    }


RUNS = [
    _run(0, (86.0, 88.0), (86.0, 86.0), (85.0, 85.0), 0.5),
    _run(1, (87.0, 89.0), (86.5, 86.5), (85.5, 86.5), 0.3),
    _run(2, (85.0, 87.0), (85.5, 85.5), (85.0, 84.0), 0.1),
]


def test_aggregate_by_hand():
    report = sweep.aggregate(RUNS)
    assert report["runs"] == 3 and report["seeds"] == [0, 1, 2]
    den = report["methods"]["DEN"]
    # DEN averages 87, 88, 86: mean 87, sd 1, t(2) = 4.303.
    assert den["accuracy"]["mean"] == pytest.approx(87.0)
    assert den["accuracy"]["half_width"] == pytest.approx(4.303 / math.sqrt(3))
    assert den["flops_fraction"]["mean"] == pytest.approx(0.5)
    assert den["task_accuracy"]["b"]["mean"] == pytest.approx(88.0)
    # Paired against the marginal control: 87 - 85, 88 - 86, 86 - 84.5 = 2, 2, 1.5.
    paired = report["methods"]["random (selector's level frequencies)"]["den_minus_this"]
    assert paired["mean"] == pytest.approx(11 / 6)
    expected = stats.paired_difference([87.0, 88.0, 86.0], [85.0, 86.0, 84.5])
    assert paired["half_width"] == pytest.approx(expected["half_width"])
    assert paired["excludes_zero"]
    full = report["methods"]["full structure"]
    assert full["flops_fraction"]["mean"] == pytest.approx(1.0)
    assert not full["den_minus_this"]["excludes_zero"]  # 1, 1.5, 0.5 over 86, 86.5, 85.5
    assert set(report["methods"]) >= {"uniform level 1", "uniform level 3",
                                      "oracle over uniform levels", "random (uniform)"}
    aware = report["instance_awareness"]["a"]
    assert aware["spearman_difficulty_flops"]["mean"] == pytest.approx(0.2)
    assert aware["quintile_flops_spread"]["mean"] == pytest.approx(0.3)


def test_allocation_by_difficulty_joins_the_methods():
    run = {**RUNS[0], "difficulty_allocation": {
        "tasks": {name: {"accuracy": 90.0, "flops": 48.0, "random_accuracy": 88.0}
                  for name in ("a", "b")},
        "average": {"accuracy": 90.0, "flops": 48.0, "random_accuracy": 88.0}}}
    points = sweep.methods(run)
    assert points["uniform levels by known difficulty"]["average"] == {"accuracy": 90.0,
                                                                      "flops": 48.0}
    assert points["same level shares at random"]["tasks"]["b"] == {"accuracy": 88.0,
                                                                   "flops": 48.0}
    assert "uniform levels by known difficulty" not in sweep.methods(RUNS[0])
    # The shuffled control joins where the run has it (runs before it was added do not).
    shuffled = {**RUNS[0], "random_selector": {**RUNS[0]["random_selector"],
                                               "shuffled": _point(84.0, 86.0, 50.0)}}
    name = "random (selector's structures, shuffled)"
    assert sweep.methods(shuffled)[name]["average"] == {"accuracy": 85.0, "flops": 50.0}
    assert name not in sweep.methods(RUNS[0])
    # Only some runs have it: named and left out, not averaged over fewer runs.
    report = sweep.aggregate([run, *RUNS[1:]])
    assert "uniform levels by known difficulty" not in report["methods"]
    assert report["not_in_every_run"] == ["same level shares at random",
                                          "uniform levels by known difficulty"]
    assert "Not in every run, so left out: same level shares" in sweep.sweep_markdown(report, "t")


def test_report_files(tmp_path):
    for run in RUNS:
        (tmp_path / f"seed_{run['seed']}").mkdir()
        (tmp_path / f"seed_{run['seed']}" / "results.json").write_text(json.dumps(run))
    (tmp_path / "seed_9").mkdir()  # unfinished: no results.json
    report = sweep.write_report(str(tmp_path), "demo")
    assert report["runs"] == 3
    assert json.loads((tmp_path / "sweep.json").read_text())["seeds"] == [0, 1, 2]
    markdown = (tmp_path / "sweep.md").read_text()
    assert "# demo: 3 runs (seeds 0, 1, 2)" in markdown
    assert "| DEN | 87.00 ± 2.48 | 50.0 ± 0.0% |  |" in markdown
    assert "1.83 ± " in markdown and " *" in markdown
    with pytest.raises(ValueError, match="no finished runs"):
        sweep.aggregate([])
