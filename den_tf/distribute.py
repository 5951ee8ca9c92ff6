"""Distribution strategies and the replica arithmetic of the training steps.

``make_strategy`` picks a ``tf.distribute`` strategy by name. Inside a step (``strategy.run``)
the helpers below let one replica compute what a single device would compute on the global
batch: sums all-reduced over replicas, and random draws made for the global batch (every
replica draws the same values from the same seed) of which each replica keeps its own rows.
With one replica every helper is the identity, so single-device runs are unchanged.

The global batch of a task is its replicas' local batches in replica order (what
``all_gather`` returns and what ``split_batch`` makes).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The strategy called ``name`` (``STRATEGIES``).

    - ``one_device``: TensorFlow's default strategy (one replica on the default device).
    - ``mirrored``: one replica per local GPU, or per logical CPU device when there is no GPU;
      over a single device, TensorFlow's default strategy (the function ``mirrored`` says
      why).
    - ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster is read from ``TF_CONFIG``.
    - ``tpu``: ``TPUStrategy`` on ``tpu`` (a TPU name, or '' / 'local' on a TPU VM).
    - ``auto``: ``tpu`` when a TPU is named (``tpu_name``), ``mirrored`` with several local
      GPUs, else ``one_device``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        if tpu_name(tpu):
            tpu, name = tpu_name(tpu), "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "one_device":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = mirrored([d.name for d in devices])
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    logging.info("strategy %s: %d replicas", name, strategy.num_replicas_in_sync)
    return strategy


def mirrored(devices: Sequence[str]) -> tf.distribute.Strategy:
    """A MirroredStrategy over ``devices``; over one device, TensorFlow's default strategy,
    the same computation on the same device, whose input position a checkpoint can hold (a
    MirroredStrategy's distributed iterator cannot be saved, so every resume would restart the
    input)."""
    if len(devices) == 1:
        logging.info("mirrored over one device (%s): the default strategy", devices[0])
        return tf.distribute.get_strategy()
    return _mirrored(tuple(devices))


@functools.cache
def _mirrored(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy per device set and process: the collective ops of two instances
    over the same devices collide (TensorFlow aborts them with a shape mismatch)."""
    return tf.distribute.MirroredStrategy(list(devices))


def tpu_name(tpu: str = "") -> str:
    """The TPU to use: ``tpu``, else the ``TPU_NAME`` environment variable (set on Cloud TPU
    VMs and by TPU job launchers), else ''."""
    return tpu or os.environ.get("TPU_NAME", "")


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a real strategy (its input is distributed per replica), not
    TensorFlow's default one."""
    return isinstance(strategy, (
        tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy,
        tf.distribute.TPUStrategy, tf.distribute.OneDeviceStrategy,
    ))


def output_dir(strategy: tf.distribute.Strategy, workdir: str) -> str:
    """Where this process writes checkpoints, summaries and results: ``workdir`` on the chief
    (every single-process run), ``workdir/workers/<type>_<id>`` on the other workers of a
    multi-worker run (each saves its own checkpoints, as every worker must, without
    overwriting the chief's)."""
    if strategy.extended.should_checkpoint:
        return workdir
    resolver = strategy.cluster_resolver
    return os.path.join(workdir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def agreed(strategy: tf.distribute.Strategy, value: float) -> float:
    """``value`` as the first replica's process computed it, the same in every process.

    Each worker of a multi-worker run validates on its own, and the same weights can score a
    hair apart on different CPUs or GPUs: workers that disagreed on whether a validation
    improved would keep different best weights (and drift apart at the phase's end) or end
    the phase at different steps (and wait on each other forever). In one process, and with
    one replica, ``value`` is returned as it is."""
    if not is_distributed(strategy) or strategy.num_replicas_in_sync == 1:
        return value
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([value], tf.float64))
    return float(strategy.gather(per_replica, axis=0)[0])


def replicas() -> int:
    """Replicas in sync in the current context (1 outside ``strategy.run``)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def sum_over_replicas(value):
    """``value`` (a tensor or a nest of them) summed over the replicas."""
    if replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_rows(x: tf.Tensor) -> tf.Tensor:
    """The global batch of ``x``: the local batches of all replicas, in replica order."""
    count = replicas()
    if count == 1:
        return x
    rows = tf.distribute.get_replica_context().all_gather(x, axis=0)
    rows.set_shape([None if x.shape[0] is None else x.shape[0] * count, *x.shape[1:]])
    return rows


def local_rows(x: tf.Tensor, copies: int = 1) -> tf.Tensor:
    """This replica's rows of ``x``, which holds ``copies`` consecutive copies of a global
    batch (row k * global + i is copy k of instance i); the result has the same layout over
    the local batch."""
    count = replicas()
    if count == 1:
        return x
    context = tf.distribute.get_replica_context()
    shape = tf.shape(x)
    local = shape[0] // (copies * count)
    blocks = tf.reshape(x, tf.concat([[copies, count, local], shape[1:]], 0))
    mine = tf.gather(blocks, context.replica_id_in_sync_group, axis=1)
    rows = tf.reshape(mine, tf.concat([[copies * local], shape[1:]], 0))
    total = x.shape[0]
    rows.set_shape([None if total is None else total // count, *x.shape[1:]])
    return rows


def local_batch(x: tf.Tensor, local_sizes: Sequence[int]) -> tf.Tensor:
    """This replica's rows of ``x``, which stacks the global batches of several tasks (task t
    has ``local_sizes[t]`` rows on every replica), stacked the same way."""
    count = replicas()
    if count == 1:
        return x
    parts = tf.split(x, [size * count for size in local_sizes], axis=0)
    return tf.concat([local_rows(part) for part in parts], axis=0)


def split_batch(strategy: tf.distribute.Strategy, batch):
    """A global batch (a nest of tensors with the batch first) as per-replica values: replica
    r gets rows [r * n, (r + 1) * n) of every tensor. For tests and tools that feed a known
    batch; training reads its input with ``distribute_datasets_from_function``."""
    count = strategy.num_replicas_in_sync

    def part(context: tf.distribute.ValueContext):
        def rows(x):
            size = x.shape[0] // count
            return x[context.replica_id_in_sync_group * size:][:size]

        return tf.nest.map_structure(rows, batch)

    return strategy.experimental_distribute_values_from_function(part)


def per_replica_batch_size(global_batch: int, count: int) -> int:
    """A global batch per task split over ``count`` replicas; it must divide evenly."""
    if global_batch % count:
        raise ValueError(
            f"train.batch_size {global_batch} (the global batch per task) must be divisible "
            f"by the {count} replicas"
        )
    return global_batch // count
