"""Figures of a finished run, from its per-instance record (``predictions.npz``).

    python -m den_tf.analyze --workdir=DIR [--config=experiments/<name>.py]

Writes ``DIR/analysis/`` with PNGs and ``analysis.md`` that shows them:
- ``fig6a_structures.png``: how often each selected structure occurs, per task (paper Fig. 6a);
- ``fig6b_level_probabilities.png``: the selector's mean probability of each level of each block,
  per task (paper Fig. 6b);
- ``fig7_structures.png``: the most selected structures per task drawn as blocks and groups,
  with test images that chose them (paper Fig. 7; needs the config, to read the images);
- ``awareness.png``: FLOPs fraction and accuracy by difficulty quintile (data that knows
  difficulty, like the demo's);
- ``difficulty_allocation.png`` (and a table on the page): at budgets from the cheapest uniform
  level to the full structure, the accuracy of uniform levels given by the known difficulty
  against the same level shares at random, with the selector's point: how much choosing by
  difficulty can buy on this estimator;
- ``fig3_neighbours.png``: for a query image of each task, the images of every task whose
  selector distributions are nearest in l2 distance (paper Fig. 3; needs the config; the paper
  runs it with every task at 32x32: ``experiments/m1_wrn_32px.py``).

The same figures go to the run's TensorBoard as images (``analysis/<figure>``).

Across runs (``--runs=DIR,DIR,... --vary=rho``): ``runs_<vary>.png``, average accuracy
against FLOPs fraction of DEN in each run, labelled by the config value that varies (rho for
the trade-off curve; ``model.levels`` or ``train.estimator.initial_distribution`` for the
paper's Fig. 5 ablations), with each run's full structure and random controls (matched
frequencies; the selector's structures shuffled) as points. ``make demo-rho``, ``make
ablation-levels`` and ``make ablation-initial`` train such runs and draw them.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from den_tf import stats  # noqa: E402

FLAGS = flags.FLAGS
TOP = 3  # structures per task in Fig. 7
EXAMPLES = 4  # images per structure in Fig. 7
HISTOGRAM_BARS = 30


def define_flags() -> None:
    """Defines the command's flags (only when run: importing never collides with others)."""
    flags.DEFINE_string("workdir", None, "Work directory of a finished run.")
    config_flags.DEFINE_config_file(
        "config", None, "The run's config (to read test images for Fig. 7); optional."
    )
    flags.DEFINE_list("runs", [], "Work directories of finished runs to compare.")
    flags.DEFINE_string("vary", "rho", "The config key (dotted) that differs across --runs.")
    flags.mark_flag_as_required("workdir")


def load_predictions(workdir: str) -> dict[str, np.ndarray]:
    path = os.path.join(workdir, "predictions.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: evaluate the run first (--mode=evaluate)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def by_task(predictions: dict[str, np.ndarray]) -> dict[str, dict]:
    """The per-instance arrays split by task, in task order, with the task's ``flops_full``
    (the largest FLOPs seen where the file does not record it)."""
    tasks = {}
    for t, name in enumerate(predictions["task_names"]):
        mask = predictions["task"] == t
        entry = {k: v[mask] for k, v in predictions.items()
                 if not k.startswith("task_") and k != "uniform_levels"}
        full = predictions.get("task_flops_full", np.full(t + 1, np.nan))[t]
        entry["flops_full"] = float(entry["flops"].max() if np.isnan(full) else full)
        tasks[str(name)] = entry
    return tasks


def structure_counts(structures: np.ndarray) -> list[tuple[tuple[int, ...], int]]:
    """Distinct structures with their counts, most frequent first (ties: smaller first)."""
    counted = collections.Counter(map(tuple, structures.tolist()))
    return sorted(counted.items(), key=lambda item: (-item[1], item[0]))


def plot_structure_histograms(tasks: dict, path: str) -> None:
    """Fig. 6a: counts of the selected structures per task, most frequent first."""
    fig, axes = plt.subplots(len(tasks), 1, figsize=(8, 2.2 * len(tasks)), squeeze=False)
    for ax, (name, entry) in zip(axes[:, 0], tasks.items()):
        counts = [c for _, c in structure_counts(entry["structure"])]
        shown = counts[:HISTOGRAM_BARS]
        ax.bar(range(len(shown)), shown, color="tab:blue")
        ax.set_title(f"{name}: {len(counts)} distinct structures over {len(entry['label'])} "
                     f"test images", fontsize=9)
        ax.set_ylabel("images")
        ax.set_xlabel(f"structure rank (the {len(shown)} most selected)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_level_probabilities(tasks: dict, path: str) -> None:
    """Fig. 6b: mean probability of each level (rows) of each block (columns), per task."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3), squeeze=False,
                             layout="constrained")
    for ax, (name, entry) in zip(axes[0], tasks.items()):
        matrix = entry["probabilities"].mean(axis=0).T  # (h, n_blocks)
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("block")
        ax.set_ylabel("level")
        ax.set_yticks(range(matrix.shape[0]))
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="mean probability")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_awareness(tasks: dict, path: str) -> bool:
    """FLOPs fraction and accuracy by difficulty quintile; False when difficulty is unknown."""
    known = {n: e for n, e in tasks.items() if not np.isnan(e["difficulty"]).any()}
    if not known:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, entry in known.items():
        bins = stats.quantile_bins(entry["difficulty"], 5)
        flops = [entry["flops"][b].mean() / entry["flops_full"] for b in bins]
        accuracy = [100 * entry["correct"][b].mean() for b in bins]
        rho = stats.spearman(entry["difficulty"], entry["flops"])
        corr = "n/a" if np.isnan(rho) else f"{rho:+.2f}"  # every image at the same FLOPs
        left.plot(range(1, 6), flops, marker="o", label=f"{name} (rank corr. {corr})")
        right.plot(range(1, 6), accuracy, marker="o", label=name)
    left.set_title("FLOPs of the selected structures", fontsize=9)
    left.set_ylabel("fraction of the full structure's FLOPs")
    left.set_ylim(0, 1.05)
    right.set_title("accuracy", fontsize=9)
    right.set_ylabel("%")
    for ax in (left, right):
        ax.set_xlabel("difficulty quintile (1 = easiest)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def difficulty_allocation_curve(tasks: dict, points: int = 10) -> list[dict] | None:
    """At ``points`` budgets (a fraction of each task's full FLOPs, from the cheapest uniform
    level to the full structure): average accuracy and FLOPs fraction of uniform levels given
    by the known difficulty, and of the same level shares given at random
    (``evaluation.sorted_allocation``). None without each instance's results at the uniform
    levels (``uniform_correct`` in predictions.npz) or without a known difficulty."""
    from den_tf import evaluation

    if any("uniform_correct" not in e or np.isnan(e["difficulty"]).any()
           for e in tasks.values()):
        return None
    cheapest = max(e["uniform_flops"][:, 0].mean() / e["flops_full"] for e in tasks.values())
    curve = []
    for budget in np.linspace(cheapest, 1.0, points):
        chosen = [evaluation.sorted_allocation(
            e["uniform_correct"].T, e["uniform_flops"].mean(0), e["difficulty"],
            budget * e["flops_full"]) for e in tasks.values()]
        curve.append({
            "budget": float(budget),
            "flops_fraction": evaluation.fraction_of_full(
                [c["flops"] for c in chosen], [e["flops_full"] for e in tasks.values()]),
            "by_difficulty": float(np.mean([c["accuracy"] for c in chosen])),
            "at_random": float(np.mean([c["random_accuracy"] for c in chosen])),
        })
    return curve


def plot_difficulty_allocation(tasks: dict, curve: list[dict], path: str) -> None:
    """The curve of ``difficulty_allocation_curve`` with the selector's own point."""
    from den_tf import evaluation

    fig, ax = plt.subplots(figsize=(6, 4.5))
    x = [p["flops_fraction"] for p in curve]
    ax.plot(x, [p["by_difficulty"] for p in curve], "o-",
            label="uniform levels by known difficulty (fitted on the test split)")
    ax.plot(x, [p["at_random"] for p in curve], "s--", label="the same level shares at random")
    ax.plot(evaluation.fraction_of_full([e["flops"].mean() for e in tasks.values()],
                                        [e["flops_full"] for e in tasks.values()]),
            np.mean([100 * e["correct"].mean() for e in tasks.values()]), "r*", markersize=14,
            label="the selector's structures")
    ax.set_xlabel("FLOPs / full structure")
    ax.set_ylabel("average accuracy %")
    ax.set_title("What knowing the difficulty buys with uniform structures", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_structure(ax, structure: Sequence[int], kept: Sequence[float]) -> None:
    """A structure as one bar per block, as high as the fraction of the block's width its
    level keeps (``kept``: ``builders.kept_fractions``), over lines at the levels' widths."""
    for width in kept:
        ax.axhline(width, color="0.85", linewidth=0.8, zorder=0)
    ax.bar(range(len(structure)), [kept[level] for level in structure], width=0.85,
           color="tab:blue")
    ax.set_xlim(-0.5, len(structure) - 0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xticks([])
    ax.set_yticks([])


def load_test_images(task, indices, data_dir: str | None) -> list[np.ndarray]:
    """The task's test images at ``indices`` (positions in the evaluation's order), uint8."""
    import tensorflow as tf

    from den_tf.datasets import pipeline, sources

    source = sources.load_source(task.dataset, "test", data_dir=data_dir)
    wanted, found, position = set(int(i) for i in indices), {}, 0
    for example in source.examples:
        if not pipeline.belongs_to_task(task, int(example[task.label_key])):
            continue
        if position in wanted:
            image = example["image"]
            if image.dtype == tf.string:
                image = tf.io.decode_image(image, channels=3, expand_animations=False)
            found[position] = image.numpy()
        position += 1
        if len(found) == len(wanted):
            break
    return [found[int(i)] for i in indices]


def plot_top_structures(tasks: dict, task_objects, kept: Sequence[float], data_dir,
                        path: str) -> None:
    """Fig. 7: the most selected structures per task (``draw_structure``) with test images
    that chose them."""
    rows = [(name, s, count) for name, entry in tasks.items()
            for s, count in structure_counts(entry["structure"])[:TOP]]
    fig, axes = plt.subplots(len(rows), 1 + EXAMPLES, figsize=(2 * (1 + EXAMPLES), 1.6 * len(rows)),
                             squeeze=False, gridspec_kw={"width_ratios": [3] + [1] * EXAMPLES})
    for row, (name, structure, count) in zip(axes, rows):
        entry = tasks[name]
        draw_structure(row[0], structure, kept)
        row[0].set_title(f"{name}: {count} images", fontsize=8)
        chosen = np.flatnonzero((entry["structure"] == np.array(structure)).all(axis=1))
        images = load_test_images(task_objects[name], chosen[:EXAMPLES], data_dir)
        for ax, image in zip(row[1:], images + [None] * EXAMPLES):
            ax.axis("off")
            if image is not None:
                ax.imshow(image)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def config_value(config: dict, key: str):
    """The value at a dotted key of a config saved as JSON."""
    for part in key.split("."):
        config = config[part]
    return config


def load_runs(workdirs: list[str], vary: str) -> list[tuple[str, dict]]:
    """(label, results) of each finished run, labelled ``<last part of vary>=<its value>``."""
    runs = []
    for workdir in workdirs:
        paths = [os.path.join(workdir, name) for name in ("results.json", "config.json")]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"{workdir} is not a finished run: no {', '.join(missing)}")
        with open(paths[0]) as f, open(paths[1]) as g:
            results, config = json.load(f), json.load(g)
        runs.append((f"{vary.split('.')[-1]}={config_value(config, vary)}", results))
    return runs


def plot_runs(runs: list[tuple[str, dict]], path: str, title: str) -> None:
    """Accuracy against FLOPs fraction: DEN of each run, with its controls as points."""
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    den, labelled = [], set()
    for label, results in runs:
        full = results["average"]["flops_full"]
        den.append((results["average"]["flops"] / full, results["average"]["accuracy"], label))
        controls = results["random_selector"]  # "shuffled": runs made after 2026-11-30
        for point, marker, name in (
            (results["full_structure"], "s", "full structure"),
            (controls["marginal"], "x", "random (marginal)"),
            *([(controls["shuffled"], "+", "random (shuffled)")] if "shuffled" in controls else []),
        ):
            ax.scatter(point["average"]["flops"] / full, point["average"]["accuracy"],
                       marker=marker, color="gray", label=None if name in labelled else name)
            labelled.add(name)
    den.sort()
    ax.plot([d[0] for d in den], [d[1] for d in den], "o-", color="tab:red", label="DEN")
    for x, y, label in den:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("FLOPs / full structure")
    ax.set_ylabel("average accuracy %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


BUDGET_LABELS = {"selector": "selector within the budget", "uniform": "one uniform structure",
                 "random": "random structures within the budget"}


def _plot_budget_series(series: dict, path: str, title: str) -> None:
    """Accuracy against FLOPs fraction, one line per chooser: {name: (fractions, accuracies,
    half-widths or None)}."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (x, y, errors) in series.items():
        ax.errorbar(x, y, yerr=errors, fmt="o-", capsize=3, label=BUDGET_LABELS.get(name, name))
    ax.set_xlabel("FLOPs / full structure")
    ax.set_ylabel("average accuracy %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_budget_curve(curve: dict, path: str) -> None:
    """Average accuracy against the FLOPs fraction used, for each chooser of structures under
    a budget (``den_tf.budget.accuracy_against_budget``)."""
    _plot_budget_series({
        name: ([p["flops_fraction"] for p in points], [p["average"]["accuracy"] for p in points],
               None)
        for name, points in curve["choosers"].items()}, path, "Accuracy under a FLOPs budget")


def plot_budget_sweep(report: dict, path: str) -> None:
    """``plot_budget_curve`` over runs (``den_tf.budget.aggregate_curves``): mean accuracy
    with its 95% interval against the mean FLOPs fraction used."""
    _plot_budget_series({
        name: ([p["flops_fraction"]["mean"] for p in points],
               [p["accuracy"]["mean"] for p in points],
               None if report["runs"] == 1 else [p["accuracy"]["half_width"] for p in points])
        for name, points in report["choosers"].items()},
        path, "Accuracy under a FLOPs budget, " + (
            "one run (no interval)" if report["runs"] == 1
            else f"{report['runs']} runs (95% intervals)"))


def write_tensorboard(logdir: str, paths: list[str]) -> None:
    """Each PNG as an image summary ``analysis/<name>`` in the run's TensorBoard."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=0):
        for path in paths:
            image = tf.io.decode_png(tf.io.read_file(path), channels=3)
            name = os.path.splitext(os.path.basename(path))[0]
            tf.summary.image(f"analysis/{name}", image[tf.newaxis])
    writer.close()


def nearest(probabilities: np.ndarray, query: int, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` candidates whose selector distributions (flattened (n_blocks, h)) are nearest
    to the query's in l2 distance, nearest first (the query itself excluded)."""
    flat = probabilities.reshape(len(probabilities), -1)
    candidates = candidates[candidates != query]
    distances = np.linalg.norm(flat[candidates] - flat[query], axis=1)
    return candidates[np.argsort(distances, kind="mergesort")[:k]]


def plot_neighbours(predictions, task_objects, data_dir, path: str, k: int = EXAMPLES) -> None:
    """Fig. 3: per task a query (its first test image) and, for every task, the ``k`` test
    images nearest to it in selector distribution."""
    names = [str(n) for n in predictions["task_names"]]
    probabilities = predictions["probabilities"]
    offsets = {name: np.flatnonzero(predictions["task"] == t) for t, name in enumerate(names)}
    fig, axes = plt.subplots(len(names), 1 + k * len(names),
                             figsize=(1.1 * (1 + k * len(names)), 1.3 * len(names)),
                             squeeze=False)
    rows = []
    for query_task in names:
        query = offsets[query_task][0]
        panels = [(query_task, 0, "query")]
        for name in names:
            found = nearest(probabilities, query, offsets[name], k)
            panels += [(name, int(i - offsets[name][0]), name) for i in found]
        rows.append(panels)
    wanted = collections.defaultdict(set)
    for name, index, _ in (panel for panels in rows for panel in panels):
        wanted[name].add(index)
    images = {}
    for name, indices in wanted.items():  # one pass over each task's test split
        indices = sorted(indices)
        images.update(zip(((name, i) for i in indices),
                          load_test_images(task_objects[name], indices, data_dir)))
    for axes_row, panels in zip(axes, rows):
        for ax, (name, index, title) in zip(axes_row, panels):
            ax.imshow(images[(name, index)])
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def analyze(workdir: str, config=None) -> str:
    """Writes the figures and analysis.md into ``workdir/analysis``; returns the page's path."""
    predictions = load_predictions(workdir)
    if "probabilities" not in predictions:
        raise ValueError(f"{workdir} is a run of a method without a selector: its structures "
                         "are fixed per task, and the figures of the selector do not apply")
    results_json = os.path.join(workdir, "results.json")
    if "task_flops_full" not in predictions and os.path.exists(results_json):
        with open(results_json) as f:  # files written before predictions recorded it
            entries = json.load(f)["tasks"]
        predictions["task_flops_full"] = np.array(
            [entries[str(n)]["flops_full"] for n in predictions["task_names"]], float)
    tasks = by_task(predictions)
    out = os.path.join(workdir, "analysis")
    os.makedirs(out, exist_ok=True)
    levels = predictions["probabilities"].shape[-1]
    figures = [("Selected structures per task (paper Fig. 6a)", "fig6a_structures.png"),
               ("Mean level probabilities per block (paper Fig. 6b)",
                "fig6b_level_probabilities.png")]
    plot_structure_histograms(tasks, os.path.join(out, figures[0][1]))
    plot_level_probabilities(tasks, os.path.join(out, figures[1][1]))
    if plot_awareness(tasks, os.path.join(out, "awareness.png")):
        figures.append(("FLOPs and accuracy by difficulty quintile", "awareness.png"))
    curve = difficulty_allocation_curve(tasks)
    allocation_lines = []
    if curve is not None:
        plot_difficulty_allocation(tasks, curve, os.path.join(out, "difficulty_allocation.png"))
        figures.append(("Uniform levels allocated by the known difficulty, against the same "
                        "shares at random", "difficulty_allocation.png"))
        allocation_lines = [
            "## Uniform levels allocated by the known difficulty", "",
            "Average test accuracy % at each budget: uniform levels given to the instances in "
            "order of their known difficulty (easiest cheapest; cut points fitted on the test "
            "split, an optimistic bound), and the same shares of levels given at random.", "",
            "| budget (FLOPs / full) | FLOPs used | by known difficulty | same shares at random "
            "| difference |", "|---|---|---|---|---|",
            *(f"| {p['budget']:.2f} | {p['flops_fraction']:.2f} | {p['by_difficulty']:.2f} | "
              f"{p['at_random']:.2f} | {p['by_difficulty'] - p['at_random']:+.2f} |"
              for p in curve), ""]
    budget_json = os.path.join(workdir, "budget.json")
    if os.path.exists(budget_json):  # written by --mode=budget
        with open(budget_json) as f:
            plot_budget_curve(json.load(f), os.path.join(out, "budget.png"))
        figures.append(("Accuracy under a FLOPs budget", "budget.png"))
    if config is not None:
        from den_tf import builders
        from den_tf.tasks import get_tasks

        task_objects = {t.name: t for t in get_tasks(config.tasks)}
        kept = builders.kept_fractions(config)
        if len(kept) != levels:
            raise ValueError(f"{workdir}'s structures have {levels} levels, its config's "
                             f"estimator {len(kept)}: the config is not this run's")
        plot_top_structures(tasks, task_objects, kept, builders.data_kwargs(config)["data_dir"],
                            os.path.join(out, "fig7_structures.png"))
        figures.append(("Most selected structures with test images that chose them (paper "
                        "Fig. 7); each bar is a block, as high as the fraction of its width "
                        "the structure keeps", "fig7_structures.png"))
        plot_neighbours(predictions, task_objects, builders.data_kwargs(config)["data_dir"],
                        os.path.join(out, "fig3_neighbours.png"))
        figures.append(("Query images (first column) and the test images of every task with "
                        "the nearest selector distributions (paper Fig. 3)",
                        "fig3_neighbours.png"))
    lines = [f"# Analysis of {os.path.abspath(workdir)}", ""]
    results_path = os.path.join(workdir, "results.md")
    if os.path.exists(results_path):
        with open(results_path) as f:
            lines += ["#" + line if line.startswith("#") else line for line in f.read().split("\n")]
    lines += allocation_lines
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    write_tensorboard(os.path.join(workdir, "tensorboard"),
                      [os.path.join(out, name) for _, name in figures])
    page = os.path.join(out, "analysis.md")
    with open(page, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out, "figures.json"), "w") as f:
        json.dump([name for _, name in figures], f)
    return page


def compare(workdir: str, run_dirs: list[str], vary: str) -> str:
    """Draws ``runs_<vary>.png`` into ``workdir/analysis``; returns its path."""
    out = os.path.join(workdir, "analysis")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"runs_{vary.replace('.', '_')}.png")
    plot_runs(load_runs(run_dirs, vary), path, f"DEN across {vary}")
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.runs:
        print(compare(FLAGS.workdir, FLAGS.runs, FLAGS.vary))
    else:
        print(analyze(FLAGS.workdir, FLAGS.config))


if __name__ == "__main__":
    define_flags()
    app.run(main)
