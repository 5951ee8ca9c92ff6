"""How noisy is the selector's gradient? Its signal-to-noise ratio on a trained run.

    python -m den_tf.diagnose --config=experiments/demo.py --workdir=DIR [--draws=32] \\
        [--samples=2,4,8] [--baselines=none,leave_one_out,greedy] [--epsilon=0] \\
        [--gradients=reinforce,straight_through]

Restores the latest checkpoint of DIR, takes one training batch, and for every gradient
estimator (``policy.GRADIENTS``; the policy gradient with every baseline) and number of
samples |Z| draws the gradient estimate of one selector step ``draws`` times with
independent structures. Prints one JSON line each: the squared norm of the expected gradient
(signal), the expected squared deviation of one draw from it (noise), both unbiased, their
ratio, and the mean cosine between one draw and the mean of the draws. A step whose ratio is
far below 1 mostly follows noise. (The straight-through gradient is biased: its signal is
that of its own expectation, not of the expected cost's gradient.)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags

from den_tf import builders, policy, progress, train
from den_tf.datasets import multitask_dataset
from den_tf.steps import SelectorStep

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags (only when run: importing never collides with others)."""
    config_flags.DEFINE_config_file("config", None, "The run's config.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Work directory of a trained run.")
    flags.DEFINE_integer("draws", 32, "Independent gradient estimates per setting.")
    flags.DEFINE_list("samples", ["2", "4", "8"], "Numbers of samples |Z| per instance.")
    flags.DEFINE_list("baselines", ["none", "leave_one_out", "greedy"], "Baselines to compare.")
    flags.DEFINE_float("epsilon", 0.0, "Exploration of the sampled structures.")
    flags.DEFINE_list("gradients", ["reinforce"], "Gradient estimators (policy.GRADIENTS).")
    flags.mark_flags_as_required(["config", "workdir"])


def gradient_snr(draws: Sequence[Sequence[np.ndarray]]) -> dict:
    """Signal, noise and their ratio over n >= 2 draws of a gradient (each a list of arrays).

    noise: the expected squared distance of one draw from the true mean (unbiased, ddof 1);
    signal: the squared norm of the true mean, estimated without the noise that the mean of n
    draws still carries (||mean||^2 - noise / n, floored at 0); snr = signal / noise.
    """
    flat = np.stack([np.concatenate([np.ravel(g) for g in draw]) for draw in draws])
    n = len(flat)
    if n < 2:
        raise ValueError(f"need at least 2 draws, got {n}")
    mean = flat.mean(axis=0)
    noise = float(((flat - mean) ** 2).sum(axis=1).sum() / (n - 1))
    signal = max(float(mean @ mean) - noise / n, 0.0)
    norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(mean)
    cosine = float(np.mean(flat @ mean / np.where(norms > 0, norms, 1.0)))
    return {"signal": signal, "noise": noise, "snr": signal / noise if noise else float("inf"),
            "cosine_to_mean": cosine}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    progress.show_project_info_only()
    config = FLAGS.config
    builders.check_command_line(FLAGS["config"])
    builders.require_selector(config, "the gradient diagnosis")
    # In float32 whatever the run trained in: these gradients are taken without loss
    # scaling, and under float16 the small ones would round to zero.
    estimator, selector = train.restore_for_evaluation(config, FLAGS.workdir,
                                                       precision="float32")
    batch = next(iter(multitask_dataset(
        estimator.tasks, "train", config.train.batch_size, seed=config.seed, training=True,
        **builders.data_kwargs(config),
    )))
    weights = [w.numpy() for w in selector.weights]
    unknown = set(FLAGS.gradients) - set(policy.GRADIENTS)
    if unknown:
        raise app.UsageError(f"--gradients must be among {policy.GRADIENTS}, got {unknown}")
    settings = [(gradient, baseline, samples)
                for gradient in FLAGS.gradients
                for baseline in (FLAGS.baselines if gradient == "reinforce" else ["none"])
                for samples in (int(s) for s in FLAGS.samples)]
    for gradient, baseline, samples in settings:
        step_settings = dataclasses.replace(builders.step_settings(config), gradient=gradient,
                                            baseline=baseline, samples=samples)
        step = SelectorStep(estimator, selector, keras.optimizers.Adam(), step_settings)
        draws = []
        for draw in range(FLAGS.draws):
            grads = step.gradients(batch, tf.constant([draw, 17], tf.int64), FLAGS.epsilon)
            draws.append([g.numpy() for g in grads])
            selector.set_weights(weights)  # undo the batch-norm updates of the draw
        print(json.dumps({"gradient": gradient,
                          "baseline": baseline if gradient == "reinforce" else None,
                          "samples": samples,
                          "draws": FLAGS.draws, **gradient_snr(draws)}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
