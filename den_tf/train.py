"""Algorithm 1 of the paper: alternating estimator and selector phases, resumable.

``train_and_evaluate(config, workdir)`` runs ``config.train.stages`` stages. Each stage has
an estimator phase (SGD with Nesterov momentum on the structures of the current distribution
p: Eq. (8) in the first stage, the selector afterwards) and a selector phase (Adam on the
policy gradient of Eq. (7), the estimator frozen with batch norm in inference mode). A phase
ends at a plateau of its validation objective (mean cross-entropy + S(z) under the deployed
structures) or at its step budget; the weights of its best evaluation are kept and its
learning rate decays x0.1 for the next stage. The test split is evaluated once, at the end.

Everything that decides what comes next (stage, phase, step, plateau state, models, both
optimizers, the random generator, the input iterator and the best weights so far) is in the
checkpoint, so rerunning the same command resumes where the run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from den_tf import evaluation, experiment
from den_tf import summaries as summaries_lib
from den_tf.datasets import multitask_dataset, task_dataset
from den_tf.estimator import Estimator
from den_tf.selector import Selector
from den_tf.steps import TrainingSteps

PHASES = ("estimator", "selector")
BASELINES = ("none", "leave_one_out", "greedy")
ESTIMATOR_STRUCTURES = ("sample", "argmax")


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or Inf; the last good checkpoint is left as it was."""


class SimulatedInterruption(RuntimeError):
    """Raised by ``train.halt_after_steps`` to test resumption: nothing is saved."""


@dataclasses.dataclass
class PhaseSettings:
    """What one phase of one stage runs, derived from the config and the stage."""

    stage: int
    phase: str
    max_steps: int
    learning_rate: float


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for training settings outside their allowed values."""
    train = config.train
    choices = (
        ("train.selector.baseline", train.selector.baseline, BASELINES),
        ("train.estimator.structures", train.estimator.structures, ESTIMATOR_STRUCTURES),
        ("train.selector.execution", train.selector.execution, ("masked", "sliced")),
    )
    for name, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    positive = {
        "train.stages": train.stages,
        "train.batch_size": train.batch_size,
        "train.eval_every": train.eval_every,
        "train.log_every": train.log_every,
        "train.checkpoint_every": train.checkpoint_every,
        "train.patience": train.patience,
        "train.estimator.steps": train.estimator.steps,
        "train.selector.steps": train.selector.steps,
        "train.selector.samples": train.selector.samples,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if train.selector.baseline == "leave_one_out" and train.selector.samples < 2:
        raise ValueError(
            "train.selector.baseline='leave_one_out' needs train.selector.samples >= 2"
        )
    if not 0.0 <= train.estimator.tau <= 1.0:
        raise ValueError(f"train.estimator.tau must lie in [0, 1], got {train.estimator.tau}")
    n_tasks = len(config.tasks.split(","))
    if train.task_weights and len(train.task_weights) != n_tasks:
        raise ValueError(
            f"train.task_weights needs one weight per task ({n_tasks}), got {train.task_weights}"
        )


def phase_settings(config: ml_collections.ConfigDict, stage: int, phase: str) -> PhaseSettings:
    """Step budget and learning rate of a phase: the rate decays x ``lr_decay`` per stage."""
    section = config.train[phase]
    steps = section.steps
    if phase == "estimator" and stage == 0 and config.train.estimator.initial_steps:
        steps = config.train.estimator.initial_steps
    return PhaseSettings(stage, phase, steps, section.lr * section.lr_decay**stage)


class Trainer:
    """Holds the models, optimizers, data and state of one run; see the module docstring."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        check_config(config)
        self.config = config
        self.workdir = workdir
        train = config.train
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.estimator, self.selector = experiment.build_models(config)
        self.tasks = self.estimator.tasks
        task_weights = train.task_weights or [1.0] * len(self.tasks)

        self.estimator_optimizer = keras.optimizers.SGD(
            train.estimator.lr, momentum=train.estimator.momentum, nesterov=True
        )
        self.selector_optimizer = keras.optimizers.Adam(train.selector.lr)
        self.estimator_optimizer.build(self.estimator.trainable_variables)
        self.selector_optimizer.build(self.selector.trainable_variables)

        train_data = multitask_dataset(
            self.tasks, "train", train.batch_size, seed=config.seed, training=True,
            **experiment.data_kwargs(config),
        )
        self.iterator = iter(train_data)
        self.generator = tf.random.Generator.from_seed(config.seed)
        self.state = {
            name: tf.Variable(0, dtype=tf.int64, name=name, trainable=False)
            for name in ("stage", "phase", "step", "global_step", "bad_evals")
        }
        self.best_objective = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.best_weights = {
            "estimator": [tf.Variable(v, trainable=False) for v in self.estimator.weights],
            "selector": [tf.Variable(v, trainable=False) for v in self.selector.weights],
        }
        self.checkpoint = tf.train.Checkpoint(
            estimator=self.estimator,
            selector=self.selector,
            estimator_optimizer=self.estimator_optimizer,
            selector_optimizer=self.selector_optimizer,
            iterator=self.iterator,
            generator=self.generator,
            state=self.state,
            best_objective=self.best_objective,
            best_weights=self.best_weights,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=3
        )
        self.writer = summaries_lib.Writer(
            os.path.join(workdir, "tensorboard"), self.tasks, self.estimator.levels
        )
        self.evaluator = evaluation.Evaluator(self.estimator, self.selector, config.rho)
        self.validation_data = [
            task_dataset(task, "validation", train.eval_batch_size, seed=config.seed,
                         training=False, task_id=t, **experiment.data_kwargs(config))
            for t, task in enumerate(self.tasks)
        ]
        self.steps = TrainingSteps(
            config, self.estimator, self.selector, self.estimator_optimizer,
            self.selector_optimizer, task_weights,
        )

    def _epsilon(self, step: int) -> float:
        train = self.config.train.selector
        return train.epsilon * train.epsilon_decay**step

    def _estimator_mode(self, stage: int) -> str:
        return "initial" if stage == 0 else self.config.train.estimator.structures

    def _validate(self, stage: int, phase: str) -> tuple[float, dict]:
        """Mean over tasks of cross-entropy + S(z) on the validation split, under the
        structures the phase is aiming at (the full model before the selector has trained,
        the selector's choice afterwards)."""
        mode = "full" if stage == 0 and phase == "estimator" else "selector"
        report = self.evaluator.evaluate(self.validation_data, mode, self.config.seed)
        return float(np.mean([r["objective"] for r in report.values()])), report

    def _start_phase(self, settings: PhaseSettings) -> None:
        optimizer = (
            self.estimator_optimizer if settings.phase == "estimator" else self.selector_optimizer
        )
        optimizer.learning_rate.assign(settings.learning_rate)

    def _model(self, phase: str) -> keras.Model:
        return self.estimator if phase == "estimator" else self.selector

    def _remember_best(self, phase: str) -> None:
        for saved, variable in zip(self.best_weights[phase], self._model(phase).weights):
            saved.assign(variable)

    def _restore_best(self, phase: str) -> None:
        for saved, variable in zip(self.best_weights[phase], self._model(phase).weights):
            variable.assign(saved)

    def _save(self) -> None:
        self.manager.save(checkpoint_number=int(self.state["global_step"]))

    def run(self) -> None:
        """Trains until every stage is done, resuming from the latest checkpoint if any."""
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
            logging.info("resumed from %s", self.manager.latest_checkpoint)
        while int(self.state["stage"]) < self.config.train.stages:
            stage, phase = int(self.state["stage"]), PHASES[int(self.state["phase"])]
            self._run_phase(phase_settings(self.config, stage, phase))
            if phase == "estimator":
                self.state["phase"].assign(1)
            else:
                self.state["phase"].assign(0)
                self.state["stage"].assign_add(1)
            self.state["step"].assign(0)
            self.state["bad_evals"].assign(0)
            self.best_objective.assign(np.inf)
            self._save()
        self.writer.flush()

    def _run_phase(self, settings: PhaseSettings) -> None:
        train = self.config.train
        self._start_phase(settings)
        phase, stage = settings.phase, settings.stage
        images_per_step = train.batch_size * len(self.tasks)
        last_time, last_step = time.time(), int(self.state["step"])
        while int(self.state["step"]) < settings.max_steps:
            step = int(self.state["step"])
            batch = next(self.iterator)
            seed = self.generator.make_seeds(1)[:, 0]
            if phase == "estimator":
                metrics = self.steps.estimator_step(batch, seed, self._estimator_mode(stage))
            else:
                epsilon = tf.constant(self._epsilon(step), tf.float32)
                metrics = self.steps.selector_step(batch, seed, epsilon)
            if not bool(metrics["finite"]):
                raise NonFiniteLossError(
                    f"non-finite loss ({float(metrics['loss'])}) at stage {stage + 1}, "
                    f"{phase} phase, step {step + 1}; the last good checkpoint "
                    f"{self.manager.latest_checkpoint} is intact"
                )
            self.state["step"].assign_add(1)
            self.state["global_step"].assign_add(1)
            step += 1
            global_step = int(self.state["global_step"])
            if train.halt_after_steps and global_step >= train.halt_after_steps:
                raise SimulatedInterruption(f"halted after {global_step} steps")
            if step % train.log_every == 0 or step == settings.max_steps:
                now = time.time()
                seconds_per_step = (now - last_time) / max(step - last_step, 1)
                last_time, last_step = now, step
                eta = time.strftime(
                    "%H:%M:%S", time.gmtime((settings.max_steps - step) * seconds_per_step)
                )
                logging.info(
                    "stage %d/%d %s step %d/%d | %.0f img/s | loss %.4f | ETA %s",
                    stage + 1, train.stages, phase, step, settings.max_steps,
                    images_per_step / seconds_per_step, float(metrics["loss"]), eta,
                )
                scalars = {k: float(v) for k, v in metrics.items() if k != "finite"}
                scalars["learning_rate"] = settings.learning_rate
                if phase == "selector":
                    scalars["epsilon"] = self._epsilon(step - 1)
                self.writer.scalars(phase, scalars, global_step)
            if step % train.eval_every == 0 or step == settings.max_steps:
                if self._evaluate_and_check_plateau(settings, global_step):
                    break
            if step % train.checkpoint_every == 0:
                self._save()
        self._restore_best(phase)

    def _evaluate_and_check_plateau(self, settings: PhaseSettings, global_step: int) -> bool:
        """Validation at an interval; returns True once the phase has converged."""
        objective, report = self._validate(settings.stage, settings.phase)
        self.writer.evaluation(settings.phase, report, global_step)
        self.writer.level_probabilities(evaluation.mean_level_probabilities(report), global_step)
        if objective < float(self.best_objective) - self.config.train.min_delta:
            self.best_objective.assign(objective)
            self.state["bad_evals"].assign(0)
            self._remember_best(settings.phase)
        else:
            self.state["bad_evals"].assign_add(1)
        logging.info(
            "stage %d %s validation objective %.4f (best %.4f, %d evaluations without gain)",
            settings.stage + 1, settings.phase, objective, float(self.best_objective),
            int(self.state["bad_evals"]),
        )
        return int(self.state["bad_evals"]) >= self.config.train.patience


def restore_for_evaluation(config: ml_collections.ConfigDict, workdir: str):
    """The models of the latest checkpoint in ``workdir`` (for ``--mode=evaluate``)."""
    estimator, selector = experiment.build_models(config)
    directory = os.path.join(workdir, "checkpoints")
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {directory}; train first (--mode=train)")
    tf.train.Checkpoint(estimator=estimator, selector=selector).restore(latest).expect_partial()
    return estimator, selector


def evaluate_and_report(
    config: ml_collections.ConfigDict, workdir: str, estimator: Estimator, selector: Selector
) -> dict:
    """Evaluates on the test split once and writes results.json and results.md."""
    tasks = estimator.tasks
    test_data = [
        task_dataset(task, "test", config.train.eval_batch_size, seed=config.seed,
                     training=False, task_id=t, **experiment.data_kwargs(config))
        for t, task in enumerate(tasks)
    ]
    results = evaluation.results(config, estimator, selector, test_data)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    markdown = evaluation.results_markdown(results)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown)
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) in ``workdir``, then evaluates on the test split once."""
    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(config, workdir)
    trainer.run()
    return evaluate_and_report(config, workdir, trainer.estimator, trainer.selector)
