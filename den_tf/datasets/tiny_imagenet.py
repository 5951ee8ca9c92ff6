"""Tiny-ImageNet as a TFDS dataset: 200 classes of 64x64 images.

Splits: ``train`` (100,000 images, 500 per class) and ``test``, which holds the 10,000 labelled
validation images (labels from ``val/val_annotations.txt``); the official test images have no
labels and are ignored. Labels index the sorted WordNet ids of ``wnids.txt``; the metadata's
``class_words`` holds each class's first name in ``words.txt`` (wnid where it has none), which
exported models report.

The source is the official zip, downloaded when the build may download, or found in the manual
directory as ``tiny-imagenet-200.zip`` or as its extracted ``tiny-imagenet-200/`` folder (the
manual directory may also be that folder itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from den_tf.datasets import image_files

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
IMAGE_SIZE = 64
LAYOUT = (
    f"The official layout is {FOLDER}/wnids.txt, {FOLDER}/train/<wnid>/images/*.JPEG, "
    f"{FOLDER}/val/val_annotations.txt (tab-separated: file name, wnid, box) and "
    f"{FOLDER}/val/images/*.JPEG."
)


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """Tiny-ImageNet (CS231n): 100,000 training and 10,000 labelled test images, 200 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: train and labelled validation (as test)."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Optional: place {FOLDER}.zip (from {URL}) or its extracted {FOLDER}/ folder in the "
        "manual directory; without either, the zip is downloaded."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"
                    ),
                    # Names (the WordNet ids) come from the data, in _split_generators.
                    "label": tfds.features.ClassLabel(),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="http://cs231n.stanford.edu/",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _find_root(dl_manager)
        wnids, train_items, test_items = read_layout(root)
        self.info.features["label"].names = wnids
        self.info.metadata["class_words"] = class_words(root, wnids)
        return {
            "train": self._generate_examples(train_items, "train"),
            "test": self._generate_examples(test_items, "test"),
        }

    def _generate_examples(self, items: list[tuple[Path, str]], split: str) -> Iterator:
        return image_files.generate_examples(items, _encode, f"{self.name} {split}")


def _find_root(dl_manager: tfds.download.DownloadManager) -> Path:
    """The tiny-imagenet-200 folder: from the manual directory if it has one, else downloaded."""
    try:
        manual_dir = Path(dl_manager.manual_dir)
    except AssertionError:  # no manual directory, or an empty one
        manual_dir = None
    if manual_dir is not None:
        if (manual_dir / FOLDER).is_dir():
            return manual_dir / FOLDER
        if (manual_dir / "wnids.txt").exists():
            return manual_dir
        if (manual_dir / f"{FOLDER}.zip").exists():
            extracted = Path(dl_manager.extract(manual_dir / f"{FOLDER}.zip"))
            return image_files.require(extracted / FOLDER, f"{FOLDER}/ inside the zip", LAYOUT)
    return Path(dl_manager.download_and_extract(URL)) / FOLDER


def read_layout(root: Path) -> tuple[list[str], list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Checks the folder layout; returns the sorted wnids and (file, wnid) of train and test."""
    require = image_files.require
    wnids_text = require(root / "wnids.txt", "the class list wnids.txt", LAYOUT).read_text()
    wnids = sorted(set(wnids_text.split()))
    train_dir = require(root / "train", "the training folder", LAYOUT)
    image_files.require_class_folders(train_dir, wnids, "the training images", LAYOUT)
    train_items = []
    for wnid in wnids:
        images = require(train_dir / wnid / "images", f"the images of class {wnid}", LAYOUT)
        train_items += [(path, wnid) for path in image_files.class_images(
            images, f"the training images of class {wnid}", LAYOUT)]

    val_dir = root / "val"
    annotations = require(val_dir / "val_annotations.txt", "the validation labels", LAYOUT)
    val_images = require(val_dir / "images", "the validation images", LAYOUT)
    known = set(wnids)
    test_items = []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in known:
            raise image_files.DatasetLayoutError(
                f"{annotations}, line {number}: expected '<file name>\\t<wnid from wnids.txt>"
                f"\\t...', got {line!r}. {LAYOUT}"
            )
        test_items.append((val_images / fields[0], fields[1]))
    return wnids, train_items, test_items


def class_words(root: Path, wnids: list[str]) -> list[str]:
    """Each wnid's first name in ``words.txt`` (lines '<wnid>\t<name>, <name>, ...'), or the
    wnid itself where the file, or its line, is missing."""
    path = root / "words.txt"
    words = {}
    if path.exists():
        for line in path.read_text().splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.split(",")[0].strip()
    return [words.get(wnid) or wnid for wnid in wnids]


def _encode(path: Path) -> bytes | np.ndarray:
    """The file's bytes if it is a 64x64 RGB or grey JPEG (no re-encoding), else RGB pixels."""
    data, image = image_files.open_image(path)
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        raise image_files.UnreadableImageError(
            f"size {image.size[0]}x{image.size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if image.format == "JPEG" and image.mode in ("RGB", "L"):
        return data  # decoded with channels=3 at read time, so grey images become RGB
    return np.asarray(image.convert("RGB"))
