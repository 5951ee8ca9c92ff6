"""FLOP and parameter counting: hand-computed values and the paper's figures."""

import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from den_tf import backbones, builders, cost
from den_tf.blocks import ConvShape
from den_tf.estimator import Estimator
from den_tf.selector import Selector
from den_tf.tasks import Task, get_tasks

ROOT = pathlib.Path(__file__).parent.parent

CIFAR = [Task("c100", "cifar100", 32, 100)]
M1 = get_tasks("cifar100,tiny_imagenet,stl10")


def test_conv_counts_by_hand():
    shape = ConvShape(3, 16, 64, (32, 32))
    assert cost.conv_params(shape) == 9 * 16 * 64 == 9216
    assert cost.conv_macs(shape) == 32 * 32 * 9216
    # Grouped 3x3: 8 groups of 64 channels -> each output sees 64 inputs.
    assert cost.conv_params(ConvShape(3, 64, 512, (8, 8))) == 9 * 64 * 512


def test_sparsity_cost_by_hand():
    density = np.array([[0.0, 0.25, 0.5, 1.0], [0.0, 0.25, 0.5, 1.0]])
    z = tf.constant([[3, 1], [0, 0], [2, 2]])
    # Means of d: (1 + 0.25) / 2 = 0.625, 0, 0.5.
    expected = 0.1 * np.array([0.625, 0.0, 0.5]) ** 2
    assert np.allclose(cost.sparsity_cost(z, density, 0.1).numpy(), expected)
    assert np.allclose(cost.mean_density(z, density).numpy(), [0.625, 0.0, 0.5])
    # Level weights: one-hot rows give the same values exactly; others weigh d_i(l).
    one_hot = tf.one_hot(z, 4)
    np.testing.assert_array_equal(cost.mean_density(one_hot, density),
                                  cost.mean_density(z, density))
    weights = tf.constant([[[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    # ((0.125 + 0.25) + 1) / 2 = 0.6875.
    np.testing.assert_allclose(cost.mean_density(weights, density), [0.6875], atol=1e-7)


def test_tiny_estimator_costs_by_hand():
    spec = backbones.wrn(depth=8, widths=(8, 16, 16), stem_channels=4)
    est = Estimator(spec, [Task("t", "t", 16, 5)], levels=3, fractions=(0.5, 0.5))
    table = cost.cost_table(est)
    # Block 0: 16x16, 4 -> k -> 8; block 1: stride 2 to 8x8, 8 -> k -> 16; block 2: 16 -> k -> 16.
    expected = [
        [0, 256 * 9 * (4 * 4 + 4 * 8), 256 * 9 * (4 * 8 + 8 * 8)],
        [0, 64 * 9 * (8 * 8 + 8 * 16), 64 * 9 * (8 * 16 + 16 * 16)],
        [0, 16 * 9 * (16 * 8 + 8 * 16), 16 * 9 * (16 * 16 + 16 * 16)],
    ]
    assert table.level_macs.tolist() == expected
    assert np.allclose(table.density, [[0, 0.5, 1]] * 3)
    stem, head = 256 * 9 * 3 * 4, 16 * 5
    assert table.fixed_macs == (stem + head,)
    z = tf.constant([[2, 0, 1], [0, 0, 0]])
    flops = table.flops(z, 0).numpy()
    assert flops.tolist() == [
        2 * (stem + head + expected[0][2] + expected[2][1]),
        2 * (stem + head),
    ]


def _estimator(spec, tasks, **kwargs):
    return Estimator(spec, tasks, **kwargs)


# (backbone, tasks, kwargs, paper params, computed params, FLOPs or MACs at full structure)
@pytest.mark.parametrize(
    "spec, tasks, kwargs, paper_params, computed_params, flops, macs",
    [
        (backbones.wrn(), CIFAR, {}, "7.35", 7.3456e6, 2.13e9, None),
        (backbones.wrn(stem_kernel=7), M1, {}, "7.35", 7.3456e6, 2.13e9, None),
        (backbones.resnet(), CIFAR, {}, "29.8", 29.788e6, 2.91e9, None),
        (
            backbones.simple_convnet(),
            get_tasks(",".join(f"mini_imagenet84_task{k}" for k in range(10))),
            dict(levels=2),
            "0.14", 0.1379e6, None, 27.4e6,
        ),
        (backbones.vgg(), [Task("c10", "cifar10", 32, 10)], dict(levels=2), "38.9", 38.893e6,
         None, 0.417e9),
        (backbones.resnext(cardinality=8), [Task("c10", "cifar10", 32, 10)], {}, "22.4",
         22.382e6, None, 3.39e9),
        (backbones.resnext(cardinality=4), [Task("c10", "cifar10", 32, 10)], dict(levels=3),
         "11.2", 11.192e6, None, None),
        (backbones.resnext(cardinality=2), [Task("c10", "cifar10", 32, 10)], dict(levels=3),
         "5.6", 5.597e6, None, None),
    ],
    ids=["wrn-32-4", "wrn-32-4-m1", "resnet-42", "simple_convnet", "vgg", "resnext8", "resnext4",
         "resnext2"],
)
def test_backbones_reproduce_paper(spec, tasks, kwargs, paper_params, computed_params, flops, macs):
    est = _estimator(spec, tasks, **kwargs)
    params = cost.paper_params(est)
    # Rounded to the paper's printed precision (e.g. "0.14" M), the count is the paper's.
    decimals = len(paper_params.split(".")[1])
    assert f"{params / 1e6:.{decimals}f}" == paper_params
    assert abs(params - computed_params) / computed_params < 0.5 / 100
    table = cost.cost_table(est)
    for t in range(len(tasks)):
        if flops:
            assert abs(2 * table.full_macs(t) - flops) / flops < 0.5 / 100
        if macs:
            assert abs(table.full_macs(t) - macs) / macs < 0.5 / 100


def _graph_macs(estimator: Estimator, task: int, structure: tuple[int, ...]) -> int:
    """Multiply-adds of the Conv2D and MatMul ops in the traced sliced graph of one image:
    what TensorFlow will compute, counted without the cost table."""
    size = estimator.tasks[task].input_size
    graph = tf.function(lambda x: estimator(x, task=task, structure=structure,
                                            execution="sliced")).get_concrete_function(
        tf.TensorSpec([1, size, size, 3])).graph
    macs = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            out, kernel = op.outputs[0].shape, op.inputs[1].shape
            macs += out[1] * out[2] * out[3] * kernel[0] * kernel[1] * kernel[2]
        elif op.type == "MatMul":
            macs += op.inputs[1].shape[0] * op.inputs[1].shape[1]
    return macs


@pytest.mark.parametrize("backbone", ["resnext", "wrn", "vgg", "simple_convnet"])
def test_cost_table_counts_what_the_sliced_graph_computes(backbone):
    """At random structures of every block kind (grouped bottlenecks, basic blocks, plain
    blocks of two convolutions and of one), the cost table's multiply-adds equal the traced
    graph's: a level ignored in one convolution's count would show here."""
    two = [Task("a", "a", 16, 5), Task("b", "b", 32, 7)]
    spec, tasks, levels, trunk = {
        "resnext": (backbones.resnext(cardinality=4, base_width=2, depth=11, widths=(8, 16, 16),
                                      stem_channels=8), two, 4, 16),
        "wrn": (backbones.wrn(depth=8, widths=(8, 8, 16), stem_channels=8), two, 3, 16),
        "vgg": (backbones.vgg(widths=(8, 8, 16, 16, 16), hidden_units=(12,)),
                [Task("a", "a", 32, 5)], 3, 32),
        "simple_convnet": (backbones.simple_convnet(channels=8, num_blocks=3, hidden_units=(12,)),
                           [Task("a", "a", 21, 5)], 3, 21),
    }[backbone]
    estimator = Estimator(spec, tasks, levels=levels, trunk_size=trunk)
    table = cost.cost_table(estimator)
    rng = np.random.RandomState(0)
    task = len(tasks) - 1
    for structure in [tuple(int(v) for v in rng.randint(0, levels, estimator.n_blocks))
                      for _ in range(2)] + [(levels - 1,) * estimator.n_blocks]:
        counted = int(table.macs(tf.constant([structure]), task).numpy()[0])
        assert counted == _graph_macs(estimator, task, structure), structure


def test_nestednet_levels_cost_seven_twelfths():
    """Levels at 1/4, 1/2, 1 of each block: NestedNet's mean is 7/12 of the trunk (1.24G)."""
    est = Estimator(backbones.wrn(), CIFAR)
    table = cost.cost_table(est)
    trunk = table.level_macs.sum(axis=0)
    assert trunk[0] == 0
    assert np.allclose(trunk[1:] / trunk[-1], [0.25, 0.5, 1.0])
    nested_mean = 2 * (table.fixed_macs[0] + trunk[1:].mean())
    assert abs(nested_mean - 1.24e9) / 1.24e9 < 0.5 / 100


@pytest.mark.parametrize("config, params, gflops", [
    ("m1_wrn.py", 0.37e6, 0.11), ("m1_resnet.py", 1.49e6, 0.15), ("m2.py", 0.4e6, None),
    ("c1_vgg.py", 3.9e6, None), ("c1_resnext.py", 3.6e6, None),
])
def test_selector_presets_have_the_paper_sizes(config, params, gflops):
    """The paper's selector sizes (Sections 4.2-4.4), each within 10%."""
    spec = importlib.util.spec_from_file_location("preset", ROOT / "experiments" / config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    preset = module.get_config()
    estimator = builders.build_estimator(preset)
    selector = builders.build_selector(preset, estimator)
    figures = cost.model_summary(estimator, selector)["selector"]
    assert abs(figures["params"] / params - 1) < 0.1
    if gflops:
        assert abs(figures["flops"] / 1e9 / gflops - 1) < 0.1
    assert preset.train.stages == 4  # three decays of each learning rate


def test_selector_is_small():
    est = Estimator(backbones.wrn(stem_kernel=7), M1)
    sel = Selector(M1, est.n_blocks, est.levels, stem_kernel=7)
    summary = cost.model_summary(est, sel)
    assert summary["selector"]["params"] < 0.05 * summary["params"]["total"]
    assert summary["selector"]["flops"] < 0.05 * summary["tasks"]["cifar100"]["flops_full"]
    assert len(summary["blocks"]) == 15
    assert summary["blocks"][0]["level_flops"][0] == 0


def test_m1_resnet_config_reproduces_the_paper_and_says_what_it_counts():
    import importlib.util
    import pathlib

    from den_tf import builders

    path = pathlib.Path(__file__).parent.parent / "experiments" / "m1_resnet.py"
    spec = importlib.util.spec_from_file_location("m1_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = cost.model_summary(*builders.build_models(module.get_config()))
    assert f"{summary['params']['paper'] / 1e6:.1f}" == "29.8"  # paper, Table 2a
    # The parts by hand: three 3x3 stems to 64 channels (no bias); per stage of widths 64 to
    # 512, five blocks of two 3x3 convolutions (the first widening, at stride 2 after the
    # first stage: maps of 32, 16, 8, 4); heads of 512 x classes (not in the paper's count).
    widths, maps = (64, 128, 256, 512), (32, 16, 8, 4)
    stages = [9 * (w_in * w + w * w) + 4 * 18 * w * w
              for w_in, w in zip((64, *widths[:-1]), widths)]
    assert summary["params"]["paper_by_part"] == {
        "stems": 3 * 27 * 64, "blocks": sum(stages), "hidden": 0}
    for name, classes in (("cifar100", 100), ("tiny_imagenet", 200), ("stl10", 10)):
        task = summary["tasks"][name]
        assert f"{task['flops_full'] / 1e9:.2f}" == "2.91"
        assert task["macs_full_by_part"] == {
            "stem": 32 * 32 * 27 * 64, "fully_connected": 512 * classes,
            "blocks": sum(p * m * m for p, m in zip(stages, maps))}
    assert "stem" in summary["counts"] and "batch norm" in summary["counts"]
