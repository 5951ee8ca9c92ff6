"""den_tf.report against a fixed set of results files: layout, published numbers beside ours,
bold and underline, missing runs, averaged seeds, unpublished scenarios."""

import json

import pytest

from den_tf import published, report

M1 = ("cifar100", "tiny_imagenet", "stl10")


def _results(method, accuracies, rho=None, scenario="M1", backbone="WRN-32-4", flops=1.2e9,
             networks=1, tasks=M1, levels=None, seed=0):
    entries = {t: {"accuracy": a, "flops": flops, "flops_full": 2.0e9} for t, a in
               zip(tasks, accuracies)}
    average = {"accuracy": sum(accuracies) / len(accuracies), "flops": flops,
               "flops_full": 2.0e9, "params_used": 3.0e6}
    results = {"scenario": scenario, "backbone": backbone, "method_id": method, "rho": rho,
               "seed": seed, "tasks": entries, "average": average,
               "params": {"paper": 7.35e6 * networks, "total": 7.4e6 * networks,
                          "networks": networks, "used": 3.0e6}}
    if method == "den":
        results["random_selector"] = {"uniform": {
            "tasks": {t: {"accuracy": 50.0, "flops": 1.0e9} for t in tasks},
            "average": {"accuracy": 50.0, "flops": 1.0e9, "params_used": 2.0e6}}}
    if levels:
        results["levels"] = levels
    return results


def _line(text: str, start: str) -> str:
    """The first line of ``text`` that begins with ``start``."""
    return next(line for line in text.splitlines() if line.startswith(start))


def _write(root, name, results, config=True, **settings):
    """results.json, and (unless ``config`` is False) the config.json train writes beside it:
    the run's method, rho and seed, a schedule, and ``settings`` over them."""
    path = root / name
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    if config:
        saved = {"method": results["method_id"], "rho": results["rho"], "seed": results["seed"],
                 "train": {"epochs": 10, "log_every": 100}, "data": {"data_dir": "/data"}}
        for key, value in settings.items():
            section, name = key.split("__")
            saved[section][name] = value
        (path / "config.json").write_text(json.dumps(saved))


def test_table_2b_beside_the_paper(tmp_path):
    _write(tmp_path, "baseline", _results("baseline", [70.0, 50.0, 80.0], flops=2.0e9,
                                          networks=3))
    # The separate baseline's own networks are not runs of their own.
    _write(tmp_path, "baseline/networks/cifar100", _results("baseline", [1.0, 1.0, 1.0]))
    _write(tmp_path, "den_rho1/seed_0", _results("den", [74.0, 56.0, 86.0], rho=1.0))
    _write(tmp_path, "den_rho1/seed_1", _results("den", [76.0, 58.0, 88.0], rho=1.0, seed=1))
    _write(tmp_path, "nestednet", _results("nestednet", [72.0, 57.0, 84.0], flops=1.25e9))
    text = report.report([str(tmp_path)])
    assert "## Table 2(b): M1 on WRN-32-4" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Dataset |"))
    assert header == ("| Dataset | Baseline | NestedNet | PackNet* | DEN (rho=1) | "
                      "DEN (rho=0.1) |")
    row = next(line for line in lines if line.startswith("| CIFAR-100"))
    # Ours / the paper's; DEN's two seeds averaged (75.0 ± 12.71: t(1) = 12.706 times the
    # standard error 1) and the best (bold); NestedNet's 72.0 second (underlined); PackNet*
    # and DEN (rho=0.1) missing.
    assert row == ("| CIFAR-100 (32x32) | 70.00 / 75.01 | <u>72.00</u> / 74.09 | missing / "
                   "73.56 | **75.00** ± 12.71 (n=2) / 75.43 | missing / 75.65 |")
    flops = next(line for line in lines if line.startswith("| FLOPs"))
    assert flops.startswith("| FLOPs | 2.00G / 2.13G | 1.25G / 1.24G | missing / 1.24G |")
    params = next(line for line in lines if line.startswith("| No. parameters"))
    assert "22.05M [3] / 22.0M [3]" in params and "7.35M [1] (n=2) / 7.35M [1]" in params
    assert "1.00" not in row  # the network's own results are not read


def test_methods_layout_table_5_with_levels_rand_sel_and_quoted(tmp_path):
    tasks = ("cifar10",)
    levels = {str(level): {"tasks": {"cifar10": {"accuracy": acc}},
                           "average": {"accuracy": acc, "flops": 2.0e9 / ratio,
                                       "params_used": params}}
              for level, acc, ratio, params in ((1, 90.0, 2.0, 5.6e6), (2, 93.0, 1.0, 11.2e6))}
    backbone = "ResNeXt-29 (4x64d)"
    _write(tmp_path, "nested", _results("nestednet", [93.0], scenario="C1", backbone=backbone,
                                        tasks=tasks, levels=levels, flops=2.0e9))
    _write(tmp_path, "den", _results("den", [94.0], rho=0.1, scenario="C1", backbone=backbone,
                                     tasks=tasks, flops=1.0e9))
    text = report.report([str(tmp_path)])
    assert "## Table 5: network compression, CIFAR10, ResNeXt-29 (4x64d)" in text
    lines = text.splitlines()

    def row(label):
        return next(line for line in lines if line.startswith(f"| {label} |"))

    # The paper's columns: accuracy, parameters, compression ratio.
    assert row("Method") == "| Method | Accuracy (%) | No. params | FLOPs |"
    assert row("NestedNet, L") == "| NestedNet, L | 90.00 / 93.59 | 5.60M / 5.6M | 2.0x / 2.0x |"
    assert row("NestedNet, H") == ("| NestedNet, H | <u>93.00</u> / 94.11 | 11.20M / 11.2M | "
                                   "1.0x / 1.0x |")
    assert row("DEN (rho=0.1)") == ("| DEN (rho=0.1) | **94.00** / 94.47 | 3.00M / 5.8M | "
                                    "2.0x / 1.9x |")
    assert row("DEN + rand sel") == ("| DEN + rand sel | 50.00 / 87.33 | 2.00M / 5.6M | "
                                     "2.0x / 2.0x |")
    assert row("Baseline").startswith("| Baseline | missing / 94.37 |")
    assert row("Pruning (ResNet-50) (quoted by the paper)") == (
        "| Pruning (ResNet-50) (quoted by the paper) | not run / 94.15 | not run / 6.44M | "
        "not run / - |")
    # The table's last row: the baseline of ResNeXt-29 (2x64d), a table of its own here.
    _write(tmp_path, "two", _results("baseline", [93.1], scenario="C1", tasks=tasks,
                                     backbone="ResNeXt-29 (2x64d)", flops=2.0e9))
    text = report.report([str(tmp_path)])
    two = text.split("## Table 5: network compression, CIFAR10, ResNeXt-29 (2x64d)")[1]
    assert next(line for line in two.splitlines() if line.startswith("| Baseline |")).startswith(
        "| Baseline | **93.10** / 93.60 | 3.00M / 5.6M | 1.0x / - |")


def test_unpublished_scenario_and_errors(tmp_path):
    tasks = ("shapes", "textures")
    demo = dict(scenario="demo", backbone="WRN-32 (widths 16/32/64)", tasks=tasks)
    _write(tmp_path, "den_rho0.3", _results("den", [90.0, 80.0], rho=0.3, **demo))
    _write(tmp_path, "den_rho0.1", _results("den", [91.0, 79.0], rho=0.1, **demo))
    _write(tmp_path, "packnet", _results("packnet", [85.0, 70.0], **demo))
    text = report.report([str(tmp_path)])
    assert "## demo on WRN-32 (widths 16/32/64) (not in the paper)" in text
    assert _line(text, "| Dataset |") == ("| Dataset | Baseline | NestedNet | PackNet* | "
                                          "DEN (rho=0.1) | DEN (rho=0.3) | DEN + rand sel |")
    assert _line(text, "| shapes |") == (
        "| shapes | missing | missing | 85.00 | **91.00** | <u>90.00</u> | 50.00 |")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        report.report([str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="no such directory"):
        report.report([str(tmp_path / "absent")])


def test_runs_pooled_in_a_cell_must_differ_only_in_the_seed(tmp_path):
    demo = dict(scenario="demo", backbone="WRN-32 (widths 16/32/64)", tasks=("shapes",))
    _write(tmp_path, "den/seed_0", _results("den", [90.0], rho=0.3, **demo))
    # Where a run's data was and how often it logged do not change what it trained.
    _write(tmp_path, "den/seed_1", _results("den", [80.0], rho=0.3, seed=1, **demo),
           data__data_dir="/elsewhere", train__log_every=10)
    row = next(line for line in report.report([str(tmp_path)]).splitlines()
               if line.startswith("| shapes |"))
    assert "85.00** ± 63.53 (n=2)" in row  # 85 ± t(1) x 5
    _write(tmp_path, "den/seed_2", _results("den", [70.0], rho=0.3, seed=2, **demo),
           train__epochs=20)
    with pytest.raises(ValueError, match=r"DEN \(rho=0.3\): .*seed_0.* and .*seed_2.* "
                                         r"settings differ: train.epochs: 10 there, 20 here"):
        report.report([str(tmp_path)])
    # One setting per directory: each reports on its own.
    assert "(n=2)" in report.report([str(tmp_path / "den" / "seed_0"),
                                     str(tmp_path / "den" / "seed_1")])
    assert "70.00" in report.report([str(tmp_path / "den" / "seed_2")])
    _write(tmp_path, "other/seed_0", _results("den", [90.0], rho=0.3, **demo))
    _write(tmp_path, "other/seed_1", _results("den", [80.0], rho=0.3, seed=1, **demo),
           config=False)
    with pytest.raises(ValueError, match=r"seed_1/results.json has no config.json"):
        report.report([str(tmp_path / "other")])
    # The same setting and seed twice (`make m3` and `make table4` once trained one run into
    # two directories) would count one run as two seeds.
    _write(tmp_path, "twice/den", _results("den", [90.0], rho=0.3, **demo))
    _write(tmp_path, "twice/den_rho0.3", _results("den", [90.5], rho=0.3, **demo))
    with pytest.raises(ValueError, match=r"twice/den/results.json and .*den_rho0.3/results.json "
                                         r"are the same setting with the same seed \(0\)"):
        report.report([str(tmp_path / "twice")])


def test_published_tables_are_complete():
    for table in published.TABLES:
        assert set(table.values) == {m.label for m in table.methods}, table.name
        keys = {key for _, key in table.rows} if table.layout == "tasks" else {
            "accuracy", "flops", "params"}
        for values in table.values.values():
            assert set(values) == keys, table.name


def test_table_4_reports_each_task_on_its_own(tmp_path):
    """Table 4: coarse and fine as two tables, each with that task's accuracy and FLOPs."""
    m3 = dict(scenario="M3", tasks=("cifar100_coarse", "cifar100"))
    nested = _results("nestednet", [84.0, 75.0], **m3)
    nested["tasks"]["cifar100_coarse"].update(flops=1.0e9, params_used=3.7e6)
    nested["tasks"]["cifar100"].update(flops=2.0e9, params_used=7.35e6)
    _write(tmp_path, "nestednet", nested)
    text = report.report([str(tmp_path)])
    coarse, fine = text.split("## Table 4(a)")[1].split("## Table 4(b)")
    row = next(line for line in coarse.splitlines() if line.startswith("| NestedNet |"))
    assert row == "| NestedNet | **84.00** / 84.55 | 1.00G / 1.46G | 7.35M [1] / 7.35M |"
    row = next(line for line in fine.splitlines() if line.startswith("| NestedNet |"))
    assert row == "| NestedNet | **75.00** / 75.84 | 2.00G / 2.91G | 7.35M [1] / 7.35M |"
    assert "| DEN (rho=1) | missing / 84.87 |" in coarse


def test_table_3_baseline_and_quoted_methods_at_84_pixels(tmp_path):
    """Table 3's baseline and quoted rows are the 84x84 network's: an 84-pixel baseline run
    lands beside them, in multiply-adds; DEN at 224 goes to its own table."""
    tasks84 = tuple(f"mini_imagenet84_task{k}" for k in range(10))
    tasks224 = tuple(f"mini_imagenet224_task{k}" for k in range(10))
    m2 = dict(scenario="M2", backbone="SimpleConvNet")
    _write(tmp_path, "84/baseline", _results("baseline", [50.0] * 10, tasks=tasks84,
                                             flops=54.9e6, **m2))
    _write(tmp_path, "224/den", _results("den", [63.0] * 10, rho=1.0, tasks=tasks224, **m2))
    text = report.report([str(tmp_path)])
    small, large = text.split("## Table 3: M2 on Mini-ImageNet at 84x84")[1].split(
        "## Table 3: M2 on Mini-ImageNet at 224x224")
    assert "| Baseline | **50.00** / 51.03 | 27.45M / 27.4M |" in small
    assert "| Routing (quoted by the paper) | not run / 58.97 |" in small
    assert "| DEN_s (rho=1) | missing / 60.78 |" in small  # the paper's name at 84x84
    assert "| DEN (rho=1) | **63.00** / 63.20 |" in large
    assert "Baseline" not in large


def test_runs_no_row_takes_get_a_table_and_seeds_are_paired(tmp_path):
    """A run of a published table's scope that none of its rows takes (DEN at another rho,
    BlockDrop in M1) is reported in a table of its own; rho = 0 matches; methods run over the
    same seeds get their differences paired by seed; an old results.json without method or
    config is refused by name."""
    for seed, (base, den) in enumerate(((70.0, 74.0), (71.0, 76.0), (72.0, 75.0))):
        _write(tmp_path, f"baseline/seed_{seed}",
               _results("baseline", [base] * 3, flops=2.0e9, networks=3, seed=seed))
        _write(tmp_path, f"den_rho1/seed_{seed}",
               _results("den", [den] * 3, rho=1.0, seed=seed))
    _write(tmp_path, "den_rho0.5", _results("den", [73.0, 55.0, 85.0], rho=0.5))
    _write(tmp_path, "den_rho0", _results("den", [77.0, 59.0, 88.0], rho=0.0))
    _write(tmp_path, "blockdrop", _results("blockdrop", [71.5, 52.0, 81.0]))
    text = report.report([str(tmp_path)])
    published_part, rest = text.split("## M1 on WRN-32-4 (runs without a row in Table 2(b))")
    # Paired by seed: DEN minus the baseline, 4, 5, 3: mean 4, t(2) 4.303 x 1/sqrt(3).
    assert "- DEN (rho=1) - Baseline: 4.00 ± 2.48 * points over 3 seeds" in published_part
    assert _line(rest, "| Dataset |") == ("| Dataset | BlockDrop | DEN (rho=0) | "
                                          "DEN (rho=0.5) | DEN + rand sel |")
    assert _line(rest, "| cifar100 |") == "| cifar100 | 71.50 | **77.00** | <u>73.00</u> | 50.00 |"
    assert "Runs in no table" not in text
    for path in ("den_rho0.5", "den_rho0/", "blockdrop"):
        assert path in text
    (tmp_path / "old").mkdir()
    old = _results("den", [70.0] * 3, rho=1.0)
    del old["method_id"]
    (tmp_path / "old" / "results.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"old/results.json names no method .* no config.json"):
        report.report([str(tmp_path / "old")])


def test_seeds_pool_over_unread_settings_pair_by_seed_and_ratios_are_of_means(tmp_path):
    """Methods are paired by seed; two BlockDrop seeds whose config.json differ only in a rho
    BlockDrop does not read are pooled; Table 5's compression is the full FLOPs over the mean
    FLOPs, not the mean of the ratios."""
    from den_tf import builders

    def write_full_config(name, results):
        config = builders.base_config()
        config.method, config.seed = results["method_id"], results["seed"]
        config.rho = results["rho"] if results["rho"] is not None else 1.0
        (tmp_path / name / "config.json").write_text(config.to_json())

    c1 = dict(scenario="C1", backbone="ResNeXt-29 (4x64d)", tasks=("cifar10",))
    for seed, base, den, flops in ((0, 78.0, 81.0, 1.0e9), (1, 77.0, 79.0, 0.5e9),
                                   (2, 79.0, None, None)):
        _write(tmp_path, f"s{seed}/baseline", _results("baseline", [base], seed=seed,
                                                       flops=2.0e9, **c1))
        if den is not None:  # (seed 2 has only the baseline: nothing to pair it with)
            _write(tmp_path, f"s{seed}/den", _results("den", [den], rho=0.1, seed=seed,
                                                      flops=flops, **c1))
    for seed, rho in ((0, 0.1), (1, 0.5)):  # trained with a rho before it was refused
        name = f"blockdrop{seed}"
        _write(tmp_path, name, _results("blockdrop", [75.0 + seed], seed=seed, **c1))
        write_full_config(name, {"method_id": "blockdrop", "seed": seed, "rho": rho})
    text = report.report([str(tmp_path)])
    row = next(line for line in text.splitlines() if line.startswith("| DEN (rho=0.1) |"))
    # FLOPs 1.0G and 0.5G of 2.0G: 2.0 / 0.75 = 2.7x (the mean of the ratios: 3.0x).
    assert row.endswith("| 2.7x (n=2) / 1.9x |"), row
    assert "| BlockDrop | 75.50 ± 6.35 (n=2) / 93.07 |" in text
    # Seed 0: DEN 81 - baseline 78 = 3; seed 1: 79 - 77 = 2: mean 2.5 over two seeds.
    assert "- DEN (rho=0.1) - Baseline: 2.50 ± 6.35 points over 2 seeds" in text
