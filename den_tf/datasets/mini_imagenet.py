"""Mini-ImageNet as the paper defines it for scenario M2, as a TFDS dataset.

50 ILSVRC-2012 classes chosen at random with a fixed seed (stored in ``mini_imagenet_wnids.txt``
in the order drawn, which is the label order: labels 5k..5k+4 form M2 task k), 800 training
images per class (40,000) and, as the ``test`` split, the 50 ILSVRC-2012 validation images of
each class (2,500). Images are resized to 256x256 and centre-cropped to 224x224 (config ``224``,
for DEN); config ``84`` shrinks that crop to 84x84 (for DEN_s).

The stored list (one wnid per line) was written from ``choose_wnids(ilsvrc_wnids())``: the 1000
ILSVRC-2012 wnids as listed, sorted, by the imagenet2012 label file that TFDS ships, permuted by
``numpy.random.RandomState(2019)``, first 50 kept. tests/test_datasets.py checks that the stored
file still equals that draw.

Each split stores its examples grouped by label, in label order (then in the order of their
files), and the metadata's ``label_starts[split]`` holds each label's first index in that
order and, last, the split's size: an M2 task reads only the files of its own five classes
(``sources.load_source(..., labels=...)``) instead of all fifty classes' and dropping nine
tenths. Training passes shuffle them (file order and buffer), as for every dataset.

The 800 training images of a class are a random subset (seeded by the class's wnid) of its
training files sorted by name. The source is ILSVRC-2012 as folders in the manual directory:
``train/<wnid>/*.JPEG`` and either ``val/<wnid>/*.JPEG`` or a flat ``val/*.JPEG`` whose labels
are read from ``val_labels.txt`` in the manual directory (lines ``<file name> <wnid>``, comma or
whitespace separated, further fields ignored) or, without that file, from the official
validation ground truth that TFDS ships (file ``ILSVRC2012_val_<n>.JPEG`` has line n's wnid).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from den_tf.datasets import image_files, seeds

NUM_CLASSES = 50
TRAIN_IMAGES_PER_CLASS = 800
VAL_IMAGES_PER_CLASS = 50  # every ILSVRC-2012 class's validation images: the test split
CLASS_SEED = 2019  # seed of the class choice and of the per-class training-image choice
RESIZE = 256
CROP = 224
WNIDS_FILE = Path(__file__).with_name("mini_imagenet_wnids.txt")
VAL_LABELS_FILE = "val_labels.txt"
LAYOUT = (
    "The manual directory must hold ILSVRC-2012 as train/<wnid>/*.JPEG and either "
    f"val/<wnid>/*.JPEG or val/*.JPEG (labels from {VAL_LABELS_FILE} or TFDS's ground truth)."
)
_WNID = re.compile(r"n\d{8}")


def ilsvrc_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 WordNet ids, sorted, from the label file shipped with TFDS."""
    return tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()


def choose_wnids(
    all_wnids: Sequence[str], num_classes: int = NUM_CLASSES, seed: int = CLASS_SEED
) -> list[str]:
    """``num_classes`` of ``all_wnids`` drawn at random with ``seed``, in the order drawn."""
    order = np.random.RandomState(seed).permutation(len(all_wnids))[:num_classes]
    return [all_wnids[i] for i in order]


def default_wnids() -> list[str]:
    """The 50 stored Mini-ImageNet classes, in label order."""
    return WNIDS_FILE.read_text().split()


class MiniImagenetConfig(tfds.core.BuilderConfig):
    """A Mini-ImageNet variant by image size."""

    def __init__(self, *, image_size: int, **kwargs):
        super().__init__(name=str(image_size), **kwargs)
        self.image_size = image_size


class MiniImagenet(tfds.core.GeneratorBasedBuilder):
    """Mini-ImageNet (50 ILSVRC-2012 classes, 800 training and 50 test images each)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Examples stored grouped by label, each label's first index in the metadata "
                 "(label_starts), so that a task on some of the classes reads only theirs.",
    }
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        MiniImagenetConfig(image_size=CROP, description="256x256 resize, 224x224 centre crop."),
        MiniImagenetConfig(image_size=84, description="The 224x224 crop shrunk to 84x84."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Register at https://image-net.org/download-images and extract ILSVRC-2012 into the "
        "manual directory. " + LAYOUT
    )

    def __init__(
        self,
        *,
        wnids: Sequence[str] | None = None,
        train_images_per_class: int = TRAIN_IMAGES_PER_CLASS,
        val_images_per_class: int = VAL_IMAGES_PER_CLASS,
        **kwargs,
    ):
        """``wnids`` (default: the stored 50), ``train_images_per_class`` and
        ``val_images_per_class`` (how many each class must have) are for small fakes."""
        self._wnids = list(wnids) if wnids is not None else default_wnids()
        if not self._wnids or len(set(self._wnids)) != len(self._wnids):
            raise ValueError(f"wnids: expected distinct WordNet ids, got {self._wnids}")
        if train_images_per_class <= 0:
            raise ValueError(
                f"train_images_per_class: must be positive, got {train_images_per_class}"
            )
        self._train_images_per_class = train_images_per_class
        self._val_images_per_class = val_images_per_class
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg"),
                    # Names (the wnids) are set when building, so prepared data with other
                    # classes (a test fake) can be read by a default builder.
                    "label": tfds.features.ClassLabel(),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://image-net.org/",
            disable_shuffling=True,  # stored in key order: labels together (label_starts)
            metadata=tfds.core.MetadataDict(label_starts={}),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        train_items = self._train_items(root)
        test_items = _val_items(root, self._wnids, self._val_images_per_class)
        self.info.features["label"].names = self._wnids
        return {
            "train": self._generate_examples(train_items, "train"),
            "test": self._generate_examples(test_items, "test"),
        }

    def _generate_examples(self, items: list[tuple[Path, str]], split: str) -> Iterator:
        """The examples of ``items`` grouped by label, keyed by their index in that order (TFDS
        stores them in key order); once all are written, each label's first index goes to the
        metadata's ``label_starts[split]`` (unreadable files, skipped, leave no gap)."""
        label = {wnid: index for index, wnid in enumerate(self._wnids)}
        grouped = sorted(items, key=lambda item: label[item[1]])  # (stable: files' order kept)
        counts = [0] * len(self._wnids)
        for index, (_, example) in enumerate(
                image_files.generate_examples(grouped, self._encode, f"{self.name} {split}")):
            counts[label[example["label"]]] += 1
            yield index, example
        self.info.metadata["label_starts"][split] = np.cumsum([0, *counts]).tolist()

    def _train_items(self, root: Path) -> list[tuple[Path, str]]:
        """(file, wnid) of the chosen training images: a seeded subset of each class's files."""
        train_dir = image_files.require(root / "train", "the training folder", LAYOUT)
        image_files.require_class_folders(train_dir, self._wnids, "the training images", LAYOUT)
        items = []
        for wnid in self._wnids:
            files = image_files.class_images(train_dir / wnid,
                                             f"the training images of class {wnid}", LAYOUT)
            count = min(self._train_images_per_class, len(files))
            if count < self._train_images_per_class:
                warnings.warn(  # ILSVRC-2012 classes have 732 to 1300 training images
                    f"{self.name}: class {wnid} has only {len(files)} training images, "
                    f"fewer than {self._train_images_per_class}; using all of them",
                    stacklevel=2,
                )
            chosen = seeds.sample_indices(len(files), count, seeds.derive_seed(CLASS_SEED, wnid))
            items += [(files[i], wnid) for i in chosen]
        return items

    def _encode(self, path: Path) -> np.ndarray:
        """Resize to 256x256, centre-crop 224x224, shrink to the config's size."""
        _, image = image_files.open_image(path, draft_size=RESIZE)
        image = image.convert("RGB").resize((RESIZE, RESIZE), Image.Resampling.BICUBIC)
        margin = (RESIZE - CROP) // 2
        image = image.crop((margin, margin, margin + CROP, margin + CROP))
        size = self.builder_config.image_size
        if size != CROP:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(image)


def _val_items(root: Path, wnids: Sequence[str], per_class: int) -> list[tuple[Path, str]]:
    """(file, wnid) of the validation images of ``wnids``, from per-class or flat folders.
    Raises DatasetLayoutError unless each class has ``per_class`` of them: an incomplete copy
    would shrink the test split without a word."""
    val_dir = image_files.require(root / "val", "the validation folder", LAYOUT)
    if any(p.is_dir() for p in val_dir.iterdir()):
        image_files.require_class_folders(val_dir, wnids, "the validation images", LAYOUT)
        items = [(p, w) for w in wnids for p in image_files.class_images(
            val_dir / w, f"the validation images of class {w}", LAYOUT)]
        _check_val_counts(val_dir, items, wnids, per_class)
        return items
    labels = _flat_val_labels(root)
    files = image_files.image_files(val_dir)
    unlabelled = [p.name for p in files if p.stem not in labels]
    if unlabelled:
        raise image_files.DatasetLayoutError(
            f"{len(unlabelled)} files in {val_dir} have no label (e.g. {unlabelled[0]}). {LAYOUT}"
        )
    chosen = set(wnids)
    items = [(p, labels[p.stem]) for p in files if labels[p.stem] in chosen]
    if without := sorted(chosen - {wnid for _, wnid in items}):
        raise image_files.DatasetLayoutError(
            f"{val_dir} holds no validation images of {len(without)} chosen classes (e.g. "
            f"{without[0]}); an incomplete copy? {LAYOUT}")
    _check_val_counts(val_dir, items, wnids, per_class)
    return items


def _check_val_counts(val_dir: Path, items: list[tuple[Path, str]], wnids: Sequence[str],
                      per_class: int) -> None:
    counts = {wnid: 0 for wnid in wnids}
    for _, wnid in items:
        counts[wnid] += 1
    if wrong := [f"{wnid} ({count})" for wnid, count in counts.items() if count != per_class]:
        raise image_files.DatasetLayoutError(
            f"{val_dir}: every chosen class must have {per_class} validation images (the test "
            f"split), but {len(wrong)} have another number: {', '.join(wrong[:5])}; an "
            f"incomplete copy? {LAYOUT}")


def _flat_val_labels(root: Path) -> dict[str, str]:
    """File stem -> wnid for a flat validation folder, from val_labels.txt or TFDS's list."""
    path = root / VAL_LABELS_FILE
    if not path.exists():
        truth = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
        return {
            f"ILSVRC2012_val_{n:08d}": wnid for n, wnid in enumerate(truth.read_text().split(), 1)
        }
    labels = {}
    for line in path.read_text().splitlines():
        fields = re.split(r"[,\s]+", line.strip())
        if len(fields) >= 2 and _WNID.fullmatch(fields[1]):  # skips headers such as a CSV's
            labels[Path(fields[0]).stem] = fields[1]
    if not labels:
        raise image_files.DatasetLayoutError(f"{path} has no '<file name> <wnid>' lines. {LAYOUT}")
    return labels
