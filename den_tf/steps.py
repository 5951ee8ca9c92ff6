"""One training step of each phase, compiled once: the estimator's and the selector's.

``TrainingSteps`` holds what the steps need (the models, their optimizers, the cost table)
but no data or state, so the training loop and the benchmarks share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import ml_collections
import tensorflow as tf

from den_tf import cost, policy
from den_tf.estimator import Estimator
from den_tf.selector import Selector


class TrainingSteps:
    """The estimator step (SGD on structures from Eq. (8) or the selector, masked path) and
    the selector step (the policy gradient of Eq. (7), the estimator frozen).

    Args:
      config: the experiment config (reads ``train``, ``rho``).
      estimator, selector: the models.
      estimator_optimizer, selector_optimizer: built on the models' trainable variables.
      task_weights: weight of each task's loss.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        estimator: Estimator,
        selector: Selector,
        estimator_optimizer: keras.optimizers.Optimizer,
        selector_optimizer: keras.optimizers.Optimizer,
        task_weights: Sequence[float],
    ):
        self.config = config
        self.estimator = estimator
        self.selector = selector
        self.estimator_optimizer = estimator_optimizer
        self.selector_optimizer = selector_optimizer
        self.task_weights = [float(w) for w in task_weights]
        self.costs = cost.cost_table(estimator)
        self.density = self.costs.density
        self.estimator_step = tf.function(self._estimator_step_fn)
        self.selector_step = tf.function(self._selector_step_fn)

    def _task_losses(self, logits, labels):
        """Per-instance cross-entropy of each task."""
        return [
            keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
            for y, out in zip(labels, logits)
        ]

    def _estimator_structures(self, images, mode: str, seed):
        batch = sum(x.shape[0] for x in images)
        if mode == "initial":
            return policy.initial_structure(
                batch, self.estimator.n_blocks, self.estimator.levels,
                self.config.train.estimator.tau, seed,
            )
        logits = tf.concat(self.selector.call_tasks(images, training=False), axis=0)
        if mode == "argmax":
            return policy.argmax_structure(logits)
        return policy.sample_structure(logits, seed)

    def _estimator_step_fn(self, batch, seed, mode: str):
        images = [b["image"] for b in batch]
        labels = [b["label"] for b in batch]
        structure = self._estimator_structures(images, mode, seed)
        variables = self.estimator.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.estimator.call_tasks(images, structure, training=True)
            losses = self._task_losses(logits, labels)
            loss = tf.add_n([w * tf.reduce_mean(x) for w, x in zip(self.task_weights, losses)])
            decay = tf.add_n([tf.nn.l2_loss(v) for v in variables if v.shape.rank > 1])
            total = loss + self.config.train.estimator.weight_decay * decay
        grads = tape.gradient(total, variables)
        finite = tf.math.is_finite(total)
        # A non-finite loss changes nothing; the caller stops the run.
        if finite:
            self.estimator_optimizer.apply_gradients(zip(grads, variables))
        return self._step_metrics(total, logits, labels, losses, structure)

    def _selector_step_fn(self, batch, seed, epsilon):
        train = self.config.train.selector
        samples, greedy = train.samples, train.baseline == "greedy"
        images = [b["image"] for b in batch]
        labels = [b["label"] for b in batch]
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2 * len(images)))
        variables = self.selector.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.selector.call_tasks(images, training=True)
            # |Z| samples per instance by tiling the batch: sample k of instance i sits at
            # row k * batch + i of its task's block.
            tiled = [tf.tile(x, [samples, 1, 1]) for x in logits]
            with tape.stop_recording():
                structures = [
                    policy.epsilon_greedy(
                        policy.sample_structure(x, seeds[2 * t]), self.estimator.levels,
                        epsilon, seeds[2 * t + 1],
                    )
                    for t, x in enumerate(tiled)
                ]
                greedy_structures = (
                    [policy.argmax_structure(x) for x in logits] if greedy else None
                )
                scores = self._score_structures(images, labels, structures, greedy_structures)
            surrogate = []
            for t, (x, z, score) in enumerate(zip(tiled, structures, scores)):
                batch_size = tf.shape(logits[t])[0]
                costs = tf.reshape(score["cost"][: samples * batch_size], [samples, -1])
                greedy_costs = score["cost"][samples * batch_size:][tf.newaxis] if greedy else None
                baseline = policy.baseline(costs, train.baseline, greedy_costs)
                surrogate.append(self.task_weights[t] * policy.reinforce_surrogate(
                    policy.log_prob(x, z), tf.reshape(costs, [-1]), tf.reshape(
                        tf.broadcast_to(baseline, tf.shape(costs)), [-1])))
            loss = tf.add_n(surrogate)
        grads = tape.gradient(loss, variables)
        finite = tf.math.is_finite(loss)
        if finite:
            self.selector_optimizer.apply_gradients(zip(grads, variables))
        structure = tf.concat(structures, axis=0)
        sampled = lambda key: tf.concat(  # noqa: E731
            [s[key][: samples * tf.shape(x)[0]] for s, x in zip(scores, logits)], axis=0)
        return {
            "loss": loss,
            "finite": finite,
            "cost": tf.reduce_mean(sampled("cost")),
            "cross_entropy": tf.reduce_mean(sampled("cross_entropy")),
            "accuracy": tf.reduce_mean(sampled("correct")),
            "density": tf.reduce_mean(cost.mean_density(structure, self.density)),
            "flops_fraction": self._flops_fraction(structure),
        }

    def _score_structures(self, images, labels, structures, greedy_structures):
        """Cost R = CE + S(z) of each structure (its task's images tiled to match), from one
        estimator pass in inference mode over every task; greedy structures come last."""
        tiled_images, tiled_labels, all_structures = [], [], []
        for t, (x, y, z) in enumerate(zip(images, labels, structures)):
            if greedy_structures is not None:
                z = tf.concat([z, greedy_structures[t]], axis=0)
            copies = tf.shape(z)[0] // tf.shape(x)[0]
            tiled_images.append(tf.tile(x, [copies, 1, 1, 1]))
            tiled_labels.append(tf.tile(y, [copies]))
            all_structures.append(z)
        logits = self.estimator.call_tasks(
            tiled_images, tf.concat(all_structures, axis=0), training=False,
            execution=self.config.train.selector.execution,
        )
        losses = self._task_losses(logits, tiled_labels)
        return [
            {
                "cost": ce + cost.sparsity_cost(z, self.density, self.config.rho),
                "cross_entropy": ce,
                "correct": tf.cast(tf.equal(tf.argmax(o, -1, tf.int32), y), tf.float32),
            }
            for ce, z, o, y in zip(losses, all_structures, logits, tiled_labels)
        ]

    def _flops_fraction(self, structure):
        """Mean trunk FLOPs of the structures as a fraction of the full trunk's."""
        trunk = cost.lookup_per_block(tf.constant(self.costs.level_macs, tf.float64), structure)
        full = float(self.costs.level_macs[:, -1].sum())
        return tf.cast(tf.reduce_mean(tf.reduce_sum(trunk, axis=1)) / full, tf.float32)

    def _step_metrics(self, loss, logits, labels, losses, structure):
        correct = [
            tf.cast(tf.equal(tf.argmax(o, -1, tf.int32), y), tf.float32)
            for o, y in zip(logits, labels)
        ]
        return {
            "loss": loss,
            "finite": tf.math.is_finite(loss),
            "cross_entropy": tf.reduce_mean(tf.concat(losses, 0)),
            "accuracy": tf.reduce_mean(tf.concat(correct, 0)),
            "density": tf.reduce_mean(cost.mean_density(structure, self.density)),
            "flops_fraction": self._flops_fraction(structure),
        }
