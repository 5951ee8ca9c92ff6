"""Runs one config over several seeds and reports means with 95% intervals.

    python -m den_tf.sweep --config=experiments/demo.py --workdir=runs/demo_seeds --seeds=5 \\
        [--first_seed=0] [--branch_from=DIR --branch_step=N] [--config.key=value ...]

Seed s trains into ``WORKDIR/seed_<s>`` (a finished seed is skipped, an interrupted one
resumes, one whose loss diverges is reported and left out, and a seed finished under other
settings is an error), then ``sweep.json`` and ``sweep.md`` aggregate every finished seed in
WORKDIR: for
each method (DEN, or BlockDrop, the full structure, the random controls, every uniform level,
the oracle) the mean and 95% t interval of its accuracy and FLOPs fraction, the paired
difference of DEN (BlockDrop) minus each of them (the same seed gives them the same
estimator), and, where the data knows each image's difficulty, the rank correlation of
difficulty and FLOPs (a run where it is undefined is left out and counted) and the FLOPs
spread between the easiest and the hardest quintile.

``--budgets`` also measures each finished seed's accuracy under ten FLOPs budgets (``--mode=budget``
of den_tf.main: ``seed_<s>/budget.json``, measured once) and aggregates the curves into
``budget_sweep.json``, ``budget_sweep.md`` and ``budget_sweep.png``: each chooser's accuracy with
its 95% interval, and the selector's margin over the others paired run by run.

``--branch_from=DIR --branch_step=N`` starts each seed from ``DIR/seed_<s>``'s checkpoint at
global step N instead of from scratch: a paired experiment on what comes after step N (for
example the demo's last selector phase with other settings, from the checkpoint that ends stage
2's estimator phase) costs only the steps after it. A run resumes exactly, so branching with an
unchanged config reproduces DIR's results.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from den_tf import analyze, budget, builders, evaluation, files, progress, stats, train

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags; called only when run, so that importing this module
    (tests, den_tf.main) never collides with flags of the same name."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory of the sweep; seed s goes to seed_<s>/.")
    flags.DEFINE_integer("seeds", 5, "Number of seeds.")
    flags.DEFINE_integer("first_seed", 0, "The first seed: seeds run first_seed, first_seed+1...")
    flags.DEFINE_string("branch_from", None, "Sweep directory whose seeds' checkpoints start.")
    flags.DEFINE_integer("branch_step", None, "Global step of the checkpoint to start from.")
    flags.DEFINE_bool("budgets", False, "Also measure and aggregate accuracy under budgets.")
    flags.mark_flags_as_required(["config", "workdir"])

DEN = "DEN"
# Operating points that know what a deployed selector cannot, named as such in sweep.md.
KNOWING_POINTS = {
    "oracle over uniform levels": "it knows each test image's label",
    "uniform levels by known difficulty": "its cut points are fitted on the test split",
}


def selected_name(results: dict) -> str:
    """The name of a run's own operating point in a sweep: DEN's, else its method's (a
    compared method with a selector, BlockDrop, or one without)."""
    return DEN if results.get("method_id", "den") == "den" else results["method"]


def methods(results: dict) -> dict[str, dict]:
    """Every operating point of one run, by name: {'average': ..., 'tasks': ...}; a method
    without a selector (den_tf/methods.py) has only its own, under its name."""
    own = {selected_name(results): {"tasks": results["tasks"], "average": results["average"]}}
    if "random_selector" not in results:
        return own
    points = {
        **own,
        "full structure": results["full_structure"],
        # Runs made before the shuffled control have only the other two.
        **{evaluation.CONTROLS[key]: point for key, point in results["random_selector"].items()},
    }
    for level, point in results["uniform_levels"].items():
        points[f"uniform level {level}"] = point
    points["oracle over uniform levels"] = results["oracle"]
    if "difficulty_allocation" in results:
        points.update({name.lower(): point for name, point in
                       evaluation.difficulty_points(results["difficulty_allocation"]).items()})
    return points


def _fraction(point: dict, flops_full: float) -> float:
    return point["average"]["flops"] / flops_full


def _defined(value) -> bool:
    """A figure that exists: not None (JSON's null) and not NaN (an empty quintile)."""
    return value is not None and bool(np.isfinite(value))


def _mean_of_defined(values: list) -> float | None:
    defined = [v for v in values if _defined(v)]
    return float(np.mean(defined)) if defined else None


def quintile_spread(awareness: dict) -> float | None:
    """FLOPs of the hardest quintile over the easiest's, minus 1 (0.3: 30% more); None when
    either is empty (a task of fewer than five test images)."""
    flops = awareness["quintile_flops_fraction"]
    if not (_defined(flops[0]) and _defined(flops[-1])):
        return None
    return flops[-1] / flops[0] - 1.0


def aggregate(runs: list[dict]) -> dict:
    """Means and 95% intervals over runs (one results.json each, all of the same config)."""
    if not runs:
        raise ValueError("no finished runs to aggregate")
    seeds = [r.get("seed") for r in runs]
    per_method = [methods(r) for r in runs]
    flops_full = [r["average"]["flops_full"] for r in runs]
    tasks = list(runs[0]["tasks"])
    # A point some runs lack (the allocation by difficulty needs the selector's FLOPs within
    # reach of the cheapest uniform level) is named, not averaged over fewer runs.
    names = [name for name in per_method[0] if all(name in m for m in per_method)]
    selected = selected_name(runs[0])
    report = {"runs": len(runs), "seeds": seeds, "method": runs[0]["method"],
              "selected": selected, "methods": {},
              "not_in_every_run": sorted({name for m in per_method for name in m} - set(names))}
    for name in names:
        accuracy = [m[name]["average"]["accuracy"] for m in per_method]
        fraction = [_fraction(m[name], f) for m, f in zip(per_method, flops_full)]
        entry = {
            "accuracy": stats.mean_interval(accuracy),
            "flops_fraction": stats.mean_interval(fraction),
            "task_accuracy": {
                t: stats.mean_interval([m[name]["tasks"][t]["accuracy"] for m in per_method])
                for t in tasks
            },
        }
        if name != selected and "random_selector" in runs[0]:
            own = [m[selected]["average"]["accuracy"] for m in per_method]
            entry["selected_minus_this"] = stats.paired_difference(own, accuracy)
        report["methods"][name] = entry
    awareness, partial = {}, []
    for t in tasks:
        entries = [r["tasks"][t].get("instance_awareness") for r in runs]
        if any(e is None for e in entries):
            partial += [t] if any(e is not None for e in entries) else []
            continue
        # Undefined figures (a run that gave every image the same FLOPs has no correlation,
        # a task of fewer than five test images an empty quintile) are left out, not
        # averaged in as 0; the undefined correlations are counted.
        defined = [c for e in entries if (c := e["spearman_difficulty_flops"]) is not None]
        spreads = [s for e in entries if (s := quintile_spread(e)) is not None]
        awareness[t] = {
            "spearman_difficulty_flops": stats.mean_interval(defined) if defined else None,
            "spearman_undefined_runs": len(entries) - len(defined),
            "quintile_flops_spread": stats.mean_interval(spreads) if spreads else None,
            "quintile_flops_fraction": [
                _mean_of_defined([e["quintile_flops_fraction"][q] for e in entries])
                for q in range(len(entries[0]["quintile_flops_fraction"]))
            ],
        }
    report["instance_awareness"] = awareness
    report["awareness_not_in_every_run"] = partial
    return report


def sweep_markdown(report: dict, title: str) -> str:
    """The aggregate as markdown: methods, paired differences, instance-awareness."""
    selected = report["selected"]
    lines = [
        f"# {title}: {report['runs']} runs (seeds {', '.join(map(str, report['seeds']))})",
        "",
        f"{stats.runs_text(report['runs'])} Paired: {selected} minus the method, run by run "
        "(same seed, same estimator); * marks an interval that excludes zero.",
        "",
        f"| method | average accuracy % | FLOPs / full | {selected} minus this (accuracy) |",
        "|---|---|---|---|",
    ]
    for name, entry in report["methods"].items():
        paired = entry.get("selected_minus_this")
        paired_cell = "" if paired is None else stats.paired_text(paired)
        lines.append(f"| {name} | {stats.interval_text(entry['accuracy'])} | "
                     f"{stats.interval_text(entry['flops_fraction'], 100, 1)}% | {paired_cell} |")
    knowing = [name for name in report["methods"] if name in KNOWING_POINTS]
    if knowing:
        lines += ["", "Not methods but bounds: " + " and ".join(
            f"{name} ({KNOWING_POINTS[name]})" for name in knowing) + "."]
    if report.get("not_in_every_run"):
        lines += ["", "Not in every run, so left out: "
                  + ", ".join(report["not_in_every_run"]) + "."]
    if report.get("failed_seeds"):
        lines += ["", "**Failed, so not in the means** (a rerun resumes them from their last "
                  "checkpoint, where they may fail again; delete a seed's directory to start it "
                  "afresh): " + "; ".join(f"seed {seed}: {error}"
                                          for seed, error in report["failed_seeds"].items())
                  + "."]
    if report.get("branched"):
        lines += ["", "Branched from another sweep's checkpoint: " + "; ".join(
            f"seed {seed} from {origin['source']} at step {origin['step']}"
            for seed, origin in report["branched"].items()) + "."]
    if report.get("awareness_not_in_every_run"):
        lines += ["", "Instance awareness not in every run, so left out for: "
                  + ", ".join(report["awareness_not_in_every_run"]) + "."]
    if report["instance_awareness"]:
        lines += [
            "",
            "| task | rank correlation (difficulty, FLOPs) | FLOPs spread, hardest over easiest "
            "quintile | mean FLOPs fraction by quintile, easiest first |",
            "|---|---|---|---|",
        ]
        for task, entry in report["instance_awareness"].items():
            correlation, undefined = entry["spearman_difficulty_flops"], entry.get(
                "spearman_undefined_runs", 0)
            cell = "undefined" if correlation is None else stats.interval_text(correlation)
            if undefined and correlation is not None:
                cell += f" (undefined in {undefined} of {report['runs']} runs, left out)"
            lines.append(
                f"| {task} | {cell} | "
                + ("undefined | " if entry["quintile_flops_spread"] is None else
                   f"{stats.interval_text(entry['quintile_flops_spread'], 100, 1)}% | ")
                + " ".join("-" if x is None else f"{x:.2f}"
                           for x in entry["quintile_flops_fraction"]) + " |"
            )
    lines.append("")
    return "\n".join(lines)


BRANCH = "branch.json"  # where a branched seed began: {source, step}
FAILED = "failed.json"  # why a seed's training stopped: {error}


def branch(source: str, step: int, workdir: str) -> None:
    """Copies the checkpoint of global step ``step`` from run ``source`` into ``workdir``'s
    empty checkpoint directory, so that training resumes from it, with the versions of the
    datasets it was made on (``train.DATA_VERSIONS``: the resume checks them). The files are
    copied into a directory beside it that is then renamed: an interrupted copy leaves no
    checkpoint (and the next branch starts again), never some of its files."""
    target = os.path.join(workdir, "checkpoints")
    prefix = os.path.join(source, "checkpoints", f"ckpt-{step}")
    saved = glob.glob(prefix + ".*")
    if not saved:
        kept = sorted(glob.glob(os.path.join(source, "checkpoints", "ckpt-*.index")))
        raise FileNotFoundError(f"no checkpoint of step {step} in {source}; it holds "
                                f"{[os.path.basename(k)[:-6] for k in kept]}")
    if os.path.isdir(target) and os.listdir(target):
        raise FileExistsError(f"{target} already holds checkpoints; not branching over them")
    versions = os.path.join(source, train.DATA_VERSIONS)
    if os.path.exists(versions):
        os.makedirs(workdir, exist_ok=True)
        files.write_json(os.path.join(workdir, train.DATA_VERSIONS), _read_json(versions))
    with files.replaced_directory(target) as partial:
        for path in saved:
            shutil.copy(path, partial)
        with open(os.path.join(partial, "checkpoint"), "w") as f:
            f.write(f'model_checkpoint_path: "ckpt-{step}"\n'
                    f'all_model_checkpoint_paths: "ckpt-{step}"\n')


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _seed_files(workdir: str, name: str) -> dict[int, str]:
    """The file ``name`` of every seed directory of ``workdir`` that has one, by seed."""
    paths = glob.glob(os.path.join(workdir, "seed_*", name))
    return dict(sorted((int(os.path.basename(os.path.dirname(p))[len("seed_"):]), p)
                       for p in paths))


def _check_origin(seed_dir: str, origin: dict | None) -> None:
    """Raises ValueError unless the started run in ``seed_dir`` began where this sweep would
    begin it (``origin``: branched from a source's step; None: from scratch): averaged together,
    runs of other histories would pass for seeds of one condition."""
    path = os.path.join(seed_dir, BRANCH)
    recorded = _read_json(path) if os.path.exists(path) else None
    if recorded != origin:
        def describe(where):
            return ("from scratch" if where is None else
                    f"branched from {where['source']} at step {where['step']}")
        raise ValueError(f"{seed_dir} was started {describe(recorded)}; this sweep would start "
                         f"it {describe(origin)}. Use another --workdir for the other history.")


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """``config`` with ``seed``."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.seed = seed
    return config


def finished_runs(workdir: str, config: ml_collections.ConfigDict | None = None) -> list[dict]:
    """The results.json of every finished seed in ``workdir``, by seed; with ``config``,
    after checking that each seed ran with its settings (``train.check_run_config``), so that
    runs of other settings are never averaged in."""
    runs = []
    for seed, path in _seed_files(workdir, "results.json").items():
        if config is not None:
            train.check_run_config(seed_config(config, seed), os.path.dirname(path))
        runs.append(_read_json(path))
    return sorted(runs, key=lambda r: r.get("seed", 0))


def failed_seeds(workdir: str) -> dict[int, str]:
    """The seeds of ``workdir`` whose training stopped with an error (their ``failed.json``,
    written by ``run_seeds``) and that have not finished since, by seed."""
    return {seed: _read_json(path)["error"] for seed, path in _seed_files(workdir, FAILED).items()
            if not os.path.exists(os.path.join(os.path.dirname(path), "results.json"))}


def write_report(workdir: str, title: str,
                 config: ml_collections.ConfigDict | None = None) -> dict:
    """Aggregates the finished seeds of ``workdir`` (checked against ``config``, as
    ``finished_runs``) into sweep.json and sweep.md, naming the seeds that failed
    (``failed_seeds``, in this sweep or an earlier one: the means are over the others) and
    the seeds that were branched from another sweep's checkpoint."""
    runs = finished_runs(workdir, config)
    failed = failed_seeds(workdir)
    if not runs and failed:
        raise ValueError(f"no seed of {workdir} finished; failed: " + "; ".join(
            f"seed {seed}: {error}" for seed, error in failed.items()))
    report = aggregate(runs)
    report["failed_seeds"] = {str(seed): error for seed, error in failed.items()}
    report["branched"] = {str(seed): _read_json(path)
                          for seed, path in _seed_files(workdir, BRANCH).items()}
    files.write_json(os.path.join(workdir, "sweep.json"), report)
    with files.replaced_atomically(os.path.join(workdir, "sweep.md")) as f:
        f.write(sweep_markdown(report, title))
    return report


def finished_budget_curves(workdir: str) -> dict[int, dict]:
    """The budget.json of every seed in ``workdir`` that has one, by seed."""
    return {seed: _read_json(path) for seed, path in _seed_files(workdir, "budget.json").items()}


def write_budget_report(workdir: str) -> dict:
    """Aggregates the seeds' budget curves into budget_sweep.json, .md and .png, naming their
    seeds (which may be fewer than sweep.md's)."""
    curves = finished_budget_curves(workdir)
    report = budget.aggregate_curves(list(curves.values()), seeds=list(curves))
    files.write_json(os.path.join(workdir, "budget_sweep.json"), report)
    with files.replaced_atomically(os.path.join(workdir, "budget_sweep.md")) as f:
        f.write(budget.aggregate_markdown(report))
    analyze.plot_budget_sweep(report, os.path.join(workdir, "budget_sweep.png"))
    return report


def run_seeds(config: ml_collections.ConfigDict, workdir: str, seeds: Sequence[int],
              budgets: bool = False, branch_from: str | None = None,
              branch_step: int | None = None) -> dict[int, str]:
    """Trains each seed into ``workdir/seed_<s>`` unless it finished with the same settings
    (an interrupted one resumes; with ``branch_from``, a new one starts from that sweep's
    checkpoint at ``branch_step``), and with ``budgets`` measures each seed's budget curve
    once. A seed whose loss diverges (``train.NonFiniteLossError``) is logged and the others
    still run; returns those seeds' errors, by seed (a later sweep tries them again)."""
    files.check_local(workdir)
    failed = {}
    for seed in seeds:
        seed_dir = os.path.join(workdir, f"seed_{seed}")
        config_of_seed = seed_config(config, seed)
        origin = None if branch_from is None else {
            "source": os.path.abspath(os.path.join(branch_from, f"seed_{seed}")),
            "step": branch_step}
        finished = os.path.exists(os.path.join(seed_dir, "results.json"))
        started = finished or glob.glob(os.path.join(seed_dir, "checkpoints", "ckpt-*"))
        if started:
            _check_origin(seed_dir, origin)
        if finished:
            train.check_run_config(config_of_seed, seed_dir)
            logging.info("seed %d already finished in %s", seed, seed_dir)
        else:
            logging.info("seed %d into %s", seed, seed_dir)
            if origin is not None and not started:
                os.makedirs(seed_dir, exist_ok=True)
                files.write_json(os.path.join(seed_dir, BRANCH), origin)
                branch(origin["source"], branch_step, seed_dir)
            try:
                train.train_and_evaluate(config_of_seed, seed_dir)
            except train.NonFiniteLossError as error:
                logging.error("seed %d failed: %s", seed, error)
                failed[seed] = str(error)
                os.makedirs(seed_dir, exist_ok=True)
                files.write_json(os.path.join(seed_dir, FAILED), {"error": str(error)})
                continue
            if os.path.exists(os.path.join(seed_dir, FAILED)):
                os.remove(os.path.join(seed_dir, FAILED))
        if budgets and not os.path.exists(os.path.join(seed_dir, "budget.json")):
            logging.info("seed %d: accuracy under budgets", seed)
            train.measure_budgets(config_of_seed, seed_dir)
    return failed


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    progress.show_project_info_only()
    builders.check_command_line(FLAGS["config"])
    if FLAGS.seeds < 1:
        raise app.UsageError(f"--seeds must be >= 1, got {FLAGS.seeds}")
    if (FLAGS.branch_from is None) != (FLAGS.branch_step is None):
        raise app.UsageError("--branch_from and --branch_step go together")
    failed = run_seeds(FLAGS.config, FLAGS.workdir,
                       range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds), FLAGS.budgets,
                       FLAGS.branch_from, FLAGS.branch_step)
    markdown = sweep_markdown(
        write_report(FLAGS.workdir, FLAGS.config.scenario, FLAGS.config), FLAGS.config.scenario)
    if FLAGS.budgets:
        markdown += "\n## Accuracy under FLOPs budgets\n\n" + budget.aggregate_markdown(
            write_budget_report(FLAGS.workdir))
    print(markdown)
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
