"""The compared methods (den_tf/methods.py): levels per task, what a level uses, PackNet*'s
frozen levels, NestedNet's channel limits, and each method's run and results fields."""

import json

import numpy as np
import pytest
import tensorflow as tf
from test_train import (  # noqa: F401 (fixture)
    Interrupted,
    interrupt_after,
    small_synthetic_data,
    tiny_config,
)

from den_tf import backbones, builders, cost, methods, policy, train
from den_tf.estimator import Estimator
from den_tf.tasks import Task

TASKS = [Task("a", "a", 16, 5), Task("b", "b", 16, 4), Task("c", "c", 32, 3)]


def _estimator(backbone="wrn", levels=4, tasks=TASKS):
    spec = {
        "wrn": lambda: backbones.wrn(depth=8, widths=(8, 8, 16), stem_channels=8),
        "resnext": lambda: backbones.resnext(cardinality=4, base_width=2, depth=11,
                                             widths=(16, 16, 16), stem_channels=8),
        "vgg": lambda: backbones.vgg(widths=(8, 8, 8, 16, 16), convs_per_stage=(2,) * 5,
                                     hidden_units=(16,)),
    }[backbone]()
    return Estimator(spec, tasks, levels=levels, trunk_size=16 if backbone != "vgg" else 32)


def test_levels_per_task_and_task_order():
    estimator = _estimator()
    assert methods.task_levels("baseline", estimator) == ((3,), (3,), (3,))
    assert methods.task_levels("nestednet", estimator) == ((1,), (2,), (3,))
    assert methods.task_levels("nestednet", estimator, "b,c,a") == ((3,), (1,), (2,))
    with pytest.raises(ValueError, match="name every task once"):
        methods.task_levels("packnet", estimator, "b,c")
    with pytest.raises(ValueError, match="one non-empty level per task"):
        methods.task_levels("nestednet", _estimator(levels=3))
    with pytest.raises(ValueError, match="fixed only"):
        methods.task_levels("den", estimator)
    # One task: NestedNet trains every non-empty level; PackNet* is undefined.
    single = _estimator(levels=4, tasks=TASKS[:1])
    assert methods.task_levels("nestednet", single) == ((1, 2, 3),)
    with pytest.raises(ValueError, match="several tasks"):
        methods.task_levels("packnet", single)
    # Residual blocks need a skip level more than the tasks, plain ones do not.
    assert methods.nested_levels_for("nestednet", 3, True, 5) == 4
    assert methods.nested_levels_for("packnet", 2, False, 5) == 2
    assert methods.nested_levels_for("nestednet", 1, True, 5) == 5
    assert methods.nested_levels_for("den", 3, True, 5) == 5


@pytest.mark.parametrize("backbone", ["wrn", "resnext", "vgg"])
def test_used_masks_are_exactly_what_a_level_runs(backbone):
    """Changing a weight outside a level's mask leaves that level's outputs unchanged;
    changing the masked entries changes them."""
    # VGG has no stem: its tasks enter the trunk at 32 px.
    tasks = [Task("a", "a", 32, 5)] if backbone == "vgg" else TASKS
    estimator = _estimator(backbone, levels=3, tasks=tasks)
    task, level = 0, 1
    size = estimator.tasks[task].input_size
    images = tf.random.normal([4, size, size, 3], seed=1)
    structure = tf.fill([4, estimator.n_blocks], level)

    def outputs():
        return estimator(images, task=task, structure=structure).numpy()

    # Non-trivial batch-norm statistics, so that changing them shows.
    for weight in estimator.weights:
        if "moving_mean" in weight.path:
            weight.assign(tf.random.uniform(weight.shape, -0.1, 0.1, seed=2))
        if "moving_variance" in weight.path:
            weight.assign(tf.random.uniform(weight.shape, 0.5, 1.5, seed=2))
    before = outputs()
    assert np.abs(before).min() > 0
    masks = methods.used_masks(estimator, task, level)
    assert set(masks) == {w.path for w in estimator.weights}
    originals = [w.numpy() for w in estimator.weights]
    for weight, original in zip(estimator.weights, originals):
        noise = np.random.default_rng(3).uniform(1.5, 2.5, original.shape).astype(np.float32)
        weight.assign(np.where(masks[weight.path], original, original * noise))
    np.testing.assert_array_equal(outputs(), before)
    for weight, original in zip(estimator.weights, originals):
        weight.assign(original)
    # Used entries matter: perturbing them changes the outputs.
    kernels = [w for w in estimator.blocks[0].weights if w.shape.rank == 4]
    for weight in kernels:
        original = weight.numpy()
        weight.assign(np.where(masks[weight.path], original * 1.5, original))
        assert not np.allclose(outputs(), before)
        weight.assign(original)
    # Level 1 of 3 leaves the upper channel groups of each kernel unused.
    assert all(masks[w.path].any() and not masks[w.path].all() for w in kernels)


def test_params_used_against_hand_counts():
    """WRN-8 with widths 8/8/16 (one block per stage), fractions 1/4, 1/4, 1/2 of each block's
    width: block i at level l runs conv1 (3x3 x in x c) and conv2 (3x3 x c x out)."""
    estimator = _estimator(levels=4)
    in_out = [(8, 8), (8, 8), (8, 16)]
    channels = {0: [0, 2, 4, 8], 1: [0, 2, 4, 8], 2: [0, 4, 8, 16]}
    stem = 3 * 3 * 3 * 8  # WRN stems are 3x3 by default
    for level in range(4):
        blocks = sum(9 * i * channels[b][level] + 9 * channels[b][level] * o
                     for b, (i, o) in enumerate(in_out))
        structure = np.full([2, 3], level)
        np.testing.assert_array_equal(cost.params_used(estimator, structure, 1), stem + blocks)
    mixed = np.array([[0, 3, 1]])
    assert cost.params_used(estimator, mixed, 0)[0] == stem + (9 * 8 * 8 + 9 * 8 * 8) + (
        9 * 8 * 4 + 9 * 4 * 16)


def _run(tmp_path, **overrides):
    config = tiny_config(**overrides)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(
        json.dumps(results))
    assert (tmp_path / "results.md").read_text().startswith("# test")
    for entry in results["tasks"].values():
        for key in ("accuracy", "flops", "macs", "flops_full", "params_used"):
            assert entry[key] >= 0
        assert entry["macs"] == entry["flops"] / 2
    for key in ("accuracy", "flops", "macs", "flops_fraction", "compression", "params_used"):
        assert key in results["average"]
    assert results["average"]["compression"] == pytest.approx(
        1 / results["average"]["flops_fraction"])
    return config, results


def test_baseline_trains_one_network_per_task(tmp_path):
    config, results = _run(tmp_path, method="baseline", **{"train.stages": 1})
    names = config.tasks.split(",")
    assert list(results["tasks"]) == names
    assert results["method"] == "Baseline" and results["params"]["networks"] == 3
    singles = [json.loads((tmp_path / "networks" / n / "results.json").read_text())
               for n in names]
    assert results["params"]["paper"] == sum(s["params"]["paper"] for s in singles)
    for name, single in zip(names, singles):
        assert single["tasks"][name] == results["tasks"][name]
        assert single["tasks"][name]["flops"] == single["tasks"][name]["flops_full"]
    assert results["average"]["compression"] == pytest.approx(1.0)
    # Its directory keeps its settings: DEN is not trained over it (which would write over its
    # config and results), nor is the baseline run again under other settings.
    saved = (tmp_path / "results.json").read_text()
    for other in (tiny_config(), tiny_config(method="baseline", **{"train.stages": 1,
                                                                   "train.estimator.lr": 0.1})):
        with pytest.raises(ValueError, match="holds a run made with other settings"):
            train.train_and_evaluate(other, str(tmp_path))
    assert (tmp_path / "results.json").read_text() == saved
    # So does a baseline stopped while its first network trains.
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        train.train_and_evaluate(tiny_config(method="baseline", **{"train.stages": 1}),
                                 str(stopped), [interrupt_after(4)])
    with pytest.raises(ValueError, match="holds a run made with other settings"):
        train.train_and_evaluate(tiny_config(), str(stopped))


def test_shared_baseline_is_one_network(tmp_path):
    _, results = _run(tmp_path, method="baseline", separate_networks=False,
                      **{"train.stages": 1})
    assert results["params"]["networks"] == 1
    assert results["average"]["flops_fraction"] == pytest.approx(1.0)


def test_nestednet_runs_each_task_at_its_level(tmp_path):
    config, results = _run(tmp_path, method="nestednet", task_order="synthetic_colors,"
                           "synthetic_shapes,synthetic_textures", **{"train.stages": 1})
    levels = {name: entry["level"] for name, entry in results["tasks"].items()}
    assert levels == {"synthetic_colors": 1, "synthetic_shapes": 2, "synthetic_textures": 3}
    fractions = [results["tasks"][n]["flops"] / results["tasks"][n]["flops_full"]
                 for n in ("synthetic_colors", "synthetic_shapes", "synthetic_textures")]
    assert fractions[0] < fractions[1] < fractions[2] == 1.0
    predictions = np.load(tmp_path / "predictions.npz")
    assert "probabilities" not in predictions
    task_level = {t: levels[n] for t, n in enumerate(predictions["task_names"])}
    expected = np.array([task_level[t] for t in predictions["task"]])
    np.testing.assert_array_equal(predictions["structure"], expected[:, None]
                                  * np.ones_like(predictions["structure"]))


@pytest.mark.parametrize("tasks", [3, 1])
def test_nestednet_training_never_runs_a_channel_above_the_task_level(tasks, monkeypatch):
    """The structures a NestedNet step runs (recorded from the estimator's call, eagerly):
    every row of task t at exactly its level, so no channel above it runs; one task runs
    each image at every non-empty level."""
    config = tiny_config(method="nestednet")
    config.tasks = ",".join(config.tasks.split(",")[:tasks])
    estimator, selector = builders.build_models(config)
    (phase,) = builders.build_phases(config, estimator, selector)
    levels = methods.task_levels("nestednet", estimator)
    recorded = []
    call_tasks = estimator.call_tasks

    def spy(images, structure, **kwargs):
        recorded.append((structure.numpy(), [x.shape[0] for x in images]))
        return call_tasks(images, structure, **kwargs)

    monkeypatch.setattr(estimator, "call_tasks", spy)
    batch = [{"image": tf.random.uniform([4, t.input_size, t.input_size, 3], seed=t.input_size),
              "label": tf.constant([0, 1, 2, 3])} for t in estimator.tasks]
    tf.config.run_functions_eagerly(True)
    try:
        phase.start(0)
        phase.step(batch, tf.constant([0, 0], tf.int64), 0, 0)
    finally:
        tf.config.run_functions_eagerly(False)
    ((structure, sizes),) = recorded
    rows = np.split(structure, np.cumsum(sizes)[:-1])
    assert sizes == [4 * len(levels[t]) for t in range(tasks)]
    for t, part in enumerate(rows):
        expected = np.repeat(levels[t], 4)
        np.testing.assert_array_equal(part, expected[:, None] * np.ones_like(part))
    if tasks == 1:
        assert levels == ((1, 2, 3),)


def test_packnet_keeps_earlier_levels_bit_identical(tmp_path):
    """After PackNet* trained the later tasks, every entry an earlier task uses (weights,
    batch-norm parameters and statistics) is bit-identical to its value when that task
    finished; the later task changed some of its own entries."""
    config = tiny_config(method="packnet", **{"train.stages": 2})
    estimator, _ = builders.build_models(config)
    phases = builders.build_phases(config, estimator, None)
    order = methods.task_order(estimator, "")
    assert [p.name for p in phases] == [
        f"packnet_{estimator.tasks[t].name}" for t in order for _ in range(2)]
    assert [p.decay for p in phases] == [0, 1] * 3
    levels = methods.task_levels("packnet", estimator)
    batch = [{"image": tf.random.uniform([4, t.input_size, t.input_size, 3], seed=t.input_size),
              "label": tf.constant([0, 1, 2, 3])} for t in estimator.tasks]
    snapshots = []
    for position in range(len(order)):
        for phase in phases[2 * position: 2 * position + 2]:
            phase.start(0)
            for step in range(2):
                phase.step(batch, tf.constant([position, step], tf.int64), 0, step)
        snapshots.append({w.path: w.numpy() for w in estimator.weights})
        if position:
            trainable, frozen = methods.packnet_masks(estimator, levels, order, position)
            previous = snapshots[position - 1]
            changed = False
            for weight in estimator.weights:
                now = snapshots[position][weight.path]
                np.testing.assert_array_equal(now[frozen[weight.path]],
                                              previous[weight.path][frozen[weight.path]])
                changed |= bool((now[trainable[weight.path]]
                                 != previous[weight.path][trainable[weight.path]]).any())
            assert changed
            # The channels this task adds estimate their batch-norm statistics (they start
            # at mean 0); the earlier tasks' stay as they were.
            moving = estimator.blocks[0].bn_mid.moving_mean.path
            new = trainable[moving]
            assert new.any() and (snapshots[position][moving][new] != 0).all()
    # Every task's outputs at its level are those it had when it finished training.
    size = estimator.tasks[order[0]].input_size
    images = tf.random.uniform([3, size, size, 3], seed=9)
    z = tf.fill([3, estimator.n_blocks], levels[order[0]][0])
    final = estimator(images, task=order[0], structure=z).numpy()
    for weight in estimator.weights:
        weight.assign(snapshots[0][weight.path])
    np.testing.assert_array_equal(estimator(images, task=order[0], structure=z).numpy(), final)


def test_packnet_run_interrupted_and_resumed_keeps_frozen_entries(tmp_path):
    """A PackNet* run through the trainer (plateaus restoring their best weights, checkpoints)
    stopped in the second task and resumed: at every step of a task, every entry an earlier
    task uses is bit-identical to its value at the task's first step; the results name the
    method and its levels, and an instance runs more weights at a higher level."""
    config = tiny_config(method="packnet", **{"train.stages": 1})
    estimator, _ = builders.build_models(config)
    levels = methods.task_levels("packnet", estimator)
    order = methods.task_order(estimator, "")
    frozen = [methods.packnet_masks(estimator, levels, order, p)[1] for p in range(3)]
    first = {}
    checked = []

    def check(trainer):
        position = int(trainer.state["phase"])  # one stage: the phase index is the task's
        weights = {w.path: w.numpy() for w in trainer.estimator.weights}
        assert set(weights) == set(frozen[position])
        if position not in first:
            first[position] = weights
            return
        for path, mask in frozen[position].items():
            np.testing.assert_array_equal(weights[path][mask], first[position][path][mask])
        checked.append(position)

    with pytest.raises(Interrupted):
        train.train_and_evaluate(config, str(tmp_path), [check, interrupt_after(10)])
    results = train.train_and_evaluate(config, str(tmp_path), [check])
    assert {1, 2} <= set(checked)
    assert results["method"] == "PackNet*" and results["params"]["networks"] == 1
    entries = list(results["tasks"].values())
    assert [e["level"] for e in entries] == [1, 2, 3]
    assert entries[0]["params_used"] < entries[1]["params_used"] < entries[2]["params_used"]


def test_analysis_of_a_method_without_a_selector_is_refused_before_training(tmp_path):
    from den_tf import main as cli

    for method in ("nestednet", "baseline"):
        with pytest.raises(ValueError, match=f"--analyze needs a selector .*'{method}' has none"):
            cli.run(tiny_config(method=method), str(tmp_path / method), "train", True)
    assert not list(tmp_path.iterdir())


def test_methods_without_a_selector_refuse_selector_modes():
    config = tiny_config(method="nestednet")
    with pytest.raises(ValueError, match="needs a selector"):
        builders.require_selector(config, "an export")
    with pytest.raises(ValueError, match="method must be one of"):
        builders.build_models(tiny_config(method="blockdrop_typo"))


def test_blockdrop_cost_and_squash_against_hand_values():
    """Three blocks, levels 0 (skip) and 1 (whole): kept fractions 1/3 and 1."""
    density = np.array([[0.0, 1.0]] * 3)
    structure = tf.constant([[0, 1, 0], [1, 1, 1], [1, 1, 1]])
    correct = tf.constant([1.0, 1.0, 0.0])
    ce = tf.constant([0.5, 0.2, 2.0])
    blockdrop = cost.InstanceCost("blockdrop", rho=1.0, gamma=5.0)
    np.testing.assert_allclose(blockdrop(ce, correct, structure, density),
                               [1 / 9 - 1, 0.0, 5.0], atol=1e-6)
    den = cost.InstanceCost("den", rho=0.5)
    np.testing.assert_allclose(den(ce, correct, structure, density),
                               [0.5 + 0.5 / 9, 0.2 + 0.5, 2.0 + 0.5], atol=1e-6)
    error = cost.InstanceCost("den_error", rho=0.5)  # the 0/1 error in place of the CE
    np.testing.assert_allclose(error(ce, correct, structure, density),
                               [0.5 / 9, 0.5, 1.0 + 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="cost must be one of"):
        cost.InstanceCost("reward")
    logits = tf.math.log(tf.constant([[[0.9, 0.1], [0.5, 0.5]]]))
    np.testing.assert_allclose(tf.exp(policy.squash(logits, 0.8)),
                               [[[0.74, 0.26], [0.5, 0.5]]], atol=1e-6)
    with pytest.raises(ValueError, match="two levels"):
        policy.squash(tf.zeros([1, 2, 3]), 0.8)


def test_packnet_phases_train_at_their_decayed_rates():
    """PackNet*'s phases hold its decays (one stage): each sets lr x 0.1^decay at its start."""
    config = tiny_config(method="packnet", **{"train.stages": 3})
    estimator, _ = builders.build_models(config)
    phases = builders.build_phases(config, estimator, None)
    assert sorted({phase.decay for phase in phases}) == [0, 1, 2]
    for phase in phases:
        phase.start(0)
        assert float(phase.optimizer.learning_rate.numpy()) == pytest.approx(
            config.train.estimator.lr * 0.1 ** phase.decay)


def test_blockdrop_selector_phase_explores_only_by_squashing():
    """BlockDrop explores through its squashed policy alpha p + (1 - alpha)(1 - p), not
    epsilon-greedy: the selector step draws from and scores under the squashed policy."""
    config = tiny_config(method="blockdrop", tasks="synthetic_shapes")
    estimator, selector = builders.build_models(config)
    _, selector_phase = builders.build_phases(config, estimator, selector)
    assert selector_phase.epsilon == 0.0
    logits = tf.math.log(tf.constant([[[0.9, 0.1]] * estimator.n_blocks]))
    alpha = config.blockdrop.alpha
    np.testing.assert_allclose(
        tf.exp(selector_phase._step._explored(logits))[0, 0],
        [alpha * 0.9 + (1 - alpha) * 0.1, alpha * 0.1 + (1 - alpha) * 0.9], atol=1e-6)


def test_blockdrop_run(tmp_path):
    """BlockDrop on one task: two levels (skip, whole), its settings replace the selector's,
    the first phase trains the full network, and results name it."""
    config = tiny_config(method="blockdrop", tasks="synthetic_shapes", **{"train.stages": 2})
    settings = builders.step_settings(config)
    assert (settings.cost, settings.samples, settings.baseline, settings.tau,
            settings.squash) == ("blockdrop", 1, "greedy", 1.0, 0.8)
    estimator, selector = builders.build_models(config)
    assert estimator.levels == 2 and selector is not None
    assert [b.level_channels[0] for b in estimator.blocks] == [0] * estimator.n_blocks
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["method"] == "BlockDrop" and results["method_id"] == "blockdrop"
    assert set(results["uniform_levels"]) == {"1"}
    assert 0 < results["average"]["flops"] <= results["average"]["flops_full"]
    plain = tiny_config(method="blockdrop")
    plain.model.backbone = "vgg"
    plain.model.backbone_args = dict(widths=(8, 8), convs_per_stage=(2, 2), hidden_units=(8,))
    with pytest.raises(ValueError, match="residual blocks"):
        builders.build_estimator(plain)


def test_params_used_and_compression_of_resnext_against_hand_counts():
    """ResNeXt-11 (4x2d): one bottleneck block per stage, internal widths 8/16/32 in 4 cardinal
    groups, outputs 16; three levels keep none, half or all of the groups. A block at c kept
    channels runs 1x1 in->c, a grouped 3x3 (each output sees width/4 inputs) and 1x1 c->out."""
    estimator = _estimator("resnext", levels=3, tasks=TASKS[:1])
    stem = 3 * 3 * 3 * 8
    widths, ins, out = (8, 16, 32), (8, 16, 16), 16
    group_inputs = [w // 4 for w in widths]

    def block_params(level):
        kept = [(0, w // 2, w)[level] for w in widths]
        return sum(i * c + 9 * g * c + c * out
                   for i, c, g in zip(ins, kept, group_inputs))

    for level in range(3):
        structure = np.full([1, 3], level)
        assert cost.params_used(estimator, structure, 0)[0] == stem + block_params(level)
    # Compression of level 1 against the full structure, from hand-counted multiply-adds:
    # block outputs at 16x16 (stride 1), 8x8 and 4x4; the first 1x1 runs at the input size.
    sizes_in, sizes_out = (256, 256, 64), (256, 64, 16)

    def block_macs(level):
        kept = [(0, w // 2, w)[level] for w in widths]
        return sum(a * i * c + b * (9 * g * c + c * out)
                   for a, b, i, c, g in zip(sizes_in, sizes_out, ins, kept, group_inputs))

    fixed = 256 * stem + 16 * 5  # stem at 16x16, head 16 -> 5
    table = cost.cost_table(estimator)
    for level in range(3):
        assert table.macs(tf.fill([1, 3], level), 0).numpy()[0] == fixed + block_macs(level)
    assert table.full_macs(0) / float(table.macs(tf.fill([1, 3], 1), 0)[0]) == pytest.approx(
        (fixed + block_macs(2)) / (fixed + block_macs(1)))


def test_settings_a_method_does_not_read_are_named_and_refused_on_the_command_line():
    config = builders.base_config()  # M1's three tasks on WRN-32-4, four levels
    unread = {}
    for method in methods.METHODS:
        config.method = method
        unread[method] = builders.unread_settings(config)
    assert {"rho", "selector", "train.selector", "blockdrop", "separate_networks"} <= set(
        unread["nestednet"])
    assert "task_order" not in unread["nestednet"] and "task_order" in unread["baseline"]
    assert "separate_networks" not in unread["baseline"]
    assert not {"rho", "selector", "train.selector.baseline"} & set(unread["den"])
    assert {"rho", "model.levels", "train.selector.samples"} <= set(unread["blockdrop"])
    assert "train.selector.lr" not in unread["blockdrop"]
    # What the unread keys hold changes nothing the steps are given.
    for method, key, value in (("blockdrop", "rho", 0.1), ("baseline", "rho", 0.1),
                               ("packnet", "rho", 0.1),
                               ("blockdrop", "train.selector.samples", 8),
                               ("blockdrop", "train.estimator.initial_distribution", "uniform")):
        config.method = method
        before = builders.step_settings(config)
        changed = config.copy_and_resolve_references()
        changed.update_from_flattened_dict({key: value})
        assert builders.step_settings(changed) == before, (method, key)
    # NestedNet's levels follow its tasks: M1's three need four, model.levels; two need three.
    config.method = "nestednet"
    assert "model.fractions" not in builders.unread_settings(config)
    config.tasks = "cifar100,stl10"
    assert "model.fractions" in builders.unread_settings(config)
    # model.levels is read: at three levels (one per task and the skip) the fractions apply.
    assert "model.levels" not in builders.unread_settings(config)
    three = config.copy_and_resolve_references()
    three.model.levels, three.model.fractions = 3, (0.5, 0.5)
    assert "model.fractions" not in builders.unread_settings(three)
    # What runs of two configs may differ in: only what neither reads.
    assert "model.fractions" in train.ignored_differences(config, config)
    assert "model.fractions" not in train.ignored_differences(config, three)
    config.method, config.train.selector.gradient = "den", "straight_through"
    assert "train.selector.baseline" in builders.unread_settings(config)

    config = builders.base_config()
    config.method = "baseline"
    builders.check_overrides(config, ["method", "train.estimator.lr", "separate_networks"])
    refused = (r"(?s)--config\.rho: method 'baseline' has no selector .*"
               r"--config\.train\.selector\.lr: method 'baseline'")
    with pytest.raises(ValueError, match=refused):
        builders.check_overrides(config, ["rho", "train.estimator.lr", "train.selector.lr"])


@pytest.mark.parametrize("method, tasks, backbone", [
    ("den", "synthetic_shapes,synthetic_textures", "wrn"),
    ("blockdrop", "synthetic_shapes", "wrn"),
    ("nestednet", "synthetic_shapes,synthetic_textures", "wrn"),
    ("packnet", "synthetic_shapes,synthetic_textures", "wrn"),
    ("den", "synthetic_shapes", "resnext"),
    ("nestednet", "cifar10,cifar100", "vgg"),  # (no stems: tasks of the trunk's size)
])
def test_kept_fractions_are_what_the_built_estimator_keeps(method, tasks, backbone):
    """Fig. 7 draws a level as high as ``builders.kept_fractions``, computed without building
    the estimator: it must be each block's kept channels over its width."""
    config = builders.base_config()
    config.method, config.tasks = method, tasks
    config.model.backbone = backbone
    config.model.backbone_args = {
        "wrn": dict(depth=8, widths=(8, 8, 16), stem_channels=8),
        "resnext": dict(cardinality=4, base_width=4, depth=11, widths=(16, 16, 16),
                        stem_channels=8),
        "vgg": dict(widths=(8, 8, 8, 16, 16), convs_per_stage=(2,) * 5, hidden_units=(16,)),
    }[backbone]
    if backbone == "vgg":
        config.model.levels, config.model.fractions = 3, ()
    estimator = builders.build_estimator(config)
    kept = builders.kept_fractions(config)
    for block in estimator.blocks:
        channels = np.array(block.level_channels, float)
        np.testing.assert_allclose(kept, channels / channels[-1])
