"""The command line: ``--mode=summary`` prints one JSON object; bad overrides stop early."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def _run(*args, command="den_tf.main"):
    return subprocess.run(
        [sys.executable, "-m", command, *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )


def test_summary_prints_the_paper_figures_as_json():
    result = _run("--config=experiments/m1_wrn.py", "--mode=summary",
                  "--config.model.levels=4")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert summary["backbone"] == "WRN-32-4"
    assert abs(summary["params"]["paper"] - 7.35e6) / 7.35e6 < 0.005
    assert summary["params"]["total"] > summary["params"]["paper"]
    assert list(summary["tasks"]) == ["cifar100", "tiny_imagenet", "stl10"]
    for name, size, classes in (("cifar100", 32, 100), ("tiny_imagenet", 64, 200),
                                ("stl10", 96, 10)):
        task = summary["tasks"][name]
        assert (task["input_size"], task["num_classes"]) == (size, classes)
        assert abs(task["flops_full"] - 2.13e9) / 2.13e9 < 0.005
        assert task["flops_full"] == 2 * task["macs_full"]
    assert len(summary["blocks"]) == 15
    assert all(len(b["level_flops"]) == 4 and b["level_flops"][0] == 0 for b in summary["blocks"])
    assert summary["selector"]["params"] > 0 and summary["selector"]["flops"] > 0


def test_unknown_config_key_fails_before_any_work():
    result = _run("--config=experiments/m1_wrn.py", "--config.model.widht=3")
    assert result.returncode != 0
    assert "widht" in result.stderr
    assert result.stdout == ""


def test_a_setting_the_method_does_not_read_fails_before_any_work(tmp_path):
    for command in ("den_tf.main", "den_tf.sweep"):
        result = _run("--config=experiments/demo.py", "--config.method=baseline",
                      "--config.rho=0.5", f"--workdir={tmp_path / 'run'}", command=command)
        assert result.returncode != 0
        assert "--config.rho: method 'baseline' has no selector" in result.stderr
        assert "Traceback" not in result.stderr  # a usage error, not a crash
        assert not (tmp_path / "run").exists()


def test_log_filter_keeps_info_from_the_package_directory_only():
    import logging
    import os

    from den_tf import progress

    def passes(path, level=logging.INFO):
        record = logging.LogRecord("x", level, path, 1, "message", (), None)
        return progress.ProjectInfoOnly().filter(record)

    inside = os.path.join(progress.PACKAGE_DIR, "train.py")
    # A checkout folder called den_tf holds the virtual environment: TensorFlow's INFO lines
    # come from a path with "den_tf" in it, and must still be filtered out.
    outside = str(ROOT.parent / "den_tf" / ".venv" / "lib" / "tensorflow" / "checkpoint.py")
    assert passes(inside)
    assert not passes(outside)
    assert passes(outside, logging.WARNING)


def test_scenario_targets_train_the_runs_their_tables_report():
    """``make m3`` and ``make c1`` write the DEN run that ``make table4`` / ``table5`` read."""
    import re
    import shutil

    if shutil.which("make") is None:
        import pytest
        pytest.skip("make is not installed")

    def dry_run(*args):
        # (under `make test` a nested make would also print the directories it enters)
        result = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    for scenario, table, extra in (("m3", "table4", ()), ("c1", "table5", ()),
                                   ("c1", "table5", ("DATASET=cifar100",))):
        (trained,) = re.findall(r"den_tf\.main .*--workdir=(\S+)", dry_run(scenario, *extra))
        # The table targets loop over configs ($c) and rhos ($r) in the shell.
        commands = dry_run(table, *extra).replace("$c", "resnext8").replace("$r", "0.1")
        assert f"test -f {trained}/results.json" in commands, (scenario, trained)
