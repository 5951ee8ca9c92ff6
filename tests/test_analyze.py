"""The figures of a finished run, from a small hand-made predictions file."""

import json

import matplotlib.figure
import matplotlib.image
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from den_tf import analyze, evaluation
from den_tf.builders import base_config
from den_tf.datasets import synthetic
from den_tf.tasks import SYNTHETIC_TASKS

PER_TASK = 20
FULL = 5e6
# Uniform level: (FLOPs fraction, the difficulty below which it is right).
UNIFORM = {1: (0.25, 0.3), 2: (0.5, 0.6), 3: (1.0, 1.01)}


@pytest.fixture()
def workdir(tmp_path):
    sizes = dict(synthetic.SPLIT_SIZES)
    synthetic.SPLIT_SIZES.update(test=PER_TASK)
    synthetic.generate.cache_clear()
    rng = np.random.RandomState(0)
    report, level_reports = {}, {level: {} for level in UNIFORM}
    for task in SYNTHETIC_TASKS:
        _, labels, extras = synthetic.generate(task.dataset, "test")
        structures = rng.randint(0, 4, size=(PER_TASK, 15))
        structures[:8] = 2  # one structure chosen often
        report[task.name] = {"instances": {
            "labels": labels, "predictions": labels, "correct": np.ones(PER_TASK, np.float32),
            "probabilities": rng.dirichlet(np.ones(4), size=(PER_TASK, 15)),
            "structures": structures, "flops": structures.sum(axis=1) * 1e5,
            "difficulty": extras["difficulty"],
        }, "flops_full": FULL}
        for level, (fraction, limit) in UNIFORM.items():
            level_reports[level][task.name] = {"instances": {
                "labels": labels, "flops": np.full(PER_TASK, fraction * FULL),
                "correct": (extras["difficulty"] < limit).astype(np.float32)}}
    evaluation.write_predictions(str(tmp_path / "predictions.npz"), report, level_reports)
    yield tmp_path
    synthetic.SPLIT_SIZES.update(sizes)
    synthetic.generate.cache_clear()


def test_every_figure_is_written(workdir):
    config = base_config()
    config.tasks = ",".join(t.name for t in SYNTHETIC_TASKS)
    chooser = [{"budget_fraction": f, "flops_fraction": f * 0.9, "average": {"accuracy": 80 + f}}
               for f in (0.1, 0.5, 1.0)]
    (workdir / "budget.json").write_text(json.dumps(
        {"points": 3, "choosers": {"selector": chooser, "uniform": chooser}}))
    page = analyze.analyze(str(workdir), config)
    text = open(page).read()
    for name, (height, width) in {
        "fig6a_structures.png": (660, 800),
        "fig6b_level_probabilities.png": (300, 1350),
        "awareness.png": (350, 1000),
        "fig7_structures.png": (1440, 1000),
        "fig3_neighbours.png": (390, 1430),
        "budget.png": (450, 600),
        "difficulty_allocation.png": (450, 600),
    }.items():
        image = matplotlib.image.imread(workdir / "analysis" / name)
        assert image.shape[:2] == (height, width), name
        assert image[..., :3].std() > 0.01  # something is drawn
        assert f"]({name})" in text
    accumulator = event_accumulator.EventAccumulator(
        str(workdir / "tensorboard"), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    assert {"analysis/fig6a_structures", "analysis/fig7_structures",
            "analysis/awareness"} <= set(accumulator.Tags()["tensors"])


def test_difficulty_allocation_curve(workdir):
    predictions = analyze.load_predictions(str(workdir))
    assert list(predictions["uniform_levels"]) == [1, 2, 3]
    tasks = analyze.by_task(predictions)
    curve = analyze.difficulty_allocation_curve(tasks, points=4)
    assert [p["budget"] for p in curve] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    difficulty = np.stack([e["difficulty"] for e in tasks.values()])
    # At the cheapest budget every instance runs level 1: right below difficulty 0.3, in
    # either order.
    level_1 = 100 * (difficulty < 0.3).mean(axis=1).mean()
    assert curve[0]["by_difficulty"] == pytest.approx(level_1)
    assert curve[0]["at_random"] == pytest.approx(level_1)
    # With the whole budget, ordering by difficulty gets every instance right, at the FLOPs
    # of its cheapest right level; the same shares at random do worse.
    assert curve[-1]["by_difficulty"] == pytest.approx(100.0)
    cheapest_right = np.where(difficulty < 0.3, 0.25, np.where(difficulty < 0.6, 0.5, 1.0))
    assert curve[-1]["flops_fraction"] == pytest.approx(cheapest_right.mean(axis=1).mean())
    assert all(p["by_difficulty"] >= p["at_random"] - 1e-9 for p in curve)
    assert curve[-1]["at_random"] < 100.0
    # A task nine times larger (its full and uniform FLOPs) weighs nine times more in the
    # fraction: the average FLOPs over the average full FLOPs, as results.json's.
    last = list(tasks)[-1]
    tasks[last] = {**tasks[last], "flops_full": 9 * tasks[last]["flops_full"],
                   "uniform_flops": 9 * tasks[last]["uniform_flops"]}
    weights = np.array([1.0] * (len(tasks) - 1) + [9.0])
    weighted = analyze.difficulty_allocation_curve(tasks, points=4)
    assert weighted[-1]["flops_fraction"] == pytest.approx(
        (weights * cheapest_right.mean(axis=1)).sum() / weights.sum())
    assert weighted[-1]["by_difficulty"] == pytest.approx(100.0)
    del tasks["synthetic_shapes"]["uniform_correct"]
    assert analyze.difficulty_allocation_curve(tasks) is None


def test_predictions_refuse_uniform_levels_of_other_instances(tmp_path):
    report = {"t": {"instances": {
        "labels": np.array([0, 1]), "predictions": np.array([0, 1]),
        "correct": np.ones(2), "structures": np.zeros((2, 3), int), "flops": np.ones(2)}}}
    other = {1: {"t": {"instances": {"labels": np.array([1, 0]), "correct": np.ones(2),
                                     "flops": np.ones(2)}}}}
    with pytest.raises(ValueError, match="other instances"):
        evaluation.write_predictions(str(tmp_path / "p.npz"), report, other)


def test_nearest_by_selector_distribution():
    probabilities = np.array([[[1.0, 0.0]], [[0.9, 0.1]], [[0.0, 1.0]], [[0.6, 0.4]]])
    assert analyze.nearest(probabilities, 0, np.arange(4), 2).tolist() == [1, 3]
    assert analyze.nearest(probabilities, 2, np.array([0, 1]), 5).tolist() == [1, 0]


def test_structure_counts_and_task_split(workdir):
    predictions = analyze.load_predictions(str(workdir))
    tasks = analyze.by_task(predictions)
    assert list(tasks) == [t.name for t in SYNTHETIC_TASKS]
    assert all(len(e["label"]) == PER_TASK for e in tasks.values())
    counts = analyze.structure_counts(tasks["synthetic_shapes"]["structure"])
    assert counts[0] == ((2,) * 15, 8)
    assert analyze.structure_counts(np.array([[1, 0], [0, 1], [1, 0]])) == [((1, 0), 2),
                                                                            ((0, 1), 1)]
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        analyze.load_predictions(str(workdir / "nothing"))


def test_runs_across_a_config_value(tmp_path):
    def point(accuracy, flops):
        return {"average": {"accuracy": accuracy, "flops": flops}}

    runs = []
    for rho, accuracy, flops in ((0.1, 87.0, 80.0), (0.3, 86.5, 60.0), (0.5, 85.0, 45.0)):
        run = tmp_path / f"rho_{rho}"
        run.mkdir()
        results = {"average": {"accuracy": accuracy, "flops": flops, "flops_full": 100.0},
                   "full_structure": point(86.0, 100.0),
                   "random_selector": {"marginal": point(accuracy - 1, flops)}}
        if rho > 0.1:  # runs made before the shuffled control lack it
            results["random_selector"]["shuffled"] = point(accuracy - 1.2, flops)
        (run / "results.json").write_text(json.dumps(results))
        (run / "config.json").write_text(json.dumps({"rho": rho, "model": {"levels": 4}}))
        runs.append(str(run))
    loaded = analyze.load_runs(runs, "rho")
    assert [label for label, _ in loaded] == ["rho=0.1", "rho=0.3", "rho=0.5"]
    assert analyze.load_runs(runs[:1], "model.levels")[0][0] == "levels=4"
    legends = []
    savefig = matplotlib.figure.Figure.savefig

    def recording(fig, *args, **kwargs):
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", recording)
        path = analyze.compare(str(tmp_path), runs, "rho")
    assert path.endswith("analysis/runs_rho.png")
    assert matplotlib.image.imread(path).shape[:2] == (450, 600)
    # Every control drawn is in the legend, though the first run lacks the shuffled one.
    assert sorted(legends[0]) == ["DEN", "full structure", "random (marginal)",
                                  "random (shuffled)"]
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        analyze.load_runs([str(tmp_path)], "rho")


def test_fig7_bars_are_as_high_as_the_width_each_level_keeps():
    from den_tf import builders

    config = base_config()  # WRN, four residual levels, fractions 1/4, 1/4, 1/2
    assert builders.kept_fractions(config) == (0.0, 0.25, 0.5, 1.0)
    config.model.backbone = "simple_convnet"  # plain blocks: level 0 keeps half (M2)
    config.model.backbone_args = dict(channels=32, num_blocks=4, hidden_units=(128,))
    config.model.levels, config.model.fractions = 2, (0.5, 0.5)
    assert builders.kept_fractions(config) == (0.5, 1.0)
    config.model.levels, config.model.fractions = 3, ()
    assert builders.kept_fractions(config) == (0.25, 0.5, 1.0)  # the halving default
    for kept, structure, heights in (((0.5, 1.0), (0, 1, 0, 1), [0.5, 1.0, 0.5, 1.0]),
                                     ((0.0, 0.25, 0.5, 1.0), (0, 3, 1), [0.0, 1.0, 0.25])):
        ax = matplotlib.figure.Figure().add_subplot()
        analyze.draw_structure(ax, structure, kept)
        assert [bar.get_height() for bar in ax.patches] == heights


def test_awareness_legend_names_an_undefined_rank_correlation(tmp_path, monkeypatch):
    difficulty = np.linspace(0, 1, 20)
    tasks = {"same_flops": {"difficulty": difficulty, "flops": np.full(20, 3e6),
                            "correct": np.ones(20), "flops_full": 5e6}}
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda figure, *args, **kwargs: figures.append(figure))
    assert analyze.plot_awareness(tasks, str(tmp_path / "awareness.png"))
    labels = [line.get_label() for line in figures[0].axes[0].get_lines()]
    assert labels == ["same_flops (rank corr. n/a)"]
