"""Command line of den_tf.

    python -m den_tf.main --config=experiments/<name>.py --workdir=DIR \\
        [--config.key=value ...] [--analyze]
        [--mode=train|evaluate|export|export_lite|budget|summary]

``train`` runs Algorithm 1 (resuming from DIR/checkpoints if a run stopped) and evaluates
on the test split once; ``evaluate`` re-evaluates the latest checkpoint (of a run stopped
before its last stage: into DIR/interim_results.json, as results.json marks a finished run);
``export`` writes a finished run as a SavedModel with one serving signature per task to
DIR/export; ``export_lite`` writes it as one TensorFlow Lite model, a signature per block and
level, served one image at a time by ``den_tf.lite.LiteNetwork`` (DIR/export_lite);
``budget`` measures the test accuracy of a finished run at 10 FLOPs budgets for three
choosers of structures (DIR/budget.json and budget.png); ``summary`` prints the model figures
as one JSON object on stdout (logs go to stderr). Every mode but ``summary`` refuses a DIR
whose run was made with other settings (``train.check_run_config``; logging, checkpoint
intervals, data location, the strategy and settings its method does not read may differ).
``--analyze`` ends a ``train`` or ``evaluate`` run by writing its analysis page
(``den_tf.analyze``) in the same process, with the test images it already made. An unknown
config key, a value of the wrong type, or a key the run would not read
(``builders.unread_settings``: ``--config.rho`` for a method without a selector) stops the
program before any work starts.
"""

from __future__ import annotations

import json
import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from den_tf import analyze, budget, builders, cost, evaluation, export, progress, train

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard and results.")
    flags.DEFINE_enum("mode", "train",
                      ["train", "evaluate", "export", "export_lite", "budget", "summary"],
                      "What to do.")
    flags.DEFINE_bool("analyze", False, "After --mode=train or evaluate, write the run's "
                      "analysis page (as python -m den_tf.analyze) in the same process.")
    flags.mark_flags_as_required(["config"])


def run(config: ml_collections.ConfigDict, workdir: str, mode: str, analysis: bool = False) -> dict:
    """``--mode=train`` or ``evaluate``: the results, after writing them; with ``analysis``
    the run's analysis page too (``analyze.analyze``)."""
    if mode not in ("train", "evaluate"):
        raise ValueError(f"mode must be 'train' or 'evaluate', got {mode!r}")
    if analysis:  # (refused before any work, not after the training it would follow)
        builders.require_selector(config, "--analyze")
    if analysis and mode == "evaluate" and not train.training_finished(config, workdir):
        raise ValueError(f"the run in {workdir} has not finished training: its analysis page "
                         "would be of another evaluation (finish it first: --mode=train)")
    if mode == "train":
        results = train.train_and_evaluate(config, workdir)
    else:
        results = train.evaluate_run(config, workdir)
    prefix = train.INTERIM if "unfinished" in results else ""
    logging.info("results written to %s/%sresults.json", workdir, prefix)
    if analysis:
        logging.info("analysis written to %s", analyze.analyze(workdir, config))
    return results


def main(argv):
    progress.show_project_info_only()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    builders.check_command_line(FLAGS["config"])
    if FLAGS.mode == "summary":
        if FLAGS.analyze or FLAGS.workdir:
            raise app.UsageError("--mode=summary takes neither --workdir nor --analyze")
        estimator, selector = builders.build_models(config)
        json.dump(cost.model_summary(estimator, selector), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not FLAGS.workdir:
        raise app.UsageError(f"--workdir is required for --mode={FLAGS.mode}")
    if FLAGS.analyze and FLAGS.mode not in ("train", "evaluate"):
        raise app.UsageError(f"--analyze goes with --mode=train or evaluate, not {FLAGS.mode}")
    if FLAGS.mode == "export":
        path, names = export.export_run(config, FLAGS.workdir)
        logging.info("SavedModel written to %s; signatures: %s", path, ", ".join(names))
        return
    if FLAGS.mode == "export_lite":
        logging.info("TFLite model written to %s", export.export_lite_run(config, FLAGS.workdir))
        return
    if FLAGS.mode == "budget":
        curve = train.measure_budgets(config, FLAGS.workdir)
        analyze.plot_budget_curve(curve, os.path.join(FLAGS.workdir, "budget.png"))
        print(budget.curve_markdown(curve))
        return
    results = run(config, FLAGS.workdir, FLAGS.mode, FLAGS.analyze)
    print(evaluation.results_markdown(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
