"""The SavedModel export: served outputs equal the in-process sliced path, in a process that
never imports den_tf; bad input fails with the expected shape named."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import image_folder

from den_tf import export, policy, predict
from den_tf.datasets import pipeline, sources, synthetic
from den_tf.tasks import SYNTHETIC_TASKS, Task

SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
outputs = {}
for name, batch in images.items():
    served = model.signatures[name](images=tf.constant(batch))
    outputs[name] = {key: (value.numpy().astype(str) if key == "top_names"
                           else value.numpy()).tolist() for key, value in served.items()}
    single = [model.signatures[name + "_single"](images=tf.constant(batch[i:i + 1]))
              for i in range(4)]
    for key in ("logits", "structure"):
        outputs[name][f"single_{key}"] = np.concatenate([s[key].numpy() for s in single]).tolist()
assert not any(module.startswith("den_tf") for module in sys.modules)
print(json.dumps({"signatures": sorted(model.signatures), "outputs": outputs}))
"""


@pytest.fixture(scope="module")
def exported(served_models, tmp_path_factory):
    estimator, selector, images = served_models
    path = str(tmp_path_factory.mktemp("export") / "model")
    names = export.export(estimator, selector, path)
    return estimator, selector, path, names, images


def test_served_outputs_match_the_sliced_path_without_den_tf(exported, tmp_path):
    estimator, selector, path, names, images = exported
    np.savez(tmp_path / "images.npz", **images)
    run = subprocess.run([sys.executable, "-c", SERVE, path, str(tmp_path / "images.npz")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    assert names == ["synthetic_shapes", "synthetic_textures"]
    assert {f"{n}{suffix}" for n in names for suffix in ("", "_budget", "_single")} <= set(
        served["signatures"])
    for t, name in enumerate(names):
        task = estimator.tasks[t]
        x = pipeline.normalize(tf.cast(images[name], tf.float32),
                               sources.preprocessing(task.dataset))
        structure = policy.argmax_structure(selector(x, task=t))
        logits = estimator(x, task=t, structure=structure, execution="sliced").numpy()
        out = {key: np.array(value) for key, value in served["outputs"][name].items()}
        assert len(np.unique(structure.numpy(), axis=0)) > 1  # a batch of mixed structures
        np.testing.assert_array_equal(out["structure"], structure.numpy())
        np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
        # One image at a time through the one-image signature: the same structures and logits.
        np.testing.assert_array_equal(out["single_structure"], structure.numpy()[:4])
        np.testing.assert_allclose(out["single_logits"], logits[:4], atol=1e-5)
        probabilities = tf.nn.softmax(logits).numpy()
        np.testing.assert_array_equal(out["top_classes"][:, 0], probabilities.argmax(-1))
        np.testing.assert_allclose(out["top_probabilities"][:, 0], probabilities.max(-1),
                                   atol=1e-6)
        assert out["top_classes"].shape == (16, 5)
        class_names = synthetic.class_names(task.dataset)
        assert out["top_names"].tolist() == [[class_names[c] for c in row]
                                             for row in out["top_classes"]]
        # FLOPs: the stem, head and every block at its chosen level; the budgets' range.
        costs = export.cost.cost_table(estimator)
        np.testing.assert_allclose(out["flops"], costs.flops(structure, t).numpy())
        np.testing.assert_allclose(out["full_flops"], 2 * costs.full_macs(t))
        cheapest = costs.flops(tf.zeros([1, estimator.n_blocks], tf.int32), t).numpy()[0]
        np.testing.assert_allclose(out["cheapest_flops"], cheapest)


BAD_INPUT = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve, budgeted = model.signatures[sys.argv[2]], model.signatures[sys.argv[2] + "_budget"]
zeros = lambda shape, dtype=tf.uint8: tf.zeros(shape, dtype)
good = zeros((2, 32, 32, 3))
cases = {
    "size": lambda: serve(images=zeros((2, 30, 30, 3))),
    "channels": lambda: serve(images=zeros((2, 32, 32, 1))),
    "four channels": lambda: serve(images=zeros((2, 32, 32, 4))),
    "no batch axis": lambda: serve(images=zeros((32, 32, 3))),
    "rank 5": lambda: serve(images=zeros((1, 2, 32, 32, 3))),
    "empty batch": lambda: serve(images=zeros((0, 32, 32, 3))),
    "dtype": lambda: serve(images=zeros((2, 32, 32, 3), tf.float32)),
    "scalar budget": lambda: budgeted(images=good, max_flops=tf.constant(1e9, tf.float64)),
    "budget length": lambda: budgeted(images=good, max_flops=tf.constant([1e9] * 3, tf.float64)),
}
errors = {}
for name, call in cases.items():
    for _ in range(5):  # a check that races the computation would not always win
        try:
            call()
            errors.setdefault(name, []).append("no error")
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            errors.setdefault(name, []).append(str(error))
print(json.dumps(errors))
"""


def test_bad_input_names_the_expected_input(exported):
    """In a process without den_tf (an image without its batch axis used to abort it in the
    convolutions under oneDNN): every call fails, every time, naming what was expected."""
    _, _, path, names, _ = exported
    run = subprocess.run([sys.executable, "-c", BAD_INPUT, path, names[0]],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    shape = r"expected shape \[\?,32,32,3\]"
    expected = {"size": shape, "channels": shape, "four channels": shape,
                "no batch axis": shape, "rank 5": shape, "dtype": "uint8",
                "empty batch": "a batch must hold at least one image",
                "scalar budget": r"expected shape \[\?\]",
                "budget length": "max_flops must hold one budget per image"}
    assert set(errors) == set(expected)
    for case, pattern in expected.items():
        for message in errors[case]:
            assert re.search(pattern, message), (case, message[:500])


def test_predict_takes_only_tasks(exported):
    """A task's extra signatures are not tasks: ``predict`` refuses them by name."""
    _, _, path, names, _ = exported
    for task in (f"{names[0]}_single", f"{names[0]}_budget", "serving_default", "other"):
        with pytest.raises(predict.app.UsageError, match=r"its tasks: \['synthetic_shapes', "
                                                         r"'synthetic_textures'\]"):
            predict.run(path, task, [])


def test_the_single_image_signature_refuses_a_batch(exported):
    _, _, path, names, _ = exported
    single = tf.saved_model.load(path).signatures[f"{names[0]}_single"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError),
                       match=r"expected shape \[1,32,32,3\]"):
        single(images=tf.zeros((2, 32, 32, 3), tf.uint8))


def test_served_tasks_are_the_names_with_their_extra_signatures():
    names = ["a", "a_budget", "a_single", "a_budget_single", "a_budget_single_budget",
             "a_budget_single_single", "serving_default", "b_budget", "b_single"]
    assert export.served_tasks(names) == ["a", "a_budget_single"]
    # An export made before the one-image signatures existed.
    assert export.served_tasks(["a", "a_budget", "serving_default"]) == ["a"]


def test_signature_names():
    assert export.signature_name("cifar100") == "cifar100"
    assert export.signature_name("tiny-imagenet 32px") == "tiny_imagenet_32px"
    assert export.signature_name("10classes") == "task_10classes"


def test_class_names_of_tasks():
    shapes, textures, colors = SYNTHETIC_TASKS
    assert export.task_class_names(colors)[:2] == ["red disk", "green disk"]
    assert export.task_class_names(colors)[9] == "magenta bar"
    # A slice of a dataset's classes (like M3's tasks) gets the names of its slice.
    coarse = Task("first_five", "synthetic/shapes", 32, 5, first_class=5)
    assert export.task_class_names(coarse) == ["x", "horizontal bar", "vertical bar", "diamond",
                                               "two dots"]
    # A TFDS dataset not prepared here: ids as names.
    assert export.task_class_names(Task("c", "cifar10", 32, 10), data_dir="/nonexistent") == [
        str(c) for c in range(10)]


def test_predict_skips_unreadable_files_and_names_them(exported, tmp_path, capsys):
    estimator, _, path, names, images = exported
    exact = images[names[0]][0]
    folder = image_folder(tmp_path / "images", exact)

    skipped = predict.run(path, "synthetic_shapes", [str(folder)], batch_size=1)

    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert skipped == 2
    assert [os.path.basename(r["file"]) for r in records] == ["a_exact.png", "b_larger.png"]
    assert "c_truncated.png" in err and "d_notes.txt" in err
    # The decoder's reason, without TensorFlow's op wrapping around it.
    assert "Unknown image file format" in err and "function_node" not in err and "[Op:" not in err
    served = tf.saved_model.load(path).signatures[names[0]](images=tf.constant(exact[None]))
    first = records[0]
    assert first["structure"] == served["structure"].numpy()[0].tolist()
    assert [t["class"] for t in first["top"]] == served["top_classes"].numpy()[0].tolist()
    assert first["top"][0]["name"] == synthetic.class_names("synthetic/shapes")[
        first["top"][0]["class"]]
    assert abs(first["top"][0]["probability"]
               - float(served["top_probabilities"].numpy()[0, 0])) < 1e-6
    assert len(records[1]["structure"]) == estimator.n_blocks

    # Under a budget between the cheapest structure and both images' own, every image runs a
    # cheaper structure within it.
    full = float(served["full_flops"].numpy()[0])
    cheapest = float(served["cheapest_flops"].numpy()[0])
    fraction = (cheapest + min(r["flops"] for r in records[:2])) / 2 / full
    predict.run(path, "synthetic_shapes", [str(folder)], max_fraction=fraction)
    budgeted = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(budgeted) == 2
    assert all(b["flops"] <= fraction * full and b["flops"] < r["flops"]
               for b, r in zip(budgeted, records))

    # Refused before any image runs: a budget below the cheapest structure, two budgets, and
    # paths that hold no file.
    with pytest.raises(predict.app.UsageError, match="below task 'synthetic_shapes''s cheapest"):
        predict.run(path, "synthetic_shapes", [str(folder)], max_flops=0.5 * cheapest)
    with pytest.raises(predict.app.UsageError, match="at most one of"):
        predict.run(path, "synthetic_shapes", [str(folder)], max_flops=full, max_fraction=1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(predict.app.UsageError, match="no files in"):
        predict.run(path, "synthetic_shapes", [str(tmp_path / "empty")])
    # Each path that holds no file is named, even beside one that does; so is a bad batch size.
    missing = str(tmp_path / "mistyped.png")
    with pytest.raises(predict.app.UsageError,
                       match=f"no files in {tmp_path / 'empty'}, {missing}$"):
        predict.run(path, "synthetic_shapes",
                    [str(folder / "a_exact.png"), str(tmp_path / "empty"), missing])
    with pytest.raises(predict.app.UsageError, match="--batch_size must be a positive int"):
        predict.run(path, "synthetic_shapes", [str(folder)], batch_size=0)
    assert capsys.readouterr().out == ""

    # A folder given as a URL is read through TensorFlow's file systems.
    assert predict.run(path, "synthetic_shapes", [f"file://{folder / 'nested'}"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert record["file"] == f"file://{folder / 'nested' / 'b_larger.png'}"

    # A file whose name is not UTF-8 is classified like any other.
    odd = tmp_path / "odd" / os.fsdecode(b"\xff_exact.png")
    odd.parent.mkdir()
    odd.write_bytes((folder / "a_exact.png").read_bytes())
    assert predict.run(path, "synthetic_shapes", [str(odd.parent)]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert record["file"] == str(odd) and record["structure"] == first["structure"]


def test_budget_signature_stays_within_each_budget(exported):
    estimator, selector, path, names, images = exported
    model = tf.saved_model.load(path)
    batch = tf.constant(images[names[1]])
    plain = model.signatures[names[1]](images=batch)
    full = plain["full_flops"].numpy()
    assert np.allclose(full, 2 * export.cost.cost_table(estimator).full_macs(1))
    unlimited = model.signatures[f"{names[1]}_budget"](images=batch, max_flops=tf.constant(full))
    np.testing.assert_array_equal(unlimited["structure"], plain["structure"])
    budgets = np.random.RandomState(2).uniform(0.3, 1.0, len(full)) * full
    limited = model.signatures[f"{names[1]}_budget"](images=batch,
                                                     max_flops=tf.constant(budgets))
    assert np.all(limited["flops"].numpy() <= budgets)
    assert np.any(limited["flops"].numpy() < plain["flops"].numpy())
    # The structures are the budget rule's on the selector's distribution.
    x = pipeline.normalize(tf.cast(batch, tf.float32), sources.preprocessing(
        estimator.tasks[1].dataset))
    costs = export.cost.cost_table(estimator)
    expected = export.budget.structure_under_budget(
        tf.nn.log_softmax(selector(x, task=1)), 2.0 * costs.level_macs, tf.constant(budgets),
        2.0 * costs.fixed_macs[1])
    np.testing.assert_array_equal(limited["structure"], expected)
    # One budget per image, no fewer.
    with pytest.raises(tf.errors.InvalidArgumentError, match="one budget per image"):
        model.signatures[f"{names[1]}_budget"](images=batch, max_flops=tf.constant(full[:1]))
