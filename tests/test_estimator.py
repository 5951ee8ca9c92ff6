"""The estimator and selector: execution paths against an explicitly built sub-network,
the multi-task pass, Keras contracts and argument errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from den_tf import backbones, blocks, builders, policy
from den_tf import estimator as estimator_lib
from den_tf.estimator import Estimator, features
from den_tf.selector import Selector
from den_tf.tasks import Task

TASKS = [Task("small", "s", 16, 5), Task("large", "l", 32, 7)]
SPEC = backbones.wrn(depth=14, widths=(8, 16, 16), stem_channels=8, stem_kernel=3)


def _estimator(**kwargs):
    est = Estimator(SPEC, TASKS, levels=4, trunk_size=16, **kwargs)
    # Move BN statistics away from their initial values.
    for seed in range(3):
        images = [tf.random.normal((6, t.input_size, t.input_size, 3)) * (1 + seed) for t in TASKS]
        z = policy.uniform_structure(12, est.n_blocks, est.levels, tf.constant([seed, 0]))
        est.call_tasks(images, z, training=True)
    return est


def _bn(layer, channels):
    bn = keras.layers.BatchNormalization(epsilon=layer.epsilon)
    bn.build((None, None, None, channels))
    bn.set_weights([w.numpy()[:channels] for w in (layer.gamma, layer.beta, layer.moving_mean,
                                                    layer.moving_variance)])
    return bn


def _conv(kernel, stride=1):
    conv = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[0], stride, "same", use_bias=False)
    conv.build((None, None, None, kernel.shape[2]))
    conv.set_weights([kernel])
    return conv


def reference_logits(est, images, task, levels):
    """An ordinary Keras network with the kept weights of structure ``levels``."""
    x = _conv(est.stems[task].kernel.numpy(), est.stems[task].strides[0])(images)
    for block, level in zip(est.blocks, levels):
        shortcut = x
        if block.stride > 1:
            shortcut = keras.layers.AveragePooling2D(block.stride, padding="same")(shortcut)
        shortcut = tf.pad(shortcut, [[0, 0]] * 3 + [[0, block.out_channels - x.shape[-1]]])
        kept = block.level_channels[level]
        if kept:
            h = tf.nn.relu(_bn(block.bn_in, x.shape[-1])(x))
            h = _conv(block.conv1.numpy()[..., :kept], block.stride)(h)
            h = tf.nn.relu(_bn(block.bn_mid, kept)(h))
            shortcut = shortcut + _conv(block.conv2.numpy()[:, :, :kept, :])(h)
        x = shortcut
    x = tf.reduce_mean(tf.nn.relu(_bn(est.neck_bn, x.shape[-1])(x)), axis=[1, 2])
    head = keras.layers.Dense(est.heads[task].units)
    head.build(x.shape)
    head.set_weights(est.heads[task].get_weights())
    return head(x)


def test_masked_sliced_and_explicit_subnetwork_agree():
    est = _estimator()
    images = tf.random.normal((5, 32, 32, 3))
    uniform = tf.constant([[3, 0, 1, 2, 0, 3]] * 5)
    mixed = tf.constant([[3, 0, 1, 2, 0, 3], [0, 0, 0, 0, 0, 0], [1, 2, 3, 1, 2, 3],
                         [3, 3, 3, 3, 3, 3], [2, 1, 0, 3, 1, 0]])
    for z in (uniform, mixed):
        masked = est(images, task=1, structure=z).numpy()
        sliced = est(images, task=1, structure=z, execution="sliced").numpy()
        explicit = np.concatenate(
            [reference_logits(est, images[b:b + 1], 1, z.numpy()[b]) for b in range(5)]
        )
        assert np.abs(masked - sliced).max() < 1e-5
        assert np.abs(masked - explicit).max() < 1e-5
    # Different structures give different outputs: the comparison is not vacuous.
    assert np.abs(masked[1] - masked[3]).max() > 1e-3


def test_sliced_path_runs_a_shared_structure_without_partitioning(monkeypatch):
    """A batch of one (or of one shared structure) runs each block at its level directly, in
    a tf.function traced once for every structure and batch size."""
    est = _estimator()
    images = tf.random.normal((4, 32, 32, 3))
    mixed = tf.constant([[3, 0, 1, 2, 0, 3], [0, 0, 0, 0, 0, 0], [1, 2, 3, 1, 2, 3],
                         [2, 1, 0, 3, 1, 0]])
    sliced = tf.function(
        lambda x, z: est(x, task=1, structure=z, execution="sliced"),
        input_signature=[tf.TensorSpec([None, 32, 32, 3]), tf.TensorSpec([None, 6], tf.int32)],
    )
    for b in range(4):
        expected = est(images[b:b + 1], task=1, structure=mixed[b:b + 1])
        assert np.abs(sliced(images[b:b + 1], mixed[b:b + 1]) - expected).max() < 1e-5
    assert np.abs(sliced(images, mixed) - est(images, task=1, structure=mixed)).max() < 1e-5
    assert sliced.experimental_get_tracing_count() == 1
    empty = tf.function(lambda x, z: est(x, task=1, structure=z, execution="sliced"))
    assert empty(images[:0], mixed[:0]).shape == (0, 7)  # a static batch of 0 traces both ways
    partitions = []
    run_span = blocks.run_span
    monkeypatch.setattr(blocks, "run_span", lambda span, *a, **k:
                        partitions.append([b.name for b in span]) or run_span(span, *a, **k))
    est(images[:1], task=1, structure=mixed[:1], execution="sliced")  # eager: one branch runs
    est(images[:2], task=1, structure=tf.tile(mixed[2:3], [2, 1]), execution="sliced")
    assert partitions == []
    est(images[:2], task=1, structure=mixed[:2], execution="sliced")
    names = [block.name for block in est.blocks]
    assert partitions == [names[:2], names[2:4], names[4:]]  # spans of BLOCKS_PER_MERGE


@pytest.mark.parametrize("blocks_per_merge", [1, 2, 4])
def test_a_mixed_batch_gives_the_same_outputs_whatever_the_span(blocks_per_merge, monkeypatch):
    """The sliced path regroups a mixed batch every ``BLOCKS_PER_MERGE`` blocks (the last span
    shorter when they do not divide the blocks); its outputs are each block partitioning and
    stitching its own input, and the masked path's."""
    est = _estimator()
    monkeypatch.setattr(estimator_lib, "BLOCKS_PER_MERGE", blocks_per_merge)
    spans, run_span = [], blocks.run_span
    monkeypatch.setattr(blocks, "run_span", lambda span, *a, **k:
                        spans.append(len(span)) or run_span(span, *a, **k))
    images = tf.random.normal((7, 32, 32, 3))
    mixed = tf.constant([[3, 0, 1, 2, 0, 3], [0, 0, 0, 0, 0, 0], [1, 2, 3, 1, 2, 3],
                         [2, 1, 0, 3, 1, 0], [3, 0, 1, 2, 0, 3], [1, 1, 3, 0, 2, 2],
                         [2, 1, 0, 3, 1, 1]])
    h = est.stem(images, 1)
    for i, block in enumerate(est.blocks):
        h = block.partitioned(h, mixed[:, i])
    spans.clear()  # (partitioned ran spans of one block)
    sliced = est._trunk(est.stem(images, 1), mixed, execution="sliced")
    assert spans == {1: [1] * 6, 2: [2, 2, 2], 4: [4, 2]}[blocks_per_merge]
    np.testing.assert_allclose(sliced, features(h, est.neck_bn, est.hidden, False), atol=1e-6)
    np.testing.assert_allclose(sliced, est._trunk(est.stem(images, 1), mixed), atol=1e-5)


def test_a_fixed_structure_runs_the_sliced_path_without_control_flow():
    """A structure given as a tuple of ints gives the sliced path's logits, on the layers'
    weights and on folded ones, in a graph with no switch or condition; bad ones are refused."""
    est = _estimator()
    images = tf.random.normal((3, 32, 32, 3))
    folded = est.fold()
    for levels in ((3, 0, 1, 2, 0, 3), (0,) * 6, (3,) * 6):
        z = tf.constant([levels] * 3)
        expected = est(images, task=1, structure=z, execution="sliced")
        for f in (None, folded):
            run = tf.function(lambda x, f=f, levels=levels: est(
                x, task=1, structure=levels, execution="sliced", folded=f))
            np.testing.assert_allclose(run(images), expected, atol=1e-4)
            ops = {op.type for op in run.get_concrete_function(images).graph.get_operations()}
            assert not ops & {"Case", "StatelessCase", "If", "StatelessIf"}
        np.testing.assert_allclose(est.call_tasks(
            [images[:, :16, :16], images], levels, execution="sliced")[1], expected, atol=1e-5)
    for bad, match in (((3, 0, 1), "6 ints"), ((3, 0, 1, 2, 0, 4), r"lie in \[0, 4\)"),
                       ((3, 0, 1, 2, 0, 1.0), "6 ints")):
        with pytest.raises(ValueError, match=match):
            est(images, task=1, structure=bad, execution="sliced")
    with pytest.raises(ValueError, match="runs on the sliced path, at inference"):
        est(images, task=1, structure=(1,) * 6)
    with pytest.raises(ValueError, match="runs on the sliced path, at inference"):
        est(images, task=1, structure=(1,) * 6, execution="sliced", training=True)


def test_a_static_batch_of_one_runs_without_the_shared_structure_test():
    """Traced for a batch of exactly one, the sliced path has no test of whether the batch
    shares one structure (no ``If``; the blocks' switches remain) and gives each instance the
    logits that a mixed batch (partitioned) gives it in a trace for any batch size; a
    structure of several rows with one image still goes through the test."""
    est = _estimator()
    folded = est.fold()
    images = tf.random.normal((4, 32, 32, 3))
    mixed = tf.constant([[3, 0, 1, 2, 0, 3], [0, 0, 0, 0, 0, 0], [1, 2, 3, 1, 2, 3],
                         [2, 1, 0, 3, 1, 0]])

    def trace(batch):
        run = tf.function(lambda x, z: est(x, task=1, structure=z, execution="sliced",
                                           folded=folded))
        return run.get_concrete_function(tf.TensorSpec([batch, 32, 32, 3]),
                                         tf.TensorSpec([batch, 6], tf.int32))

    any_batch, one = trace(None), trace(1)
    ops = {name: {op.type for op in f.graph.get_operations()}
           for name, f in (("any", any_batch), ("one", one))}
    assert ops["any"] & {"If", "StatelessIf"}
    assert not ops["one"] & {"If", "StatelessIf"}
    assert ops["one"] & {"Case", "StatelessCase"}
    batch = any_batch(images, mixed)
    for b in range(4):
        np.testing.assert_allclose(one(images[b:b + 1], mixed[b:b + 1]), batch[b:b + 1],
                                   atol=1e-5)
    run = tf.function(lambda x, z: est(x, task=1, structure=z, execution="sliced"))
    rows = run.get_concrete_function(tf.TensorSpec([1, 32, 32, 3]),
                                     tf.TensorSpec([None, 6], tf.int32))
    assert {op.type for op in rows.graph.get_operations()} & {"If", "StatelessIf"}


def test_folded_weights_are_a_snapshot_of_the_sliced_path():
    """``fold`` gives the sliced path's logits, for shared and mixed structures in one
    trace; it keeps the weights it was taken from; other networks' blocks are refused."""
    est = _estimator()
    rng = np.random.RandomState(0)
    for bn in est.batch_norms():
        bn.gamma.assign(rng.uniform(0.5, 2.0, bn.gamma.shape))
    images = tf.random.normal((4, 32, 32, 3))
    mixed = tf.constant([[3, 0, 1, 2, 0, 3], [0, 0, 0, 0, 0, 0], [1, 2, 3, 1, 2, 3],
                         [2, 1, 0, 3, 1, 0]])
    folded = est.fold()
    run = tf.function(lambda x, z: est(x, task=1, structure=z, execution="sliced",
                                       folded=folded))
    for x, z in ((images, mixed), (images[:1], mixed[2:3]), (images, tf.fill([4, 6], 2))):
        expected = est(x, task=1, structure=z, execution="sliced")
        np.testing.assert_allclose(run(x, z), expected, atol=1e-4)
    assert run.experimental_get_tracing_count() == 2  # batch sizes 4 and 1
    before = run(images, mixed)
    kernel = est.blocks[0].conv1
    kernel.assign(kernel * 2.0)
    np.testing.assert_array_equal(run(images, mixed), before)
    assert np.abs(est(images, task=1, structure=mixed, execution="sliced") - before).max() > 1e-3
    np.testing.assert_allclose(
        est(images, task=1, structure=mixed, execution="sliced", folded=est.fold()),
        est(images, task=1, structure=mixed, execution="sliced"), atol=1e-4)
    for other in (Estimator(SPEC, TASKS, levels=3, trunk_size=16), _estimator()):
        with pytest.raises(ValueError, match="folded weights of another estimator"):
            other(images, task=1, structure=mixed % other.levels, execution="sliced",
                  folded=folded)
    with pytest.raises(ValueError, match="folded weights run on the sliced path"):
        est(images, task=1, structure=mixed, folded=folded)


def test_one_trunk_pass_equals_per_task_calls():
    est = _estimator()
    images = [tf.random.normal((3, 16, 16, 3)), tf.random.normal((2, 32, 32, 3))]
    z = policy.uniform_structure(5, est.n_blocks, est.levels, tf.constant([1, 2]))
    joint = est.call_tasks(images, z, execution="sliced")
    assert [o.shape for o in joint] == [(3, 5), (2, 7)]
    assert np.allclose(joint[0], est(images[0], task=0, structure=z[:3]), atol=1e-5)
    assert np.allclose(joint[1], est(images[1], task=1, structure=z[3:]), atol=1e-5)


def test_training_normalises_the_tasks_together_in_one_trunk_pass(monkeypatch):
    """In training the trunk's batch norms take their moments over every task's instances at
    once (design notes: one trunk pass for all tasks), not task by task."""
    est = _estimator(bn_momentum=0.0)  # the moving statistics become the last batch's
    images = [tf.random.normal((3, 16, 16, 3)), tf.random.normal((2, 32, 32, 3)) * 5 + 2]
    z = tf.fill([5, est.n_blocks], est.levels - 1)
    entered = []
    trunk = est._trunk
    monkeypatch.setattr(est, "_trunk", lambda x, *a, **k: entered.append(x) or trunk(x, *a, **k))
    est.call_tasks(images, z, training=True)
    [x] = entered  # one pass, of both tasks' instances
    first = est.blocks[0]
    bn_in = next(w for w in first.weights if "moving_mean" in w.path)
    np.testing.assert_allclose(bn_in.numpy(), tf.reduce_mean(x, axis=(0, 1, 2)).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_one_hot_level_weights_equal_the_structure():
    """Level weights (the straight-through selector's relaxation) that are one-hot rows run
    the structure's masked path bit for bit; bad weights fail with their expected shape."""
    est = _estimator()
    images = [tf.random.normal((3, 16, 16, 3)), tf.random.normal((2, 32, 32, 3))]
    z = policy.uniform_structure(5, est.n_blocks, est.levels, tf.constant([3, 4]))
    expected = est.call_tasks(images, z)
    got = est.call_tasks(images, level_weights=tf.one_hot(z, est.levels))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    with pytest.raises(ValueError, match=r"level_weights must have shape \(batch, 6, 4\), got"):
        est(images[0], task=0, level_weights=tf.ones((3, 6, 3)))
    with pytest.raises(ValueError, match="level_weights must be floating"):
        est(images[0], task=0, level_weights=tf.ones((3, 6, 4), tf.int32))
    with pytest.raises(ValueError, match="level_weights replace the structure, on the masked"):
        est(images[0], task=0, execution="sliced", level_weights=tf.ones((3, 6, 4)))


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_a_block_no_instance_runs_keeps_a_training_step_finite(precision):
    """Under mixed_float16 a block that a whole batch skips used to normalise with variance 0
    (a scale of 1/sqrt(epsilon)), overflow and give NaN to every instance through the mask."""
    with builders.precision(precision):
        keras.utils.set_random_seed(0)
        est = Estimator(backbones.wrn(depth=14, widths=(16, 32, 64), stem_channels=16),
                        TASKS[:1], levels=4, trunk_size=16)
        images = tf.random.normal((8, 16, 16, 3)) * 3
        structure = tf.constant([[0, 3, 3, 3, 3, 3]] * 8)
        logits = est(images, task=0, structure=structure, training=True)
    assert bool(tf.reduce_all(tf.math.is_finite(logits)))
    # The skipped block's statistics are left as they were; the others' moved.
    moving = {b: [w for w in est.blocks[b].weights if "moving_mean" in w.path] for b in (0, 1)}
    assert moving[0] and all(not np.any(w.numpy()) for w in moving[0])
    assert any(np.any(w.numpy()) for w in moving[1])


def test_a_fixed_structure_runs_under_mixed_precision_from_every_entry():
    """A tuple structure through ``call_tasks`` (not only ``__call__``) casts the blocks'
    weights like any other call."""
    with builders.precision("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        est = Estimator(SPEC, TASKS, levels=4, trunk_size=16)
        images = [tf.random.normal((2, t.input_size, t.input_size, 3)) for t in TASKS]
        fixed = est.call_tasks(images, (2, 0, 1, 3, 1, 2), execution="sliced")[1]
        alone = est(images[1], task=1, structure=(2, 0, 1, 3, 1, 2), execution="sliced")
    np.testing.assert_allclose(np.asarray(fixed, np.float32), np.asarray(alone, np.float32))


def test_full_structure_is_default():
    est = _estimator()
    images = tf.random.normal((2, 16, 16, 3))
    assert np.allclose(est(images, task=0),
                       est(images, task=0, structure=est.full_structure(2)), atol=1e-6)


def test_estimator_and_selector_round_trip_config():
    est = _estimator()
    clone = Estimator.from_config(est.get_config())
    assert clone.get_config() == est.get_config()
    clone.set_weights(est.get_weights())
    images = tf.random.normal((2, 32, 32, 3))
    z = tf.constant([[1, 2, 3, 0, 1, 2]] * 2)
    assert np.allclose(clone(images, task=1, structure=z), est(images, task=1, structure=z),
                       atol=1e-6)

    sel = Selector(TASKS, est.n_blocks, est.levels, widths=(8, 16), trunk_size=16, stem_channels=8)
    sel_clone = Selector.from_config(sel.get_config())
    assert sel_clone.get_config() == sel.get_config()
    sel_clone.set_weights(sel.get_weights())
    assert np.allclose(sel_clone(images, task=1), sel(images, task=1), atol=1e-6)


def test_selector_gives_one_distribution_per_block():
    sel = Selector(TASKS, 6, 4, widths=(8, 16), trunk_size=16, stem_channels=8)
    logits = sel.call_tasks([tf.random.normal((3, 16, 16, 3)), tf.random.normal((2, 32, 32, 3))])
    assert [tuple(x.shape) for x in logits] == [(3, 6, 4), (2, 6, 4)]
    assert np.allclose(tf.reduce_sum(tf.nn.softmax(logits[0]), axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("per_task_heads", [False, True])
def test_selector_task_id_with_a_shared_stem(per_task_heads):
    """Tasks sharing a stem (M2): the same image gets the same logits under every task id with
    one logits layer, and task-specific ones with a layer per task; the config round-trips."""
    tasks = [Task(f"t{k}", "m", 16, 5) for k in range(3)]
    sel = Selector(tasks, 4, 2, widths=(8,), trunk_size=16, stem_channels=8,
                   per_task_stems=False, per_task_heads=per_task_heads)
    images = tf.random.normal((2, 16, 16, 3), seed=3)
    logits = [sel(images, task=t).numpy() for t in range(3)]
    assert all(np.array_equal(x, logits[0]) for x in logits) != per_task_heads
    clone = Selector.from_config(sel.get_config())
    clone.set_weights(sel.get_weights())
    np.testing.assert_allclose(clone(images, task=2), logits[2], atol=1e-6)
    assert len(sel.trainable_weights) == len(clone.trainable_weights)


def test_training_step_in_tf_function_does_not_retrace_per_structure():
    est = _estimator()
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
    optimizer.build(est.trainable_variables)
    images = [tf.random.normal((4, 16, 16, 3)), tf.random.normal((4, 32, 32, 3))]
    labels = [tf.constant([0, 1, 2, 3]), tf.constant([4, 5, 6, 0])]

    @tf.function
    def step(z):
        with tf.GradientTape() as tape:
            logits = est.call_tasks(images, z, training=True)
            loss = sum(
                tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, o, from_logits=True))
                for y, o in zip(labels, logits)
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, est.trainable_variables),
                                      est.trainable_variables))
        return loss

    losses = []
    for seed in range(8):
        z = policy.initial_structure(8, est.n_blocks, est.levels, 0.75, tf.constant([seed, 5]))
        losses.append(float(step(z)))
    assert step.experimental_get_tracing_count() == 1
    assert np.mean(losses[-3:]) < losses[0]


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="unknown backbone 'lenet'; allowed: wrn"):
        backbones.build_backbone("lenet")
    with pytest.raises(ValueError, match="takes no argument"):
        backbones.build_backbone("wrn", cardinality=8)
    with pytest.raises(ValueError, match="depth must be 6n"):
        backbones.wrn(depth=30)
    with pytest.raises(ValueError, match=r"levels must be an integer in \[2, 5\], got 1"):
        Estimator(SPEC, TASKS, levels=1, trunk_size=16)
    with pytest.raises(ValueError, match="fractions must sum to 1"):
        Estimator(SPEC, TASKS, levels=3, fractions=(0.5, 0.25), trunk_size=16)
    est = Estimator(SPEC, TASKS, trunk_size=16)
    images = tf.zeros((2, 16, 16, 3))
    with pytest.raises(ValueError, match=r"structure levels must lie in \[0, 4\), got values"):
        est(images, task=0, structure=tf.constant([[0, 1, 2, 3, 4, 0]] * 2))
    with pytest.raises(ValueError, match=r"task id must be an int in \[0, 2\) \(small, large\)"):
        est(images, task=2)
    # One row per instance: a single row would broadcast on the masked path, and training
    # would divide the batch's statistics by one instance's count.
    one_row = tf.constant([[1, 1, 1, 1, 1, 1]])
    for execution in ("masked", "sliced"):
        with pytest.raises(ValueError, match="structure must have one row per instance of the "
                                             "batch: 1 rows for 2 instances"):
            est(images, task=0, structure=one_row, execution=execution)
    unknown = tf.function(lambda x, z: est(x, task=0, structure=z, training=True),
                          input_signature=[tf.TensorSpec([None, 16, 16, 3]),
                                           tf.TensorSpec([None, 6], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per instance"):
        unknown(images, one_row)
    with pytest.raises(ValueError, match=r"task 'large' must have shape \(batch, 32, 32, 3\)"):
        est(images, task=1)
    with pytest.raises(ValueError, match="cannot enter a trunk of size 12"):
        Estimator(SPEC, TASKS, trunk_size=12)


def test_all_experiment_configs_build():
    """Every shipped config builds its models (narrowed so the test stays fast)."""
    import importlib.util
    import pathlib

    for path, arg in [("m1_wrn", None), ("m1_resnet", None), ("m2", "84"), ("m2", "224"),
                      ("m3", None), ("m1_wrn_32px", None), ("c1_vgg", None), ("c1_resnext", "4"),
                      ("demo_policy_gradient", None)]:
        file = pathlib.Path(__file__).parent.parent / "experiments" / f"{path}.py"
        spec = importlib.util.spec_from_file_location(path, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
        estimator, selector = builders.build_models(config)
        assert selector.n_blocks == estimator.n_blocks and selector.levels == estimator.levels
        assert [t.name for t in estimator.tasks] == config.tasks.split(",")


def test_checkpoint_holds_every_variable(tmp_path):
    est = _estimator()
    sel = Selector(TASKS, est.n_blocks, est.levels, widths=(8, 16), trunk_size=16, stem_channels=8)
    path = tf.train.Checkpoint(estimator=est, selector=sel).save(str(tmp_path / "ckpt"))
    stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert sum(name.startswith(("estimator/", "selector/")) for name in stored) == len(
        est.weights) + len(sel.weights)
    fresh = Estimator.from_config(est.get_config())
    fresh_sel = Selector.from_config(sel.get_config())
    tf.train.Checkpoint(estimator=fresh, selector=fresh_sel).restore(path).assert_consumed()
    for a, b in zip(fresh.weights + fresh_sel.weights, est.weights + sel.weights):
        assert np.array_equal(a.numpy(), b.numpy())


def _selector(est):
    return Selector(TASKS, est.n_blocks, est.levels, widths=(8, 16), trunk_size=16,
                    stem_channels=8, name="selector")


def test_models_round_trip_keras_serialization_and_keras_files(tmp_path):
    """keras-hub's run_serialization_test pattern: serialize/deserialize and a .keras file
    give a model with the same config and identical outputs."""
    est = _estimator()
    sel = _selector(est)
    images = tf.random.normal((3, 32, 32, 3))
    z = tf.constant([[1, 2, 3, 0, 1, 2], [0, 0, 0, 0, 0, 0], [3, 3, 3, 3, 3, 3]])
    cases = [
        (est, lambda m: m(images, task=1, structure=z, execution="sliced")),
        (sel, lambda m: m(images, task=1)),
    ]
    for model, run in cases:
        expected = run(model).numpy()
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
        assert type(clone) is type(model) and clone.get_config() == model.get_config()
        clone.set_weights(model.get_weights())
        assert np.array_equal(run(clone).numpy(), expected)

        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
        assert np.array_equal(run(loaded).numpy(), expected)


def test_task_id_is_passed_by_keyword_only():
    est = _estimator()
    with pytest.raises(ValueError, match="positional"):
        est(tf.zeros((2, 32, 32, 3)), 1)
