"""Our runs beside the paper's published numbers, in the layout of its Tables 2-5.

    python -m den_tf.report runs/m1_wrn [more directories...] [--output=report.md]

Reads every ``results.json`` under the directories (not those of a separate baseline's own
networks, whose figures its combined results.json already holds), puts each run in the table
it belongs to (``published.TABLES``: scenario, backbone and tasks), and writes ``report.md``
(in the first directory by default): each cell is our number, then the paper's. Several runs
of one cell (seeds) are averaged and counted, accuracies with the half-width of their 95% t
interval; they must share every setting but the seed (their config.json), or the report
stops and names the settings. Methods of a table run over the same seeds get their accuracy
differences paired by seed. Among our mean accuracies the best is bold and the second best
underlined, as the paper marks them; a cell without a run says "missing", never a number;
methods the paper quoted from other papers are marked as quoted. Runs on data the paper did
not use (the demo), and runs that no row of their table takes, get a table of Table 2's
layout without published numbers: every run found is in some table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from den_tf import stats
from den_tf.published import TABLES, Method, Table
from den_tf.train import config_differences, ignored_differences

flags.DEFINE_string("output", None, "Where to write the report (default: <first dir>/report.md).")
FLAGS = flags.FLAGS

MISSING = "missing"


def find_results(directories: Sequence[str]) -> list[dict]:
    """Every results.json under ``directories`` (sorted by path), with its ``path``."""
    runs = []
    for directory in directories:
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no such directory: {directory}")
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != "networks")
            if "results.json" in files:
                path = os.path.join(root, "results.json")
                with open(path) as f:
                    runs.append({**json.load(f), "path": path, "config": None})
                if "config.json" in files:
                    with open(os.path.join(root, "config.json")) as f:
                        runs[-1]["config"] = json.load(f)
                if "method_id" not in runs[-1]:  # written before methods were recorded: DEN
                    if runs[-1]["config"] is None:
                        raise ValueError(f"{path} names no method (it was written before "
                                         "methods were recorded) and has no config.json "
                                         "beside it to give its rho")
                    runs[-1].update(method_id="den", rho=runs[-1]["config"]["rho"])
    return sorted(runs, key=lambda r: r["path"])


def check_pooled(label: str, runs: list[dict]) -> None:
    """Raises ValueError unless ``runs``, averaged into ``label``'s cell, share every setting
    but the seed (and where they ran, or what their method does not read:
    ``train.ignored_differences``): a mean over runs of other epochs, widths or data would be
    labelled as seeds of one setting."""
    if len(runs) < 2:
        return
    unknown = [r["path"] for r in runs if r["config"] is None]
    if unknown:
        raise ValueError(f"{label}: {len(runs)} runs would be averaged, but "
                         f"{', '.join(unknown)} has no config.json beside it to check that "
                         "they differ only in the seed")
    first = runs[0]
    ignored = ignored_differences(*(run["config"] for run in runs)) | {"seed"}
    for run in runs[1:]:
        differences = config_differences(first["config"], run["config"], ignored=ignored)
        if differences:
            raise ValueError(
                f"{label}: {first['path']} and {run['path']} would be averaged as seeds of "
                f"one setting, but their settings differ: {'; '.join(differences)}. Point "
                "the report at directories that each hold runs of one setting.")
    by_seed: dict[int, str] = {}
    for run in runs:
        seed = run["config"]["seed"]
        if seed in by_seed:
            raise ValueError(
                f"{label}: {by_seed[seed]} and {run['path']} are the same setting with the same "
                f"seed ({seed}): averaged, one run would count twice. Keep one of them.")
        by_seed[seed] = run["path"]


def belongs(table: Table, run: dict) -> bool:
    return (run["scenario"] == table.scenario and run["backbone"].startswith(table.backbone)
            and sorted(run["tasks"]) == sorted(table.tasks))


def point(method: Method, run: dict, task: str = "") -> dict | None:
    """The figures of ``run`` in ``method``'s column or row, or None if it is another method:
    per-task accuracy, average accuracy, FLOPs, multiply-adds, compression, parameters of all
    networks (with their number) and parameters an instance runs; FLOPs and parameters run
    are the average over tasks, or ``task``'s (Table 4 reports each task on its own)."""
    if method.quoted or run.get("method_id") != method.method:
        return None
    if method.rho is not None and (run.get("rho") is None
                                   or not np.isclose(run["rho"], method.rho)):
        return None
    params = run["params"]
    source = run
    if method.selector == "random":
        if "uniform" not in run.get("random_selector", {}):
            return None
        source = run["random_selector"]["uniform"]
    elif method.level is not None:
        if str(method.level) not in run.get("levels", {}):
            return None
        source = run["levels"][str(method.level)]
    average = source["tasks"][task] if task else source["average"]
    flops_full = (run["tasks"][task] if task else run["average"])["flops_full"]
    return {
        "path": run["path"],
        "seed": _seed(run),
        "tasks": {name: entry["accuracy"] for name, entry in source["tasks"].items()},
        "accuracy": average["accuracy"],
        "flops": average["flops"],
        "macs": average["flops"] / 2,
        "flops_full": flops_full,
        "params": params["paper"],
        "networks": params["networks"],
        "params_used": average["params_used"],
    }


def _seed(run: dict) -> int | None:
    return run["config"]["seed"] if run["config"] is not None else run.get("seed")


def _mean(points: list[dict], key: str):
    return float(np.mean([p[key] for p in points]))


def _count(value: float) -> str:
    return f"{value / 1e9:.2f}G" if value >= 1e9 else f"{value / 1e6:.2f}M"


def _marked(values: dict[str, list[float]]) -> dict[str, str]:
    """Accuracies over runs formatted as their mean, with the half-width of its 95% t
    interval where there are several; the best mean bold and the second best underlined
    (ties share). A method without runs gets no text."""
    means = {key: float(np.mean(v)) for key, v in values.items() if v}
    present = sorted({round(m, 2) for m in means.values()}, reverse=True)
    marks = {}
    for key, mean in means.items():
        text = f"{mean:.2f}"
        if round(mean, 2) == present[0]:
            text = f"**{text}**"
        elif len(present) > 1 and round(mean, 2) == present[1]:
            text = f"<u>{text}</u>"
        interval = stats.mean_interval(values[key])
        if interval["half_width"] is not None:
            text += f" ± {interval['half_width']:.2f}"
        marks[key] = text
    return marks


def _accuracies(points: list[dict], key: str = "") -> list[float]:
    """Each run's accuracy of task ``key`` ('' or 'average': the average over tasks)."""
    return [p["tasks"][key] if key not in ("", "average") else p["accuracy"] for p in points]


def paired_lines(table: Table, points: dict[str, list[dict]], key: str = "") -> list[str]:
    """Each method's accuracy (``_accuracies``) minus the first row's or column's with runs,
    paired by seed, where at least two seeds have both (a cell holds one run per seed:
    ``check_pooled``)."""

    def by_seed(label: str) -> dict[int, float]:
        return {p["seed"]: accuracy
                for p, accuracy in zip(points[label], _accuracies(points[label], key))
                if p["seed"] is not None}

    ran = [m for m in table.methods if len(by_seed(m.label)) > 1]
    if len(ran) < 2:
        return []
    reference, lines = by_seed(ran[0].label), []
    for method in ran[1:]:
        mine = by_seed(method.label)
        pairs = [(mine[seed], reference[seed]) for seed in sorted(mine) if seed in reference]
        if len(pairs) < 2:
            continue
        difference = stats.paired_difference(*zip(*pairs))
        lines.append(f"- {method.label} - {ran[0].label}: {stats.paired_text(difference)} "
                     f"points over {len(pairs)} seeds")
    if not lines:
        return []
    what = f"{key}'s accuracy" if key not in ("", "average") else "the average accuracy"
    return ["", f"Paired by seed ({what}; mean ± half-width of the 95% t interval, * where it "
            "excludes zero):", *lines]


def _cell(ours: str | None, paper, count: int) -> str:
    ours = MISSING if ours is None else ours + (f" (n={count})" if count > 1 else "")
    if paper is None:
        return ours
    return f"{ours} / {paper:.2f}" if isinstance(paper, float) else f"{ours} / {paper}"


def _points(table: Table, runs: list[dict]) -> dict[str, list[dict]]:
    """Each method's points in ``table``, after checking that its runs may be pooled."""
    mine = [r for r in runs if belongs(table, r)]
    points = {}
    for m in table.methods:
        pooled = [(r, p) for r in mine if (p := point(m, r, table.accuracy_of)) is not None]
        check_pooled(f"{table.title}, {m.label}", [r for r, _ in pooled])
        points[m.label] = [p for _, p in pooled]
    return points


def _flops_text(table: Table, points: list[dict]) -> str:
    if table.flops == "ratio":  # the full structure's FLOPs over the mean FLOPs
        return f"{_mean(points, 'flops_full') / _mean(points, 'flops'):.1f}x"
    return _count(_mean(points, "macs" if table.flops == "macs" else "flops"))


def _params_text(table: Table, points: list[dict]) -> str:
    if table.flops == "ratio":  # Table 5: the parameters an instance runs
        return _count(_mean(points, "params_used"))
    return f"{_count(_mean(points, 'params'))} [{int(_mean(points, 'networks'))}]"


def tasks_layout(table: Table, points: dict[str, list[dict]], published: bool = True
                 ) -> list[str]:
    """Table 2's layout: a column per method, a row per task, then Average, FLOPs, params
    (``points``: ``_points``)."""
    methods = table.methods
    lines = ["| Dataset | " + " | ".join(m.label for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for label, key in table.rows:
        papers = {m.label: table.values.get(m.label, {}).get(key) if published else None
                  for m in methods}
        if key in ("flops", "params"):
            text = _flops_text if key == "flops" else _params_text
            ours = {m.label: text(table, points[m.label]) if points[m.label] else None
                    for m in methods}
        else:
            ours = _marked({m.label: _accuracies(points[m.label], key) for m in methods})
        lines.append(f"| {label} | " + " | ".join(
            _cell(ours.get(m.label), papers[m.label], len(points[m.label])) for m in methods)
            + " |")
    return lines + paired_lines(table, points)


def methods_layout(table: Table, points: dict[str, list[dict]]) -> list[str]:
    """Tables 3-5: a row per method; accuracy (of ``table.accuracy_of``, else the average over
    tasks), FLOPs (or its compression ratio) and parameters (``points``: ``_points``)."""
    task = table.accuracy_of
    # The paper's column order: Table 5 gives the parameters before the compression ratio.
    columns = ("accuracy", "params", "flops") if table.flops == "ratio" else (
        "accuracy", "flops", "params")
    names = {"accuracy": "Accuracy (%)", "params": "No. params",
             "flops": "FLOPs (multiply-adds)" if table.flops == "macs" else "FLOPs"}
    lines = ["| Method | " + " | ".join(names[c] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    marked = _marked({m.label: _accuracies(points[m.label], task) for m in table.methods})
    for m in table.methods:
        paper = table.values[m.label]
        found, n = points[m.label], len(points[m.label])
        label = m.label + (" (quoted by the paper)" if m.quoted else "")
        if m.quoted:
            cells = [_cell("not run", paper[c] or "-", 1) for c in columns]
        else:
            ours = {"accuracy": marked.get(m.label),
                    "flops": _flops_text(table, found) if found else None,
                    "params": _params_text(table, found) if found else None}
            cells = [_cell(ours[c], paper[c], n) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + paired_lines(table, points, task)


def unpublished_table(runs: list[dict], beside: Table | None = None) -> Table:
    """Table 2's layout for runs of a scenario the paper did not report (the demo): its
    tasks, the baseline, NestedNet, PackNet*, BlockDrop (if run), DEN at every rho found and
    DEN's random selector (the rand sel control of its lowest-rho run). With ``beside``, the
    runs of that published table's scope that none of its rows takes (another rho, a method
    it does not list), with only the methods they ran."""
    first = runs[0]
    ran = {r.get("method_id") for r in runs}
    rhos = sorted({r["rho"] for r in runs if r.get("method_id") == "den"})
    methods = [m for m in (Method("Baseline", "baseline"), Method("NestedNet", "nestednet"),
                           Method("PackNet*", "packnet"), Method("BlockDrop", "blockdrop"))
               if m.method in ran or (beside is None and m.method != "blockdrop")]
    methods += [Method(f"DEN (rho={rho:g})", "den", rho) for rho in rhos]
    if rhos and (beside is None or any(
            "uniform" in r.get("random_selector", {}) for r in runs
            if r.get("method_id") == "den" and np.isclose(r["rho"], rhos[0]))):
        methods.append(Method("DEN + rand sel", "den", rhos[0], selector="random"))
    tasks = tuple(first["tasks"])
    rows = tuple((name, name) for name in tasks) + (
        ("Average", "average"), ("FLOPs", "flops"), ("No. parameters", "params"))
    title = f"{first['scenario']} on {first['backbone']} " + (
        "(not in the paper)" if beside is None else
        f"(runs without a row in {beside.title.split(':')[0]})")
    return Table("unpublished", title, first["scenario"], first["backbone"], tasks, "tasks",
                 tuple(methods), {}, rows)


def _scope(run: dict) -> tuple:
    return run["scenario"], run["backbone"], tuple(sorted(run["tasks"]))


def report(directories: Sequence[str]) -> str:
    """The markdown report of every table that some run under ``directories`` belongs to;
    runs that no published table's row takes get tables of their own, so none is left out."""
    runs = find_results(directories)
    if not runs:
        raise FileNotFoundError(f"no results.json under {', '.join(directories)}")
    lines = [
        "# Our runs beside the paper's published numbers",
        "",
        "Each cell: ours / the paper's (Ahn, Kim and Oh, ICCV 2019). Ours: accuracy (%) on the "
        "whole test split, bold the best and underlined the second best of our means; FLOPs "
        "averaged over tasks (2 per multiply-add; Table 3 in multiply-adds; Table 5 as the "
        "compression ratio against the full backbone); parameters under the paper's "
        "convention, of all [n] networks a method needs (Table 5: those an instance runs, on "
        "average). (n=k): the mean of k runs (seeds), the accuracy with the half-width of its "
        "95% t interval; marks between means whose intervals overlap do not say which method "
        "is better. \"missing\": no run found.",
        "",
        "Runs: " + ", ".join(f"`{r['path']}`" for r in runs),
    ]
    used: set[str] = set()

    def add(table: Table, group: list[dict], published: bool = True) -> None:
        points = _points(table, group)
        used.update(p["path"] for found in points.values() for p in found)
        lines.extend(["", f"## {table.title}", ""])
        if table.layout == "tasks":
            lines.extend(tasks_layout(table, points, published))
        else:
            lines.extend(methods_layout(table, points))

    for table in TABLES:
        mine = [r for r in runs if belongs(table, r)]
        if mine:
            add(table, mine)
    rest = [r for r in runs if r["path"] not in used]
    for key in sorted({_scope(r) for r in rest}):
        group = [r for r in rest if _scope(r) == key]
        beside = next((t for t in TABLES if belongs(t, group[0])), None)
        add(unpublished_table(group, beside), group, published=False)
    unplaced = [r for r in runs if r["path"] not in used]
    if unplaced:
        lines += ["", "## Runs in no table", ""] + [
            f"- `{r['path']}`: method {r.get('method_id')!r}, rho {r.get('rho')}"
            for r in unplaced]
    lines.append("")
    return "\n".join(lines)


def main(argv):
    directories = argv[1:]
    if not directories:
        raise app.UsageError("usage: python -m den_tf.report DIR [DIR...] [--output=PATH]")
    text = report(directories)
    output = FLAGS.output or os.path.join(directories[0], "report.md")
    with open(output, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
