"""Training under a distribution strategy: two logical CPU devices (tests/conftest.py) under
MirroredStrategy against one device with the same global batch."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from den_tf import backbones, builders, distribute
from den_tf.estimator import Estimator
from den_tf.selector import Selector
from den_tf.steps import EstimatorStep, SelectorStep, StepSettings
from den_tf.tasks import Task

TASKS = [Task("a", "a", 16, 3), Task("b", "b", 32, 4)]


@pytest.fixture(scope="module")
def mirrored():
    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    return strategy


def _batch(size: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    return tuple({"image": tf.constant(rng.normal(size=(size, t.input_size, t.input_size, 3)),
                                       tf.float32),
                  "label": tf.constant(rng.randint(0, t.num_classes, size), tf.int32)}
                 for t in TASKS)


def _train(strategy, weights, settings):
    """Two estimator steps (Eq. 8, then the selector's samples) and two selector steps on a
    global batch of 8 per task, from ``weights`` (None: fresh ones). Returns each step's
    metrics, the weights before and after, and the models."""
    with strategy.scope():
        est = Estimator(backbones.wrn(depth=8, widths=(8, 8, 8), stem_channels=8), TASKS,
                        levels=3, trunk_size=16)
        sel = Selector(TASKS, est.n_blocks, est.levels, widths=(8,), trunk_size=16,
                       stem_channels=8)
        if weights is not None:
            est.set_weights(weights[: len(est.weights)])
            sel.set_weights(weights[len(est.weights):])
        before = est.get_weights() + sel.get_weights()
        sgd = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
        adam = keras.optimizers.Adam(1e-2)
        sgd.build(est.trainable_variables)
        adam.build(sel.trainable_variables)
        est_step = EstimatorStep(est, sel, sgd, settings)
        sel_step = SelectorStep(est, sel, adam, settings)
    batch = distribute.split_batch(strategy, _batch(8))
    metrics = []
    for k, source in enumerate(("initial", "sample")):
        metrics.append(est_step(batch, tf.constant([k, 1], tf.int64), source))
    for k in range(2):
        metrics.append(sel_step(batch, tf.constant([k, 2], tf.int64), 0.2))
    metrics = [{key: float(value) for key, value in m.items()} for m in metrics]
    return metrics, before, est.get_weights() + sel.get_weights(), est.weights + sel.weights


@pytest.mark.parametrize("execution,gradient", [("sliced", "reinforce"), ("masked", "reinforce"),
                                                ("masked", "straight_through")])
def test_two_replicas_train_as_one_device_with_the_same_global_batch(mirrored, execution,
                                                                     gradient):
    """Losses and every metric agree to 1e-5 (float32), and weights and batch-norm statistics
    after four steps to 1e-3 relative (Adam divides the float32 rounding of a small gradient
    by its small second moment; seen: 1.9e-4 with oneDNN off): the loss is split over the
    replicas, batch norm takes the global batch's moments and the random structures are
    drawn for the global batch. A wrong share of the loss would move weights by far more."""
    settings = StepSettings(rho=0.3, samples=3, execution=execution, gradient=gradient)
    keras.utils.set_random_seed(0)  # the same initial weights whichever tests ran before
    one_metrics, initial, one_after, _ = _train(tf.distribute.get_strategy(), None, settings)
    two_metrics, _, two_after, variables = _train(mirrored, initial, settings)
    # Every metric, not only the loss: each replica's batch means are averaged, not summed.
    for one, two in zip(one_metrics, two_metrics):
        assert set(one) == set(two) and {"loss", "accuracy", "density"} <= set(one)
        for key in one:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-5, err_msg=key)
    for a, b in zip(one_after, two_after):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    # The steps moved the weights, and both replicas hold the same ones.
    assert max(np.abs(a - b).max() for a, b in zip(one_after, initial)) > 1e-3
    for variable in variables:
        first, second = mirrored.experimental_local_results(variable.value)
        np.testing.assert_array_equal(first.numpy(), second.numpy())


@pytest.mark.parametrize("scaled", [True, False])
def test_an_overflow_on_one_replica_skips_the_step_on_every_replica(mirrored, scaled):
    """Under dynamic loss scaling (mixed_float16) gradients overflow now and then, and the
    step must be skipped with the scale lowered, as on one device; Keras's loss-scale
    optimizer looks at one replica's gradients only, so the other's overflow must reach it.
    Without loss scaling, one replica's non-finite gradients (of a finite loss) stop the step
    on every replica, and ``finite`` says so."""
    with mirrored.scope():
        est = Estimator(backbones.wrn(depth=8, widths=(8, 8, 8), stem_channels=8), TASKS,
                        levels=3, trunk_size=16)
        sel = Selector(TASKS, est.n_blocks, est.levels, widths=(8,), trunk_size=16,
                       stem_channels=8)
        optimizer = keras.optimizers.SGD(0.05)
        if scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(est.trainable_variables)
        step = EstimatorStep(est, sel, optimizer, StepSettings(rho=0.3))
    replica_step = step._replica_step

    def overflow_on_the_second_replica(*args):
        grads, loss, means = replica_step(*args)
        second = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 1)
        return [tf.where(second, tf.constant(np.inf, g.dtype), g) for g in grads], loss, means

    step._replica_step = overflow_on_the_second_replica
    before = [v.numpy() for v in est.trainable_variables]
    metrics = step(distribute.split_batch(mirrored, _batch(8)), tf.constant([0, 1], tf.int64),
                   "initial")
    assert np.isfinite(float(metrics["loss"]))
    if scaled:
        assert bool(metrics["finite"])  # skipped by the optimizer: training goes on
        assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 14
    else:
        assert not bool(metrics["finite"])  # the run stops (train.NonFiniteLossError)
    for variable, value in zip(est.trainable_variables, before):
        for local in mirrored.experimental_local_results(variable.value):
            np.testing.assert_array_equal(local.numpy(), value)


def test_xla_under_several_replicas_is_refused(mirrored):
    """XLA compiles the cross-replica step for one device; it failed on the second replica's
    variables ("Trying to access resource ... located in device CPU:1 from device CPU:0")."""
    with mirrored.scope():
        est = Estimator(backbones.wrn(depth=8, widths=(8, 8, 8), stem_channels=8), TASKS,
                        levels=3, trunk_size=16)
        sel = Selector(TASKS, est.n_blocks, est.levels, widths=(8,), trunk_size=16,
                       stem_channels=8)
        with pytest.raises(ValueError, match="jit_compile with 2 replicas under "
                                             "MirroredStrategy"):
            EstimatorStep(est, sel, keras.optimizers.SGD(0.1),
                          StepSettings(rho=0.3, execution="masked", jit_compile=True))


def test_strategy_names(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert not distribute.is_distributed(distribute.make_strategy("auto"))  # no GPU, no TPU
    assert not distribute.is_distributed(distribute.make_strategy("one_device"))
    assert distribute.make_strategy("mirrored") is distribute.make_strategy("mirrored")
    # Over one device (a one-GPU machine), the default strategy: its input position is saved.
    one = distribute.mirrored([tf.config.list_logical_devices("CPU")[0].name])
    assert one is tf.distribute.get_strategy() and not distribute.is_distributed(one)
    assert distribute.make_strategy("mirrored").num_replicas_in_sync == 2  # conftest's devices
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("horovod")
    assert distribute.tpu_name() == ""
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert distribute.tpu_name() == "my-tpu" and distribute.tpu_name("other") == "other"
    with pytest.raises(ValueError, match="divisible by the 3 replicas"):
        distribute.per_replica_batch_size(32, 3)


def test_tpu_runs_take_the_static_shape_execution(monkeypatch):
    """On a TPU (named, or found through TPU_NAME under 'auto') the selector scores on the
    masked path with XLA-portable draws, as under jit_compile; the sliced path is refused."""
    monkeypatch.delenv("TPU_NAME", raising=False)
    config = builders.base_config()
    assert (builders.selector_execution(config), builders.step_settings(config).random_draws
            ) == ("sliced", "tensorflow")
    for strategy, tpu in (("tpu", ""), ("auto", "my-tpu")):
        config.strategy, config.tpu = strategy, tpu
        settings = builders.step_settings(config)
        assert (settings.execution, settings.random_draws) == ("masked", "portable")
    config.train.selector.execution = "sliced"
    with pytest.raises(ValueError, match="a TPU needs static shapes"):
        builders.step_settings(config)


def test_replica_rows_under_two_replicas(mirrored):
    """Inside strategy.run: the global batch is the local batches in replica order, and each
    replica's rows of a tiled global tensor (``copies`` of the batch) come back tiled."""
    local = distribute.split_batch(mirrored, tf.reshape(tf.range(8), [4, 2]))

    def replica(x):
        rows = distribute.global_rows(x)
        tiled = tf.tile(rows, [3, 1])
        stacked = tf.concat([rows, 10 + rows], 0)  # two tasks' global batches
        return (rows, distribute.local_rows(tiled, copies=3),
                distribute.local_batch(stacked, [2, 2]), distribute.sum_over_replicas(x))

    results = [[t.numpy() for t in mirrored.experimental_local_results(r)]
               for r in mirrored.run(replica, args=(local,))]
    everything = np.arange(8).reshape(4, 2)
    for r, part in enumerate((everything[:2], everything[2:])):
        np.testing.assert_array_equal(results[0][r], everything)
        np.testing.assert_array_equal(results[1][r], np.tile(part, [3, 1]))
        np.testing.assert_array_equal(results[2][r], np.concatenate([part, 10 + part]))
        np.testing.assert_array_equal(results[3][r], everything[:2] + everything[2:])


WORKER = """
import json, os, sys
sys.path.insert(0, {tests!r})
from den_tf.datasets import synthetic
synthetic.SPLIT_SIZES.update(train=200, test=60)
import test_train
from den_tf import evaluation, train
if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
    # This worker scores every validation the other way round: it would keep other best
    # weights than the chief wherever a validation gains or loses more than min_delta,
    # unless the workers agree on one worker's scores.
    evaluate = evaluation.Evaluator.evaluate
    def reversed_scores(self, *args, **kwargs):
        return {{key: dict(entry, objective=-entry["objective"])
                for key, entry in evaluate(self, *args, **kwargs).items()}}
    evaluation.Evaluator.evaluate = reversed_scores
train.train_and_evaluate(test_train.tiny_config(strategy="multi_worker"), sys.argv[1])
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(script: pathlib.Path, workdir: pathlib.Path, timeout: int) -> None:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, str(script), str(workdir)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]


def test_two_worker_processes_train_to_the_same_weights(tmp_path):
    """MultiWorkerMirroredStrategy, two worker processes on 127.0.0.1 (TF_CONFIG): the tiny
    two-stage run finishes within 6 minutes; the chief writes the results in the work
    directory, the other worker its checkpoints under workers/, and both end with the same
    weights, though the other worker scores its validations the other way round (the workers
    agree on one worker's scores). Run again with the other worker's checkpoints lost, both
    resume from the chief's (the worker would otherwise train from scratch while the chief,
    finished, evaluates)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(pathlib.Path(__file__).parent)))
    _run_two_workers(script, tmp_path / "run", timeout=360)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 < results["average"]["accuracy"] <= 100
    chief = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
    other = tf.train.load_checkpoint(str(tmp_path / "run" / "workers" / "worker_1" / "checkpoints"))
    names = [n for n in chief.get_variable_to_shape_map()
             if n.startswith(("estimator/", "selector/"))]
    assert len(names) > 10
    for name in names:
        np.testing.assert_array_equal(chief.get_tensor(name), other.get_tensor(name))
    worker = tmp_path / "run" / "workers" / "worker_1"
    shutil.rmtree(worker / "checkpoints")
    (worker / "results.json").unlink()
    _run_two_workers(script, tmp_path / "run", timeout=180)
    again = json.loads((worker / "results.json").read_text())
    assert again["average"]["accuracy"] == results["average"]["accuracy"]
