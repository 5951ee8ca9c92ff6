"""Aggregation of runs over seeds, against hand-computed means and intervals."""

import json
import math
import os

import ml_collections
import pytest

from den_tf import builders, stats, sweep


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
    paired = report["methods"]["random (selector's level frequencies)"]["selected_minus_this"]
    assert paired["mean"] == pytest.approx(11 / 6)
    expected = stats.paired_difference([87.0, 88.0, 86.0], [85.0, 86.0, 84.5])
    assert paired["half_width"] == pytest.approx(expected["half_width"])
    assert paired["excludes_zero"]
    full = report["methods"]["full structure"]
    assert full["flops_fraction"]["mean"] == pytest.approx(1.0)
    assert not full["selected_minus_this"]["excludes_zero"]  # 1, 1.5, 0.5 over 86, 86.5, 85.5
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
    markdown = sweep.sweep_markdown(report, "t")
    assert "Not in every run, so left out: same level shares" in markdown
    assert "oracle over uniform levels (it knows each test image's label)" in markdown
    # With every run holding it, the allocation by difficulty is named as fitted on the test.
    markdown = sweep.sweep_markdown(sweep.aggregate([run, run]), "t")
    assert "(its cut points are fitted on the test split)" in markdown


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


def test_budget_report_over_seeds(tmp_path):
    # Seeds 2 and 10: ordered by number, not by name; seed 5 has no curve yet.
    for seed, margin in ((2, 1.0), (10, 3.0), (5, None)):
        (tmp_path / f"seed_{seed}").mkdir()
        if margin is None:
            continue
        curve = {"points": 2, "choosers": {
            name: [{"budget_fraction": b, "flops_fraction": b, "average": {"accuracy": a + seed}}
                   for b, a in zip((0.5, 1.0), accuracies)]
            for name, accuracies in (("selector", (70.0 + margin, 80.0)),
                                     ("uniform", (70.0, 80.0)))}}
        (tmp_path / f"seed_{seed}" / "budget.json").write_text(json.dumps(curve))

    report = sweep.write_budget_report(str(tmp_path))

    assert report["runs"] == 2
    assert [c[0]["accuracy"]["mean"] for c in report["choosers"].values()] == [
        pytest.approx(70.0 + 6.0 + 2.0), pytest.approx(76.0)]
    assert report["selector_minus"]["uniform"][0]["mean"] == pytest.approx(2.0)
    assert json.loads((tmp_path / "budget_sweep.json").read_text())["runs"] == 2
    assert "| 0.50 | 78.00 ± " in (tmp_path / "budget_sweep.md").read_text()
    assert (tmp_path / "budget_sweep.png").stat().st_size > 10_000


def test_run_seeds_trains_unfinished_seeds_and_measures_each_budget_curve_once(
        tmp_path, monkeypatch):
    calls = []

    def train_and_evaluate(config, workdir):
        calls.append(("train", config.seed, workdir))
        os.makedirs(workdir)  # as the trainer does
        (tmp_path / workdir / "results.json").write_text("{}")

    def measure_budgets(config, workdir):
        calls.append(("budget", config.seed, workdir))
        (tmp_path / workdir / "budget.json").write_text("{}")

    monkeypatch.setattr(sweep.train, "train_and_evaluate", train_and_evaluate)
    monkeypatch.setattr(sweep.train, "measure_budgets", measure_budgets)
    (tmp_path / "seed_3").mkdir()
    (tmp_path / "seed_3" / "results.json").write_text("{}")  # finished before, no curve yet
    config = ml_collections.ConfigDict({"seed": 0})

    sweep.run_seeds(config, str(tmp_path), [3, 4])
    assert calls == [("train", 4, str(tmp_path / "seed_4"))]
    calls.clear()
    sweep.run_seeds(config, str(tmp_path), [3, 4], budgets=True)
    assert calls == [("budget", 3, str(tmp_path / "seed_3")),
                     ("budget", 4, str(tmp_path / "seed_4"))]
    calls.clear()
    sweep.run_seeds(config, str(tmp_path), [3, 4], budgets=True)
    assert calls == []  # every seed trained and measured: nothing runs again
    assert config.seed == 0  # each seed gets its own copy of the config


def _config(**values) -> ml_collections.ConfigDict:
    """A whole config (what a run's settings are checked against) with ``values``."""
    config = builders.base_config()
    config.update(values)
    return config


def test_run_seeds_goes_on_past_a_diverging_seed_and_refuses_other_settings(
        tmp_path, monkeypatch):
    trained = []

    def train_and_evaluate(config, workdir):
        if config.seed == 1:
            raise sweep.train.NonFiniteLossError("non-finite loss (nan) at stage 1")
        trained.append(config.seed)
        os.makedirs(workdir)
        (tmp_path / workdir / "config.json").write_text(config.to_json())
        (tmp_path / workdir / "results.json").write_text("{}")

    monkeypatch.setattr(sweep.train, "train_and_evaluate", train_and_evaluate)
    config = _config(seed=0, rho=0.3)

    failed = sweep.run_seeds(config, str(tmp_path), [0, 1, 2])
    assert trained == [0, 2] and list(failed) == [1] and "non-finite loss" in failed[1]
    # The failure is kept with the seed: a later sweep of other seeds still names it.
    sweep.run_seeds(config, str(tmp_path), [3])
    assert list(sweep.failed_seeds(str(tmp_path))) == [1]
    # Seed 0 finished with rho 0.3: a sweep with rho 0.5 neither skips nor averages it.
    other = _config(seed=0, rho=0.5)
    with pytest.raises(ValueError, match="rho: 0.3 there, 0.5 here"):
        sweep.run_seeds(other, str(tmp_path), [0])
    with pytest.raises(ValueError, match="rho: 0.3 there, 0.5 here"):
        sweep.finished_runs(str(tmp_path), other)


def test_sweep_report_names_failed_seeds(tmp_path):
    for run in RUNS:
        (tmp_path / f"seed_{run['seed']}").mkdir()
        (tmp_path / f"seed_{run['seed']}" / "results.json").write_text(json.dumps(run))
    (tmp_path / "seed_7").mkdir()
    (tmp_path / "seed_7" / sweep.FAILED).write_text('{"error": "non-finite loss"}')
    report = sweep.write_report(str(tmp_path), "t")
    assert report["failed_seeds"] == {"7": "non-finite loss"}
    assert report["runs"] == len(RUNS)
    assert "seed 7: non-finite loss" in (tmp_path / "sweep.md").read_text()
    # Every seed failed: the error says why, not only that nothing finished.
    (tmp_path / "none" / "seed_7").mkdir(parents=True)
    (tmp_path / "none" / "seed_7" / sweep.FAILED).write_text('{"error": "non-finite loss"}')
    with pytest.raises(ValueError, match=r"no seed of .*none finished; failed: seed 7: "
                                         r"non-finite loss"):
        sweep.write_report(str(tmp_path / "none"), "t")


def test_a_sweep_keeps_each_seeds_history(tmp_path, monkeypatch):
    """Seeds branched from another sweep's checkpoint and seeds trained from scratch are
    runs of different conditions: a sweep refuses to continue a seed of the other kind, and
    its report names the branched seeds."""
    def train_and_evaluate(config, workdir):
        (tmp_path / workdir / "config.json").write_text(config.to_json())
        (tmp_path / workdir / "results.json").write_text("{}")

    monkeypatch.setattr(sweep.train, "train_and_evaluate", train_and_evaluate)
    for seed in (0, 1):
        source = tmp_path / "source" / f"seed_{seed}" / "checkpoints"
        source.mkdir(parents=True)
        (source / "ckpt-4.index").write_text("")
    config = ml_collections.ConfigDict({"seed": 0, "rho": 0.3})
    (tmp_path / "sweep" / "seed_0").mkdir(parents=True)
    sweep.run_seeds(config, str(tmp_path / "sweep"), [1], branch_from=str(tmp_path / "source"),
                    branch_step=4)
    assert json.loads((tmp_path / "sweep" / "seed_1" / sweep.BRANCH).read_text()) == {
        "source": str(tmp_path / "source" / "seed_1"), "step": 4}
    sweep.run_seeds(config, str(tmp_path / "sweep"), [0])  # from scratch
    with pytest.raises(ValueError, match=r"seed_0 was started from scratch; this sweep would "
                                         r"start it branched from .*seed_0 at step 4"):
        sweep.run_seeds(config, str(tmp_path / "sweep"), [0],
                        branch_from=str(tmp_path / "source"), branch_step=4)
    with pytest.raises(ValueError, match=r"seed_1 was started branched from .*seed_1 at step 4; "
                                         r"this sweep would start it from scratch"):
        sweep.run_seeds(config, str(tmp_path / "sweep"), [1])
    report = {**sweep.aggregate(RUNS), "branched": {"1": {"source": "/s/seed_1", "step": 4}}}
    assert "Branched from another sweep's checkpoint: seed 1 from /s/seed_1 at step 4." in (
        sweep.sweep_markdown(report, "t"))


def test_a_blockdrop_sweep_is_reported_under_its_own_name():
    """BlockDrop's runs have a selector and the random controls too; their own point is
    BlockDrop's, and the paired column is BlockDrop minus the control, never "DEN"."""
    runs = [{**run, "method": "BlockDrop", "method_id": "blockdrop"} for run in RUNS]
    report = sweep.aggregate(runs)
    assert "DEN" not in report["methods"] and report["selected"] == "BlockDrop"
    assert report["methods"]["BlockDrop"]["accuracy"]["mean"] == pytest.approx(87.0)
    paired = report["methods"]["random (selector's level frequencies)"]["selected_minus_this"]
    assert paired["mean"] == pytest.approx(11 / 6)
    markdown = sweep.sweep_markdown(report, "blockdrop")
    assert "| BlockDrop minus this (accuracy) |" in markdown and "DEN" not in markdown


def test_a_task_without_instance_awareness_in_some_run_is_named():
    runs = [json.loads(json.dumps(run)) for run in RUNS]
    del runs[0]["tasks"]["a"]["instance_awareness"]
    report = sweep.aggregate(runs)
    assert "a" not in report["instance_awareness"]
    assert report["awareness_not_in_every_run"] == ["a"]
    assert "Instance awareness not in every run, so left out for: a." in sweep.sweep_markdown(
        report, "t")


def test_undefined_rank_correlations_are_left_out_and_counted():
    runs = [json.loads(json.dumps(run)) for run in RUNS]
    runs[1]["tasks"]["a"]["instance_awareness"]["spearman_difficulty_flops"] = None
    report = sweep.aggregate(runs)
    aware = report["instance_awareness"]["a"]
    # Seeds 0 and 2: 0.1 and 0.3 (not 0.1, 0 and 0.3).
    assert aware["spearman_difficulty_flops"]["mean"] == pytest.approx(0.2)
    assert aware["spearman_undefined_runs"] == 1
    assert "(undefined in 1 of 3 runs, left out)" in sweep.sweep_markdown(report, "t")
    # An empty quintile (null in results.json): that run's spread and quintile left out.
    runs[0]["tasks"]["a"]["instance_awareness"]["quintile_flops_fraction"][0] = None
    aware = sweep.aggregate(runs)["instance_awareness"]["a"]
    assert aware["quintile_flops_spread"]["mean"] == pytest.approx(0.2)  # seeds 1 and 2
    assert aware["quintile_flops_fraction"][0] == pytest.approx(0.4)
    for run in runs:
        run["tasks"]["a"]["instance_awareness"]["quintile_flops_fraction"][0] = None
    report = sweep.aggregate(runs)
    assert report["instance_awareness"]["a"]["quintile_flops_spread"] is None
    row = next(line for line in sweep.sweep_markdown(report, "t").splitlines()
               if line.startswith("| a |"))
    assert row.endswith("| undefined | - 0.45 0.50 0.55 0.52 |")  # 0.4 x (1.5, 1.3, 1.1)


def test_an_interrupted_branch_leaves_no_checkpoint(tmp_path, monkeypatch):
    source = tmp_path / "source" / "checkpoints"
    source.mkdir(parents=True)
    for name in ("ckpt-4.index", "ckpt-4.data-00000-of-00001"):
        (source / name).write_text(name)
    copy = sweep.shutil.copy

    def copy_then_stop(path, target):
        copy(path, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep.shutil, "copy", copy_then_stop)
    with pytest.raises(KeyboardInterrupt):
        sweep.branch(str(tmp_path / "source"), 4, str(tmp_path / "seed"))
    assert not (tmp_path / "seed" / "checkpoints").exists()
    monkeypatch.setattr(sweep.shutil, "copy", copy)
    sweep.branch(str(tmp_path / "source"), 4, str(tmp_path / "seed"))
    assert sorted(os.listdir(tmp_path / "seed" / "checkpoints")) == [
        "checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    assert not (tmp_path / "seed" / "checkpoints.partial").exists()
