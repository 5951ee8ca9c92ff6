"""Where examples come from: prepared TFDS datasets, or arrays from registered in-memory sources.

A source split is a dataset of examples, each a dict with ``image`` (encoded bytes from TFDS,
uint8 HxWx3 from memory), int64 labels and its ``position`` in the split's stored order (so a
seeded validation carve picks the same examples however the split is read). Read for training,
a TFDS split's files come in a new seeded order every pass: TFDS stores the examples in a
random order, but a shuffle buffer over the same order every pass would keep each example near
its stored place in every epoch. Nothing here downloads unless asked: a dataset that is not prepared
fails at once with the command that prepares it, instead of TFDS's minutes of network retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as std_logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

# Builders of our own register with TFDS when their modules are imported.
from den_tf.datasets import mini_imagenet, synthetic, tiny_imagenet  # noqa: F401

SOURCE_SPLITS = ("train", "test")
# The project's data home (data/README.md), relative to the directory commands run in: the
# checkout, for every make target. Prepared TFDS datasets, and manually downloaded archives.
DATA_DIR = "data/tfds"
MANUAL_DIR = "data/manual"
# Prepared splits are written in files of at least this size (TFDS's default, 64 MiB, stores
# CIFAR's training set in two), so that reading their files in a new order every pass shuffles
# beyond a buffer's window. Fewer files than this at training time gets a warning.
MIN_SHARD_BYTES = 2 << 20
MIN_TRAINING_FILES = 16


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Per-dataset constants: channel mean and std (of pixels scaled to [0, 1]), crop padding."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: int


# Channel statistics of the training sets as commonly quoted (CIFAR: computed over all training
# pixels; Tiny-ImageNet and STL-10: the widely used values; Mini-ImageNet: ImageNet's). The paper
# pads by 4 pixels before the random crop for CIFAR, Tiny-ImageNet and STL-10, not Mini-ImageNet.
PREPROCESSING: dict[str, Preprocessing] = {
    "cifar10": Preprocessing((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4),
    "cifar100": Preprocessing((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4),
    "tiny_imagenet": Preprocessing((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 4),
    "stl10": Preprocessing((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), 4),
    "mini_imagenet": Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0),
}
TFDS_DATASETS = (
    "cifar10",
    "cifar100",
    "stl10",
    "tiny_imagenet",
    "mini_imagenet/84",
    "mini_imagenet/224",
)
# What MANUAL_DIR must hold for the datasets that read it.
MANUAL_DIR_CONTENTS = {
    "tiny_imagenet": "tiny-imagenet-200.zip or tiny-imagenet-200/ (optional: else it is "
    "downloaded)",
    "mini_imagenet": "ILSVRC-2012 as train/<wnid>/*.JPEG and val/",
}

SourceFn = Callable[[str, str], tuple]  # (images, labels) or (images, labels, extras)
_REGISTERED: dict[str, tuple[SourceFn, Preprocessing]] = {}
_CLASS_NAMES: dict[str, Callable[[str], Sequence[str]]] = {}


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared in the data directory (and downloading was not asked)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One split of a dataset, with what the pipeline needs to know about it."""

    examples: tf.data.Dataset
    num_examples: int
    image_size: tuple[int, int]
    num_classes: dict[str, int | None]  # per label feature; None: not known (in-memory, unnamed)
    preprocessing: Preprocessing
    extras: tuple[str, ...] = ()  # per-example numeric features passed through to batches


def register_source(
    prefix: str,
    fn: SourceFn,
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    crop_padding: int = 4,
    class_names: Callable[[str], Sequence[str]] | None = None,
) -> None:
    """Serves datasets whose name starts with ``prefix`` from ``fn`` instead of TFDS.

    ``fn(dataset_name, split)`` with split ``'train'`` or ``'test'`` returns ``(images, labels)``:
    uint8 ``[N, H, W, 3]`` and integer ``[N]`` arrays (the ``label`` feature), optionally with a
    third element, a dict of per-example numeric ``[N]`` arrays (e.g. the synthetic data's
    ``difficulty``) that the pipeline passes through into every batch. They go through the
    same pipeline as TFDS data (validation carve, augmentation, batching, multi-task zip).
    ``mean``/``std`` are per channel, of pixels scaled to [0, 1]; ``class_names(dataset_name)``,
    if given, names the labels (exported models report them).
    """
    if not prefix:
        raise ValueError("prefix: must be a non-empty string")
    shadowed = [name for name in TFDS_DATASETS if name.startswith(prefix)]
    if shadowed:
        raise ValueError(f"prefix: {prefix!r} would shadow the datasets {shadowed}")
    if prefix in _REGISTERED and _REGISTERED[prefix][0] is not fn:
        raise ValueError(f"prefix: {prefix!r} is already registered to another function")
    # A name is served by the first prefix it starts with: overlapping prefixes would send
    # one of them to the other's function.
    overlapping = [p for p in _REGISTERED if p != prefix and (p.startswith(prefix)
                                                               or prefix.startswith(p))]
    if overlapping:
        raise ValueError(f"prefix: {prefix!r} overlaps the registered {overlapping}")
    _REGISTERED[prefix] = (fn, Preprocessing(tuple(mean), tuple(std), crop_padding))
    if class_names is not None:
        _CLASS_NAMES[prefix] = class_names


def _registered(dataset: str) -> tuple[SourceFn, Preprocessing] | None:
    for prefix, entry in _REGISTERED.items():
        if dataset.startswith(prefix):
            return entry
    return None


def preprocessing(dataset: str) -> Preprocessing:
    """The normalisation and crop padding of ``dataset`` (a registered or a TFDS dataset)."""
    check_dataset(dataset)
    registered = _registered(dataset)
    return registered[1] if registered else PREPROCESSING[dataset.split("/")[0]]


def class_names(
    dataset: str, label_key: str = "label", data_dir: str | None = None
) -> list[str] | None:
    """The names of the labels of ``dataset`` by label, or None where they are not known here
    (a TFDS dataset not prepared in ``data_dir``, a registered source without names): a
    dataset's own words where its metadata has them (Tiny-ImageNet's ``class_words``), else
    its label names."""
    check_dataset(dataset)
    if _registered(dataset) is not None:
        prefix = next(p for p in _REGISTERED if dataset.startswith(p))
        return list(_CLASS_NAMES[prefix](dataset)) if prefix in _CLASS_NAMES else None
    builder = _builder(dataset, data_dir)
    if not builder.is_prepared():
        return None
    words = (builder.info.metadata or {}).get("class_words") if label_key == "label" else None
    return list(words or builder.info.features[label_key].names)


def check_dataset(dataset: str) -> None:
    """Raises ValueError unless ``dataset`` is a known TFDS dataset or has a registered source."""
    if dataset not in TFDS_DATASETS and _registered(dataset) is None:
        raise ValueError(
            f"dataset: unknown dataset {dataset!r}; known: {', '.join(TFDS_DATASETS)}, or a name "
            f"starting with a registered prefix ({', '.join(sorted(_REGISTERED)) or 'none'})"
        )


def prepare_command(dataset: str, data_dir: str) -> str:
    """The command that prepares ``dataset`` in ``data_dir`` (always named: ``make data``'s own
    default is the project's data/tfds), with what its manual directory must hold, if any, on
    a line of its own (a placeholder in the command would be read by the shell)."""
    command = f"make data DATASETS={dataset} DATA_DIR={data_dir}"
    manual = MANUAL_DIR_CONTENTS.get(dataset.split("/")[0])
    if manual is not None:
        command += (f" MANUAL_DIR={MANUAL_DIR}\n(MANUAL_DIR, default {MANUAL_DIR}: the folder "
                    f"holding {manual})")
    return command


def _builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    check_dataset(dataset)
    return tfds.builder(dataset, data_dir=data_dir)


def is_prepared(dataset: str, data_dir: str | None = None) -> bool:
    """Whether ``dataset`` can be read: registered in memory, or prepared in ``data_dir``."""
    return _registered(dataset) is not None or _builder(dataset, data_dir).is_prepared()


def stored_version(dataset: str, data_dir: str | None = None) -> str | None:
    """The TFDS name and version that reading ``dataset`` from ``data_dir`` takes (e.g.
    'mini_imagenet/84/1.1.0'); None for a registered in-memory source. A new version may
    store the examples in another order, and so number them (and carve them) otherwise."""
    return None if _registered(dataset) is not None else _builder(dataset, data_dir).info.full_name


def prepare_dataset(
    dataset: str, *, data_dir: str | None = None, manual_dir: str | None = None,
    num_shards: int | None = None,
) -> tfds.core.DatasetBuilder:
    """Downloads (where the dataset allows) and prepares a TFDS dataset, each split in files of
    ``MIN_SHARD_BYTES`` or more (or in ``num_shards`` files); returns its builder."""
    builder = _builder(dataset, data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, num_shards=num_shards, min_shard_size=MIN_SHARD_BYTES))
    return builder


def load_source(
    dataset: str, split: str, *, data_dir: str | None = None, download: bool = False,
    file_order_seed: int | None = None, labels: tuple[int, int] | None = None,
) -> Source:
    """The examples of ``split`` ('train' or 'test') of ``dataset``: in the stored order, or
    with ``file_order_seed`` its files in an order drawn anew each pass (an in-memory source is
    one file). Either way each example carries its stored ``position``, and ``num_examples``
    counts the whole split.

    ``labels`` = (first, count) says that only the examples labelled ``first`` to
    ``first + count - 1`` are wanted: a dataset that stores each label's examples together
    (its metadata's ``label_starts``, Mini-ImageNet's) then reads only theirs; any other
    reads them all, and the caller filters.

    Raises DatasetNotPreparedError within seconds if a TFDS dataset is not prepared and
    ``download`` is False; with ``download`` it is prepared first (manual data, if any, from
    the project's ``MANUAL_DIR``, as ``make data``).
    """
    if split not in SOURCE_SPLITS:
        raise ValueError(f"split: expected one of {SOURCE_SPLITS}, got {split!r}")
    registered = _registered(dataset)
    if registered is not None:
        return _memory_source(dataset, split, *registered)

    builder = _builder(dataset, data_dir)
    if not builder.is_prepared():
        if not download:
            raise DatasetNotPreparedError(
                f"dataset {dataset!r} is not prepared: {builder.data_dir} does not hold it "
                f"(data directory searched: {builder.data_dir_root}). Prepare it with:\n  "
                f"{prepare_command(dataset, data_dir or builder.data_dir_root)}\nor pass "
                f"download=True (manual data from {MANUAL_DIR})."
            )
        builder = prepare_dataset(dataset, data_dir=data_dir, manual_dir=MANUAL_DIR)
    features = builder.info.features
    label_keys = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    part = _label_slice(builder, split, labels)
    shuffled = file_order_seed is not None
    # A dataset stored in label order (Mini-ImageNet) is one that TFDS calls ordered: read for
    # training, its files are shuffled and interleaved as any other's (TFDS's defaults for
    # unordered data), which TFDS allows once told that the order is not wanted.
    ordered_but_shuffled = dict(interleave_cycle_length=16, enable_ordering_guard=False) if (
        shuffled and builder.info.disable_shuffling) else {}
    with _without_absl_warning(_ORDERED_READ_WARNING):
        examples = builder.as_dataset(
            split=part,
            shuffle_files=shuffled,
            decoders={"image": tfds.decode.SkipDecoding()},  # decoded after shuffling: smaller
            # No in-memory cache: a cache would end up inside every iterator checkpoint.
            read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id=True,
                                        shuffle_seed=file_order_seed,
                                        shuffle_reshuffle_each_iteration=True,
                                        **ordered_but_shuffled),
        )
    # The whole split's count: TFDS asserts the count it recorded (tfds.testing.mock_data
    # records no splits: it serves one file, of a known count).
    num_examples = (builder.info.splits[split].num_examples if part != split
                    else int(examples.cardinality()))
    if num_examples < 0:
        raise RuntimeError(f"dataset {dataset!r} split {split!r}: number of examples unknown")
    shard_lengths = (builder.info.splits[split].shard_lengths if split in builder.info.splits
                     else [num_examples])
    if file_order_seed is not None and len(shard_lengths) < MIN_TRAINING_FILES:
        logging.warning(
            "%s %s is stored in %d file(s): its training passes are shuffled only within the "
            "shuffle buffer, around the same order every epoch. To store it in smaller files, "
            "remove %s (TFDS keeps a prepared dataset as it is) and prepare it again:\n  %s",
            dataset, split, len(shard_lengths), builder.data_dir,
            prepare_command(dataset, builder.data_dir_root))
    offsets = tf.constant(np.cumsum([0, *shard_lengths[:-1]]), tf.int64)
    examples = examples.map(lambda ex: {"position": stored_position(ex["tfds_id"], offsets),
                                        **{k: ex[k] for k in ("image", *label_keys)}})
    return Source(
        examples=examples,
        num_examples=num_examples,
        image_size=tuple(features["image"].shape[:2]),
        num_classes={k: features[k].num_classes for k in label_keys},
        preprocessing=preprocessing(dataset),
    )


# What TFDS logs when an ordered dataset's files are shuffled, as asked above.
_ORDERED_READ_WARNING = "is an ordered dataset ('disable_shuffling=True'), but examples"


@contextlib.contextmanager
def _without_absl_warning(text: str) -> Iterator[None]:
    """Drops the log records of absl's logger (TFDS logs through it) that contain ``text``."""
    def keep(record: std_logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger = std_logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _label_slice(builder: tfds.core.DatasetBuilder, split: str,
                 labels: tuple[int, int] | None) -> str:
    """``split``, or the part of it that holds ``labels`` = (first, count) where the dataset
    stores each label's examples together (``label_starts`` in its metadata)."""
    starts = ((builder.info.metadata or {}).get("label_starts") or {}).get(split)
    if labels is None or starts is None:
        return split
    first, count = labels
    if not (0 <= first and count > 0 and first + count < len(starts)):
        raise ValueError(f"labels: ({first}, {count}) is not a range of the {len(starts) - 1} "
                         f"labels of {builder.name} {split}")
    return f"{split}[{starts[first]}:{starts[first + count]}]"


def stored_position(tfds_id: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """An example's index in its split's stored order, from its TFDS id
    ('<name>-<split>.<format>-<file:05d>-of-<files:05d>__<index in the file>') and the
    index of each file's first example."""
    name, index = tf.unstack(tf.strings.split(tfds_id, "__", maxsplit=1), num=2)
    file = tf.strings.regex_replace(name, r"^.*-([0-9]+)-of-[0-9]+$", r"\1")
    return tf.gather(offsets, tf.strings.to_number(file, tf.int64)) + tf.strings.to_number(
        index, tf.int64)


def _memory_source(dataset: str, split: str, fn: SourceFn, preprocessing: Preprocessing) -> Source:
    images, labels, *rest = fn(dataset, split)
    extras = {key: np.asarray(value) for key, value in (rest[0] if rest else {}).items()}
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"source {dataset!r}: images must be uint8 [N, H, W, 3], got {images.dtype} "
            f"{images.shape}"
        )
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"source {dataset!r}: labels must be integers of shape {images.shape[:1]}, got "
            f"{labels.dtype} {labels.shape}"
        )
    for key, value in extras.items():
        numeric = value.dtype.kind in "biuf"
        if key in ("image", "label", "position") or value.shape != labels.shape or not numeric:
            raise ValueError(
                f"source {dataset!r}: extra feature {key!r} must be a numeric array of shape "
                f"{labels.shape} named neither image, label nor position, got {value.dtype} "
                f"{value.shape}"
            )
    examples = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels.astype(np.int64), **extras,
         "position": np.arange(len(labels), dtype=np.int64)}
    )
    return Source(
        examples=examples,
        num_examples=len(labels),
        image_size=images.shape[1:3],
        num_classes={"label": len(names) if (names := class_names(dataset)) else None},
        preprocessing=preprocessing,
        extras=tuple(extras),
    )


# The demo's embedded data, served from memory like any registered source.
register_source(synthetic.PREFIX, synthetic.generate, class_names=synthetic.class_names)
