"""One training step of each phase, compiled once: the estimator's and the selector's.

A step holds what it needs (the models, its optimizer, the cost table and a frozen
``StepSettings``) but no data or loop state, so the training loop, the benchmarks and other
methods build steps without an experiment config.

A step runs on every replica of the distribution strategy it was built under (the default
strategy: one device). Each replica takes its share of the global batch; losses are divided by
the number of replicas (the optimizer sums the gradients), batch norm uses the global batch's
moments, and random structures are drawn for the global batch, so that one step with N
replicas is one step on one device with the same global batch (``distribute.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import tensorflow as tf

from den_tf import blocks, cost, distribute, methods, metrics, policy
from den_tf.estimator import Estimator
from den_tf.selector import Selector

# Where the estimator step takes its structures from: Eq. (8) (the first stage), samples
# of the selector's distribution (Algorithm 1) or its argmax (the authors' code).
STRUCTURE_SOURCES = ("initial", "sample", "argmax")
# The initial distribution of the first stage (paper A.2, Fig. 5b): Eq. (8), uniform over
# all h^n models, or the untrained selector's distribution.
INITIAL_DISTRIBUTIONS = ("eq8", "uniform", "selector")


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What the training steps need to know, validated on construction.

    Attributes:
      rho: weight of the sparsity cost S(z) (Eq. 5).
      task_weights: weight of each task's loss (empty: 1 for every task).
      weight_decay: L2 coefficient on the estimator's kernels (rank > 1; not BN or biases).
      tau: probability of the full model in the initial distribution (Eq. 8).
      initial_distribution: the first stage's distribution (``INITIAL_DISTRIBUTIONS``).
      samples: structures |Z| sampled per instance in the selector step (Eq. 7).
      baseline: the policy gradient's baseline (``policy.BASELINES``; the straight-through
        gradient has none).
      gradient: how the selector's gradient is estimated (``policy.GRADIENTS``): the policy
        gradient of Eq. (7), or 'straight_through' (not in the paper): the samples run on
        the masked path as level weights (``policy.straight_through``) and the cost R is
        differentiated through the frozen estimator (needs cost 'den'). Its tape holds the
        full-width masked pass over |Z| x batch instances.
      execution: how the frozen estimator scores the policy gradient's samples
        (``blocks.EXECUTIONS``; the straight-through gradient runs the masked path).
      jit_compile: compile each step with XLA. XLA needs static shapes, so the samples are
        then scored on the masked path (the sliced path's partitions have data-dependent
        sizes), and the random draws are XLA-portable.
      draws: how random draws are made (``policy.DRAWS``); None: 'tensorflow', or
        'portable' under ``jit_compile``.
      cost: the selector's per-instance cost R (``cost.COSTS``): DEN's, or BlockDrop's reward.
      gamma: BlockDrop's penalty for a wrong prediction.
      squash: BlockDrop's exploration alpha (``policy.squash``); 1: none.
      entropy: weight of the selector's mean per-block entropy (``policy.mean_entropy``),
        subtracted from its loss: a pull toward flatter distributions against an early
        collapse onto one structure per task (not in the paper; 0: none).
    """

    rho: float = 1.0
    task_weights: tuple[float, ...] = ()
    weight_decay: float = 1e-4
    tau: float = 0.75
    initial_distribution: str = "eq8"
    samples: int = 4
    baseline: str = "leave_one_out"
    gradient: str = "reinforce"
    execution: str = "sliced"
    jit_compile: bool = False
    draws: str | None = None
    cost: str = "den"
    gamma: float = 5.0
    squash: float = 1.0
    entropy: float = 0.0

    def __post_init__(self):
        if self.baseline not in policy.BASELINES:
            raise ValueError(f"baseline must be one of {policy.BASELINES}, got {self.baseline!r}")
        blocks.check_execution(self.execution)
        if self.jit_compile and self.execution == "sliced":
            raise ValueError("jit_compile needs execution 'masked': XLA cannot compile the sliced "
                             "path, whose partitions have data-dependent sizes")
        if self.draws is not None:
            policy.check_draws(self.draws)
        if self.jit_compile and self.draws == "tensorflow":
            raise ValueError("jit_compile needs draws 'portable': XLA cannot compile "
                             "TensorFlow's categorical sampler")
        if self.initial_distribution not in INITIAL_DISTRIBUTIONS:
            raise ValueError(f"initial_distribution must be one of {INITIAL_DISTRIBUTIONS}, "
                             f"got {self.initial_distribution!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.gradient not in policy.GRADIENTS:
            raise ValueError(f"gradient must be one of {policy.GRADIENTS}, got {self.gradient!r}")
        if self.gradient == "straight_through" and self.cost != "den":
            raise ValueError(f"the straight-through gradient needs cost 'den' (it differentiates "
                             f"the cross-entropy); cost {self.cost!r} has no gradient in the "
                             f"instance's prediction")
        if self.gradient == "reinforce" and self.baseline == "leave_one_out" and self.samples < 2:
            raise ValueError("baseline 'leave_one_out' needs samples >= 2")
        if not 0.5 < self.squash <= 1.0:
            raise ValueError(f"squash must lie in (0.5, 1], got {self.squash}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must lie in [0, 1], got {self.tau}")
        if self.rho < 0 or self.weight_decay < 0 or self.entropy < 0:
            raise ValueError(f"rho, weight_decay and entropy must be >= 0, got {self.rho}, "
                             f"{self.weight_decay} and {self.entropy}")

    @property
    def instance_cost(self) -> cost.InstanceCost:
        return cost.InstanceCost(self.cost, self.rho, self.gamma)

    @property
    def random_draws(self) -> str:
        """How the steps draw (``draws`` resolved)."""
        if self.draws is not None:
            return self.draws
        return "portable" if self.jit_compile else "tensorflow"

    def weights_for(self, n_tasks: int) -> list[float]:
        """The task weights, checked against the number of tasks."""
        if not self.task_weights:
            return [1.0] * n_tasks
        if len(self.task_weights) != n_tasks:
            raise ValueError(
                f"task_weights needs one weight per task ({n_tasks}), got {self.task_weights}"
            )
        return [float(w) for w in self.task_weights]


def _images_and_labels(batch: Sequence[dict]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    return [b["image"] for b in batch], [b["label"] for b in batch]


class Step:
    """A compiled training step of one model (``optimizer`` updates its variables) of the
    estimator-selector pair, on every replica of the strategy current at construction;
    subclasses define ``_replica_step``."""

    def __init__(
        self,
        estimator: Estimator,
        selector: Selector,
        optimizer: keras.optimizers.Optimizer,
        settings: StepSettings,
    ):
        self.estimator = estimator
        self.selector = selector
        self.optimizer = optimizer
        self.settings = settings
        self.strategy = tf.distribute.get_strategy()
        if (settings.jit_compile and self.strategy.num_replicas_in_sync > 1
                and not isinstance(self.strategy, tf.distribute.TPUStrategy)):
            raise ValueError(
                f"jit_compile with {self.strategy.num_replicas_in_sync} replicas under "
                f"{type(self.strategy).__name__}: XLA compiles the step for one device and "
                "cannot reach the other replicas' variables; train without jit_compile")
        self.task_weights = settings.weights_for(len(estimator.tasks))
        self.costs = cost.cost_table(estimator)
        # Keras's loss-scale optimizer checks for an overflow in the gradients of the replica
        # it runs on, as if they were summed already; they are not (apply_gradients sums).
        self._shares_overflows = (isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
                                  and self.strategy.num_replicas_in_sync > 1)
        self._step = tf.function(self._step_fn, jit_compile=settings.jit_compile)

    @property
    def variables(self) -> list:
        """What the optimizer updates."""
        raise NotImplementedError

    def _replica_step(self, *args) -> tuple[list, tf.Tensor, dict[str, tf.Tensor]]:
        """One replica's part: (gradients of its share of the loss, the global loss, batch
        means of its metrics)."""
        raise NotImplementedError

    def _step_fn(self, *args):
        """Runs ``_replica_step`` on every replica and applies the summed gradients when the
        global loss and, without loss scaling, every gradient are finite (a finite loss can
        have non-finite gradients, which would poison the weights the next checkpoint saves;
        a loss-scale optimizer skips such a step itself). Nothing non-finite changes a
        weight. Returns the loss, ``finite`` and the metrics averaged over replicas."""
        grads, loss, means = self.strategy.run(self._replica_step, args=args)
        loss = self.strategy.experimental_local_results(loss)[0]  # the same on every replica
        finite = tf.math.is_finite(loss)
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        if not scaled or self._shares_overflows:  # non-finite gradient entries, all replicas
            non_finite = self.strategy.reduce(
                "sum", self.strategy.run(_non_finite_count, args=(grads,)), axis=None)
            if not scaled:
                finite = tf.logical_and(finite, non_finite == 0)
        if finite:
            if self._shares_overflows:
                grads = self.strategy.run(_poisoned, args=(grads, non_finite > 0))
            self.strategy.run(self._apply, args=(grads,))
        means = {k: self.strategy.reduce("mean", v, axis=None) for k, v in means.items()}
        return {"loss": loss, "finite": finite, **means}

    def _apply(self, grads):
        self.optimizer.apply_gradients(zip(grads, self.variables))


def _non_finite_count(grads: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32))
                     for g in grads if g is not None])


def _poisoned(grads: list[tf.Tensor], overflow: tf.Tensor) -> list[tf.Tensor]:
    """``grads``, made NaN where some replica's gradients overflowed: the loss-scale optimizer
    then skips the step and lowers its scale on every replica, as with one device."""
    return [None if g is None else tf.where(overflow, tf.constant(float("nan"), g.dtype), g)
            for g in grads]


def _share(loss: tf.Tensor) -> tf.Tensor:
    """A replica's share of a loss averaged over the global batch: its gradients, summed over
    the replicas, are those of the global loss."""
    count = distribute.replicas()
    return loss if count == 1 else loss / count


class EstimatorStep(Step):
    """SGD on the structures of the current distribution, on the masked path.

    ``step(batch, seed, source)``: ``batch`` is one dict per task (``image``, ``label``),
    ``seed`` a [2] int tensor, ``source`` one of ``STRUCTURE_SOURCES``. Returns batch means of
    loss, cross-entropy, accuracy, density and FLOPs fraction, and ``finite``: a non-finite
    loss or gradient changes no weight (``Step._step_fn``).
    """

    def __call__(self, batch, seed, source: str) -> dict[str, tf.Tensor]:
        if source not in STRUCTURE_SOURCES:
            raise ValueError(f"structure source must be one of {STRUCTURE_SOURCES}, got {source!r}")
        return self._step(batch, seed, source)

    @property
    def variables(self):
        return self.estimator.trainable_variables

    def _structures(self, images, source: str, seed):
        """One structure per local instance, stacked by task; random ones are drawn for the
        global batch and sliced (``distribute.local_batch``)."""
        sizes = [x.shape[0] for x in images]
        n_blocks, levels = self.estimator.n_blocks, self.estimator.levels
        batch = sum(sizes) * distribute.replicas()
        initial = self.settings.initial_distribution
        if source == "initial" and initial == "eq8":
            return distribute.local_batch(
                policy.initial_structure(batch, n_blocks, levels, self.settings.tau, seed,
                                         self.settings.random_draws), sizes)
        if source == "initial" and initial == "uniform":
            return distribute.local_batch(
                policy.uniform_structure(batch, n_blocks, levels, seed), sizes)
        # The selector's distribution (untrained in the first stage) or its argmax.
        logits = self.selector.call_tasks(images, training=False)
        if source == "argmax":
            return policy.argmax_structure(tf.concat(logits, axis=0))
        logits = tf.concat([distribute.global_rows(x) for x in logits], axis=0)
        return distribute.local_batch(
            policy.sample_structure(logits, seed, self.settings.random_draws), sizes)

    def _replica_step(self, batch, seed, source: str):
        images, labels = _images_and_labels(batch)
        structure = self._structures(images, source, seed)
        return self._descend(images, labels, structure)

    def _descend(self, images, labels, structure, tasks=None):
        """Gradients of the weighted cross-entropy (+ L2 on kernels) of ``tasks`` (ids of the
        image batches; None: all tasks, in one trunk pass) under ``structure`` (their rows in
        order); the step's loss and metrics."""
        variables = self.variables
        with tf.GradientTape() as tape:
            if tasks is None:
                tasks = range(len(images))
                logits = self.estimator.call_tasks(images, structure, training=True)
            else:
                parts = tf.split(structure, [tf.shape(x)[0] for x in images])
                logits = [self.estimator.call_task(x, t, z, training=True)
                          for t, x, z in zip(tasks, images, parts)]
            losses = [metrics.cross_entropy(y, out) for y, out in zip(labels, logits)]
            loss = tf.add_n([self.task_weights[t] * tf.reduce_mean(x)
                             for t, x in zip(tasks, losses)])
            decay = tf.add_n([tf.nn.l2_loss(v) for v in variables if v.shape.rank > 1])
            share = _share(loss + self.settings.weight_decay * decay)
            scaled = self.optimizer.scale_loss(share)  # loss scaling under mixed_float16
        grads = tape.gradient(scaled, variables)
        correct = [metrics.correct(y, out) for y, out in zip(labels, logits)]
        return grads, distribute.sum_over_replicas(share), {
            "cross_entropy": tf.reduce_mean(tf.concat(losses, 0)),
            "accuracy": tf.reduce_mean(tf.concat(correct, 0)),
            "density": tf.reduce_mean(metrics.density(structure, self.costs)),
            "flops_fraction": tf.reduce_mean(metrics.flops_fraction(structure, self.costs)),
        }


class FixedStructureStep(EstimatorStep):
    """SGD with every task at fixed levels (the baseline, NestedNet, PackNet*; ``methods.py``).

    ``step(batch, seed)``. ``task_levels[t]`` lists the levels task t trains at (every block at
    that level); a task with several levels trains each image at each of them, the mean of
    their losses. Only the tasks in ``trained`` (None: all, in one trunk pass) run.

    PackNet* passes ``trainable`` and ``frozen`` masks (per weight path, ``methods.
    packnet_masks``): gradients outside ``trainable`` are zeroed, so neither the update nor
    the L2 decay reaches them, and after every update the ``frozen`` entries are put back to
    their values at ``freeze()`` (bit-identical, whatever the optimizer's momentum holds);
    batch norm normalises the frozen channels with the statistics the earlier tasks left
    (``MaskedBatchNorm.frozen``) and the others with batch statistics.
    """

    def __init__(self, *args, task_levels, trained=None, trainable=None, frozen=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if len(task_levels) != len(self.estimator.tasks) or not all(task_levels):
            raise ValueError(f"task_levels needs levels for each of the "
                             f"{len(self.estimator.tasks)} tasks, got {task_levels}")
        self.task_levels = tuple(tuple(int(level) for level in t) for t in task_levels)
        self.trained = None if trained is None else tuple(trained)
        self._gradient_masks = None if trainable is None else methods.gradient_masks(
            self.variables, trainable)
        self._frozen = []
        self._frozen_channels = [
            (bn, None if frozen is None else tf.constant(frozen[bn.moving_mean.path]))
            for bn in self.estimator.batch_norms()]
        if frozen is not None:
            for weight in self.estimator.weights:
                if frozen[weight.path].any():
                    saved = tf.Variable(tf.zeros_like(weight), trainable=False,
                                        name="frozen_value")
                    self._frozen.append((weight, tf.constant(frozen[weight.path]), saved))

    def __call__(self, batch, seed) -> dict[str, tf.Tensor]:
        return self._step(batch, seed, "fixed")

    def freeze(self) -> None:
        """Records the current values of the frozen entries and marks the frozen channels of
        every batch norm (call when the phase starts, before its first step; a resumed phase
        finds the entries unchanged)."""
        for weight, _, saved in self._frozen:
            saved.assign(weight)
        for bn, channels in self._frozen_channels:
            bn.frozen = channels

    def _replica_step(self, batch, seed, source: str):
        images, labels = _images_and_labels(batch)
        tasks = range(len(images)) if self.trained is None else self.trained
        images, labels, structures = zip(*[self._at_levels(t, images[t], labels[t])
                                           for t in tasks])
        grads, loss, means = self._descend(
            list(images), list(labels), tf.concat(structures, axis=0), tasks=self.trained)
        # Weights of tasks that did not run (PackNet*) have no gradient: a zero one keeps them.
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]
        if self._gradient_masks is not None:
            grads = [g * m for g, m in zip(grads, self._gradient_masks)]
        return grads, loss, means

    def _at_levels(self, task: int, images, labels):
        """A task's batch repeated once per level, with the structures of those levels."""
        levels = self.task_levels[task]
        batch = tf.shape(images)[0]
        structure = tf.concat([tf.fill([batch, self.estimator.n_blocks], level)
                               for level in levels], axis=0)
        copies = len(levels)
        return tf.tile(images, [copies, 1, 1, 1]), tf.tile(labels, [copies]), structure

    def _step_fn(self, *args):
        result = super()._step_fn(*args)
        for weight, mask, saved in self._frozen:
            weight.assign(tf.where(mask, saved, weight))
        return result


class SelectorStep(Step):
    """The selector's step with the estimator frozen (BN in inference mode): the policy
    gradient of Eq. (7), or the straight-through gradient (``settings.gradient``).
    (BlockDrop: ``settings.cost`` 'blockdrop' and ``settings.squash``.)

    ``step(batch, seed, epsilon)``: |Z| = ``settings.samples`` structures per instance, drawn
    by tiling the batch and explored epsilon-greedily, are scored in one estimator pass. The
    policy gradient descends mean((R - b) log P(z)) with R = CE + S(z); the straight-through
    gradient descends mean(R) of the samples as level weights. Either loss less
    ``settings.entropy`` times the selector's mean per-block entropy. Returns batch means of
    the loss, cost R, cross-entropy, accuracy, density and FLOPs fraction of the samples, the
    selector's mean per-block entropy, and ``finite``.
    """

    def __call__(self, batch, seed, epsilon) -> dict[str, tf.Tensor]:
        return self._step(batch, seed, tf.convert_to_tensor(epsilon, tf.float32))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._gradients_only = tf.function(self._summed_gradients,
                                           jit_compile=self.settings.jit_compile)

    @property
    def variables(self):
        return self.selector.trainable_variables

    def gradients(self, batch, seed, epsilon) -> list[tf.Tensor]:
        """The gradient estimate of one step, not applied (to measure its variance).
        It runs the selector in training mode, so its batch-norm statistics move."""
        return self._gradients_only(batch, seed, tf.convert_to_tensor(epsilon, tf.float32))

    def _summed_gradients(self, batch, seed, epsilon):
        grads = self.strategy.run(
            lambda *args: distribute.sum_over_replicas(self._replica_step(*args)[0]),
            args=(batch, seed, epsilon),
        )
        scale = self.optimizer.scale_loss(tf.constant(1.0))  # 1 without loss scaling
        return [g / scale for g in self.strategy.experimental_local_results(grads)[0]]

    def _replica_step(self, batch, seed, epsilon):
        samples = self.settings.samples
        straight_through = self.settings.gradient == "straight_through"
        images, labels = _images_and_labels(batch)
        seeds = tf.unstack(policy.split_seed(seed, 2 * len(images)))
        with tf.GradientTape() as tape:
            logits = self.selector.call_tasks(images, training=True)
            # |Z| samples per instance by tiling the batch: sample k of instance i sits at
            # row k * batch + i of its task's block.
            tiled = [self._explored(tf.tile(x, [samples, 1, 1])) for x in logits]
            with tape.stop_recording():
                # Drawn for the global batch (tiled the same way), kept for the local one.
                drawn_from = tiled if distribute.replicas() == 1 else [
                    self._explored(tf.tile(distribute.global_rows(x), [samples, 1, 1]))
                    for x in logits]
                structures = [
                    distribute.local_rows(policy.epsilon_greedy(
                        policy.sample_structure(x, seeds[2 * t], self.settings.random_draws),
                        self.estimator.levels, epsilon, seeds[2 * t + 1],
                        self.settings.random_draws,
                    ), copies=samples)
                    for t, x in enumerate(drawn_from)
                ]
                if not straight_through:
                    greedy_structures = [policy.argmax_structure(x) for x in logits] if (
                        self.settings.baseline == "greedy") else None
                    scores = self._score(images, labels, structures, greedy_structures)
            if straight_through:
                losses, scores = self._straight_through(images, labels, tiled, structures)
            else:
                losses = self._policy_gradient(logits, tiled, structures, scores)
            surrogate = []
            for t, loss in enumerate(losses):
                if self.settings.entropy:
                    loss -= self.settings.entropy * tf.reduce_mean(
                        policy.mean_entropy(logits[t]))
                surrogate.append(self.task_weights[t] * loss)
            share = _share(tf.add_n(surrogate))
            scaled = self.optimizer.scale_loss(share)
        grads = tape.gradient(scaled, self.variables)
        structure = tf.concat(structures, axis=0)

        def sampled(key):  # the scores of the |Z| samples (not of the greedy structures)
            return tf.concat(
                [s[key][: samples * tf.shape(x)[0]] for s, x in zip(scores, logits)], axis=0
            )

        return grads, distribute.sum_over_replicas(share), {
            "cost": tf.reduce_mean(sampled("cost")),
            "cross_entropy": tf.reduce_mean(sampled("cross_entropy")),
            "accuracy": tf.reduce_mean(sampled("correct")),
            "density": tf.reduce_mean(metrics.density(structure, self.costs)),
            "flops_fraction": tf.reduce_mean(metrics.flops_fraction(structure, self.costs)),
            "entropy": tf.reduce_mean(tf.concat([policy.mean_entropy(x) for x in logits], 0)),
        }

    def _policy_gradient(self, logits, tiled, structures, scores):
        """Each task's surrogate loss of Eq. (7) (``policy.reinforce_surrogate``) from the
        scores of its samples (``_score``; the greedy baseline's argmax structures after
        them)."""
        samples, baseline = self.settings.samples, self.settings.baseline
        greedy = baseline == "greedy"
        losses = []
        for t, (x, z, score) in enumerate(zip(tiled, structures, scores)):
            batch_size = tf.shape(logits[t])[0]
            costs = tf.reshape(score["cost"][: samples * batch_size], [samples, -1])
            greedy_costs = score["cost"][samples * batch_size:][tf.newaxis] if greedy else None
            b = policy.baseline(costs, baseline, greedy_costs)
            losses.append(policy.reinforce_surrogate(
                policy.log_prob(x, z), tf.reshape(costs, [-1]),
                tf.reshape(tf.broadcast_to(b, tf.shape(costs)), [-1])))
        return losses

    def _straight_through(self, images, labels, tiled, structures):
        """Each task's mean cost R of its samples run as straight-through level weights on
        the masked path (the gradient reaches the selector through the estimator), and the
        samples' scores."""
        weights = [policy.straight_through(x, z) for x, z in zip(tiled, structures)]
        scores = self._score(images, labels, weights, level_weights=True)
        losses = [tf.reduce_mean(score["cost"]) for score in scores]
        return losses, [{k: tf.stop_gradient(v) for k, v in score.items()} for score in scores]

    def _explored(self, logits):
        """The policy the samples are drawn from and scored under: BlockDrop's squashed one
        (``settings.squash`` < 1), else the selector's."""
        squash = self.settings.squash
        return logits if squash == 1.0 else policy.squash(logits, squash)

    def _score(self, images, labels, structures, greedy_structures=None, level_weights=False):
        """Cost R = CE + S(z) of each structure, from one estimator pass in inference mode
        over every task; greedy structures come last. Each image's stem runs once and its
        features are tiled to match the structures (the stem does not depend on them).
        ``level_weights``: the structures are level weights, run on the masked path."""
        tiled_features, tiled_labels, all_structures = [], [], []
        for t, (x, y, z) in enumerate(zip(images, labels, structures)):
            if greedy_structures is not None:
                z = tf.concat([z, greedy_structures[t]], axis=0)
            copies = tf.shape(z)[0] // tf.shape(x)[0]
            tiled_features.append(tf.tile(self.estimator.stem(x, t), [copies, 1, 1, 1]))
            tiled_labels.append(tf.tile(y, [copies]))
            all_structures.append(z)
        everything = tf.concat(all_structures, axis=0)
        if level_weights:
            logits = self.estimator.call_features(tiled_features, training=False,
                                                  execution="masked", level_weights=everything)
        else:
            logits = self.estimator.call_features(tiled_features, everything, training=False,
                                                  execution=self.settings.execution)
        scores = []
        for z, out, y in zip(all_structures, logits, tiled_labels):
            ce, correct = metrics.cross_entropy(y, out), metrics.correct(y, out)
            scores.append({
                "cost": self.settings.instance_cost(ce, correct, z, self.costs.density),
                "cross_entropy": ce,
                "correct": correct,
            })
        return scores
