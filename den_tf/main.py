"""Command line: ``python -m den_tf.main --config=experiments/<name>.py --mode=summary``.

Config fields are overridden with ``--config.<key>=<value>``; an unknown key or a value of
the wrong type stops the program before any work starts. ``summary`` prints one JSON object
on stdout (logs go to stderr).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from den_tf import cost, experiment

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_enum("mode", "summary", ["summary"], "What to do.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    estimator, selector = experiment.build_models(FLAGS.config)
    json.dump(cost.model_summary(estimator, selector), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    app.run(main)
