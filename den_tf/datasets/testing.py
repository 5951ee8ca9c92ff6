"""Small fakes of the dataset sources, in their real layouts, for tests and offline demos.

Every image is one flat colour that tells its class (``class_value``), so a test can check after
the whole pipeline that an image arrived with the right label.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from den_tf.datasets import mini_imagenet, tiny_imagenet

_UNNAMED_CLASSES = {"tiny_imagenet": 200, "mini_imagenet": mini_imagenet.NUM_CLASSES}


def class_value(index: int) -> int:
    """The grey level of the fake images of class ``index`` (0..58 stay apart and in 0..255)."""
    return 20 + 4 * index


def write_image(path: Path, value: int, size: tuple[int, int], mode: str = "RGB") -> Path:
    """Writes a flat image of grey level ``value`` and ``size`` (width, height) as a JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value,) * len(mode)).save(path, "JPEG", quality=95)
    return path


def fake_tiny_imagenet(
    root: Path, wnids: Sequence[str], train_per_class: int = 3, val_per_class: int = 2
) -> Path:
    """A tiny-imagenet-200 folder under ``root`` in the official layout; returns the folder.

    The class of a file is its wnid's position in ``sorted(wnids)``; wnids.txt lists them
    unsorted, as the official one does. The first training image of each class is greyscale.
    """
    folder = root / tiny_imagenet.FOLDER
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    size = (tiny_imagenet.IMAGE_SIZE, tiny_imagenet.IMAGE_SIZE)
    annotations = []
    for index, wnid in enumerate(sorted(wnids)):
        class_dir = folder / "train" / wnid
        for i in range(train_per_class):
            mode = "L" if i == 0 else "RGB"
            write_image(class_dir / "images" / f"{wnid}_{i}.JPEG", class_value(index), size, mode)
        (class_dir / f"{wnid}_boxes.txt").write_text("")
        for i in range(val_per_class):
            name = f"val_{index * val_per_class + i}.JPEG"
            write_image(folder / "val" / "images" / name, class_value(index), size)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    write_image(folder / "test" / "images" / "test_0.JPEG", 0, size)  # unlabelled: ignored
    return folder


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zips ``folder`` (as a top-level folder of the archive) into ``zip_path``."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent))
    return zip_path


def fake_ilsvrc(
    root: Path,
    wnids: Sequence[str],
    train_per_class: int = 3,
    val_per_class: int = 1,
    flat_val: bool = False,
) -> Path:
    """ILSVRC-2012 ``train/<wnid>/`` and ``val/`` folders under ``root``; returns ``root``.

    Class ``i`` is ``wnids[i]``. The validation images go in per-class folders, or with
    ``flat_val`` in one folder named ``ILSVRC2012_val_<n>.JPEG`` where n are the positions of
    the class in TFDS's official validation ground truth (so no label file is needed).
    """
    size = (40, 30)  # not square: the builder resizes to 256x256 regardless
    for index, wnid in enumerate(wnids):
        for i in range(train_per_class):
            write_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", class_value(index), size)
    if flat_val:
        truth = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
        numbers: dict[str, list[int]] = {w: [] for w in wnids}
        for n, wnid in enumerate(truth.read_text().split(), 1):
            if wnid in numbers and len(numbers[wnid]) < val_per_class:
                numbers[wnid].append(n)
        for index, wnid in enumerate(wnids):
            for n in numbers[wnid]:
                name = f"ILSVRC2012_val_{n:08d}.JPEG"
                write_image(root / "val" / name, class_value(index), size)
    else:
        for index, wnid in enumerate(wnids):
            for i in range(val_per_class):
                name = f"ILSVRC2012_val_{index:05d}{i:03d}.JPEG"
                write_image(root / "val" / wnid / name, class_value(index), size)
    return root


def write_tfds_metadata(data_dir: Path, datasets: Sequence[str]) -> None:
    """Writes the metadata TFDS checks to consider ``datasets`` prepared in ``data_dir``.

    With ``tfds.testing.mock_data(data_dir=data_dir)`` the pipelines then read mock examples
    through their real code path. Our builders, whose class names come from the data, get as
    many fake names as the real dataset has classes.
    """
    for name in datasets:
        builder = tfds.builder(name, data_dir=str(data_dir))
        label = builder.info.features["label"]
        if label.num_classes is None:
            count = _UNNAMED_CLASSES[name.split("/")[0]]
            label.names = [f"n{i:08d}" for i in range(count)]
        Path(builder.data_dir).mkdir(parents=True, exist_ok=True)
        builder.info.write_to_directory(builder.data_dir)


def random_images(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` random uint8 RGB images of ``size`` x ``size``."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
