"""The input pipelines: augmentation, per-task and multi-task batches for M1, M2, M3 and C1, the
validation carve, evaluation mode, reproducibility and iterator checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from den_tf import datasets
from den_tf.datasets import bench as input_bench
from den_tf.datasets import mini_imagenet, pipeline, sources, testing
from den_tf.tasks import Task, get_task, get_tasks

MOCK_EXAMPLES = 20
INDEX_EXAMPLES = 200
INDEX_TASK = Task("index", "pipetest/index", 16, 10)
M2_TASKS = [f"mini_imagenet84_task{k}" for k in range(10)]


def _index_source(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Example i is a flat 16x16 image of grey level i (test split: 200 - i), label i % 10.

    At 16x16 a 4-pixel crop shift never moves padding onto the centre pixel."""
    values = np.arange(INDEX_EXAMPLES) if split == "train" else INDEX_EXAMPLES - np.arange(20)
    images = np.broadcast_to(values[:, None, None, None], (len(values), 16, 16, 3))
    return images.astype(np.uint8), values % 10


datasets.register_source("pipetest/", _index_source)


def _pixel_values(batch: dict, preprocessing: sources.Preprocessing) -> np.ndarray:
    """The 0..255 grey level at the centre of each image of a batch, undoing the normalization."""
    centre = batch["image"].numpy()[:, batch["image"].shape[1] // 2, batch["image"].shape[2] // 2]
    return np.round(centre * np.array(preprocessing.std) * 255 + np.array(preprocessing.mean) * 255)


def _indices(task: Task, split: str, seed: int = 0, **kwargs) -> list[int]:
    """The example indices of an in-memory split, read in evaluation mode."""
    preprocessing = sources.Preprocessing((0.5,) * 3, (0.5,) * 3, 4)
    dataset = datasets.task_dataset(task, split, 64, seed=seed, training=False, **kwargs)
    return [int(v) for batch in dataset for v in _pixel_values(batch, preprocessing)[:, 0]]


# Augmentation


@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
def test_flip_and_crop_keep_shape_and_dtype_and_are_reproducible(dtype):
    image = tf.cast(tf.reshape(tf.range(6 * 5 * 3) % 251, (6, 5, 3)), dtype)
    seed = tf.constant([3, 4], tf.int64)
    for fn in (datasets.random_flip, datasets.pad_and_random_crop):
        out = fn(image, seed)
        assert out.shape == image.shape and out.dtype == dtype
        np.testing.assert_array_equal(out, fn(image, seed))
    augmented = datasets.augment(image, seed, crop_padding=4)
    assert augmented.shape == image.shape and augmented.dtype == dtype
    np.testing.assert_array_equal(augmented, datasets.augment(image, seed, crop_padding=4))


def test_flip_is_a_mirror_about_half_the_time():
    image = tf.reshape(tf.range(4 * 4 * 3), (4, 4, 3))
    flipped = 0
    for s in range(200):
        out = datasets.random_flip(image, tf.constant([s, 0])).numpy()
        assert np.array_equal(out, image.numpy()) or np.array_equal(out, image.numpy()[:, ::-1])
        flipped += not np.array_equal(out, image.numpy())
    assert 70 < flipped < 130


def test_pad_and_crop_moves_content_within_the_padding():
    height, width = 12, 10
    image = tf.reshape(tf.range(1, height * width * 3 + 1, dtype=tf.float32), (height, width, 3))
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    shifts = set()
    for s in range(60):
        out = datasets.pad_and_random_crop(image, tf.constant([s, 7]), padding=4).numpy()
        matches = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(out, padded[4 + dy : 4 + dy + height, 4 + dx : 4 + dx + width])
        ]
        assert len(matches) == 1  # a shift of at most 4 pixels; uncovered pixels are zero
        shifts.add(matches[0])
    assert len(shifts) > 20  # the offsets vary with the seed


# TFDS datasets through mock data


@pytest.fixture(scope="module")
def mock_data_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("mock_tfds")
    testing.write_tfds_metadata(data_dir, ["cifar10", "cifar100", "stl10", "tiny_imagenet"])
    return data_dir


@pytest.fixture
def mock_tfds(mock_data_dir):
    """TFDS datasets with random examples; the pipelines see them as prepared data."""
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, data_dir=str(mock_data_dir)):
        yield str(mock_data_dir)


def _check_batch(batch: dict, task: Task, task_id: int, batch_size: int) -> None:
    size = task.input_size
    assert batch["image"].shape == (batch_size, size, size, 3)
    assert batch["image"].dtype == tf.float32 and batch["label"].dtype == tf.int32
    assert batch["label"].shape == (batch_size,)
    assert np.all((batch["label"] >= 0) & (batch["label"] < task.num_classes))
    assert batch["task"].dtype == tf.int32 and batch["task"].shape == ()
    assert int(batch["task"]) == task_id


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_c1_batches(mock_tfds, name):
    task = get_task(name)
    train = datasets.multitask_dataset(
        [task], "train", 8, seed=0, training=True, data_dir=mock_tfds
    )
    assert train.element_spec[0]["image"].shape == (8, 32, 32, 3)  # static: full batches only
    for (batch,) in train.take(4):  # 4 x 8 > 19 training examples: it repeats
        _check_batch(batch, task, 0, 8)
        assert abs(float(tf.reduce_mean(batch["image"]))) < 1.0  # normalized
    test = datasets.task_dataset(task, "test", 8, seed=0, training=False, data_dir=mock_tfds)
    assert [int(b["label"].shape[0]) for b in test] == [8, 8, 4]  # one pass, partial last batch


def test_m1_batches(mock_tfds):
    tasks = get_tasks("cifar100,tiny_imagenet,stl10")
    dataset = datasets.multitask_dataset(
        tasks, "train", [4, 3, 2], seed=0, training=True, data_dir=mock_tfds
    )
    for step in dataset.take(2):
        assert len(step) == 3
        for task_id, (task, batch, size) in enumerate(zip(tasks, step, [4, 3, 2])):
            _check_batch(batch, task, task_id, size)


def test_m3_shows_each_image_with_its_coarse_and_fine_label(mock_tfds):
    tasks = get_tasks("cifar100_coarse,cifar100")
    for split, training in [("train", True), ("validation", False), ("test", False)]:
        dataset = datasets.multitask_dataset(
            tasks, split, 4, seed=5, training=training, data_dir=mock_tfds
        )
        for coarse, fine in dataset.take(3):
            _check_batch(coarse, tasks[0], 0, int(coarse["label"].shape[0]))
            _check_batch(fine, tasks[1], 1, int(fine["label"].shape[0]))
            np.testing.assert_array_equal(coarse["image"], fine["image"])  # same images


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_evaluation_images_are_normalised_with_their_datasets_own_statistics(mock_tfds, name):
    task = get_task(name)
    batch = next(iter(datasets.task_dataset(task, "test", 4, seed=0, training=False,
                                            data_dir=mock_tfds)))
    stored = tfds.builder(name, data_dir=mock_tfds).as_dataset(split="test", shuffle_files=False)
    raw = np.stack([ex["image"] for ex in tfds.as_numpy(stored.take(4))]).astype(np.float32)
    own = sources.PREPROCESSING[name]
    expected = (raw - np.array(own.mean) * 255) / (np.array(own.std) * 255)
    np.testing.assert_allclose(batch["image"].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_stl10_test_split_is_not_augmented(mock_tfds):
    task = get_task("stl10")
    first, second = (
        next(
            iter(datasets.task_dataset(task, "test", 5, seed=s, training=False, data_dir=mock_tfds))
        )
        for s in (0, 1)
    )
    _check_batch(first, task, 0, 5)
    np.testing.assert_array_equal(first["image"], second["image"])  # seeds change nothing


# Datasets of our own builders, prepared from fakes


@pytest.fixture(scope="module")
def mini_data_dir(tmp_path_factory) -> str:
    """mini_imagenet/84 prepared from a fake ILSVRC-2012 with the 50 stored classes, 2
    training images each, in 10 files (of one M2 task's 10 training images each)."""
    wnids = mini_imagenet.default_wnids()
    manual = testing.fake_ilsvrc(tmp_path_factory.mktemp("ilsvrc"), wnids, 3, 1)
    data_dir = str(tmp_path_factory.mktemp("mini_data"))
    builder = tfds.builder("mini_imagenet/84", data_dir=data_dir, train_images_per_class=2,
                           val_images_per_class=1)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual), num_shards=10)
    )
    return data_dir


def test_a_task_on_some_classes_reads_only_their_files(mini_data_dir, caplog):
    """M2's task 3 (labels 15-19) reads the 10 examples of its classes, from the one file that
    holds them, with their positions in the whole split (which the validation carve uses);
    TFDS's warning that its files are read out of their stored order, as asked, is dropped."""
    builder = tfds.builder("mini_imagenet/84", data_dir=mini_data_dir)
    assert builder.info.splits["train"].shard_lengths == [10] * 10
    assert sources.stored_version("mini_imagenet/84", mini_data_dir) == "mini_imagenet/84/1.1.0"
    assert sources.stored_version("synthetic/shapes") is None  # in memory
    with caplog.at_level("INFO"):
        source = sources.load_source("mini_imagenet/84", "train", data_dir=mini_data_dir,
                                     file_order_seed=3, labels=(15, 5))
    assert caplog.records and not [r for r in caplog.records if "ordered" in r.getMessage()]
    assert source.num_examples == 100
    examples = list(source.examples.as_numpy_iterator())
    assert sorted(int(ex["position"]) for ex in examples) == list(range(30, 40))
    assert sorted(int(ex["label"]) for ex in examples) == [15, 15, 16, 16, 17, 17, 18, 18, 19, 19]
    read = builder.info.splits["train[30:40]"].file_instructions
    assert [(instruction.skip, instruction.take) for instruction in read] == [(0, 10)]
    with pytest.raises(ValueError, match=r"labels: \(48, 5\) is not a range of the 50 labels"):
        sources.load_source("mini_imagenet/84", "test", data_dir=mini_data_dir, labels=(48, 5))


def test_m2_batches_and_label_mapping(mini_data_dir):
    tasks = get_tasks(M2_TASKS)
    preprocessing = sources.PREPROCESSING["mini_imagenet"]
    train = datasets.multitask_dataset(
        tasks, "train", 2, seed=0, training=True, data_dir=mini_data_dir
    )
    for step in train.take(3):
        assert len(step) == 10
        for k, (task, batch) in enumerate(zip(tasks, step)):
            _check_batch(batch, task, k, 2)
            classes = (_pixel_values(batch, preprocessing)[:, 0] - 20) / 4  # see class_value
            np.testing.assert_array_equal(classes, 5 * k + batch["label"].numpy())
    for k, task in enumerate(tasks):  # the test split: one ILSVRC val image per class
        (batch,) = datasets.task_dataset(
            task, "test", 8, seed=0, training=False, task_id=k, data_dir=mini_data_dir
        )
        assert sorted(batch["label"].numpy()) == [0, 1, 2, 3, 4]
        classes = (_pixel_values(batch, preprocessing)[:, 0] - 20) / 4
        np.testing.assert_array_equal(classes, 5 * k + batch["label"].numpy())


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory) -> str:
    """tiny_imagenet prepared from a fake with 3 classes of 6 training images."""
    manual = tmp_path_factory.mktemp("tiny_manual")
    testing.fake_tiny_imagenet(manual, ["n03", "n01", "n02"], train_per_class=6, val_per_class=2)
    data_dir = str(tmp_path_factory.mktemp("tiny_data"))
    datasets.prepare_dataset("tiny_imagenet", data_dir=data_dir, manual_dir=str(manual))
    return data_dir


TINY3 = Task("tiny3", "tiny_imagenet", 64, 3)


@pytest.fixture(scope="module")
def tiny_sharded_dir(tmp_path_factory) -> str:
    """tiny_imagenet (4 classes of 8 training images) prepared in 5 files per split, of 6 or 7
    training images (odd counts: every second example of two file orders then overlaps)."""
    manual = tmp_path_factory.mktemp("tiny_sharded_manual")
    testing.fake_tiny_imagenet(manual, ["n04", "n03", "n01", "n02"], train_per_class=8,
                               val_per_class=2)
    data_dir = str(tmp_path_factory.mktemp("tiny_sharded"))
    builder = datasets.prepare_dataset("tiny_imagenet", data_dir=data_dir,
                                       manual_dir=str(manual), num_shards=5)
    assert builder.info.splits["train"].shard_lengths == [6, 7, 6, 7, 6]
    return data_dir


def _passes(source, count):
    """(position, label) of each example of ``count`` passes over a source, pass by pass."""
    examples = list(source.examples.repeat(count).as_numpy_iterator())
    pairs = [(int(ex["position"]), int(ex["label"])) for ex in examples]
    return [pairs[i * source.num_examples:(i + 1) * source.num_examples] for i in range(count)]


def test_training_passes_read_the_files_in_a_new_order_each_time(tiny_sharded_dir):
    """Each pass holds every example once, each with its stored position (so the validation
    carve is the same), in a file order drawn anew each pass: a shuffle buffer over one fixed
    order would keep every example near its stored place in every epoch."""
    stored = sources.load_source("tiny_imagenet", "train", data_dir=tiny_sharded_dir)
    [stored_pass] = _passes(stored, 1)
    assert [p for p, _ in stored_pass] == list(range(32))
    labels = dict(stored_pass)
    shuffled = sources.load_source("tiny_imagenet", "train", data_dir=tiny_sharded_dir,
                                   file_order_seed=3)
    passes = _passes(shuffled, 3)
    for one in passes:
        assert sorted(one) == stored_pass  # every example once, with its own label
    orders = [[p for p, _ in one] for one in passes]
    assert len({tuple(order) for order in orders + [list(range(32))]}) == 4
    # Files, not examples, are shuffled: each file's examples stay together, in order.
    files = [list(range(start, start + n)) for start, n in zip((0, 6, 13, 19, 26),
                                                               (6, 7, 6, 7, 6))]
    for order in orders:
        runs, i = [], 0
        while i < 32:
            run = next(f for f in files if f[0] == order[i])
            assert order[i:i + len(run)] == run
            runs.append(run)
            i += len(run)
        assert sorted(runs) == files
    again = sources.load_source("tiny_imagenet", "train", data_dir=tiny_sharded_dir,
                                file_order_seed=3)
    assert _passes(again, 3) == passes
    assert labels == dict(passes[0])


def test_worker_shares_are_disjoint_whatever_each_workers_file_order(tiny_sharded_dir):
    """Each worker reads the files in its own seeded order; their shares, by stored position,
    still split every pass between them (every second example of two different orders would
    not)."""
    shares = []
    for index in range(2):
        source = sources.load_source("tiny_imagenet", "train", data_dir=tiny_sharded_dir,
                                     file_order_seed=index)
        share = pipeline.worker_share(source.examples, 2, index).repeat(2)
        positions = [int(ex["position"]) for ex in share.as_numpy_iterator()]
        shares.append(set(positions[:16]))
        assert sorted(positions[16:]) == sorted(positions[:16])
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(range(32))


def test_tiny_imagenet_batches_keep_image_and_label_together(tiny_data_dir):
    preprocessing = sources.PREPROCESSING["tiny_imagenet"]
    train = datasets.task_dataset(TINY3, "train", 4, seed=0, training=True, data_dir=tiny_data_dir)
    test = datasets.task_dataset(TINY3, "test", 4, seed=0, training=False, data_dir=tiny_data_dir)
    for batch in [*train.take(5), *test]:
        classes = (_pixel_values(batch, preprocessing) - 20) / 4  # the crop leaves the centre
        np.testing.assert_allclose(classes, np.repeat(batch["label"].numpy()[:, None], 3, 1))


# Validation carve, evaluation mode, reproducibility (in-memory source)


def test_validation_carve_is_seeded_disjoint_and_sized():
    train, validation = (_indices(INDEX_TASK, split) for split in ("train", "validation"))
    assert len(validation) == 10 == round(0.05 * INDEX_EXAMPLES)
    assert set(train).isdisjoint(validation)
    assert sorted(train + validation) == list(range(INDEX_EXAMPLES))
    assert validation == list(datasets.validation_indices(INDEX_TASK.dataset, 200, 0.05, 0))
    assert validation == _indices(INDEX_TASK, "validation")  # same seed, same examples
    assert validation != _indices(INDEX_TASK, "validation", seed=1)
    larger = _indices(INDEX_TASK, "validation", validation_fraction=0.2)
    assert len(larger) == 40
    assert len(_indices(INDEX_TASK, "train", validation_fraction=0)) == INDEX_EXAMPLES
    with pytest.raises(ValueError, match="validation_fraction: must be > 0"):
        _indices(INDEX_TASK, "validation", validation_fraction=0)


def test_training_never_sees_validation_examples():
    validation = set(_indices(INDEX_TASK, "validation"))
    dataset = datasets.task_dataset(INDEX_TASK, "train", 50, seed=0, training=True)
    preprocessing = sources.Preprocessing((0.5,) * 3, (0.5,) * 3, 4)
    seen = {int(v) for batch in dataset.take(8) for v in _pixel_values(batch, preprocessing)[:, 0]}
    assert seen.isdisjoint(validation) and len(seen) == INDEX_EXAMPLES - len(validation)


def test_worker_shards_split_the_training_examples_and_keep_the_validation_carve():
    """Two pipelines' shards (``shard``) are disjoint and together all training examples
    (none of the validation split's); ``order_seed`` changes the order, never the carve."""
    validation = set(_indices(INDEX_TASK, "validation"))
    preprocessing = sources.Preprocessing((0.5,) * 3, (0.5,) * 3, 4)

    def seen(shard, order_seed=None, batches=8):
        dataset = datasets.task_dataset(INDEX_TASK, "train", 19, seed=0, training=True,
                                        shard=shard, order_seed=order_seed)
        return [int(v) for batch in dataset.take(batches)
                for v in _pixel_values(batch, preprocessing)[:, 0]]

    first, second = set(seen((2, 0), order_seed=0)), set(seen((2, 1), order_seed=1))
    assert abs(len(first) - len(second)) <= 4  # even and odd stored positions, less the carve
    assert first.isdisjoint(second) and (first | second).isdisjoint(validation)
    assert len(first | second) == INDEX_EXAMPLES - len(validation)
    assert seen((1, 0), order_seed=0, batches=2) == seen((1, 0), batches=2)
    reordered = seen((1, 0), order_seed=7)
    assert reordered[:38] != seen((1, 0), batches=2)
    assert set(reordered).isdisjoint(validation)
    with pytest.raises(ValueError, match="shard: expected"):
        seen((2, 2))


def test_evaluation_mode_is_ordered_unaugmented_and_keeps_the_last_batch():
    batches = list(datasets.task_dataset(INDEX_TASK, "test", 8, seed=0, training=False))
    assert [int(b["label"].shape[0]) for b in batches] == [8, 8, 4]
    images = np.concatenate([b["image"] for b in batches])
    expected = (_index_source("", "test")[0] / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(images, expected, atol=1e-6)
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, _index_source("", "test")[1])


def test_training_is_reproducible_under_a_seed():
    def first_batches(seed: int) -> list[np.ndarray]:
        dataset = datasets.task_dataset(INDEX_TASK, "train", 16, seed=seed, training=True)
        return [b["image"].numpy() for b in dataset.take(3)]

    same = zip(first_batches(3), first_batches(3))
    assert all(np.array_equal(a, b) for a, b in same)
    assert not np.array_equal(first_batches(3)[0], first_batches(4)[0])


def test_training_augments_each_example_with_its_own_crop():
    (batch,) = datasets.task_dataset(INDEX_TASK, "train", 64, seed=0, training=True).take(1)
    raw = np.round(batch["image"].numpy()[..., 0] * 127.5 + 127.5)  # undo the 0.5/0.5 norm
    padding_masks = {(raw[i] == 0).tobytes() for i in range(64) if raw[i, 8, 8] != 0}
    assert len(padding_masks) > 20  # shifts differ between examples (81 are possible)


def test_tasks_on_class_slices_are_augmented_each_with_its_own_seed():
    """M2's tasks read one dataset's class slices in one order: with one augmentation seed,
    the j-th image of every task would get the same crop and flip."""

    def crops(task):
        (batch,) = datasets.task_dataset(task, "train", 40, seed=0, training=True).take(1)
        raw = np.round(batch["image"].numpy()[..., 0] * 127.5 + 127.5)  # undo the 0.5/0.5 norm
        return [(raw[i] == 0).tobytes() for i in range(40)]  # where the padding came in

    first, second = (Task(f"slice{k}", "pipetest/index", 16, 5, first_class=5 * k)
                     for k in (0, 1))
    same = sum(a == b for a, b in zip(crops(first), crops(second)))
    assert same < 10  # 81 shifts x 2 flips: a few coincide by chance
    assert crops(first) == crops(first)


def test_first_class_filter_and_resize():
    task = Task("slice", "pipetest/index", 5, 3, first_class=4)  # labels 4, 5, 6 -> 0, 1, 2
    batches = list(datasets.task_dataset(task, "test", 32, seed=0, training=False))
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, _index_source("", "test")[1][[4, 5, 6, 14, 15, 16]] - 4)
    assert batches[0]["image"].shape[1:] == (5, 5, 3)


def test_iterator_checkpoint_resumes_at_the_same_element(tiny_sharded_dir, tmp_path):
    """Also in a TFDS split read in a new file order every pass."""
    tasks = [INDEX_TASK, Task("tiny4", "tiny_imagenet", 64, 4)]
    dataset = datasets.multitask_dataset(
        tasks, "train", [64, 8], seed=0, training=True, data_dir=tiny_sharded_dir
    )
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    expected = [next(iterator) for _ in range(4)]  # crosses an epoch of both tasks
    checkpoint.restore(path)
    for want, got in zip(expected, [next(iterator) for _ in range(4)]):
        for want_task, got_task in zip(want, got):
            for key in ("image", "label", "task"):
                np.testing.assert_array_equal(want_task[key], got_task[key])


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match=r"batch_size: expected one int or 2 \(one per task\)"):
        datasets.multitask_dataset([INDEX_TASK] * 2, "train", [4], seed=0, training=True)
    with pytest.raises(ValueError, match="batch_size: must be a positive int, got 0"):
        datasets.task_dataset(INDEX_TASK, "train", 0, seed=0, training=True)
    with pytest.raises(ValueError, match="label_key 'coarse_label' is not a label"):
        bad = dataclasses.replace(INDEX_TASK, label_key="coarse_label")
        datasets.task_dataset(bad, "train", 4, seed=0, training=True)


def test_task_classes_beyond_the_dataset_are_rejected(mock_tfds):
    task = Task("too_many", "cifar10", 32, 8, first_class=5)
    with pytest.raises(ValueError, match=r"classes 5...12 exceed the 10 classes of 'cifar10'"):
        datasets.task_dataset(task, "train", 4, seed=0, training=True, data_dir=mock_tfds)


def _source_with_extras(dataset: str, split: str):
    count = 12
    images = np.zeros((count, 8, 8, 3), np.uint8)
    labels = np.arange(count) % 3
    if dataset.endswith("bad"):
        return images, labels, {"difficulty": np.zeros(count + 1, np.float32)}
    return images, labels, {"difficulty": np.arange(count, dtype=np.float32) / count}


datasets.register_source("extratest/", _source_with_extras)


def test_extra_features_travel_with_their_examples():
    task = Task("extra", "extratest/good", 8, 3)
    batches = list(datasets.task_dataset(task, "test", 5, seed=0, training=False))
    difficulty = np.concatenate([b["difficulty"].numpy() for b in batches])
    labels = np.concatenate([b["label"].numpy() for b in batches])
    assert np.allclose(difficulty, np.arange(12) / 12) and labels.tolist() == [0, 1, 2] * 4
    with pytest.raises(ValueError, match="extra feature 'difficulty' must be a numeric array"):
        datasets.task_dataset(Task("bad", "extratest/bad", 8, 3), "test", 5, seed=0,
                              training=False)


def test_input_bench_reads_m2_from_a_fake_prepared_by_the_real_builder(tmp_path):
    """``den_tf.datasets.bench --scenario=m2 --fake_images_per_class=N``: the fake Mini-ImageNet
    is the real builder's, stored by label; the timing covers every task's batches."""
    data_dir = input_bench.prepare_fake_mini_imagenet(tmp_path, images_per_class=2)
    builder = tfds.builder("mini_imagenet/84", data_dir=data_dir)
    assert builder.info.splits["train"].num_examples == 100
    assert builder.info.metadata["label_starts"]["train"] == list(range(0, 101, 2))
    tasks = get_tasks(input_bench.SCENARIO_TASKS["m2"])
    timing = input_bench.images_per_second(tasks, data_dir, batch_size=2, steps=3, warmup=1,
                                           shuffle_buffer=8)
    assert timing["images_per_second"] == pytest.approx(
        timing["steps_per_second"] * 2 * 10, rel=0.02)
