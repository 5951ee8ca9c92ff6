"""The dataset builders (Tiny-ImageNet, Mini-ImageNet) on fakes in the real layouts, the sources
(offline behaviour, in-memory registration) and the prepare command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from den_tf import datasets
from den_tf.datasets import mini_imagenet, prepare, seeds, sources, testing, tiny_imagenet
from den_tf.tasks import Task, get_task

TINY_WNIDS = ("n01443537", "n01629819", "n01641577")
ILSVRC_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")


def _build(name: str, data_dir: Path, manual_dir: Path | None, **builder_kwargs):
    """Prepares ``name`` from ``manual_dir``; returns the builder and the build's warnings."""
    builder = tfds.builder(name, data_dir=str(data_dir), **builder_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir and str(manual_dir))
        )
    return builder, [str(w.message) for w in caught if "skipped" in str(w.message)]


def _examples(builder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _labels_by_file(builder, split: str) -> dict[str, int]:
    return {ex["file_name"].decode(): int(ex["label"]) for ex in _examples(builder, split)}


# Tiny-ImageNet


@pytest.fixture(scope="module")
def tiny_manual(tmp_path_factory) -> Path:
    """A manual directory with a fake tiny-imagenet-200/ holding 3 bad files among its images."""
    manual = tmp_path_factory.mktemp("tiny_manual")
    folder = testing.fake_tiny_imagenet(manual, TINY_WNIDS, train_per_class=3, val_per_class=2)
    (folder / "train" / TINY_WNIDS[1] / "images" / f"{TINY_WNIDS[1]}_9.JPEG").write_bytes(b"junk")
    good = (folder / "val" / "images" / "val_0.JPEG").read_bytes()
    (folder / "val" / "images" / "val_truncated.JPEG").write_bytes(good[: len(good) // 2])
    testing.write_image(folder / "val" / "images" / "val_big.JPEG", 50, (70, 64))
    with (folder / "val" / "val_annotations.txt").open("a") as f:
        f.write(f"val_truncated.JPEG\t{TINY_WNIDS[0]}\t0\t0\t1\t1\n")
        f.write(f"val_big.JPEG\t{TINY_WNIDS[2]}\t0\t0\t1\t1\n")
    return manual


@pytest.fixture(scope="module")
def tiny_built(tiny_manual, tmp_path_factory):
    return _build("tiny_imagenet", tmp_path_factory.mktemp("tiny_data"), tiny_manual)


def test_tiny_imagenet_class_words(tmp_path):
    (tmp_path / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\t\n")
    assert tiny_imagenet.class_words(tmp_path, ["n01", "n02", "n03"]) == [
        "goldfish", "n02", "n03"]
    assert tiny_imagenet.class_words(tmp_path / "none", ["n01"]) == ["n01"]


def test_tiny_imagenet_counts_labels_and_splits(tiny_built):
    builder, _ = tiny_built
    assert builder.info.features["label"].names == sorted(TINY_WNIDS)  # wnids.txt is unsorted
    # Exported models name the classes by their words (words.txt), read back from the prepared
    # dataset's metadata; a wnid without a line keeps its id.
    assert sources.class_names("tiny_imagenet", data_dir=builder.data_dir_root) == [
        f"thing {w}" for w in sorted(TINY_WNIDS)]
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 9,
        "test": 6,
    }
    train = _labels_by_file(builder, "train")
    assert train == {
        f"{w}_{i}.JPEG": sorted(TINY_WNIDS).index(w) for w in TINY_WNIDS for i in range(3)
    }
    assert _labels_by_file(builder, "test") == {f"val_{i}.JPEG": i // 2 for i in range(6)}
    for example in _examples(builder, "train"):  # greyscale files decode to RGB, colour kept
        assert example["image"].shape == (64, 64, 3)
        expected = testing.class_value(int(example["label"]))
        assert np.abs(example["image"].astype(int) - expected).max() <= 2


def test_tiny_imagenet_skips_and_lists_unreadable_files(tiny_built):
    _, skipped = tiny_built
    assert len(skipped) == 2
    test_warning, train_warning = sorted(skipped)
    assert "tiny_imagenet test: skipped 2 unreadable image file(s)" in test_warning
    assert "val_truncated.JPEG" in test_warning and "val_big.JPEG: size 70x64" in test_warning
    assert "tiny_imagenet train: skipped 1" in train_warning
    assert "_9.JPEG: not an image file PIL can identify" in train_warning


def test_tiny_imagenet_from_zip(tiny_manual, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    testing.zip_folder(tiny_manual / tiny_imagenet.FOLDER, manual / "tiny-imagenet-200.zip")
    builder, _ = _build("tiny_imagenet", tmp_path / "data", manual)
    assert builder.info.splits["train"].num_examples == 9
    assert builder.info.splits["test"].num_examples == 6


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "wnids.txt").unlink(), "expected the class list wnids.txt at"),
        (lambda f: shutil.rmtree(f / "train" / TINY_WNIDS[2]), f"missing: {TINY_WNIDS[2]}"),
        (lambda f: (f / "val" / "val_annotations.txt").unlink(), "val_annotations.txt"),
        (lambda f: [p.unlink() for p in (f / "train" / TINY_WNIDS[1] / "images").iterdir()],
         "holds no image files"),
    ],
    ids=["no_wnids", "missing_class_folder", "no_val_annotations", "empty_class_folder"],
)
def test_tiny_imagenet_wrong_layout_says_what_is_expected(tmp_path, damage, message):
    folder = testing.fake_tiny_imagenet(tmp_path / "manual", TINY_WNIDS, 1, 1)
    damage(folder)
    with pytest.raises(datasets.DatasetLayoutError, match="expected") as error:
        _build("tiny_imagenet", tmp_path / "data", tmp_path / "manual")
    assert message in str(error.value) and "official layout" in str(error.value)


def test_tiny_imagenet_listed_image_missing_stops_the_build(tmp_path):
    """A file that val_annotations.txt lists but the folder lacks is an incomplete copy, not a
    corrupt image to skip: the test split would silently shrink."""
    folder = testing.fake_tiny_imagenet(tmp_path / "manual", TINY_WNIDS, 1, 1)
    (folder / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(datasets.DatasetLayoutError, match="val_1.JPEG is listed but does not"):
        _build("tiny_imagenet", tmp_path / "data", tmp_path / "manual")


# Mini-ImageNet


def test_mini_imagenet_class_choice_is_the_stored_reproducible_one():
    all_wnids = mini_imagenet.ilsvrc_wnids()
    assert len(all_wnids) == 1000 and len(set(all_wnids)) == 1000
    chosen = mini_imagenet.choose_wnids(all_wnids)
    assert chosen == mini_imagenet.choose_wnids(all_wnids)
    assert chosen == mini_imagenet.default_wnids()  # the file in the repository
    assert len(set(chosen)) == 50 and set(chosen) <= set(all_wnids)
    assert chosen != mini_imagenet.choose_wnids(all_wnids, seed=mini_imagenet.CLASS_SEED + 1)


CHOSEN = [ILSVRC_WNIDS[2], ILSVRC_WNIDS[0], ILSVRC_WNIDS[1]]  # 3 of the fake's 4 classes


@pytest.fixture(scope="module")
def mini_built(tmp_path_factory):
    """Both configs built from one fake ILSVRC-2012 (4 classes, 4 training images each)."""
    manual = testing.fake_ilsvrc(
        tmp_path_factory.mktemp("ilsvrc"), ILSVRC_WNIDS, train_per_class=4, val_per_class=2
    )
    data_dir = tmp_path_factory.mktemp("mini_data")
    kwargs = {"wnids": CHOSEN, "train_images_per_class": 3, "val_images_per_class": 2}
    return {
        size: _build(f"mini_imagenet/{size}", data_dir, manual, **kwargs)[0] for size in (84, 224)
    }


@pytest.mark.parametrize("size", [84, 224])
def test_mini_imagenet_counts_labels_and_sizes(mini_built, size):
    builder = mini_built[size]
    assert builder.info.features["label"].names == CHOSEN  # label order = chosen order
    assert builder.info.splits["train"].num_examples == 9  # 3 of each chosen class's 4
    assert builder.info.splits["test"].num_examples == 6  # all val images of chosen classes
    for split in ("train", "test"):
        for example in _examples(builder, split):
            wnid = CHOSEN[int(example["label"])]
            assert example["image"].shape == (size, size, 3)
            value = testing.class_value(ILSVRC_WNIDS.index(wnid))  # the class's colour
            assert np.abs(example["image"].astype(int) - value).max() <= 3
            if split == "train":
                assert example["file_name"].decode().startswith(wnid)


@pytest.mark.parametrize("size", [84, 224])
def test_mini_imagenet_stores_each_label_together(mini_built, size):
    """Stored in label order, with each label's first index in the metadata, as a fresh
    builder reads it from disk: a task on some classes reads only theirs."""
    builder = tfds.builder(f"mini_imagenet/{size}", data_dir=mini_built[size].data_dir_root)
    assert builder.info.metadata["label_starts"] == {"train": [0, 3, 6, 9], "test": [0, 2, 4, 6]}
    for split, per_class in (("train", 3), ("test", 2)):
        labels = [int(example["label"]) for example in _examples(builder, split)]
        assert labels == [label for label in range(3) for _ in range(per_class)]


def test_mini_imagenet_training_choice_is_reproducible(mini_built):
    chosen_files = [sorted(_labels_by_file(mini_built[size], "train")) for size in (84, 224)]
    assert chosen_files[0] == chosen_files[1]  # two builds chose the same 3 of 4 per class
    per_class = {w: [f for f in chosen_files[0] if f.startswith(w)] for w in CHOSEN}
    assert all(len(files) == 3 for files in per_class.values())


def test_derived_seeds_and_subsets_are_the_same_in_every_process_and_release():
    """Pinned values: a salted ``hash`` or another generator would change the validation
    split and Mini-ImageNet's training subset between processes or NumPy releases."""
    assert seeds.derive_seed(2019, "n01440764") == 1713097532
    assert seeds.derive_seed(0, "cifar100", "validation") == 663245793
    np.testing.assert_array_equal(seeds.sample_indices(1300, 5, 1713097532),
                                  [412, 637, 675, 708, 877])
    np.testing.assert_array_equal(seeds.sample_indices(10, 3, 663245793), [0, 1, 5])
    with pytest.raises(ValueError, match=r"count: must be in \[0, 3\], got 4"):
        seeds.sample_indices(3, 4, 0)


def test_mini_imagenet_reports_a_chosen_corrupt_file(tmp_path):
    manual = testing.fake_ilsvrc(tmp_path / "manual", ILSVRC_WNIDS[:1], train_per_class=2)
    (manual / "train" / ILSVRC_WNIDS[0] / "zz_corrupt.JPEG").write_bytes(b"\xff\xd8junk")
    builder, skipped = _build("mini_imagenet/84", tmp_path / "data", manual, wnids=ILSVRC_WNIDS[:1],
                              val_images_per_class=1)
    assert builder.info.splits["train"].num_examples == 2  # all 3 files chosen, 1 skipped
    assert builder.info.metadata["label_starts"]["train"] == [0, 2]
    assert len(skipped) == 1 and "skipped 1 unreadable" in skipped[0]
    assert "zz_corrupt.JPEG" in skipped[0]


@pytest.mark.parametrize("label_file", [False, True], ids=["tfds_ground_truth", "val_labels"])
def test_mini_imagenet_flat_validation_folder(tmp_path, label_file):
    manual = testing.fake_ilsvrc(tmp_path / "m", ILSVRC_WNIDS, 1, val_per_class=2, flat_val=True)
    if label_file:  # relabel: the file's labels win over TFDS's ground truth
        names = sorted(p.name for p in (manual / "val").iterdir())
        lines = [f"{name},{ILSVRC_WNIDS[i % 2]} 1 2 3 4" for i, name in enumerate(names)]
        (manual / "val_labels.txt").write_text("ImageId,PredictionString\n" + "\n".join(lines))
    per_class = 4 if label_file else 2
    builder, _ = _build("mini_imagenet/84", tmp_path / "data", manual, wnids=ILSVRC_WNIDS[:2],
                        val_images_per_class=per_class)
    labels = [int(example["label"]) for example in _examples(builder, "test")]
    assert labels == [0] * per_class + [1] * per_class  # stored by label, not by file
    assert builder.info.metadata["label_starts"]["test"] == [0, per_class, 2 * per_class]
    # A missing validation image is an incomplete copy: the test split would shrink.
    next((manual / "val").iterdir()).unlink()
    with pytest.raises(datasets.DatasetLayoutError,
                       match=f"must have {per_class} validation images .* 1 have another number"):
        _build("mini_imagenet/84", tmp_path / "data2", manual, wnids=ILSVRC_WNIDS[:2],
               val_images_per_class=per_class)


def test_mini_imagenet_per_class_validation_folders_must_be_complete(tmp_path):
    manual = testing.fake_ilsvrc(tmp_path / "m", ILSVRC_WNIDS[:2], 1, val_per_class=3)
    next((manual / "val" / ILSVRC_WNIDS[1]).iterdir()).unlink()
    with pytest.raises(datasets.DatasetLayoutError,
                       match=f"must have 3 validation images .*: {ILSVRC_WNIDS[1]} \\(2\\)"):
        _build("mini_imagenet/84", tmp_path / "data", manual, wnids=ILSVRC_WNIDS[:2],
               val_images_per_class=3)


def test_mini_imagenet_wrong_layout(tmp_path):
    manual = testing.fake_ilsvrc(tmp_path / "manual", ILSVRC_WNIDS[:2], 1, 1)
    with pytest.raises(datasets.DatasetLayoutError, match=f"missing: {ILSVRC_WNIDS[2]}"):
        _build("mini_imagenet/84", tmp_path / "data", manual, wnids=ILSVRC_WNIDS[:3])
    for path in (manual / "val" / ILSVRC_WNIDS[1]).iterdir():
        path.unlink()
    with pytest.raises(datasets.DatasetLayoutError,
                       match=f"validation images of class {ILSVRC_WNIDS[1]} in .* no image"):
        _build("mini_imagenet/84", tmp_path / "data3", manual, wnids=ILSVRC_WNIDS[:2])
    shutil.rmtree(manual / "val")
    with pytest.raises(datasets.DatasetLayoutError, match="expected the validation folder at"):
        _build("mini_imagenet/84", tmp_path / "data2", manual, wnids=ILSVRC_WNIDS[:2])
    for path in (manual / "train" / ILSVRC_WNIDS[0]).iterdir():
        path.unlink()
    with pytest.raises(datasets.DatasetLayoutError,
                       match=f"training images of class {ILSVRC_WNIDS[0]} in .* no image"):
        _build("mini_imagenet/84", tmp_path / "data4", manual, wnids=ILSVRC_WNIDS[:2])


# Sources: offline behaviour and registration


@pytest.mark.parametrize("dataset", ["cifar100", "tiny_imagenet", "mini_imagenet/84"])
def test_missing_dataset_fails_fast_naming_the_command(tmp_path, dataset):
    task = Task("t", dataset, 32, 5)
    start = time.monotonic()
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        datasets.task_dataset(task, "train", 8, seed=0, training=True, data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert f"make data DATASETS={dataset} DATA_DIR={tmp_path}" in message
    assert str(tmp_path) in message and repr(dataset) in message
    assert ("MANUAL_DIR=" in message) == (dataset != "cifar100")
    command = next(line for line in message.splitlines() if "make data" in line)
    assert not set("<>|;") & set(command)  # pastes into a shell as it is


def test_unknown_dataset_and_bad_split_are_value_errors():
    with pytest.raises(ValueError, match="dataset: unknown dataset 'imagenet2012'"):
        datasets.task_dataset(Task("t", "imagenet2012", 32, 5), "train", 8, seed=0, training=True)
    with pytest.raises(ValueError, match=r"split: expected one of .* got 'val'"):
        datasets.task_dataset(get_task("cifar10"), "val", 8, seed=0, training=False)
    with pytest.raises(ValueError, match=r"validation_fraction: must be in \[0, 1\), got 1.0"):
        datasets.task_dataset(
            get_task("cifar10"), "train", 8, seed=0, training=True, validation_fraction=1.0
        )


def test_register_source_checks_prefix_and_arrays():
    with pytest.raises(ValueError, match=r"'synthetic_mine/' overlaps the registered "
                                         r"\['synthetic'\]"):
        datasets.register_source("synthetic_mine/", lambda name, split: None)
    with pytest.raises(ValueError, match="would shadow"):
        datasets.register_source("cifar", lambda name, split: None)
    datasets.register_source("badsource", lambda name, split: (np.zeros((2, 4, 4, 3)), [0, 1]))
    with pytest.raises(ValueError, match=r"images must be uint8 \[N, H, W, 3\], got float64"):
        sources.load_source("badsource/x", "train")


def test_prepare_command_line(tiny_manual, tmp_path):
    command = [
        sys.executable, "-m", "den_tf.datasets.prepare", "--datasets=tiny_imagenet",
        f"--manual_dir={tiny_manual}", f"--data_dir={tmp_path}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert '"splits": {"train": 9, "test": 6}' in result.stdout
    assert datasets.is_prepared("tiny_imagenet", str(tmp_path))
    assert prepare.expand(["mini_imagenet", "cifar10"]) == [
        "mini_imagenet/84",
        "mini_imagenet/224",
        "cifar10",
    ]
