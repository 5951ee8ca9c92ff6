"""Algorithm 1 end to end on tiny synthetic data: outputs, resumption, NaN guard, TensorBoard,
and the policy-gradient estimator against the exact gradient."""

import itertools
import json
import pathlib

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from den_tf import analyze, builders, evaluation, export, files, lite, phases, policy, sweep, train
from den_tf import main as cli
from den_tf.builders import base_config
from den_tf.datasets import synthetic

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module", autouse=True)
def small_synthetic_data():
    """Fewer synthetic images, so that each run takes seconds."""
    sizes = dict(synthetic.SPLIT_SIZES)
    synthetic.SPLIT_SIZES.update(train=200, test=60)
    synthetic.generate.cache_clear()
    yield
    synthetic.SPLIT_SIZES.update(sizes)
    synthetic.generate.cache_clear()


def tiny_config(**overrides):
    config = base_config()
    config.scenario = "test"
    config.tasks = ",".join(t.name for t in synthetic.TASKS)
    config.model.backbone_args.depth = 8
    config.model.backbone_args.widths = (8, 8, 16)
    config.model.backbone_args.stem_channels = 8
    config.model.trunk_size = 16
    config.selector.widths = (8, 8)
    config.selector.stem_channels = 8
    config.selector.trunk_size = 16
    config.data.validation_fraction = 0.2
    config.data.shuffle_buffer = 64
    config.train.stages = 2
    config.train.batch_size = 8
    config.train.eval_batch_size = 32
    config.train.log_every = 2
    config.train.eval_every = 3
    config.train.checkpoint_every = 3
    config.train.patience = 100
    config.train.estimator.initial_steps = 6
    config.train.estimator.steps = 4
    config.train.estimator.lr = 0.05
    config.train.selector.steps = 4
    config.train.selector.lr = 1e-3
    config.deterministic = True
    for key, value in overrides.items():
        section = config
        *path, last = key.split(".")
        for name in path:
            section = section[name]
        section[last] = value
    return config


def test_two_stage_run_writes_every_result_and_tensorboard(tmp_path, monkeypatch):
    shuffles = []
    shuffle = evaluation.shuffled_structures
    monkeypatch.setattr(evaluation, "shuffled_structures",
                        lambda z, seed: shuffles.append((z, shuffle(z, seed))) or shuffles[-1][1])
    results = train.train_and_evaluate(tiny_config(), str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for key in ("scenario", "method", "tasks", "average", "params", "selector", "full_structure",
                "random_selector"):
        assert key in saved
    assert list(saved["tasks"]) == [t.name for t in synthetic.TASKS]
    for entry in saved["tasks"].values():
        assert 0 <= entry["accuracy"] <= 100
        assert 0 < entry["flops"] <= entry["flops_full"]
        assert entry["num_test"] == 60
        assert sum(entry["histogram"]["top"].values()) <= 60
        assert entry["histogram"]["distinct"] >= 1
    assert set(saved["average"]) >= {"accuracy", "flops", "macs", "params_used", "compression"}
    assert set(saved["params"]) == {"paper", "total", "networks", "used"}
    assert saved["params"]["networks"] == 1
    # An instance runs at most the full structure's weights, and a uniform level 1 fewer.
    full_used = saved["full_structure"]["tasks"]
    for name, entry in saved["tasks"].items():
        assert 0 < entry["params_used"] <= full_used[name]["params_used"]
        assert saved["uniform_levels"]["1"]["tasks"][name]["params_used"] < full_used[name][
            "params_used"]
    assert saved["average"]["compression"] == pytest.approx(
        saved["average"]["flops_full"] / saved["average"]["flops"])
    assert set(saved["selector"]) >= {"params", "flops"}
    for control in (saved["full_structure"], *saved["random_selector"].values()):
        assert set(control["tasks"]) == set(saved["tasks"])
        assert all("accuracy" in e and "flops" in e for e in control["tasks"].values())
    full = saved["full_structure"]["tasks"]
    assert all(np.isclose(full[n]["flops"], e["flops_full"]) for n, e in saved["tasks"].items())
    # The shuffled control ran each task's selected structures, reordered by its own seed.
    assert len(shuffles) == 3
    predictions = np.load(tmp_path / "predictions.npz")
    for t, (selected, shuffled) in enumerate(shuffles):
        np.testing.assert_array_equal(selected, predictions["structure"][predictions["task"] == t])
        np.testing.assert_array_equal(shuffled, shuffle(selected, (0, t)))
    # So it spends, task by task, exactly DEN's FLOPs (the same structures, other images).
    for name, entry in saved["random_selector"]["shuffled"]["tasks"].items():
        assert entry["flops"] == pytest.approx(saved["tasks"][name]["flops"], rel=1e-9)
    assert set(saved["uniform_levels"]) == {"1", "2", "3"}  # level 0 skips every block
    assert saved["uniform_levels"]["3"] == saved["full_structure"]
    assert saved["oracle"]["average"]["accuracy"] >= max(
        p["average"]["accuracy"] for p in saved["uniform_levels"].values())
    for entry in saved["tasks"].values():
        aware = entry["instance_awareness"]
        assert len(aware["quintile_accuracy"]) == 5
        assert aware["quintile_difficulty"] == sorted(aware["quintile_difficulty"])
    table = (tmp_path / "results.md").read_text()
    assert "| Average |" in table and "Random (marginal)" in table
    assert "Random (shuffled)" in table
    assert "Oracle over uniform levels" in table and "rank correlation" in table
    predictions = np.load(tmp_path / "predictions.npz")
    assert len(predictions["label"]) == 3 * 60
    assert predictions["probabilities"].shape[1:] == (3, 4)  # 3 blocks x 4 levels
    assert np.all((predictions["difficulty"] >= 0) & (predictions["difficulty"] <= 1))
    assert np.isclose(100 * predictions["correct"][:60].mean(),
                      saved["tasks"]["synthetic_shapes"]["accuracy"])

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    for tag in ("estimator/loss", "estimator/learning_rate", "estimator/density",
                "estimator/flops_fraction", "selector/cost", "selector/epsilon",
                "selector/accuracy", "selector/entropy", "level_probabilities",
                "validation_selector/synthetic_shapes/levels/block_00",
                "validation_selector/synthetic_colors/structures"):
        assert tag in tags, tag
    image = accumulator.Tensors("level_probabilities")[-1].tensor_proto
    assert tf.make_ndarray(image).shape[0] == 3  # width, height, encoded PNG

    def histogram(phase, event):
        return tf.make_ndarray(accumulator.Tensors(
            f"validation_{phase}/synthetic_shapes/levels/block_00")[event].tensor_proto)

    # A bucket per level; stage 1's estimator phase validates the full structure, under its
    # own tag, apart from the selector's choices.
    full = histogram("estimator", 0)
    validated = full[3, 2]
    np.testing.assert_array_equal(full, [[-0.5, 0.5, 0], [0.5, 1.5, 0], [1.5, 2.5, 0],
                                         [2.5, 3.5, validated]])
    assert validated > 0 and histogram("selector", -1)[:, 2].sum() == validated

    # The exported SavedModel serves the test images as the evaluation ran them.
    path, names = export.export_run(tiny_config(), str(tmp_path))
    served = tf.saved_model.load(path).signatures[names[2]]
    colors = synthetic.TASKS[2]
    indices = np.arange(8)
    images = np.stack(analyze.load_test_images(colors, indices, data_dir=None))
    outputs = served(images=tf.constant(images))
    rows = np.flatnonzero(predictions["task"] == 2)[indices]
    np.testing.assert_array_equal(outputs["structure"].numpy(), predictions["structure"][rows])
    np.testing.assert_array_equal(outputs["top_classes"].numpy()[:, 0],
                                  predictions["prediction"][rows])
    np.testing.assert_allclose(outputs["flops"].numpy(), predictions["flops"][rows])
    # So do the TFLite models (--mode=export_lite), image by image.
    network = lite.LiteNetwork(export.export_lite_run(tiny_config(), str(tmp_path)))
    for image, row in zip(images[:4], rows):
        served_alone = network.predict(image, colors.name)
        np.testing.assert_array_equal(served_alone["structure"], predictions["structure"][row])
        assert served_alone["top_classes"][0] == predictions["prediction"][row]
        assert np.isclose(served_alone["flops"], predictions["flops"][row])

    # Accuracy under budgets: at the full budget the selector's choice is the evaluated one.
    curve = train.measure_budgets(tiny_config(), str(tmp_path), points=3)
    assert json.loads((tmp_path / "budget.json").read_text()) == json.loads(json.dumps(curve))
    assert np.isclose(curve["choosers"]["selector"][-1]["average"]["accuracy"],
                      saved["average"]["accuracy"])

    # --mode=evaluate --analyze: the same results again, and the analysis page beside them.
    assert not (tmp_path / "analysis").exists()
    again = cli.run(tiny_config(), str(tmp_path), "evaluate", analysis=True)
    assert again["average"] == saved["average"]
    figures = json.loads((tmp_path / "analysis" / "figures.json").read_text())
    assert {"fig6a_structures.png", "fig7_structures.png", "budget.png"} <= set(figures)
    assert all((tmp_path / "analysis" / name).stat().st_size > 0 for name in figures)
    with pytest.raises(ValueError, match="'train' or 'evaluate'"):
        cli.run(tiny_config(), str(tmp_path), "export")


def test_finished_markers_are_never_left_half_written(tmp_path, monkeypatch):
    """results.json and budget.json mark finished work for ``sweep.run_seeds``: a write cut off
    part way leaves the previous file (or none), not a truncated one; config.json too, which
    every later command reads."""
    path = tmp_path / "results.json"
    files.write_json(str(path), {"accuracy": 1})
    train._write_config(tiny_config(), str(tmp_path))
    saved_config = (tmp_path / "config.json").read_text()

    def cut_off(value, f, **kwargs):
        f.write('{"accuracy": ')
        raise Interrupted

    monkeypatch.setattr(json, "dump", cut_off)
    for target in (path, tmp_path / "budget.json"):
        with pytest.raises(Interrupted):
            files.write_json(str(target), {"accuracy": 2})
    assert json.loads(path.read_text()) == {"accuracy": 1}
    assert not (tmp_path / "budget.json").exists()
    monkeypatch.setattr(ml_collections.ConfigDict, "to_json", cut_off_config)
    with pytest.raises(Interrupted):
        train._write_config(tiny_config(**{"train.stages": 5}), str(tmp_path))
    assert (tmp_path / "config.json").read_text() == saved_config


def cut_off_config(config, **kwargs):
    raise Interrupted


def test_a_replaced_directory_is_the_old_one_or_the_whole_new_one(tmp_path, monkeypatch):
    target = tmp_path / "export"
    with files.replaced_directory(str(target) + "/") as partial:  # a trailing slash
        (pathlib.Path(partial) / "model").write_text("first")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert [p.name for p in target.iterdir()] == ["model"]
    with pytest.raises(KeyboardInterrupt), files.replaced_directory(str(target)) as partial:
        (pathlib.Path(partial) / "model").write_text("second")
        raise KeyboardInterrupt  # cut off while filling: the old one stays, nothing beside it
    assert (target / "model").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    # The rename into place fails: the old directory goes back.
    replace = files.os.replace

    def failing(source, destination):
        if source.endswith(".partial"):
            raise OSError("disk full")
        replace(source, destination)

    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(OSError, match="disk full"), files.replaced_directory(str(target)) as p:
        (pathlib.Path(p) / "model").write_text("third")
    assert (target / "model").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_json_files_are_strict_json(tmp_path):
    """NaN and infinities (a quintile of fewer than five instances) are written as null."""
    path = tmp_path / "results.json"
    files.write_json(str(path), {"quintiles": [0.5, float("nan")], "best": np.float64(np.inf),
                                 "nested": ({"x": -float("inf")}, 2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"quintiles": [0.5, None], "best": None,
                                "nested": [{"x": None}, 2]}


class Interrupted(Exception):
    pass


def interrupt_after(global_steps):
    def hook(trainer):
        if int(trainer.state["global_step"]) >= global_steps:
            raise Interrupted

    return hook


def test_interrupted_run_resumes_to_the_same_results(tmp_path):
    uninterrupted = train.train_and_evaluate(tiny_config(), str(tmp_path / "a"))
    # Stop mid-phase (stage 1's estimator phase, after the checkpoint at global step 3, which
    # follows the phase's first validation), losing the steps since.
    with pytest.raises(Interrupted):
        train.train_and_evaluate(tiny_config(), str(tmp_path / "b"), [interrupt_after(5)])
    assert not (tmp_path / "b" / "results.json").exists()
    latest = tf.train.latest_checkpoint(str(tmp_path / "b" / "checkpoints"))
    assert latest.endswith("-3")
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("estimator_plateau/best/.ATTRIBUTES/VARIABLE_VALUE") < np.inf

    # The stopped run is evaluated as it stands, but not as a finished run; nothing that needs
    # a trained run (an export, the budget curve, the analysis page) takes it.
    interim = cli.run(tiny_config(), str(tmp_path / "b"), "evaluate")
    assert interim["unfinished"] == "0 of 2 stages"
    assert json.loads((tmp_path / "b" / "interim_results.json").read_text())["unfinished"]
    assert (tmp_path / "b" / "interim_predictions.npz").exists()
    assert not (tmp_path / "b" / "results.json").exists()
    for refused in (lambda: export.export_run(tiny_config(), str(tmp_path / "b")),
                    lambda: train.measure_budgets(tiny_config(), str(tmp_path / "b")),
                    lambda: cli.run(tiny_config(), str(tmp_path / "b"), "evaluate", True)):
        with pytest.raises(ValueError, match="not finished training"):
            refused()
    # Nor does a resume, or an evaluation, under other settings.
    with pytest.raises(ValueError, match=r"other settings .*rho: 1.0 there, 0.5 here"):
        train.train_and_evaluate(tiny_config(rho=0.5), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="train.estimator.lr: 0.05 there, 0.1 here"):
        train.evaluate_run(tiny_config(**{"train.estimator.lr": 0.1}), str(tmp_path / "b"))
    # Nor on other versions of its datasets (the demo's, in memory, have none).
    versions = tmp_path / "b" / train.DATA_VERSIONS
    assert json.loads(versions.read_text()) == {}
    versions.write_text('{"cifar100": "cifar100/3.0.1"}')
    with pytest.raises(ValueError, match=r"other versions of its datasets .*'cifar100/3.0.1'"):
        train.train_and_evaluate(tiny_config(), str(tmp_path / "b"))
    versions.write_text("{}")

    # The resume does not write again the checkpoint it resumed from (a write cut off would
    # leave the run nothing to resume from), and its next one comes checkpoint_every (3)
    # global steps after it, as in an uninterrupted run; a logging setting may change.
    checkpoints = tmp_path / "b" / "checkpoints"
    written = (checkpoints / "ckpt-3.index").stat().st_mtime_ns
    seen = []

    def after_each_step(trainer):
        if len(seen) < 4:
            seen.append(((checkpoints / "ckpt-3.index").stat().st_mtime_ns,
                         sorted(int(p.stem[5:]) for p in checkpoints.glob("ckpt-*.index"))))

    resumed = train.train_and_evaluate(tiny_config(**{"train.log_every": 5}),
                                       str(tmp_path / "b"), [after_each_step])
    # After global steps 4 to 7 (the phase ends at step 6):
    assert seen[0] == seen[1] == seen[2] == (written, [0, 3])
    assert seen[3][1] == [0, 3, 6]
    assert resumed == uninterrupted
    # A branch from the checkpoint that ends stage 2's estimator phase (global step 6 + 4 + 4)
    # with the same config also continues exactly.
    sweep.branch(str(tmp_path / "a"), 14, str(tmp_path / "c"))
    assert train.train_and_evaluate(tiny_config(), str(tmp_path / "c")) == uninterrupted
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 13"):
        sweep.branch(str(tmp_path / "a"), 13, str(tmp_path / "d"))
    # A branch keeps the dataset versions of the run it comes from, and the resume checks them.
    (tmp_path / "a" / train.DATA_VERSIONS).write_text('{"cifar100": "cifar100/3.0.1"}')
    sweep.branch(str(tmp_path / "a"), 14, str(tmp_path / "e"))
    with pytest.raises(ValueError, match=r"other versions of its datasets .*'cifar100/3.0.1'"):
        train.train_and_evaluate(tiny_config(), str(tmp_path / "e"))
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        sweep.branch(str(tmp_path / "a"), 14, str(tmp_path / "c"))


def test_xla_compiled_run_finishes(tmp_path):
    """``--config.jit_compile=True``: both phases' steps compiled with XLA, the selector
    scoring on the masked path; a two-stage run ends with results."""
    results = train.train_and_evaluate(tiny_config(jit_compile=True), str(tmp_path))
    assert 0 <= results["average"]["accuracy"] <= 100
    assert 0 < results["average"]["flops"] <= results["full_structure"]["average"]["flops"]


def test_run_under_two_replicas_resumes_under_one(tmp_path):
    """``--config.strategy=mirrored`` on two logical CPU devices trains; its checkpoint (which
    cannot hold the distributed input iterator) resumes on one device, whose input then
    restarts, and the run ends with results."""
    with pytest.raises(Interrupted):
        train.train_and_evaluate(tiny_config(strategy="mirrored"), str(tmp_path),
                                 [interrupt_after(5)])
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("-3")
    saved = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
    assert "estimator" in saved and "iterator" not in saved
    results = train.train_and_evaluate(tiny_config(strategy="one_device"), str(tmp_path))
    assert 0 < results["average"]["accuracy"] <= 100
    final = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert final.endswith("-18")  # 6 + 4 + 4 + 4 steps
    assert "iterator" in {name.split("/")[0] for name, _ in tf.train.list_variables(final)}


def test_mixed_precision(tmp_path):
    """mixed_bfloat16: the blocks compute in bfloat16 (weights, batch norm and logits float32)
    and a two-stage run ends with finite losses and results; mixed_float16: both optimizers
    scale the loss (dynamic loss scaling) and a step on float16 stays finite."""
    seen = {}

    def hook(trainer):
        seen["compute"] = trainer.estimator.blocks[0].compute_dtype
        seen["weights"] = trainer.estimator.blocks[0].conv1.dtype
        seen["optimizer"] = type(trainer.phases[0].optimizer).__name__

    bf16 = tiny_config(precision="mixed_bfloat16")
    results = train.train_and_evaluate(bf16, str(tmp_path / "bf16"), [hook])
    assert seen == {"compute": "bfloat16", "weights": "float32", "optimizer": "SGD"}
    assert 0 < results["average"]["accuracy"] <= 100
    assert keras.config.dtype_policy().name == "float32"  # the policy is restored
    # Evaluated again, the run computes as it trained (it was rebuilt in float32 and gave
    # other figures), and an export computes in float32.
    estimator, _ = train.restore_for_evaluation(bf16, str(tmp_path / "bf16"))
    assert estimator.blocks[0].compute_dtype == "bfloat16"
    again = train.evaluate_run(bf16, str(tmp_path / "bf16"))
    assert again["tasks"] == results["tasks"]
    estimator, _ = train.restore_for_evaluation(bf16, str(tmp_path / "bf16"), precision="float32")
    assert estimator.blocks[0].compute_dtype == "float32"

    config = tiny_config(precision="mixed_float16")
    with builders.precision(config.precision):
        estimator, selector = builders.build_models(config)
    phases = builders.build_phases(config, estimator, selector)
    for phase in phases:
        assert isinstance(phase.optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(phase.optimizer.scale_loss(tf.constant(1.0))) == 2.0 ** 15
    batch = next(iter(train.multitask_dataset(
        estimator.tasks, "train", 4, seed=0, training=True, **builders.data_kwargs(config))))
    for phase in phases:
        metrics = phase.step(batch, tf.constant([0, 1], tf.int64), 0, 0)
        assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="precision must be one of"):
        with builders.precision("float8"):
            pass
    # Rebuilt from its config under its own policy, the same model; outside it, an error
    # (its blocks would have computed in float32 under a mixed_float16 label).
    with builders.precision(config.precision):
        clone = type(estimator).from_config(estimator.get_config())
    assert clone.blocks[0].compute_dtype == "float16"
    with pytest.raises(ValueError, match=r"dtype policy 'mixed_float16' must be built under "
                                         r"that policy .*'float32'"):
        type(estimator).from_config(estimator.get_config())


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    # A huge learning rate: step 1 is finite and checkpointed, then the weights blow up.
    config = tiny_config(**{"train.estimator.lr": 1e12, "train.checkpoint_every": 1})
    with pytest.raises(train.NonFiniteLossError,
                       match=r"stage 1, estimator phase, step (\d+); the last good checkpoint"):
        train.train_and_evaluate(config, str(tmp_path))
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) >= 1
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("state/step/.ATTRIBUTES/VARIABLE_VALUE") >= 1
    estimator, _ = train.restore_for_evaluation(config, str(tmp_path))
    assert all(np.all(np.isfinite(w)) for w in estimator.get_weights())
    # Restored, not freshly initialised: every kernel is one of the checkpoint's tensors (a
    # variable is saved once, under the first path that reaches it: maybe the optimizer's).
    saved = [reader.get_tensor(name) for name, shape in reader.get_variable_to_shape_map().items()
             if len(shape) > 1]
    kernels = [w for w in estimator.get_weights() if w.ndim > 1]
    assert len(kernels) > 5
    for kernel in kernels:
        assert any(s.shape == kernel.shape and np.array_equal(s, kernel) for s in saved)
    initial, _ = builders.build_models(config)
    assert not any(np.array_equal(s, w) for w in initial.get_weights() if w.ndim > 1
                   for s in saved if s.shape == w.shape)  # as a fresh model's would not be


def test_non_finite_gradients_of_a_finite_loss_change_no_weight(tmp_path, monkeypatch):
    """A finite loss with NaN gradients (an overflow in the backward pass) changes no
    trainable weight and stops the run, as a non-finite loss does; before, the update poisoned
    the weights, and the next checkpoint saved them."""
    from den_tf import steps

    replica_step = steps.EstimatorStep._replica_step

    def poisoned(self, *args):
        grads, loss, means = replica_step(self, *args)
        return [None if g is None else g * float("nan") for g in grads], loss, means

    monkeypatch.setattr(steps.EstimatorStep, "_replica_step", poisoned)
    config = tiny_config()
    estimator, selector = builders.build_models(config)
    phase = builders.build_phases(config, estimator, selector)[0]
    before = [w.numpy().copy() for w in estimator.trainable_weights]
    batch = next(iter(train.multitask_dataset(
        estimator.tasks, "train", 4, seed=0, training=True, **builders.data_kwargs(config))))
    metrics = phase.step(batch, tf.constant([0, 1], tf.int64), 0, 0)
    assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, estimator.trainable_weights))
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite gradients \(of a finite "
                                                       r"loss, .*\) at stage 1, estimator "
                                                       r"phase, step 1;"):
        train.train_and_evaluate(config, str(tmp_path))


def test_a_listed_checkpoint_whose_files_are_missing_stops_the_run(tmp_path):
    """tf.train.latest_checkpoint says None then: the run would start again over its work."""
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n'
                                          'all_model_checkpoint_paths: "ckpt-5"\n')
    for call in (lambda: train.train_and_evaluate(tiny_config(), str(tmp_path)),
                 lambda: train.evaluate_run(tiny_config(), str(tmp_path))):
        with pytest.raises(FileNotFoundError, match=r"checkpoint lists .*ckpt-5, whose files "
                                                    r"are missing"):
            call()
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint"]


def test_an_input_position_from_another_pipeline_stops_the_resume(tmp_path, monkeypatch):
    """A checkpoint whose iterator another version's input pipeline saved (its validation
    split may differ) is named as such, not restored in part."""
    with pytest.raises(Interrupted):
        train.train_and_evaluate(tiny_config(), str(tmp_path), [interrupt_after(5)])
    original = train.multitask_dataset
    monkeypatch.setattr(train, "multitask_dataset",
                        lambda *args, **kwargs: original(*args, **kwargs).take(10**12))
    with pytest.raises(RuntimeError, match=r"ckpt-3 holds an input position that this "
                                           r"version's input pipeline cannot restore"):
        train.train_and_evaluate(tiny_config(), str(tmp_path))


def test_a_worker_that_cannot_see_the_chiefs_checkpoints_stops(tmp_path, monkeypatch):
    """A non-chief worker saves into its own directory but resumes from the chief's; with
    checkpoints of its own and none of the chief's, the work directory is not shared, and
    starting again from scratch would train apart from the chief."""
    own = tmp_path / "workers" / "worker_1"
    monkeypatch.setattr(train.distribute, "output_dir", lambda strategy, workdir: str(own))
    with pytest.raises(Interrupted):
        train.train_and_evaluate(tiny_config(), str(tmp_path), [interrupt_after(5)])
    assert tf.train.latest_checkpoint(str(own / "checkpoints")).endswith("-3")
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(ValueError, match=r"this worker has checkpoints .*ckpt-3.* but the "
                                         r"chief's directory .* has none"):
        train.train_and_evaluate(tiny_config(), str(tmp_path))


def test_evaluation_refuses_a_checkpoint_without_the_models(tmp_path):
    """Scoring initial weights as a trained run's would write wrong numbers silently."""
    stage = tf.Variable(2, dtype=tf.int64)
    tf.train.Checkpoint(state=tf.train.Checkpoint(stage=stage)).save(
        str(tmp_path / "checkpoints" / "ckpt"))
    with pytest.raises(ValueError, match=r"ckpt-1 does not hold every weight of "
                                         r"\['estimator', 'selector'\]"):
        train.restore_for_evaluation(tiny_config(), str(tmp_path))


def test_a_phase_that_converges_between_logging_steps_logs_its_last_window(tmp_path,
                                                                          monkeypatch):
    """Every phase converges at its first evaluation (step 3; logging every 2 steps): the
    scalars of its third step are written at that step, not dropped."""
    original = phases.Plateau.update
    monkeypatch.setattr(phases.Plateau, "update",
                        lambda plateau, objective: original(plateau, objective) or True)
    train.train_and_evaluate(tiny_config(**{"train.stages": 1}), str(tmp_path))
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    logged = {phase: [event.step for event in accumulator.Tensors(f"{phase}/loss")]
              for phase in ("estimator", "selector")}
    assert logged == {"estimator": [2, 3], "selector": [5, 6]}


def test_non_finite_validation_objective_stops_the_run(tmp_path):
    """Batch norm's moving variance made NaN after the first step: training (on batch
    statistics) stays finite, the validation objective does not, and the run stops there
    instead of keeping stale best weights."""
    def poison(trainer):
        variance = trainer.estimator.neck_bn.moving_variance
        variance.assign(tf.fill(variance.shape, np.nan))

    with pytest.raises(train.NonFiniteLossError, match="non-finite validation objective"):
        train.train_and_evaluate(tiny_config(), str(tmp_path), [poison])


def test_config_differences_name_each_setting_outside_the_resumable_ones():
    saved = {"rho": 1.0, "train": {"lr": 0.1, "log_every": 100, "stages": 4},
             "data": {"data_dir": "a"}, "old": 1}
    current = {"rho": 1.0, "train": {"lr": 0.2, "log_every": 5, "stages": 4},
               "data": {"data_dir": "b"}, "new": (1, 2)}
    assert train.config_differences(saved, current) == [
        "new: 'missing' there, (1, 2) here", "old: 1 there, 'missing' here",
        "train.lr: 0.1 there, 0.2 here"]
    assert train.config_differences(saved, saved) == []
    # A key in `ignored` covers the fields under it.
    ignored = train.RESUMABLE_SETTINGS | {"train", "new"}
    assert train.config_differences(saved, current, ignored=ignored) == [
        "old: 1 there, 'missing' here"]


def test_a_setting_the_method_does_not_read_does_not_lock_its_run_out(tmp_path):
    """BlockDrop trained with --config.rho before that was refused: its config.json holds a
    rho it never read. Passing it again is refused, so it must not be compared either."""
    saved = tiny_config(method="blockdrop", rho=0.1)
    train._write_config(saved, str(tmp_path))
    train.check_run_config(tiny_config(method="blockdrop"), str(tmp_path))  # rho 1.0: passes
    with pytest.raises(ValueError, match=r"train.estimator.lr: 0.05 there, 0.1 here"):
        train.check_run_config(tiny_config(method="blockdrop", **{"train.estimator.lr": 0.1}),
                               str(tmp_path))
    train._write_config(tiny_config(rho=0.1), str(tmp_path))  # DEN reads its rho
    with pytest.raises(ValueError, match=r"rho: 0.1 there, 1.0 here"):
        train.check_run_config(tiny_config(), str(tmp_path))


def test_a_url_work_directory_is_refused_before_any_work(tmp_path, monkeypatch):
    """os.makedirs("gs://b/m1") would make a local folder "gs:" for the results while the
    checkpoints went to the bucket."""
    monkeypatch.chdir(tmp_path)
    for call in (lambda: train.train_and_evaluate(tiny_config(), "gs://bucket/m1"),
                 lambda: train.evaluate_run(tiny_config(), "gs://bucket/m1"),
                 lambda: sweep.run_seeds(tiny_config(), "s3://bucket/sweep", [0])):
        with pytest.raises(ValueError, match=r"://bucket/\w+: the work directory must be a "
                                             r"local path"):
            call()
    assert list(tmp_path.iterdir()) == []
    files.check_local(str(tmp_path))  # a local path passes


@pytest.mark.parametrize("override, message", [
    ({"train.selector.baseline": "mean"}, r"baseline must be one of \('none'"),
    ({"train.selector.baseline": "leave_one_out", "train.selector.samples": 1},
     "'leave_one_out' needs samples >= 2"),
    ({"train.selector.execution": "fast"}, "execution must be one of"),
    ({"train.selector.cost": "blockdrop"}, r"train.selector.cost must be one of \('den'"),
    ({"train.estimator.structures": "best"}, "later_structures must be one of"),
    ({"train.estimator.tau": 1.5}, r"tau must lie in \[0, 1\]"),
    ({"train.task_weights": (1.0,)}, r"one weight per task \(3\)"),
    ({"train.patience": 0}, "patience must be >= 1"),
    ({"train.selector.steps": 0}, "steps must be >= 1"),
])
def test_bad_training_settings_are_rejected(override, message):
    config = tiny_config(**override)
    estimator, selector = builders.build_models(config)
    with pytest.raises(ValueError, match=message):
        builders.build_phases(config, estimator, selector)


def test_bad_loop_settings_are_rejected():
    with pytest.raises(ValueError, match="train.eval_every must be >= 1, got 0"):
        train.LoopSettings.from_config(tiny_config(**{"train.eval_every": 0}))


@pytest.mark.parametrize("baseline", ["none", "leave_one_out", "greedy"])
def test_policy_gradient_matches_exact_gradient(baseline):
    """Eq. (7) with |Z| samples per instance, against grad sum_z P(z) R(z) over all 3^2 z."""
    n_blocks, levels, instances, samples = 2, 3, 4, 4
    rng = np.random.RandomState(0)
    features = tf.constant(rng.normal(size=(instances, 5)), tf.float32)
    weights = tf.Variable(rng.normal(size=(5, n_blocks * levels)) * 0.5, dtype=tf.float32)
    all_z = np.array(list(itertools.product(range(levels), repeat=n_blocks)))
    cost_table = tf.constant(rng.uniform(0, 3, size=(instances, len(all_z))), tf.float32)

    def logits_fn():
        return tf.reshape(features @ weights, [instances, n_blocks, levels])

    def cost_of(z):  # z: (k, instances, n) -> R: (k, instances)
        ids = z[..., 0] * levels + z[..., 1]
        return tf.transpose(tf.gather(cost_table, tf.transpose(ids), axis=1, batch_dims=1))

    with tf.GradientTape() as tape:
        log_p_all = tf.stack(
            [policy.log_prob(logits_fn(), tf.constant(np.tile(z, (instances, 1)))) for z in all_z],
            axis=1)
        expected = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_all) * cost_table, axis=1))
    exact = tape.gradient(expected, weights).numpy()

    estimates = []
    for chunk in range(40):
        with tf.GradientTape() as tape:
            logits = logits_fn()
            tiled = tf.tile(logits, [samples * 50, 1, 1])  # 50 independent |Z|-sample draws
            z = policy.sample_structure(tiled, tf.constant([chunk, 1]))
            costs = tf.reshape(cost_of(tf.reshape(z, [samples * 50, instances, n_blocks])),
                               [50, samples, instances])
            greedy = cost_of(policy.argmax_structure(logits)[tf.newaxis])[tf.newaxis]
            base = tf.stack([policy.baseline(costs[d], baseline, greedy[0]) for d in range(50)])
            base = tf.broadcast_to(base, costs.shape)
            loss = policy.reinforce_surrogate(
                policy.log_prob(tiled, z), tf.reshape(costs, [-1]), tf.reshape(base, [-1])
            )
        estimates.append(tape.gradient(loss, weights).numpy())
    estimates = np.array(estimates)
    mean = estimates.mean(axis=0)
    stderr = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(mean - exact) <= 4 * stderr + 1e-3), (mean, exact, stderr)
    assert np.abs(exact).max() > 0.01  # a real gradient, not a vacuous comparison


def _experiment_config(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_demo_policy_gradient_differs_from_the_demo_only_in_its_selector():
    """The README compares the two demos as "the same run but the selector's gradient"."""
    demo = _flat(json.loads(_experiment_config("demo").to_json()))
    paper = _flat(json.loads(_experiment_config("demo_policy_gradient").to_json()))
    differing = {key: (demo[key], paper[key]) for key in demo if demo[key] != paper[key]}
    assert set(demo) == set(paper)
    assert differing == {
        "selector.widths": ([16, 32, 64], [8, 16, 32]),
        "selector.stem_channels": (16, 8),
        "train.selector.gradient": ("straight_through", "reinforce"),
        "train.selector.samples": (1, 8),
    }


def test_demo_config_is_valid():
    config = _experiment_config("demo")
    estimator, selector = builders.build_models(config)
    phases = builders.build_phases(config, estimator, selector)
    assert [p.name for p in phases] == ["estimator", "selector"]
    assert train.LoopSettings.from_config(config).stages == 2
    assert [t.name for t in estimator.tasks] == config.tasks.split(",")
