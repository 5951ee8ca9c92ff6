"""Evaluation pieces on hand-made inputs: the oracle, the allocation by known difficulty,
instance-awareness, the predictions file, mode names, and one trace per mode and task."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from den_tf import evaluation, summaries


def _report(correct, flops, **extra):
    instances = {"correct": np.array(correct, np.float32), "flops": np.array(flops, float),
                 **{k: np.array(v) for k, v in extra.items()}}
    return {"t": {"instances": instances}}


def test_oracle_takes_the_cheapest_correct_level():
    reports = {
        1: _report([1, 0, 0, 0], [10, 10, 10, 10]),
        2: _report([1, 1, 0, 0], [20, 20, 20, 20]),
        3: _report([0, 1, 1, 0], [40, 40, 40, 40]),
    }
    # Instance 0: level 1 (10); 1: level 2 (20); 2: level 3 (40); 3: none right -> level 1.
    point = evaluation.oracle(reports)
    assert point["tasks"]["t"] == {"accuracy": 75.0, "flops": (10 + 20 + 40 + 10) / 4}
    assert point["levels"] == [1, 2, 3]


def test_sorted_allocation_by_hand():
    # Instances by difficulty 0.1, 0.4, 0.7, 0.9 (given shuffled); level 0 (10 FLOPs) right on
    # the two easiest, level 1 (30) on all but the hardest.
    key = np.array([0.7, 0.1, 0.9, 0.4])
    correct = np.array([[0, 1, 0, 1], [1, 1, 0, 1]])
    # Budget 20: at least two instances at level 0; the two easiest there, the others at
    # level 1 get 3 of 4 right at exactly 20 FLOPs.
    best = evaluation.sorted_allocation(correct, [10, 30], key, budget=20, steps=4)
    assert best == {"accuracy": 75.0, "flops": 20.0, "shares": [0.5, 0.5],
                    "random_accuracy": 0.5 * 50.0 + 0.5 * 75.0}
    # A larger budget buys nothing more: of the allocations with 3 right, the cheapest.
    assert evaluation.sorted_allocation(correct, [10, 30], key, budget=30, steps=4)["flops"] \
        == 20.0
    assert evaluation.sorted_allocation(correct, [10, 30], key, budget=9, steps=4) is None
    with pytest.raises(ValueError, match="increasing"):
        evaluation.sorted_allocation(correct, [30, 10], key, budget=20)


def test_sorted_allocation_is_the_best_monotone_allocation():
    rng = np.random.RandomState(0)
    for _ in range(20):
        n, levels = 7, 3
        correct = rng.rand(levels, n) < np.array([[0.4], [0.6], [0.8]])
        flops = np.sort(rng.uniform(1, 10, levels))
        key = rng.rand(n)
        budget = rng.uniform(flops[0], flops[-1])
        best = 0
        for assignment in itertools.product(range(levels), repeat=n):
            a = np.array(assignment)
            ordered = a[np.argsort(key)]
            if np.all(np.diff(ordered) >= 0) and flops[a].mean() <= budget:
                best = max(best, correct[a, np.arange(n)].sum())
        found = evaluation.sorted_allocation(correct, flops, key, budget, steps=n)
        assert found["accuracy"] == pytest.approx(100.0 * best / n)
        assert found["flops"] <= budget


def test_difficulty_allocation_from_level_reports():
    reports = {
        1: _report([0, 1, 0, 1], [10] * 4, difficulty=[0.7, 0.1, 0.9, 0.4]),
        2: _report([1, 1, 0, 1], [30] * 4, difficulty=[0.7, 0.1, 0.9, 0.4]),
    }
    allocation = evaluation.difficulty_allocation(reports, {"t": 20.0})
    assert allocation["tasks"]["t"]["accuracy"] == 75.0
    assert allocation["average"] == {"accuracy": 75.0, "flops": 20.0, "random_accuracy": 62.5}
    points = evaluation.difficulty_points(allocation)
    assert points["Same level shares at random"]["tasks"]["t"] == {"accuracy": 62.5,
                                                                    "flops": 20.0}
    no_difficulty = {level: _report([1] * 4, [10] * 4) for level in (1, 2)}
    assert evaluation.difficulty_allocation(no_difficulty, {"t": 20.0}) is None


def test_instance_awareness_by_hand():
    difficulty = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    flops = 100 * (0.2 + 0.5 * difficulty)  # harder images get more FLOPs: rank correlation 1
    correct = (difficulty < 0.65).astype(np.float32)
    entry = evaluation.instance_awareness(
        {"difficulty": difficulty, "flops": flops, "correct": correct}, flops_full=100.0
    )
    assert entry["spearman_difficulty_flops"] == pytest.approx(1.0)
    assert np.allclose(entry["quintile_difficulty"], [0.05, 0.25, 0.45, 0.65, 0.85])
    assert np.allclose(entry["quintile_flops_fraction"], 0.2 + 0.5 * np.array(
        [0.05, 0.25, 0.45, 0.65, 0.85]))
    assert entry["quintile_accuracy"] == [100.0, 100.0, 100.0, 50.0, 0.0]
    constant = evaluation.instance_awareness(
        {"difficulty": difficulty, "flops": np.full(10, 50.0), "correct": correct}, 100.0
    )
    assert constant["spearman_difficulty_flops"] is None  # undefined, not 0


def test_predictions_file_holds_every_instance(tmp_path, monkeypatch):
    def instances(n, difficulty=None):
        entry = {"labels": np.arange(n), "predictions": np.arange(n)[::-1],
                 "correct": np.ones(n, np.float32), "probabilities": np.full((n, 2, 3), 1 / 3),
                 "structures": np.zeros((n, 2), np.int32), "flops": np.full(n, 5.0)}
        if difficulty is not None:
            entry["difficulty"] = difficulty
        return {"instances": entry}

    report = {"a": instances(3, np.array([0.1, 0.2, 0.3], np.float32)), "b": instances(2)}
    evaluation.write_predictions(str(tmp_path / "p.npz"), report)
    saved = np.load(tmp_path / "p.npz")
    assert saved["task_names"].tolist() == ["a", "b"]
    assert saved["task"].tolist() == [0, 0, 0, 1, 1]
    assert saved["label"].tolist() == [0, 1, 2, 0, 1]
    assert saved["prediction"].tolist() == [2, 1, 0, 1, 0]
    assert saved["probabilities"].shape == (5, 2, 3) and saved["structure"].shape == (5, 2)
    assert np.allclose(saved["difficulty"][:3], [0.1, 0.2, 0.3])
    assert np.isnan(saved["difficulty"][3:]).all()
    # Rewritten (a finished run evaluated again) and cut off part way: the old file stays.

    def cut_off(f, **arrays):
        f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", cut_off)
    with pytest.raises(KeyboardInterrupt):
        evaluation.write_predictions(str(tmp_path / "p.npz"), {"a": instances(1)})
    assert np.load(tmp_path / "p.npz")["task"].tolist() == [0, 0, 0, 1, 1]


def test_shuffled_structures_give_the_same_rows_to_other_instances():
    structures = np.arange(40).reshape(20, 2)
    shuffled = evaluation.shuffled_structures(structures, (3, 1))
    # Every row kept whole, each once, in another order; the same seed gives the same order.
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, structures))
    assert (shuffled[:, 1] - shuffled[:, 0] == 1).all()
    assert not (shuffled == structures).all()
    np.testing.assert_array_equal(shuffled, evaluation.shuffled_structures(structures, (3, 1)))
    assert not (shuffled == evaluation.shuffled_structures(structures, (3, 2))).all()


def test_given_structures_run_in_the_datasets_order(tiny_evaluator):
    evaluator = tiny_evaluator
    datasets = [_data(16, [4, 4, 3]), _data(32, [5, 2])]
    n_blocks = evaluator.estimator.n_blocks
    # Each instance at a uniform level (0-2, mixed within batches): its scores must be those
    # of the same instance in that level's own evaluation.
    levels = [np.array([0, 2, 1, 1, 2, 0, 0, 1, 2, 2, 1]), np.array([2, 1, 0, 0, 1, 2, 1])]
    given = [np.repeat(level[:, None], n_blocks, axis=1).astype(np.int32) for level in levels]
    report = evaluator.evaluate_assigned(datasets, given)
    by_level = [evaluator.evaluate(datasets, f"level_{level}") for level in range(3)]
    for name, level, structures in zip(report, levels, given):
        instances = report[name]["instances"]
        np.testing.assert_array_equal(instances["structures"], structures)
        assert "probabilities" not in instances
        for key in ("cross_entropy", "flops"):
            expected = [by_level[lv][name]["instances"][key][i] for i, lv in enumerate(level)]
            np.testing.assert_allclose(instances[key], expected, rtol=1e-5, atol=1e-6)
    assert len(set(report["small"]["instances"]["flops"])) == 3
    with pytest.raises(ValueError, match="'small': 12 structures given for 11 instances"):
        evaluator.evaluate_assigned(datasets, [np.concatenate([given[0], given[0][:1]]), given[1]])
    with pytest.raises(ValueError, match="'small': 10 structures given for more instances"):
        evaluator.evaluate_assigned(datasets, [given[0][:10], given[1]])
    with pytest.raises(ValueError, match="structures for 1 tasks given, the estimator has 2"):
        evaluator.evaluate_assigned(datasets, given[:1])


def test_structure_ids_and_level_histograms_by_hand():
    structures = np.array([[1, 0, 3], [3, 3, 3], [1, 0, 3], [0, 0, 0]])
    np.testing.assert_array_equal(evaluation.structure_ids(structures, 4),
                                  [1 * 16 + 3, 63, 19, 0])
    # 40 blocks of 4 levels: past int64, still exact.
    assert evaluation.structure_ids(np.full((1, 40), 3), 4)[0] == 4 ** 40 - 1
    np.testing.assert_array_equal(summaries.level_histogram(np.array([1, 1, 3, 3]), 4),
                                  [[-0.5, 0.5, 0], [0.5, 1.5, 2], [1.5, 2.5, 0], [2.5, 3.5, 2]])
    with pytest.raises(ValueError, match=r"levels must be in \[0, 2\), got 3"):
        summaries.level_histogram(np.array([0, 3]), 2)


def test_a_resumed_writer_does_not_write_the_steps_already_logged(tmp_path):
    """A run resumed from a checkpoint repeats the steps its stopped process made after it;
    their summaries are not written twice (TensorBoard showed both, zig-zagging)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    from den_tf.tasks import Task

    tasks, logdir = [Task("t", "t", 16, 3)], str(tmp_path)
    first = summaries.Writer(logdir, tasks, 4)
    for step in (2, 4, 6):
        # The stopped process wrote step 6 in part: its loss, not its accuracy.
        values = {"loss": float(step), "accuracy": 10.0 * step} if step < 6 else {
            "loss": 6.0}
        first.scalars("estimator", values, step)
    first.flush()
    assert summaries.written_steps(logdir) == {"estimator/loss": 6, "estimator/accuracy": 4}
    resumed = summaries.Writer(logdir, tasks, 4)
    resumed.skip_written()
    for step in (4, 6, 8):
        resumed.scalars("estimator", {"loss": step + 0.5, "accuracy": 10.0 * step + 1}, step)
    resumed.flush()
    accumulator = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()

    def logged(tag):
        return [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                for e in accumulator.Tensors(tag)]

    assert logged("estimator/loss") == [(2, 2.0), (4, 4.0), (6, 6.0), (8, 8.5)]
    assert logged("estimator/accuracy") == [(2, 20.0), (4, 40.0), (6, 61.0), (8, 81.0)]
    # A record cut short by a crash ends its file's reading, not the resume.
    newest = sorted(tmp_path.glob("events.out.tfevents.*"))[-1]
    newest.write_bytes(newest.read_bytes()[:-7])
    assert summaries.written_steps(logdir)["estimator/accuracy"] == 6
    assert summaries.written_steps(str(tmp_path / "none")) == {}


def test_fraction_of_full_is_the_average_flops_over_the_average_full_flops():
    # A 32-pixel task at half its 2 MFLOPs and a 96-pixel one at a quarter of its 18:
    # (1 + 4.5) / (2 + 18), not the mean of 0.5 and 0.25.
    assert evaluation.fraction_of_full([1e6, 4.5e6], [2e6, 18e6]) == pytest.approx(0.275)
    tasks = {"small": {"accuracy": 80.0, "flops": 1e6, "macs": 5e5, "flops_full": 2e6,
                       "params_used": 1.0},
             "large": {"accuracy": 60.0, "flops": 4.5e6, "macs": 2.25e6, "flops_full": 18e6,
                       "params_used": 1.0}}
    average = evaluation._averages(tasks)
    assert average["flops_fraction"] == pytest.approx(0.275)
    assert average["compression"] == pytest.approx(1 / 0.275)


def test_mode_names():
    evaluation.check_mode("level_2", 4)
    evaluation.check_mode("marginal", 4)
    for bad in ("level_4", "level_x", "best"):
        with pytest.raises(ValueError, match="evaluation mode must be one of"):
            evaluation.check_mode(bad, 4)


def _data(size, counts):
    return tf.data.Dataset.from_tensor_slices(
        {"image": tf.random.normal((sum(counts), size, size, 3)),
         "label": tf.zeros(sum(counts), tf.int32),
         "difficulty": tf.linspace(0.0, 1.0, sum(counts))}
    ).batch(counts[0])


def _even_marginals(evaluator):
    shape = (evaluator.estimator.n_blocks, evaluator.estimator.levels)
    return [np.full(shape, 1 / shape[1])] * len(evaluator.estimator.tasks)


def test_marginal_mode_needs_a_frequency_table_per_task(tiny_evaluator):
    """Without them it would draw uniformly under the marginal control's name."""
    datasets = [_data(16, [3]), _data(32, [2])]
    marginals = _even_marginals(tiny_evaluator)
    for bad in (None, marginals[:1], [marginals[0], marginals[0][:, :2]]):
        with pytest.raises(ValueError, match=r"marginals must be 2 arrays of shape \("):
            tiny_evaluator.evaluate(datasets, "marginal", marginals=bad)
    # One level only: every block of every instance is drawn at that level.
    level_2 = [np.eye(m.shape[1])[np.full(m.shape[0], 2)] for m in marginals]
    report = tiny_evaluator.evaluate(datasets, "marginal", marginals=level_2)
    assert all((e["instances"]["structures"] == 2).all() for e in report.values())


def test_each_task_is_traced_once_for_every_mode(tiny_evaluator):
    evaluator = tiny_evaluator
    datasets = [_data(16, [4, 4, 3]), _data(32, [5, 2])]  # partial last batches
    marginals = _even_marginals(evaluator)
    for _ in range(2):
        for mode in ("selector", "level_1", "marginal"):
            report = evaluator.evaluate(datasets, mode, marginals=marginals)
    counts = {key: f.experimental_get_tracing_count() for key, f in evaluator.compiled.items()}
    trunks = [key for key in counts if key[0] == "trunk"]
    assert len(trunks) == 1  # both tasks' stems feed one trunk: its sliced blocks traced once
    assert counts == {**{(kind, t): 1 for kind in ("select", "stem", "head") for t in (0, 1)},
                      trunks[0]: 1}
    assert report["small"]["num"] == 11 and report["large"]["num"] == 7
    assert np.allclose(report["small"]["instances"]["difficulty"], np.linspace(0, 1, 11))
    level_1 = evaluator.evaluate(datasets, "level_1")["large"]["instances"]["structures"]
    assert (level_1 == 1).all()


def test_only_the_selector_mode_runs_the_selector(tiny_evaluator, monkeypatch):
    evaluator = tiny_evaluator
    datasets = [_data(16, [3]), _data(32, [2])]
    selected = []
    select = evaluator._select
    monkeypatch.setattr(evaluator, "_select", lambda t: selected.append(t) or select(t))
    for mode in ("full", "level_0", "uniform", "marginal"):
        report = evaluator.evaluate(datasets, mode, marginals=_even_marginals(evaluator))
        assert not any("level_probabilities" in e or "probabilities" in e["instances"]
                       for e in report.values()), mode
    assert selected == []
    report = evaluator.evaluate(datasets, "selector")
    assert selected == [0, 1]
    for entry in report.values():
        assert entry["level_probabilities"].shape == (evaluator.estimator.n_blocks, 3)
        np.testing.assert_allclose(entry["level_probabilities"].sum(-1), 1.0, rtol=1e-5)
