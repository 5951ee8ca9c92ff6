"""Algorithm 1 of the paper: alternating estimator and selector phases, resumable.

``train_and_evaluate(config, workdir)`` runs ``config.train.stages`` stages. Each stage has
an estimator phase (SGD with Nesterov momentum on the structures of the current distribution
p: Eq. (8) in the first stage, the selector afterwards) and a selector phase (Adam on the
policy gradient of Eq. (7), the estimator frozen with batch norm in inference mode). A phase
ends at a plateau of its validation objective (mean cross-entropy + S(z) under the deployed
structures) or at its step budget; the weights of its best evaluation are kept and its
learning rate decays x0.1 for the next stage. The test split is evaluated once, at the end.

The phases are objects (``phases.py``, built by ``builders.build_phases``); the loop here runs
any of them the same way, so the compared methods (``methods.py``: the baseline, NestedNet,
PackNet*, BlockDrop) train in this loop too, with their own phases.

Everything that decides what comes next (stage, phase, step, the models, the optimizers, the
plateaus with their best weights, the random generator and the input iterator) is in the
checkpoint, written every ``checkpoint_every`` global steps and at every phase end, so
rerunning the same command resumes where the run stopped.

Under a distribution strategy (``config.strategy``) the models, optimizers and plateaus are
mirrored, every replica reads its own input pipeline (``distribute_datasets_from_function``)
and the steps run on all replicas; validation and test run on one device. TensorFlow cannot
checkpoint a distributed iterator, so a run resumed under a strategy with several replicas
(or from a checkpoint written under one) restarts its input with a seed derived from the
global step: no batch order is replayed, but the order differs from an uninterrupted run.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import time
from collections.abc import Callable, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from den_tf import budget, builders, distribute, evaluation, files, methods
from den_tf import summaries as summaries_lib
from den_tf.datasets import multitask_dataset, sources, task_dataset
from den_tf.phases import Phase
from den_tf.tasks import get_tasks


class NonFiniteLossError(RuntimeError):
    """A training loss, its gradients or a validation objective became NaN or Inf; the last
    good checkpoint is left as it was."""


# Settings that change where and how a run is computed or logged, not what it trains: a run
# may resume, or be evaluated and exported, under other values of these (check_run_config).
# Not train.eval_batch_size: the random controls draw with a seed per evaluation batch, so
# another batch size would report other draws under the same run.
RESUMABLE_SETTINGS = frozenset({
    "scenario", "data.data_dir", "data.download", "train.log_every", "train.checkpoint_every",
    "strategy", "tpu", "deterministic", "jit_compile",
})


def config_differences(saved: dict, current: dict, prefix: str = "",
                       ignored: frozenset[str] = RESUMABLE_SETTINGS) -> list[str]:
    """Each setting (a dotted key) whose value differs between two configs as dicts (a
    config's ``to_json``), outside ``ignored`` (a key there covers the fields under it), as
    'key: saved there, current here' ('missing' for a key one of them lacks)."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        name = prefix + key
        old, new = saved.get(key, "missing"), current.get(key, "missing")
        if name in ignored:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, name + ".", ignored)
        elif old != new:
            differences.append(f"{name}: {old!r} there, {new!r} here")
    return differences


def ignored_differences(*configs: ml_collections.ConfigDict | dict) -> frozenset[str]:
    """What may differ between runs of ``configs`` (a config, or one saved as a dict): where
    and how a run is computed or logged (``RESUMABLE_SETTINGS``), and the settings that none
    of their methods reads (``builders.unread_settings``; a run trained with ``--config.rho``
    for BlockDrop before that was refused, say). A saved config that this version cannot
    read (an older one, without the fields that say what its method reads) reads
    everything: stricter, never looser."""
    unread = None
    for config in configs:
        try:
            keys = set(builders.unread_settings(ml_collections.ConfigDict(config)))
        except (AttributeError, KeyError, TypeError, ValueError):
            keys = set()
        unread = keys if unread is None else unread & keys
    return RESUMABLE_SETTINGS | frozenset(unread or ())


# Beside config.json: the TFDS version of each dataset the run reads (``data_versions``).
DATA_VERSIONS = "data_versions.json"


def check_run_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises ValueError, naming the settings, if ``workdir`` holds a run (its config.json)
    made with settings that differ from ``config``'s (but for ``ignored_differences``):
    resuming, evaluating or exporting it under them would mix two configs, or label one run
    with another's settings."""
    files.check_local(workdir)
    _check_data_versions(config, workdir)
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    differences = config_differences(saved, json.loads(config.to_json()),
                                     ignored=ignored_differences(config, saved))
    if differences:
        raise ValueError(
            f"{workdir} holds a run made with other settings ({path}): "
            + "; ".join(differences)
            + ". Use that run's settings, or another --workdir for these.")


def _check_data_versions(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises ValueError if ``workdir`` records other dataset versions (``DATA_VERSIONS``, also
    in a branched seed that has no config.json yet) than ``config`` reads."""
    path = os.path.join(workdir, DATA_VERSIONS)
    if not os.path.exists(path):
        return
    with open(path) as f:
        recorded = json.load(f)
    if recorded != (current := data_versions(config)):
        raise ValueError(
            f"{workdir} holds a run made on other versions of its datasets ({path}: "
            f"{recorded}; read now: {current}): a new version may number its examples "
            "otherwise, and so carve another validation split. Finish the run on the data it "
            "was made on, or start it again in another --workdir.")


def data_versions(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The TFDS name and version of each prepared dataset that ``config``'s tasks read (none for
    in-memory sources such as the demo's), as ``sources.stored_version``."""
    data_dir = builders.data_kwargs(config)["data_dir"]
    versions = {task.dataset: sources.stored_version(task.dataset, data_dir)
                for task in get_tasks(config.tasks)}
    return {dataset: version for dataset, version in sorted(versions.items()) if version}


def latest_checkpoint(directory: str) -> str | None:
    """The latest checkpoint listed in ``directory`` (None when it lists none). Raises
    FileNotFoundError when that checkpoint's files are missing: ``tf.train.latest_checkpoint``
    returns None then, and a run would start again from scratch over its own work."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None or not state.model_checkpoint_path:
        return None
    latest = state.model_checkpoint_path
    if not tf.io.gfile.exists(latest + ".index"):
        raise FileNotFoundError(
            f"{directory}/checkpoint lists {latest}, whose files are missing; restore them, or "
            "point that file at a checkpoint that is there (or remove the directory to start "
            "again)")
    return latest


def stages_done(workdir: str) -> int:
    """The stages of Algorithm 1 that the run in ``workdir`` has completed (its latest
    checkpoint's; 0 without one)."""
    latest = latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if latest is None:
        return 0
    return int(tf.train.load_variable(latest, "state/stage/.ATTRIBUTES/VARIABLE_VALUE"))


def training_finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether the run in ``workdir`` has trained all its stages (every network's, for the
    separate-networks baseline)."""
    if _separate_networks(config):
        return all(training_finished(single, os.path.join(workdir, "networks", single.tasks))
                   for single in _single_task_configs(config))
    return stages_done(workdir) >= builders.stages(config)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: stages, batch sizes and the intervals of its side tasks."""

    stages: int
    batch_size: int
    eval_batch_size: int
    log_every: int
    eval_every: int
    checkpoint_every: int

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value < 1:
                raise ValueError(f"train.{field.name} must be >= 1, got {value}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> LoopSettings:
        return cls(**{f.name: config.train[f.name] for f in dataclasses.fields(cls)})


StepHook = Callable[["Trainer"], None]


class Trainer:
    """Holds the models, phases, data and state of one run; see the module docstring.

    ``step_hooks`` are called after every training step with the trainer (its ``state``
    holds stage, phase, step and global_step); an exception raised there stops the run as
    an interruption would.
    """

    def __init__(
        self, config: ml_collections.ConfigDict, workdir: str, step_hooks: Sequence[StepHook] = ()
    ):
        self.config = config
        self.loop = LoopSettings.from_config(config)
        self.stages = builders.stages(config)
        self.step_hooks = tuple(step_hooks)
        files.check_local(workdir)
        # A multi-worker strategy must exist before TensorFlow runs any op.
        self.strategy = distribute.make_strategy(config.strategy, config.tpu)
        self.workdir = distribute.output_dir(self.strategy, workdir)
        # Every worker resumes from the chief's checkpoints: a worker's own may lag or be lost,
        # and workers resumed at different steps would drift apart or wait on each other.
        self.resume_from = os.path.join(workdir, "checkpoints")
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.distributed = distribute.is_distributed(self.strategy)
        distribute.per_replica_batch_size(self.loop.batch_size, self.strategy.num_replicas_in_sync)
        with builders.precision(config.precision), self.strategy.scope():
            self.estimator, self.selector = builders.build_models(config)
            self.phases: tuple[Phase, ...] = builders.build_phases(
                config, self.estimator, self.selector
            )
        self.tasks = self.estimator.tasks

        # A distributed iterator cannot be checkpointed: it is made when the run starts.
        self.iterator = None if self.distributed else self._input(global_step=0)
        self._saved_step = None  # the global step of the last checkpoint written or resumed from
        self.generator = tf.random.Generator.from_seed(config.seed)
        self.state = {
            name: tf.Variable(0, dtype=tf.int64, name=name, trainable=False)
            for name in ("stage", "phase", "step", "global_step")
        }
        self.checkpoint = tf.train.Checkpoint(**self._checkpointed(with_input=True))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.workdir, "checkpoints"), max_to_keep=3)
        self.writer = summaries_lib.Writer(
            os.path.join(self.workdir, "tensorboard"), self.tasks, self.estimator.levels
        )
        self.evaluator = evaluation.Evaluator(self.estimator, self.selector, config.rho,
                                              builders.instance_cost(config))
        self.validation_data = [
            task_dataset(task, "validation", self.loop.eval_batch_size, seed=config.seed,
                         training=False, task_id=t, **builders.data_kwargs(config))
            for t, task in enumerate(self.tasks)
        ]

    def _checkpointed(self, with_input: bool) -> dict:
        """What a checkpoint holds: the models, the loop state and every phase's optimizer and
        plateau, and the input iterator when it can be saved."""
        saved = dict(
            estimator=self.estimator,
            **({"selector": self.selector} if self.selector is not None else {}),
            generator=self.generator,
            state=self.state,
            **{f"{p.name}_optimizer": p.optimizer for p in self.phases},
            **{f"{p.name}_plateau": p.plateau for p in self.phases},
        )
        if with_input and not self.distributed:
            saved["iterator"] = self.iterator
        return saved

    def _input(self, global_step: int):
        """An iterator over the training batches, starting fresh: one input pipeline per worker,
        each on its shard of the training examples. A run that starts at global step 0 shuffles
        and augments with ``config.seed`` (plus the pipeline index); a fresh start later on (a
        resume that could not restore the input position) with a seed derived from the step, so
        that it does not replay the first batches. The validation split is always carved with
        ``config.seed``."""
        config = self.config
        order_seed = config.seed + 1_000_003 * global_step

        def dataset(batch_size: int, pipelines: int, pipeline: int) -> tf.data.Dataset:
            # config.seed carves the validation split, the same for every pipeline and restart.
            return multitask_dataset(
                self.tasks, "train", batch_size, seed=config.seed, training=True,
                order_seed=order_seed + pipeline, shard=(pipelines, pipeline),
                **builders.data_kwargs(config),
            )

        if not self.distributed:
            return iter(dataset(self.loop.batch_size, 1, 0))
        return iter(self.strategy.distribute_datasets_from_function(
            lambda context: dataset(
                context.get_per_replica_batch_size(self.loop.batch_size),
                context.num_input_pipelines, context.input_pipeline_id,
            )
        ))

    def _resume(self) -> None:
        """Restores the latest checkpoint of the chief, if any, and makes the input iterator
        where it was not restored."""
        latest = latest_checkpoint(self.resume_from)
        if latest is None and self.manager.latest_checkpoint is not None:
            raise ValueError(
                f"this worker has checkpoints ({self.manager.latest_checkpoint}) but the "
                f"chief's directory {self.resume_from} has none: every worker must see the "
                "chief's work directory (a shared file system)")
        if latest is None:
            if self.distributed:
                self.iterator = self._input(global_step=0)
            return
        saved = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
        restores_input = "iterator" in saved and not self.distributed
        objects = self._checkpointed(with_input=restores_input)
        try:
            tf.train.Checkpoint(**objects).restore(latest).assert_existing_objects_matched()
        except tf.errors.NotFoundError as error:
            if not restores_input or "Failed to restore dataset iterator" not in error.message:
                raise
            raise RuntimeError(
                f"{latest} holds an input position that this version's input pipeline cannot "
                "restore: the run was started by another version of den_tf, whose training "
                "order and validation split may differ (before 2026-12-07 a TFDS split's "
                "examples were numbered in TFDS's interleaved read order, not their stored "
                "order). Finish the run with the version that started it, or start it again in "
                "another --workdir.") from error
        logging.info("resumed from %s", latest)
        self._saved_step = int(self.state["global_step"])
        self.writer.skip_written()
        if not restores_input:
            global_step = int(self.state["global_step"])
            self.iterator = self._input(global_step)
            if not self.distributed:
                self.checkpoint.iterator = self.iterator
            logging.warning("the input position of %s cannot be restored here (a distributed "
                            "iterator): the input restarts with the seed of step %d",
                            latest, global_step)

    def _save(self, at_interval: bool) -> None:
        """Saves the state as checkpoint ``ckpt-<global step>``: at a phase end, or
        (``at_interval``) once ``checkpoint_every`` global steps have passed since the last
        checkpoint written or resumed from. Never again at the step of the last one: a resume's
        checkpoint holds this very state (every phase trains at least one step, so a phase end
        is a new step), and writing it again would put the only copy at risk if the write were
        cut off."""
        step = int(self.state["global_step"])
        last = self._saved_step
        if step == last or (at_interval and last is not None
                            and step - last < self.loop.checkpoint_every):
            return
        self.manager.save(checkpoint_number=step)
        self._saved_step = step

    def run(self) -> None:
        """Trains until every stage is done, resuming from the latest checkpoint if any."""
        self._resume()
        while int(self.state["stage"]) < self.stages:
            index = int(self.state["phase"])
            phase = self.phases[index]
            self.run_phase(phase, int(self.state["stage"]))
            if index + 1 < len(self.phases):
                self.state["phase"].assign(index + 1)
            else:
                self.state["phase"].assign(0)
                self.state["stage"].assign_add(1)
            self.state["step"].assign(0)
            phase.plateau.reset()
            self._save(at_interval=False)
        self.writer.flush()

    def run_phase(self, phase: Phase, stage: int) -> None:
        """Trains one phase from ``state['step']`` until its plateau or step budget, then
        keeps the weights of its best validation."""
        phase.start(stage)
        max_steps = phase.max_steps(stage)
        images_per_step = self.loop.batch_size * phase.tasks_trained(len(self.tasks))
        # Sums of the step metrics since the last log line, in Python: eager Keras metrics
        # cost about 8 ms a step on 2 cores, a tenth of a demo step.
        sums: dict[str, float] = collections.defaultdict(float)
        logged_steps = 0
        last_time, last_step = time.time(), int(self.state["step"])
        while int(self.state["step"]) < max_steps:
            # The state after the previous step, every checkpoint_every global steps.
            self._save(at_interval=True)
            step = int(self.state["step"])
            batch = next(self.iterator)
            seed = self.generator.make_seeds(1)[:, 0]
            metrics = phase.step(batch, seed, stage, step)
            if not bool(metrics["finite"]):
                loss = float(metrics["loss"])
                what = (f"non-finite gradients (of a finite loss, {loss})" if np.isfinite(loss)
                        else f"non-finite loss ({loss})")
                raise NonFiniteLossError(
                    f"{what} at stage {stage + 1}, {phase.name} phase, step {step + 1}; the "
                    f"last good checkpoint {self.manager.latest_checkpoint} is intact"
                )
            for name, value in metrics.items():
                if name != "finite":
                    sums[name] += float(value)
            logged_steps += 1
            self.state["step"].assign_add(1)
            self.state["global_step"].assign_add(1)
            step += 1
            global_step = int(self.state["global_step"])
            converged = False
            if step % self.loop.eval_every == 0 or step == max_steps:
                converged = self._validate(phase, stage, global_step)
            # A phase that converges between logging steps logs its last, shorter window.
            if step % self.loop.log_every == 0 or step == max_steps or converged:
                now = time.time()
                seconds_per_step = (now - last_time) / max(step - last_step, 1)
                last_time, last_step = now, step
                scalars = {name: total / logged_steps for name, total in sums.items()}
                sums.clear()
                logged_steps = 0
                logging.info(
                    "stage %d/%d %s step %d/%d | %.0f img/s | loss %.4f | ETA %s",
                    stage + 1, self.stages, phase.name, step, max_steps,
                    images_per_step / seconds_per_step, scalars["loss"],
                    time.strftime("%H:%M:%S", time.gmtime((max_steps - step) * seconds_per_step)),
                )
                scalars.update(phase.schedule_scalars(stage, step - 1))
                self.writer.scalars(phase.name, scalars, global_step)
            for hook in self.step_hooks:
                hook(self)
            if converged:
                break
        phase.plateau.restore_best()

    def _validate(self, phase: Phase, stage: int, global_step: int) -> bool:
        """Mean over the phase's report (tasks, or tasks and levels) of the objective (the mean
        cost R: cross-entropy + S(z) for DEN) on the validation split, under the structures
        the phase aims at (in a multi-worker run, the first replica's worker's, so that
        every worker decides alike); returns True once the phase has converged."""
        report = phase.validate(self.evaluator, self.validation_data, self.config.seed, stage)
        objective = distribute.agreed(
            self.strategy, float(np.mean([r["objective"] for r in report.values()])))
        if not np.isfinite(objective):  # (no evaluation would beat it: stale best weights)
            raise NonFiniteLossError(
                f"non-finite validation objective ({objective}) at stage {stage + 1}, "
                f"{phase.name} phase; the last good checkpoint "
                f"{self.manager.latest_checkpoint} is intact")
        self.writer.evaluation(phase.name, report, global_step)
        if all("level_probabilities" in entry for entry in report.values()):  # the selector ran
            self.writer.level_probabilities(evaluation.mean_level_probabilities(report),
                                            global_step)
        converged = phase.plateau.update(objective)
        logging.info(
            "stage %d %s validation objective %.4f (best %.4f, %d evaluations without gain)",
            stage + 1, phase.name, objective, float(phase.plateau.best.numpy()),
            int(phase.plateau.evaluations_without_gain.numpy()),
        )
        return converged


def restore_for_evaluation(config: ml_collections.ConfigDict, workdir: str,
                           finished: bool = False, precision: str | None = None):
    """The models of the latest checkpoint in ``workdir`` (for ``--mode=evaluate``), after
    checking that the run was made with ``config``'s settings (``check_run_config``) and,
    with ``finished``, that it has trained all its stages; the selector is None for a
    fixed-structure method. They compute in ``precision`` (default: the run's own,
    ``config.precision``, so that they score as the trained run did)."""
    check_run_config(config, workdir)
    directory = os.path.join(workdir, "checkpoints")
    latest = latest_checkpoint(directory)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {directory}; train first (--mode=train)")
    if finished and (done := stages_done(workdir)) < builders.stages(config):
        raise ValueError(f"the run in {workdir} has not finished training ({done} of "
                         f"{builders.stages(config)} stages done); finish it first: --mode=train "
                         f"resumes it")
    with builders.precision(precision or config.precision):
        estimator, selector = builders.build_models(config)
    models = {"estimator": estimator, **({"selector": selector} if selector is not None else {})}
    # Every weight must come from the checkpoint: a model missing from it (or renamed since)
    # would otherwise be scored with its initial weights. The optimizers' slots are not read.
    status = tf.train.Checkpoint(**models).restore(latest).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(f"{latest} does not hold every weight of {sorted(models)} as this "
                         f"config builds them: {error}") from None
    return estimator, selector


def evaluator_for(config: ml_collections.ConfigDict, workdir: str,
                  finished: bool = False) -> evaluation.Evaluator:
    """An evaluator of the latest checkpoint's models (``restore_for_evaluation``), scoring
    with the run's cost R."""
    estimator, selector = restore_for_evaluation(config, workdir, finished)
    return evaluation.Evaluator(estimator, selector, config.rho, builders.instance_cost(config))


def test_datasets(config: ml_collections.ConfigDict, tasks) -> list[tf.data.Dataset]:
    """The test split of every task, in evaluation batches, in a fixed order."""
    return [
        task_dataset(task, "test", config.train.eval_batch_size, seed=config.seed,
                     training=False, task_id=t, **builders.data_kwargs(config))
        for t, task in enumerate(tasks)
    ]


# The prefix of an unfinished run's evaluation files: results.json marks a finished run.
INTERIM = "interim_"


def evaluate_and_report(
    config: ml_collections.ConfigDict, workdir: str, evaluator: evaluation.Evaluator,
    unfinished: str | None = None,
) -> dict:
    """Evaluates on the test split once and writes results.json, results.md and the
    per-instance record predictions.npz; for a run that has not finished (``unfinished``: how
    far it got, stored in the results), the same files named after ``INTERIM``."""
    prefix = INTERIM if unfinished else ""
    estimator = evaluator.estimator
    test_data = test_datasets(config, estimator.tasks)
    level_reports = None
    if evaluator.selector is None:
        levels = methods.task_levels(config.method, estimator, config.task_order)
        results, report = evaluation.fixed_structure_results(
            config, evaluator, test_data, levels, config.method)
    else:
        results, report, level_reports = evaluation.results(config, evaluator, test_data)
    if unfinished:
        results["unfinished"] = unfinished
    evaluation.write_predictions(os.path.join(workdir, prefix + "predictions.npz"), report,
                                 level_reports)
    return write_results(workdir, results, prefix)


def evaluate_run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``--mode=evaluate``: evaluates the latest checkpoint and rewrites the run's results
    (of every network of a separate-networks baseline, which must all have finished). A run
    stopped before its last stage is evaluated as it stands into interim_results.json,
    interim_results.md and interim_predictions.npz, with ``unfinished`` ('k of S stages'):
    results.json marks a finished run, and a sweep skips the seeds it marks."""
    if _separate_networks(config):
        check_run_config(config, workdir)
        _write_config(config, workdir)
        return _combine(workdir, [
            evaluate_and_report(single, path, evaluator_for(single, path, finished=True))
            for single in _single_task_configs(config)
            for path in [os.path.join(workdir, "networks", single.tasks)]])
    evaluator = evaluator_for(config, workdir)
    done, stages = stages_done(workdir), builders.stages(config)
    if done >= stages:
        return evaluate_and_report(config, workdir, evaluator)
    logging.warning("%s has trained %d of %d stages: its evaluation goes to %sresults.json",
                    workdir, done, stages, INTERIM)
    return evaluate_and_report(config, workdir, evaluator, f"{done} of {stages} stages")


def write_results(workdir: str, results: dict, prefix: str = "") -> dict:
    """results.md, then results.json (names after ``prefix``), which marks the run finished
    (``files.write_json``)."""
    with files.replaced_atomically(os.path.join(workdir, prefix + "results.md")) as f:
        f.write(evaluation.results_markdown(results))
    files.write_json(os.path.join(workdir, prefix + "results.json"), results)
    return results


def measure_budgets(config: ml_collections.ConfigDict, workdir: str, points: int = 10) -> dict:
    """Test accuracy of the latest checkpoint under ``points`` FLOPs budgets for the three
    choosers of ``budget.accuracy_against_budget``; written to ``workdir/budget.json``."""
    builders.require_selector(config, "a budget")
    evaluator = evaluator_for(config, workdir, finished=True)
    curve = budget.accuracy_against_budget(
        evaluator, test_datasets(config, evaluator.estimator.tasks), points, seed=config.seed)
    files.write_json(os.path.join(workdir, "budget.json"), curve)
    return curve


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, step_hooks: Sequence[StepHook] = ()
) -> dict:
    """Trains (or resumes) in ``workdir``, then evaluates on the test split once. The config
    is saved as ``config.json`` beside the results (in a multi-worker run, the chief's; the
    other workers write under ``workdir/workers``). The baseline with ``separate_networks``
    trains one network per task, independently and one after the other, each in (and
    resumable from) ``workdir/networks/<task>``, and combines their results: every task's
    figures and the parameters of all the networks (Table 2's "[3]")."""
    methods.check_method(config.method)
    if _holds_work(workdir):
        # (before the separate-networks baseline goes to its networks' own directories, and
        # before another method would write over that baseline's config and results)
        check_run_config(config, workdir)
    if _separate_networks(config):
        _write_config(config, workdir)  # (before its networks train: it marks the directory)
        return _combine(workdir, [
            train_and_evaluate(single, os.path.join(workdir, "networks", single.tasks),
                               step_hooks)
            for single in _single_task_configs(config)])
    trainer = Trainer(config, workdir, step_hooks)
    # A run stopped before its first checkpoint trained nothing, and may start again under
    # other settings; a branched run (den_tf.sweep) has its checkpoint but no config.json yet.
    if trainer.manager.latest_checkpoint is not None:
        check_run_config(config, trainer.workdir)
    _write_config(config, trainer.workdir)
    start = time.time()
    trainer.run()
    trained = time.time()
    results = evaluate_and_report(config, trainer.workdir, trainer.evaluator)
    logging.info("%s (%s): training took %.0f s in this process, the test evaluation %.0f s",
                 results["method"], trainer.workdir, trained - start, time.time() - trained)
    return results


def _holds_work(workdir: str) -> bool:
    """Whether ``workdir`` holds a run's work: a checkpoint, its own or one of the
    separate-networks baseline's networks', or results."""
    return (latest_checkpoint(os.path.join(workdir, "checkpoints")) is not None
            or os.path.exists(os.path.join(workdir, "results.json"))
            or bool(glob.glob(os.path.join(workdir, "networks", "*", "checkpoints",
                                           "checkpoint"))))


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """config.json and the datasets' versions (``DATA_VERSIONS``), once ``check_run_config``
    has passed or was not needed (a run stopped before its first checkpoint starts again)."""
    os.makedirs(workdir, exist_ok=True)
    with files.replaced_atomically(os.path.join(workdir, "config.json")) as f:
        f.write(config.to_json(indent=1))
    files.write_json(os.path.join(workdir, DATA_VERSIONS), data_versions(config))


def _separate_networks(config: ml_collections.ConfigDict) -> bool:
    return config.method == "baseline" and config.separate_networks and "," in config.tasks


def _single_task_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """The config of each task's own network (task weights, which would only rescale a single
    task's loss against the weight decay, dropped)."""
    singles = []
    for task in config.tasks.split(","):
        single = config.copy_and_resolve_references()
        single.tasks = task
        single.train.task_weights = ()
        singles.append(single)
    return singles


def _combine(workdir: str, parts: list[dict]) -> dict:
    return write_results(workdir, evaluation.combine_networks(parts))
