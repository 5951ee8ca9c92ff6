"""TFLite deployment (den_tf.lite): the model's signatures compute the estimator's sliced path and
the selector's argmax structure image by image; bad input is refused by name; the bench's
TFLite ratios come from the given timings."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import image_folder

from den_tf import bench, budget, cost, lite, plain, policy, predict
from den_tf.datasets import pipeline, sources


@pytest.fixture(scope="module")
def lite_export(served_models, tmp_path_factory):
    estimator, selector, images = served_models
    names = [[f"{t.name} {c}" for c in range(t.num_classes)] for t in estimator.tasks]
    path = str(tmp_path_factory.mktemp("lite"))
    manifest = lite.export(estimator, selector, path, names)
    return estimator, selector, images, path, manifest


def _normalized(images, task):
    return pipeline.normalize(tf.cast(images, tf.float32), sources.preprocessing(task.dataset))


def test_an_interrupted_export_leaves_the_earlier_one_whole(lite_export, tmp_path, monkeypatch):
    """A re-export cut off after the new model is written keeps the old model, probes and
    manifest together (a new model with old probes would load and blame the kernels)."""
    estimator, selector, _, path, _ = lite_export
    target = tmp_path / "export_lite"
    shutil.copytree(path, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(lite, "convert", lambda functions: b"a new model")

    def cut_off(functions):
        raise KeyboardInterrupt

    monkeypatch.setattr(lite, "probes", cut_off)
    names = [[f"renamed {c}" for c in range(t.num_classes)] for t in estimator.tasks]
    with pytest.raises(KeyboardInterrupt):
        lite.export(estimator, selector, str(target), names)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export_lite"]
    # Completed, the new export replaces the old one whole, with nothing left beside it.
    monkeypatch.setattr(lite, "probes", lambda functions: {"probe": np.zeros(1)})
    lite.export(estimator, selector, str(target), names)
    assert (target / lite.MODEL).read_bytes() == b"a new model"
    assert json.loads((target / lite.MANIFEST).read_text())["tasks"][0]["class_names"][0] == (
        "renamed 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export_lite"]


def test_manifest_probes_and_signatures(lite_export):
    estimator, _, _, path, manifest = lite_export
    with open(os.path.join(path, lite.MANIFEST)) as f:
        assert json.load(f) == manifest
    costs = cost.cost_table(estimator)
    np.testing.assert_allclose(manifest["level_flops"], 2.0 * costs.level_macs)
    assert manifest["levels"] == [estimator.levels] * estimator.n_blocks
    assert [t["name"] for t in manifest["tasks"]] == [t.name for t in estimator.tasks]
    assert manifest["tasks"][1]["class_names"][3] == f"{estimator.tasks[1].name} 3"
    signatures = lite.interpreter(os.path.join(path, lite.MODEL), 1).get_signature_list()
    assert set(signatures) == {
        *(lite.block_signature(i, level) for i in range(estimator.n_blocks)
          for level in range(estimator.levels)),
        *(lite.task_signature(t, part) for t in range(2) for part in ("selector", "stem",
                                                                       "head"))}
    with np.load(os.path.join(path, lite.PROBES)) as probes:
        assert set(probes) == {f"{name}:{end}" for name in signatures
                               for end in ("input", "output")}
        selector_output = probes[lite.task_signature(0, "selector") + ":output"]
        block_input = probes[lite.block_signature(1, 0) + ":input"]
    assert selector_output.shape == (1, estimator.n_blocks, estimator.levels)
    assert block_input.shape == (1, *estimator.trunk_input_shape()[1:])


def test_a_signature_is_checked_on_its_probe_when_loaded(tmp_path, monkeypatch, caplog):
    """A signature that XNNPACK computes wrongly (here: XNNPACK made to load a model that
    returns zeros) runs on TFLite's built-in kernels, with a warning; one that no kernel
    reproduces is an error; a right one keeps XNNPACK."""
    kernel = tf.constant(np.random.RandomState(0).normal(size=(3, 3, 3, 4)), tf.float32)
    spec = tf.TensorSpec([1, 16, 16, 3], tf.float32, name="x")
    path, zeros = str(tmp_path / "conv.tflite"), str(tmp_path / "zeros.tflite")
    lite.write_model(path, lite.convert({"conv": (
        lambda x: tf.nn.conv2d(x, kernel, 2, "SAME"), spec)}))
    lite.write_model(zeros, lite.convert({"conv": (
        lambda x: 0.0 * tf.nn.conv2d(x, kernel, 2, "SAME"), spec)}))
    probe = np.random.RandomState(1).normal(size=(1, 16, 16, 3)).astype(np.float32)
    expected = tf.nn.conv2d(probe, kernel, 2, "SAME").numpy()

    interpreters = {}
    signature = lite.checked_signature(path, "conv", 1, probe, expected, interpreters)
    assert set(interpreters) == {True} and "built-in" not in caplog.text
    np.testing.assert_allclose(signature(probe), expected, atol=1e-4)

    real_interpreter = lite.interpreter
    monkeypatch.setattr(lite, "interpreter", lambda p, threads, xnnpack=True: real_interpreter(
        zeros if xnnpack else p, threads, xnnpack))
    interpreters = {}
    signature = lite.checked_signature(path, "conv", 1, probe, expected, interpreters)
    assert set(interpreters) == {True, False}
    assert signature.runner is not None and "runs on TFLite's built-in kernels" in caplog.text
    np.testing.assert_allclose(signature(probe), expected, atol=1e-4)
    with pytest.raises(ValueError, match="does not compute its probe's output"):
        lite.checked_signature(path, "conv", 1, probe, expected + 1.0)


def test_each_image_runs_the_sliced_path_under_the_selectors_structure(lite_export):
    """Per image of both tasks: the selector's structure equals the in-process argmax, the
    logits equal the estimator's sliced path (folded weights) under that structure and under
    other structures (every level of every block, the lowest and the full one), and the
    FLOPs equal the cost table's."""
    estimator, selector, images, path, _ = lite_export
    network = lite.LiteNetwork(path, threads=1)
    folded = estimator.fold()
    costs = cost.cost_table(estimator)
    n, h = estimator.n_blocks, estimator.levels
    others = [(0,) * n, (h - 1,) * n] + [tuple((i + s) % h for i in range(n)) for s in range(h)]
    structures_seen = set()
    for t, (task, batch) in enumerate(zip(estimator.tasks, images.values())):
        x = _normalized(batch, task)
        expected = policy.argmax_structure(selector(x, task=t)).numpy()
        for i, image in enumerate(batch[:8]):
            structure = network.structure(image, task.name)
            np.testing.assert_array_equal(structure, expected[i])
            structures_seen.add(tuple(structure))
            for z in [tuple(structure)] + others[i % 2::2]:
                logits = estimator(x[i:i + 1], task=t, structure=tf.constant([z]),
                                   execution="sliced", folded=folded)[0]
                np.testing.assert_allclose(network.logits(image, task.name, z), logits,
                                           atol=1e-4, rtol=1e-4)
            assert network.flops(structure, task.name) == pytest.approx(
                float(costs.flops(tf.constant([structure]), t)[0]))
    assert len(structures_seen) > 2  # the selector's choice changes from image to image


def test_predict_gives_the_top_classes_of_the_logits(lite_export):
    estimator, _, images, path, _ = lite_export
    network = lite.LiteNetwork(path)
    task = estimator.tasks[0]
    image = images["synthetic_shapes"][3]
    result = network.predict(image, task.name)
    np.testing.assert_array_equal(result["structure"], network.structure(image, task.name))
    np.testing.assert_allclose(result["logits"],
                               network.logits(image, task.name, result["structure"]))
    probabilities = tf.nn.softmax(result["logits"]).numpy()
    top = np.argsort(-probabilities)[:lite.TOP_K]
    np.testing.assert_array_equal(result["top_classes"], top)
    np.testing.assert_allclose(result["top_probabilities"], probabilities[top], rtol=1e-5)
    assert result["top_names"] == [f"{task.name} {c}" for c in top]


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((32, 32, 3), np.float32), "must be uint8 of shape (32, 32, 3)"),
    (np.zeros((2, 32, 32, 3), np.uint8), "got uint8 (2, 32, 32, 3)"),
    (np.zeros((64, 64, 3), np.uint8), "(1, 32, 32, 3)"),
    (np.zeros((32, 32, 1), np.uint8), "got uint8 (32, 32, 1)"),
])
def test_bad_images_name_the_expected_shape(lite_export, bad, expected):
    estimator, _, _, path, _ = lite_export
    network = lite.LiteNetwork(path)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        network.predict(bad, estimator.tasks[0].name)


def test_bad_tasks_structures_and_directories(lite_export, tmp_path):
    estimator, _, images, path, _ = lite_export
    network = lite.LiteNetwork(path)
    image = images["synthetic_shapes"][0]
    for call in (lambda: network.predict(image, "nope"), lambda: network.full_flops("nope"),
                 lambda: network.cheapest_flops("nope")):
        with pytest.raises(ValueError, match="unknown task 'nope'"):
            call()
    n, h = estimator.n_blocks, estimator.levels
    for structure in [(0,) * (n - 1), (h,) + (0,) * (n - 1), (-1,) + (0,) * (n - 1),
                      (1.0,) + (0,) * (n - 1)]:
        with pytest.raises(ValueError, match="one level per block"):
            network.logits(image, estimator.tasks[0].name, structure)
        with pytest.raises(ValueError, match="one level per block"):
            network.flops(structure, estimator.tasks[0].name)
    with pytest.raises(FileNotFoundError, match="no TFLite export"):
        lite.LiteNetwork(str(tmp_path))


def test_lite_speed_ratios_from_given_timings(served_models, monkeypatch):
    """Each round's ratio against the TFLite plain network and against the TensorFlow one,
    from given timings: plain TensorFlow 4 s, plain TFLite 2 s, the elastic network 1 s a
    call; the timed paths compute the same logits."""
    estimator, selector, _ = served_models
    reference = plain.PlainNetwork(estimator)
    plain.copy_weights(estimator, reference)
    outputs = {}

    def given(runs, calls, rounds):
        assert (calls, rounds) == (3, 2)
        for name, run in runs.items():
            outputs.setdefault(name, []).append(np.asarray(run(0)).reshape(-1))
        return {"plain_tensorflow": [4.0, 4.0], "plain_lite": [2.0, 2.0], "lite": [1.0, 1.0]}

    monkeypatch.setattr(bench, "alternating", given)
    result = bench.lite_speed(estimator, selector, reference, calls=3, rounds=2, threads=1)
    assert list(result) == ["full", "level_1", "selector_like"]
    assert result["full"]["flops_fraction"] == 1.0
    assert result["level_1"]["flops_fraction"] < result["selector_like"]["flops_fraction"] < 1
    for row in result.values():
        fraction = row["flops_fraction"]
        assert row["ratio"] == pytest.approx(2.0 * fraction)
        assert row["ratio_over_tensorflow"] == pytest.approx(4.0 * fraction)
        assert row["ratio_half_width"] == pytest.approx(0.0)
        assert (row["plain_tensorflow_ms"], row["plain_lite_ms"], row["lite_ms"]) == (
            4000.0, 2000.0, 1000.0)
    # The plain network in TensorFlow and in TFLite, and the full structure, agree.
    np.testing.assert_allclose(outputs["plain_lite"][0], outputs["plain_tensorflow"][0],
                               atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(outputs["lite"][0], outputs["plain_tensorflow"][0], atol=1e-4,
                               rtol=1e-4)


def test_predict_serves_the_lite_models_and_skips_unreadable_files(lite_export, tmp_path,
                                                                    capsys):
    """``predict`` on a TFLite export: the records of the readable images are what
    ``LiteNetwork.predict`` gives; the unreadable files are named and skipped; under a budget
    of 40% of the full structure every image stays within it."""
    estimator, selector, images, path, _ = lite_export
    task = estimator.tasks[0].name
    exact = images["synthetic_shapes"][0]
    folder = image_folder(tmp_path / "images", exact)
    assert predict.run(path, task, [str(folder)], batch_size=2) == 2
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [os.path.basename(r["file"]) for r in records] == ["a_exact.png", "b_larger.png"]
    assert "c_truncated.png" in err and "d_notes.txt" in err
    expected = lite.LiteNetwork(path).predict(exact, task)
    assert records[0]["structure"] == expected["structure"].tolist()
    assert [t["class"] for t in records[0]["top"]] == expected["top_classes"].tolist()
    assert [t["name"] for t in records[0]["top"]] == expected["top_names"]
    assert records[0]["flops"] == pytest.approx(expected["flops"])

    network = lite.LiteNetwork(path)
    full = network.full_flops(task)
    # A budget halfway between the cheapest structure and the selector's choice binds.
    cheapest = network.cheapest_flops(task)
    assert cheapest == pytest.approx(cost.cost_table(estimator).flops(
        tf.zeros([1, estimator.n_blocks], tf.int32), 0).numpy()[0])
    fraction = (cheapest + records[0]["flops"]) / 2 / full
    predict.run(path, task, [str(folder)], max_fraction=fraction)
    budgeted = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(budgeted) == 2 and all(r["flops"] <= fraction * full for r in budgeted)
    # The structure within the budget is the in-process selector's (den_tf.budget).
    costs = cost.cost_table(estimator)
    level_logits = selector(_normalized(exact[None], estimator.tasks[0]), task=0)
    expected_structure = budget.structure_under_budget(
        tf.nn.log_softmax(level_logits), 2.0 * costs.level_macs,
        tf.constant([fraction * full], tf.float64), 2.0 * costs.fixed_macs[0])
    assert budgeted[0]["structure"] == expected_structure.numpy()[0].tolist()
    assert budgeted[0]["structure"] != records[0]["structure"]
    # With no budget, or one the selector's choice fits, the choice is the argmax.
    assert network.structure(exact, task, max_flops=full).tolist() == records[0]["structure"]
    with pytest.raises(predict.app.UsageError, match="its tasks"):
        predict.run(path, "nope", [str(folder)])
    with pytest.raises(predict.app.UsageError, match=f"below task '{task}''s cheapest"):
        predict.run(path, task, [str(folder)], max_fraction=0.5 * cheapest / full)
