"""Nested blocks: masked and sliced paths, true skips, gradients, masked batch norm, Keras."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from den_tf import blocks

BLOCKS = {
    "basic": lambda: blocks.ResidualBasicBlock(16, 24, (0, 4, 8, 16), stride=2, name="b"),
    "bottleneck": lambda: blocks.ResidualBottleneckBlock(
        32, 24, (0, 8, 16, 32), stride=2, groups=4, name="b"
    ),
    "plain1": lambda: blocks.PlainConvBlock(16, 16, (4, 8, 16), convs=1, pool=True, name="b"),
    "plain2": lambda: blocks.PlainConvBlock(16, 24, (8, 16), convs=2, name="b"),
}
IN_CHANNELS = 12


def _block(kind):
    block = BLOCKS[kind]()
    block.build((None, 8, 8, IN_CHANNELS))
    return block


def _warm_statistics(block, x):
    """Moves the BN statistics away from their initial values with masked training passes."""
    for seed in range(3):
        levels = tf.random.stateless_uniform([x.shape[0]], [seed, 1], 0, block.levels, tf.int32)
        block(x * (1.0 + seed), levels, training=True)


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_masked_and_sliced_agree(kind):
    block = _block(kind)
    x = tf.random.normal((8, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    for levels in (
        tf.fill([8], block.levels - 1),
        tf.zeros([8], tf.int32),
        tf.constant([0, 1, 2, 3, 3, 2, 1, 0]) % block.levels,
        tf.constant([1, 0, 1, 0, 0, 1, 1, 1]),  # the top level absent (4 levels) or alone
    ):
        masked = block(x, levels, training=False)
        sliced = block(x, levels, training=False, execution="sliced")
        assert masked.shape == sliced.shape
        assert float(tf.reduce_max(tf.abs(masked - sliced))) < 1e-5
    # The full path is the top level.
    full = block(x, training=False)
    top = block(x, tf.fill([8], block.levels - 1), training=False)
    assert float(tf.reduce_max(tf.abs(full - top))) < 1e-5


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_sliced_path_computes_only_the_chosen_levels(kind, monkeypatch):
    """A batch at one level (a batch of one) runs that level alone; a mixed batch runs each
    level some instance chose, once, and no other."""
    block = _block(kind)
    x = tf.random.normal((6, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    calls = []
    branch = block._branch
    monkeypatch.setattr(block, "_branch", lambda h, c, *a: calls.append((h.shape[0], c))
                        or branch(h, c, *a))
    top = block.levels - 1
    for levels, expected in (
        ([top] * 6, [(6, block.level_channels[top])]),
        ([top], [(1, block.level_channels[top])]),
        ([top, top - 1, top, top - 1, top - 1, top - 1],
         [(4, block.level_channels[top - 1]), (2, block.level_channels[top])]),
    ):
        calls.clear()
        x_part = x[: len(levels)]
        sliced = block(x_part, tf.constant(levels), training=False, execution="sliced")
        assert calls == expected
        masked = block(x_part, tf.constant(levels), training=False)
        assert float(tf.reduce_max(tf.abs(masked - sliced))) < 1e-5


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_one_hot_level_weights_run_those_levels(kind):
    """Level weights that are one-hot rows give the integer levels' masked path: bit for bit
    at inference, eagerly and traced, and in training (masked batch-norm moments)."""
    block = _block(kind)
    x = tf.random.normal((8, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    levels = tf.constant([0, 1, 2, 3, 3, 2, 1, 0]) % block.levels
    weights = tf.one_hot(levels, block.levels)
    graph = tf.function(lambda x, w: block(x, training=False, level_weights=w))
    expected = block(x, levels, training=False)
    np.testing.assert_array_equal(block(x, training=False, level_weights=weights), expected)
    np.testing.assert_array_equal(graph(x, weights), expected)
    trained = [block(x, *args, training=True, **kwargs) for args, kwargs in (
        ((levels,), {}), ((), {"level_weights": weights}))]
    np.testing.assert_allclose(trained[0], trained[1], atol=1e-6)
    with pytest.raises(ValueError, match="level_weights replace levels, on the masked path"):
        block(x, levels, level_weights=weights)
    with pytest.raises(ValueError, match="level_weights replace levels, on the masked path"):
        block(x, execution="sliced", level_weights=weights)


def test_basic_block_output_is_linear_in_level_weights():
    """In a basic residual block the mask meets only the last convolution's input: with
    level weights w the output is shortcut + sum_l w_l branch_l, so the gradient with respect
    to w_l is the first-order effect of running level l (the straight-through gradient)."""
    block = _block("basic")
    x = tf.random.normal((3, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    weights = tf.constant([[0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 0.0], [0.5, -0.25, 0.0, 2.0]])
    shortcut = block.shortcut(x)
    branches = [block(x, tf.fill([3], level), training=False) - shortcut
                for level in range(block.levels)]
    expected = shortcut + tf.add_n([weights[:, level, None, None, None] * branches[level]
                                    for level in range(block.levels)])
    got = block(x, training=False, level_weights=weights)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    probe = tf.random.normal(got.shape, seed=3)
    with tf.GradientTape() as tape:
        tape.watch(weights)
        value = tf.reduce_sum(probe * block(x, training=False, level_weights=weights))
    expected_grad = tf.stack([tf.reduce_sum(probe * b, axis=[1, 2, 3]) for b in branches], 1)
    np.testing.assert_allclose(tape.gradient(value, weights), expected_grad, rtol=1e-4,
                               atol=1e-4)
    assert float(tf.reduce_max(tf.abs(expected_grad[:, 1:]))) > 1e-2  # not vacuous


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_at_level_equals_the_masked_path(kind):
    """A whole batch at one level, the level a tensor: one trace serves every level."""
    block = _block(kind)
    x = tf.random.normal((4, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    graph = tf.function(block.at_level)
    for level in range(block.levels):
        expected = block(x, tf.fill([4], level), training=False)
        for run in (block.at_level, graph):
            got = run(x, tf.constant(level))
            assert got.shape == expected.shape
            assert float(tf.reduce_max(tf.abs(got - expected))) < 1e-5
    assert graph.experimental_get_tracing_count() == 1
    if block.residual:  # level 0 is the shortcut exactly
        assert np.array_equal(block.at_level(x, tf.constant(0)), block.shortcut(x))
    for level in range(block.levels):  # a Python level: its branch alone, no switch
        fixed = tf.function(lambda x, level=level: block.at_level(x, level))
        np.testing.assert_array_equal(fixed(x), graph(x, tf.constant(level)))
        ops = {op.type for op in fixed.get_concrete_function(x).graph.get_operations()}
        assert not ops & {"Case", "StatelessCase", "If", "StatelessIf"}
    with pytest.raises(ValueError, match=r"level must lie in \[0, "):
        block.at_level(x, block.levels)


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_folded_weights_compute_the_sliced_path(kind):
    """Each level's weights cut and with batch norm folded in (``folded_level``) give the
    sliced path's outputs, at one level and in mixed batches, eagerly and in one trace; the
    convolutions followed by a batch norm have become convolutions with a bias."""
    block = _block(kind)
    x = tf.random.normal((8, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    rng = np.random.RandomState(0)
    for bn in block.batch_norms():  # scales and shifts away from 1 and 0 as well
        bn.gamma.assign(rng.uniform(0.5, 2.0, bn.gamma.shape))
        bn.beta.assign(rng.normal(size=bn.beta.shape))
    folded = [block.folded_level(level) for level in range(block.levels)]
    # Ranks: the input batch norm's scale and shift (1), kernels (4) and biases (1).
    ranks = {"basic": [1, 1, 4, 1, 4], "bottleneck": [1, 1, 4, 1, 4, 1, 4], "plain1": [4, 1],
             "plain2": [4, 1, 4, 1]}[kind]
    for level, weights in enumerate(folded):
        kept = block.level_channels[level]
        assert [w.shape.rank for w in weights] == (ranks if kept else [])
        if kept:  # the first kernel is cut to the level's channels
            assert weights[ranks.index(4)].shape[-1] == kept
    graph = tf.function(lambda h, levels: block(h, levels, execution="sliced", folded=folded))
    for levels in [tf.constant(level) for level in range(block.levels)] + [
        tf.constant([0, 1, 2, 3, 3, 2, 1, 0]) % block.levels,
        tf.constant([1, 0, 1, 0, 0, 1, 1, 1]),
    ]:
        expected = block(x, levels, execution="sliced")
        for got in (block(x, levels, execution="sliced", folded=folded), graph(x, levels)):
            assert got.shape == expected.shape
            assert float(tf.reduce_max(tf.abs(got - expected))) < 1e-4
    assert graph.experimental_get_tracing_count() == 2  # a scalar level and a batch of levels
    with pytest.raises(ValueError, match="folded weights run on the sliced path"):
        block(x, tf.zeros([8], tf.int32), folded=folded)
    # A batch grouped by level (2, 0, 3, 3 instances of levels 0-3 with four levels): each
    # level's output, in the grouping's order.
    levels = tf.constant([3, 0, 2, 2, 0, 3, 2, 3]) % block.levels
    order, counts = blocks.level_grouping(levels[:, tf.newaxis], block.levels)
    got = blocks.run_span([block], tf.gather(x, order), counts, [folded])
    assert [int(part.shape[0]) for part in got] == counts.numpy().tolist()
    expected = tf.gather(block(x, levels, execution="sliced"), order)
    np.testing.assert_allclose(tf.concat(got, 0), expected, atol=1e-4)
    with pytest.raises(ValueError, match="a grouped batch runs on the sliced path"):
        block([x], counts=counts[tf.newaxis])


def test_level_grouping_by_hand():
    """Instances ordered by their levels in a span's first block, then its second (ties in the
    batch's order), and counted per combination of levels, the first block's most significant."""
    levels = tf.constant([[2, 1], [0, 2], [2, 0], [0, 2], [1, 1]])
    order, counts = blocks.level_grouping(levels, 3)
    assert order.numpy().tolist() == [1, 3, 4, 2, 0]
    # Combinations (0,0) (0,1) (0,2) (1,0) (1,1) (1,2) (2,0) (2,1) (2,2).
    assert counts.numpy().tolist() == [0, 0, 2, 0, 1, 0, 1, 1, 0]
    order, counts = blocks.level_grouping(levels[:, :1], 3)
    assert order.numpy().tolist() == [1, 3, 4, 0, 2] and counts.numpy().tolist() == [2, 1, 2]


def test_a_span_runs_each_block_on_slices_of_the_previous_outputs():
    """Two blocks in a span: the second runs each piece (instances sharing both blocks' levels)
    on a slice of the first's output for its level; the pieces, in the grouping's order, are
    the two blocks run one after the other, each partitioning its own input."""
    first = blocks.ResidualBasicBlock(8, 12, (0, 2, 4, 8), stride=2, name="first")
    second = blocks.ResidualBasicBlock(12, 16, (0, 4, 8, 12), name="second")
    x = tf.random.normal((9, 8, 8, 8))
    first.build(x.shape)
    second.build(first.compute_output_shape(x.shape))
    levels = tf.constant([[3, 1], [1, 1], [0, 3], [3, 2], [1, 0], [3, 1], [2, 2], [0, 0], [1, 1]])
    _warm_statistics(first, x)
    _warm_statistics(second, first(x))
    order, counts = blocks.level_grouping(levels, 4)
    folded = [[block.folded_level(level) for level in range(4)] for block in (first, second)]
    for weights in (None, folded):
        pieces = blocks.run_span([first, second], tf.gather(x, order), counts, weights)
        assert [int(piece.shape[0]) for piece in pieces] == counts.numpy().tolist()
        expected = second(first(x, levels[:, 0], execution="sliced"), levels[:, 1],
                          execution="sliced")
        np.testing.assert_allclose(tf.concat(pieces, 0), tf.gather(expected, order), atol=1e-4)


def test_affine_relu_by_hand():
    """ReLU(x * scale + shift) per channel, exactly, on both of its forms: a fused batch norm
    above one image (a batch of two, or an unknown batch size), three operations for one."""
    x = tf.constant([[[[-1.0, 2.0]]], [[[3.0, -4.0]]]])
    scale, shift = tf.constant([2.0, 0.5]), tf.constant([1.0, -0.5])
    expected = np.array([[[[0.0, 0.5]]], [[[7.0, 0.0]]]], np.float32)

    def ops(signature):
        graph = tf.function(blocks.affine_relu).get_concrete_function(
            signature, scale, shift).graph
        return {op.type for op in graph.get_operations()}

    np.testing.assert_array_equal(blocks.affine_relu(x, scale, shift), expected)
    for row in range(2):
        np.testing.assert_array_equal(blocks.affine_relu(x[row:row + 1], scale, shift),
                                      expected[row:row + 1])
    assert "FusedBatchNormV3" in ops(tf.TensorSpec([None, 1, 1, 2]))
    assert "FusedBatchNormV3" not in ops(tf.TensorSpec([1, 1, 1, 2]))
    half = blocks.affine_relu(tf.cast(x, tf.float16), scale, shift)
    assert half.dtype == tf.float16
    np.testing.assert_array_equal(half, expected.astype(np.float16))


def test_folded_weights_under_mixed_precision():
    """Under a mixed-precision policy the folded path computes in float16 (the input batch
    norm in float32, as the layer does) and matches the sliced path."""
    from den_tf import builders

    with builders.precision("mixed_float16"):  # as the models are built
        block = _block("basic")
    rng = np.random.RandomState(1)
    for bn in block.batch_norms():
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
        bn.moving_mean.assign(rng.normal(0, 0.2, bn.moving_mean.shape))
    folded = [block.folded_level(level) for level in range(block.levels)]
    x = tf.cast(tf.random.normal((6, 8, 8, IN_CHANNELS)), tf.float16)
    for levels in (tf.constant(2), tf.constant([0, 1, 2, 3, 3, 1])):
        expected = block(x, levels, execution="sliced")
        got = block(x, levels, execution="sliced", folded=folded)
        assert got.dtype == expected.dtype == tf.float16
        error = tf.reduce_max(tf.abs(tf.cast(got, tf.float32) - tf.cast(expected, tf.float32)))
        assert float(error) < 2e-2 * float(tf.reduce_max(tf.abs(tf.cast(expected, tf.float32))))


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("execution", blocks.EXECUTIONS)
def test_level_zero_returns_shortcut_exactly(kind, execution):
    block = _block(kind)
    x = tf.random.normal((4, 8, 8, IN_CHANNELS))
    _warm_statistics(block, x)
    levels = tf.constant([0, 3, 0, 1])
    out = block(x, levels, training=False, execution=execution).numpy()
    shortcut = block.shortcut(x).numpy()
    assert np.array_equal(out[[0, 2]], shortcut[[0, 2]])
    assert not np.allclose(out[[1, 3]], shortcut[[1, 3]])
    if execution == "masked":  # also while training
        out = block(x, levels, training=True).numpy()
        assert np.array_equal(out[[0, 2]], shortcut[[0, 2]])


def test_channels_beyond_level_get_zero_gradient():
    block = _block("basic")
    x = tf.random.normal((4, 8, 8, IN_CHANNELS))
    levels = tf.constant([1, 2, 1, 2])  # keep 4 or 8 of 16 channels
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(block(x, levels, training=True)))
    grads = dict(zip([v.path for v in block.trainable_weights],
                     tape.gradient(loss, block.trainable_weights)))
    conv1, conv2 = grads["b/conv1"].numpy(), grads["b/conv2"].numpy()
    assert np.all(conv1[..., 8:] == 0) and np.all(conv2[:, :, 8:, :] == 0)
    assert np.all(grads["b/bn_mid/gamma"].numpy()[8:] == 0)
    assert np.abs(conv1[..., :8]).min(axis=(0, 1, 2)).max() > 0  # kept channels do learn
    assert np.all(np.abs(conv1[..., :8]).sum(axis=(0, 1, 2)) > 0)


def test_masked_batch_norm_moments_count_active_entries():
    bn = blocks.MaskedBatchNorm(momentum=0.0)
    x = tf.random.normal((6, 4, 4, 3)) + tf.constant([1.0, 2.0, 3.0])
    active = tf.constant(
        [[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]], tf.float32
    )[:, None, None, :]
    bn.build(x.shape)
    bn(x, training=True, active=active)
    xs = x.numpy()
    for c, rows in ((0, [0, 1, 2, 4, 5]), (1, [0, 2, 4])):
        assert np.isclose(bn.moving_mean.numpy()[c], xs[rows, :, :, c].mean(), atol=1e-5)
        assert np.isclose(bn.moving_variance.numpy()[c], xs[rows, :, :, c].var(), atol=1e-4)
    # A channel no instance used keeps its statistics.
    assert bn.moving_mean.numpy()[2] == 0.0 and bn.moving_variance.numpy()[2] == 1.0


def test_block_statistics_ignore_inactive_channels():
    """In a block, a channel's moving statistics change only from instances that use it."""
    block = blocks.ResidualBasicBlock(8, 8, (0, 2, 4, 8), bn_momentum=0.0, name="b")
    block.build((None, 4, 4, 8))
    x = tf.random.normal((4, 4, 4, 8))
    block(x, tf.constant([1, 1, 2, 0]), training=True)  # channels 4..7 unused
    assert np.all(block.bn_mid.moving_mean.numpy()[4:] == 0)
    assert np.all(block.bn_mid.moving_variance.numpy()[4:] == 1)
    # bn_in normalised the instances that run the block (levels > 0: instances 0..2).
    mean_in = x.numpy()[:3].mean(axis=(0, 1, 2))
    var_in = x.numpy()[:3].var(axis=(0, 1, 2))
    assert np.allclose(block.bn_in.moving_mean.numpy(), mean_in, atol=1e-5)
    assert np.allclose(block.bn_in.moving_variance.numpy(), var_in, atol=1e-4)
    # Channels 2..3 are active for instance 2 only: their statistics are instance 2's.
    h = tf.nn.relu((x[2:3] - mean_in) / np.sqrt(var_in + 1e-5))
    conv = tf.nn.conv2d(h, block.conv1, 1, "SAME").numpy()
    assert np.allclose(block.bn_mid.moving_mean.numpy()[2:4], conv[..., 2:4].mean((0, 1, 2)),
                       atol=1e-4)


# Which entries each batch norm of a block normalises, by block kind: "instance": every
# channel of an instance that runs the block (level > 0); "nested": channel c of an instance
# whose level keeps c; "all": every instance (a plain block always runs).
NORM_SCOPES = {
    "basic": {"bn_in": "instance", "bn_mid": "nested"},
    "bottleneck": {"bn_in": "instance", "bn_reduce": "nested", "bn_grouped": "nested"},
    "plain1": {"bn_a": "nested"},
    "plain2": {"bn_a": "nested", "bn_b": "all"},
}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_every_batch_norm_takes_its_moments_over_the_entries_that_run(kind, monkeypatch):
    """Each batch norm's moving statistics after one training pass, from its own input and
    the entries that run (NumPy, from the levels alone): moments over every instance would
    still give masked and sliced paths that agree, both reading the same wrong statistics."""
    inputs = {}
    call = blocks.MaskedBatchNorm.call

    def recording(norm, x, training=False, active=None):
        inputs[id(norm)] = np.asarray(x, np.float32)
        return call(norm, x, training=training, active=active)

    monkeypatch.setattr(blocks.MaskedBatchNorm, "call", recording)
    block = _block(kind)
    levels = np.arange(8) % block.levels
    block(tf.random.normal((8, 8, 8, IN_CHANNELS), seed=3) * 2.0 + 0.5, tf.constant(levels),
          training=True)
    kept = np.array(block.level_channels)[levels]
    for name, scope in NORM_SCOPES[kind].items():
        norm = getattr(block, name)
        x = inputs[id(norm)]
        channels = np.arange(x.shape[-1])
        runs = {"instance": np.repeat((kept > 0)[:, None], x.shape[-1], 1),
                "nested": channels[None, :] < kept[:, None],
                "all": np.ones((len(levels), x.shape[-1]), bool)}[scope]
        m = norm.momentum
        for c in channels:
            values = x[runs[:, c], ..., c]
            mean, variance = (values.mean(), values.var()) if values.size else (0.0, 1.0)
            expected = ((1 - m) * mean, m + (1 - m) * variance) if values.size else (0.0, 1.0)
            np.testing.assert_allclose(
                [norm.moving_mean.numpy()[c], norm.moving_variance.numpy()[c]], expected,
                rtol=1e-4, atol=1e-5, err_msg=f"{name} channel {c}")


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_keras_layer_contract(kind):
    """Config round trip, eager = tf.function, and a one-step training loop."""
    block = _block(kind)
    config = block.get_config()
    clone = type(block).from_config(config)
    clone.build((None, 8, 8, IN_CHANNELS))
    assert clone.get_config() == config
    clone.set_weights(block.get_weights())
    x = tf.random.normal((4, 8, 8, IN_CHANNELS))
    levels = tf.constant([0, 1, 2, 1]) % block.levels
    eager = block(x, levels, training=False)
    assert np.allclose(clone(x, levels, training=False), eager, atol=1e-6)
    graph = tf.function(lambda x, z: block(x, z, training=False, execution="sliced"))
    assert np.allclose(graph(x, levels), eager, atol=1e-5)

    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def train_step(x, z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(block(x, z, training=True) - 1.0))
        optimizer.apply_gradients(zip(tape.gradient(loss, block.trainable_weights),
                                      block.trainable_weights))
        return loss

    first = float(train_step(x, levels))
    for _ in range(5):
        last = float(train_step(x, levels))
    assert last < first
    assert graph.experimental_get_tracing_count() == 1
    graph(x, tf.constant([1, 1, 1, 1]))  # another structure: no retrace
    assert graph.experimental_get_tracing_count() == 1


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="must end at the block width 16"):
        blocks.ResidualBasicBlock(16, 16, (0, 4, 8))
    with pytest.raises(ValueError, match="increase strictly"):
        blocks.ResidualBasicBlock(16, 16, (0, 8, 8, 16))
    with pytest.raises(ValueError, match="lowest level of a plain block"):
        blocks.PlainConvBlock(16, 16, (0, 8, 16))
    with pytest.raises(ValueError, match="whole groups"):
        blocks.ResidualBottleneckBlock(32, 32, (0, 4, 32), groups=4)
    block = _block("basic")
    with pytest.raises(ValueError, match="execution must be one of"):
        block(tf.zeros((1, 8, 8, IN_CHANNELS)), tf.constant([1]), execution="fast")
    with pytest.raises(ValueError, match="sliced path is for inference"):
        block(tf.zeros((1, 8, 8, IN_CHANNELS)), tf.constant([1]), training=True,
              execution="sliced")


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_keras_serialization_round_trip(kind, tmp_path):
    """serialize/deserialize and .keras save/load give the same layer and outputs."""
    block = _block(kind)
    x = tf.random.normal((4, 8, 8, IN_CHANNELS))
    levels = tf.constant([0, 1, 2, 1]) % block.levels
    _warm_statistics(block, x)
    expected = block(x, levels, training=False).numpy()

    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert type(clone) is type(block) and clone.get_config() == block.get_config()
    assert clone.built  # from the serialized build config
    clone.set_weights(block.get_weights())
    assert np.array_equal(clone(x, levels, training=False).numpy(), expected)

    inputs = keras.Input((8, 8, IN_CHANNELS))
    model = keras.Model(inputs, block(inputs))
    model.save(tmp_path / "block.keras")
    loaded = keras.saving.load_model(tmp_path / "block.keras")
    restored = next(layer for layer in loaded.layers if isinstance(layer, blocks.NestedBlock))
    assert restored.get_config() == block.get_config()
    assert np.array_equal(restored(x, levels, training=False).numpy(), expected)


def test_kernel_initializer_is_an_argument():
    for initializer in ("zeros", keras.initializers.Constant(0.5)):
        block = blocks.ResidualBasicBlock(8, 8, (0, 4, 8), kernel_initializer=initializer)
        clone = blocks.ResidualBasicBlock.from_config(block.get_config())
        for layer in (block, clone):
            layer.build((None, 4, 4, 8))
            expected = 0.0 if initializer == "zeros" else 0.5
            assert np.all(layer.conv1.numpy() == expected)
            assert np.all(layer.conv2.numpy() == expected)


def test_unseeded_kernels_differ():
    """Each kernel draws its own values (one unseeded Keras initializer repeats itself)."""
    block = blocks.ResidualBasicBlock(8, 8, (0, 4, 8), kernel_initializer="he_normal")
    block.build((None, 4, 4, 8))
    assert not np.allclose(block.conv1.numpy(), block.conv2.numpy())


def test_compute_output_shape():
    assert _block("basic").compute_output_shape((None, 8, 8, IN_CHANNELS)) == (None, 4, 4, 24)
    assert _block("plain1").compute_output_shape((2, 9, 9, IN_CHANNELS)) == (2, 4, 4, 16)
    assert _block("plain2").compute_output_shape((2, 8, 8, IN_CHANNELS)) == (2, 8, 8, 24)


def _block_diagonal(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """A grouped kernel (k, k, in/groups, out) as the equivalent dense kernel (zeros off the
    groups): a reference that needs no grouped convolution at all."""
    group_in, out = kernel.shape[2], kernel.shape[3]
    groups = in_channels // group_in
    dense = np.zeros(kernel.shape[:2] + (in_channels, out), kernel.dtype)
    for g in range(groups):
        rows, cols = slice(g * group_in, (g + 1) * group_in), slice(g * out // groups,
                                                                    (g + 1) * out // groups)
        dense[:, :, rows, cols] = kernel[:, :, :, cols]
    return dense


@pytest.mark.parametrize("native", [True, False])
def test_grouped_convolution_and_its_gradients(native, monkeypatch):
    """Both ways of running a grouped convolution (native where TensorFlow can differentiate
    it, per group elsewhere) equal a dense convolution with a block-diagonal kernel, in value
    and gradients."""
    if native and not blocks.native_grouped_gradients():
        pytest.skip("TensorFlow cannot differentiate grouped convolutions on this CPU")
    monkeypatch.setattr(blocks, "native_grouped_gradients", lambda: native)
    x = tf.random.normal((2, 6, 6, 8))
    kernel = tf.random.normal((3, 3, 2, 12))  # 4 groups of 2 inputs -> 3 outputs each
    dense = tf.constant(_block_diagonal(kernel.numpy(), 8))
    weights = tf.random.normal((2, 3, 3, 12))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel, dense])
        grouped = blocks.conv(x, kernel, 2)
        reference = tf.nn.conv2d(x, dense, 2, "SAME")
        loss, reference_loss = (tf.reduce_sum(y * weights) for y in (grouped, reference))
    assert np.allclose(grouped, reference, atol=1e-4)
    assert np.allclose(tape.gradient(loss, x), tape.gradient(reference_loss, x), atol=1e-4)
    in_group = _block_diagonal(np.ones(kernel.shape, np.float32), 8) != 0
    assert np.allclose(_block_diagonal(tape.gradient(loss, kernel).numpy(), 8),
                       tape.gradient(reference_loss, dense).numpy() * in_group, atol=1e-4)


def test_masked_batch_norm_serialization_round_trip(tmp_path):
    bn = blocks.MaskedBatchNorm(momentum=0.5, epsilon=1e-3, name="bn")
    x = tf.random.normal((4, 3, 3, 5)) * 2.0 + 1.0
    bn.build(x.shape)
    bn(x, training=True)  # moving statistics away from their initial values
    expected = bn(x).numpy()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(bn))
    assert clone.get_config() == bn.get_config() and clone.built
    clone.set_weights(bn.get_weights())
    assert np.array_equal(clone(x).numpy(), expected)
    inputs = keras.Input((3, 3, 5))
    keras.Model(inputs, bn(inputs)).save(tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras").get_layer("bn")
    assert np.array_equal(loaded(x).numpy(), expected)


def test_onednn_state_is_reported():
    """What the benchmarks print: oneDNN on or off, as TF_ENABLE_ONEDNN_OPTS forces it (make
    test runs this with the variable set to 0 and to 1); on a GPU-less machine grouped
    gradients are native exactly when oneDNN is on."""
    import os

    from den_tf import hardware

    forced = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if forced is not None:
        assert hardware.onednn_enabled() == (forced == "1")
    if not tf.config.list_logical_devices("GPU"):
        assert blocks.native_grouped_gradients() == hardware.onednn_enabled()


def test_leading_slices_and_keeps_a_whole_weight_uncopied():
    weight = tf.Variable(tf.reshape(tf.range(24.0), [1, 2, 3, 4]))
    assert blocks.leading(weight, 4, 3) is weight
    assert blocks.leading(weight, 3, 2) is weight
    np.testing.assert_array_equal(blocks.leading(weight, 2, 3), weight.numpy()[..., :2])
    np.testing.assert_array_equal(blocks.leading(weight, 1, 2), weight.numpy()[:, :, :1, :])
