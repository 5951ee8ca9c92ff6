"""The phases of Algorithm 1 as objects, and the plateau that ends a phase.

A phase owns the model it trains, its optimizer, its compiled step, its learning-rate and
step-budget schedule over stages, what it validates on, and a ``Plateau`` that remembers its
best weights. The training loop (``train.py``) runs any phase the same way, so a new kind of
phase (a baseline's, a distributed one) is a new class here, not new branches in the loop.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from den_tf import evaluation
from den_tf.steps import STRUCTURE_SOURCES, EstimatorStep, FixedStructureStep, SelectorStep


@dataclasses.dataclass(frozen=True)
class PhaseSchedule:
    """Step budget and learning rate of a phase at every stage.

    Attributes:
      steps: step budget of the phase.
      lr: learning rate at the first stage; it decays x ``lr_decay`` per stage.
      lr_decay: factor per stage.
      initial_steps: budget of the first stage's phase (0: ``steps``).
    """

    steps: int
    lr: float
    lr_decay: float = 0.1
    initial_steps: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.initial_steps < 0:
            raise ValueError(
                f"steps must be >= 1 and initial_steps >= 0, got {self.steps}, "
                f"{self.initial_steps}"
            )
        if self.lr <= 0 or self.lr_decay <= 0:
            raise ValueError(f"lr and lr_decay must be > 0, got {self.lr}, {self.lr_decay}")

    def max_steps(self, stage: int) -> int:
        return self.initial_steps if stage == 0 and self.initial_steps else self.steps

    def learning_rate(self, stage: int) -> float:
        return self.lr * self.lr_decay**stage


class Plateau(tf.Module):
    """Convergence on a validation objective, with a copy of the best weights; checkpointable.

    ``update(objective)`` records an evaluation and returns True once ``patience``
    evaluations in a row failed to improve on the best by more than ``min_delta``; the
    watched weights are copied whenever the best improves, and ``restore_best()`` puts them
    back. ``reset()`` starts over (the copies stay until the next improvement).
    """

    def __init__(self, weights, patience: int, min_delta: float, name: str | None = None):
        super().__init__(name=name)
        if patience < 1 or min_delta < 0:
            raise ValueError(f"patience must be >= 1 and min_delta >= 0, got {patience}, "
                             f"{min_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self._watched = lambda: weights  # not tracked: the model's checkpoint holds them
        self.best = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best")
        self.evaluations_without_gain = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="evaluations_without_gain"
        )
        self.best_weights = tuple(
            tf.Variable(w, trainable=False, name="best_weight") for w in weights
        )

    def update(self, objective: float) -> bool:
        if objective < float(self.best.numpy()) - self.min_delta:
            self.best.assign(objective)
            self.evaluations_without_gain.assign(0)
            for saved, weight in zip(self.best_weights, self._watched()):
                saved.assign(weight)
        else:
            self.evaluations_without_gain.assign_add(1)
        return self.converged

    @property
    def converged(self) -> bool:
        return int(self.evaluations_without_gain.numpy()) >= self.patience

    def reset(self) -> None:
        self.best.assign(np.inf)
        self.evaluations_without_gain.assign(0)

    def restore_best(self) -> None:
        for saved, weight in zip(self.best_weights, self._watched()):
            weight.assign(saved)


class Phase:
    """One kind of phase: subclasses give ``name``, ``step`` and what they validate on.

    Args:
      model: the model this phase trains (its best weights are kept by ``plateau``).
      optimizer: built on the model's trainable variables.
      schedule: step budget and learning rate per stage.
      plateau: convergence and best weights of the model.
    """

    name = "phase"

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        schedule: PhaseSchedule,
        plateau: Plateau,
    ):
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.plateau = plateau

    def start(self, stage: int) -> None:
        """Sets the stage's learning rate (also when a run resumes mid-phase)."""
        self.optimizer.learning_rate.assign(self.schedule.learning_rate(stage))

    def max_steps(self, stage: int) -> int:
        return self.schedule.max_steps(stage)

    def tasks_trained(self, n_tasks: int) -> int:
        """How many of the ``n_tasks`` batches a step trains on (for images/s)."""
        return n_tasks

    def step(self, batch, seed: tf.Tensor, stage: int, step: int) -> dict[str, tf.Tensor]:
        """Runs one training step (``step`` counts from 0 within the phase)."""
        raise NotImplementedError

    def validation_structures(self, stage: int) -> str:
        """The structures validation scores (an ``evaluation.MODES`` entry)."""
        return "selector"

    def validate(self, evaluator: evaluation.Evaluator, datasets, seed: int,
                 stage: int) -> dict[str, dict]:
        """The validation report (per task, or per task and level) of this phase's aim."""
        return evaluator.evaluate(datasets, self.validation_structures(stage), seed)

    def schedule_scalars(self, stage: int, step: int) -> dict[str, float]:
        """Values set by the schedule at ``step`` (logged beside the step's metrics)."""
        return {"learning_rate": self.schedule.learning_rate(stage)}


class EstimatorPhase(Phase):
    """SGD on the estimator; structures from Eq. (8) in the first stage, then from the
    selector (``later_structures``: 'sample', as Algorithm 1, or 'argmax')."""

    name = "estimator"

    def __init__(self, step: EstimatorStep, schedule: PhaseSchedule, plateau: Plateau,
                 later_structures: str = "sample"):
        allowed = STRUCTURE_SOURCES[1:]
        if later_structures not in allowed:
            raise ValueError(f"later_structures must be one of {allowed}, got "
                             f"{later_structures!r}")
        super().__init__(step.estimator, step.optimizer, schedule, plateau)
        self._step = step
        self.later_structures = later_structures

    def step(self, batch, seed, stage, step):
        return self._step(batch, seed, "initial" if stage == 0 else self.later_structures)

    def validation_structures(self, stage):
        # Before the selector has trained, the estimator aims at the full model.
        return "full" if stage == 0 else "selector"


class SelectorPhase(Phase):
    """Adam on the selector's policy gradient, exploring epsilon-greedily with
    epsilon * epsilon_decay^step (restarting every phase)."""

    name = "selector"

    def __init__(self, step: SelectorStep, schedule: PhaseSchedule, plateau: Plateau,
                 epsilon: float = 1.0, epsilon_decay: float = 0.99):
        if not 0.0 <= epsilon <= 1.0 or not 0.0 < epsilon_decay <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1] and epsilon_decay in (0, 1], got "
                             f"{epsilon}, {epsilon_decay}")
        super().__init__(step.selector, step.optimizer, schedule, plateau)
        self._step = step
        self.epsilon = epsilon
        self.epsilon_decay = epsilon_decay

    def exploration(self, step: int) -> float:
        return self.epsilon * self.epsilon_decay**step

    def step(self, batch, seed, stage, step):
        return self._step(batch, seed, tf.constant(self.exploration(step), tf.float32))

    def schedule_scalars(self, stage, step):
        return {**super().schedule_scalars(stage, step), "epsilon": self.exploration(step)}


class FixedStructurePhase(Phase):
    """SGD on the estimator with every task at its fixed levels (``FixedStructureStep``):
    the baseline and NestedNet, a phase per stage like the estimator's."""

    def __init__(self, step: FixedStructureStep, schedule: PhaseSchedule, plateau: Plateau,
                 name: str = "estimator"):
        super().__init__(step.estimator, step.optimizer, schedule, plateau)
        self._step = step
        self.name = name

    def step(self, batch, seed, stage, step):
        return self._step(batch, seed)

    def tasks_trained(self, n_tasks):
        return n_tasks if self._step.trained is None else len(self._step.trained)

    def validate(self, evaluator, datasets, seed, stage):
        return evaluation.evaluate_levels(evaluator, datasets, self._step.task_levels, seed,
                                          tasks=self._step.trained)


class PackNetPhase(FixedStructurePhase):
    """One task of PackNet* at one learning-rate decay (``decay``: 0 for the first); the run
    has one stage whose phases go through the tasks lowest level first, each through its
    decays, so a task never trains again once a later one has started."""

    def __init__(self, step: FixedStructureStep, schedule: PhaseSchedule, plateau: Plateau,
                 name: str, decay: int):
        super().__init__(step, schedule, plateau, name)
        self.decay = decay

    def start(self, stage):
        super().start(self.decay)
        self._step.freeze()

    def max_steps(self, stage):
        return self.schedule.max_steps(self.decay)

    def schedule_scalars(self, stage, step):
        return super().schedule_scalars(self.decay, step)
