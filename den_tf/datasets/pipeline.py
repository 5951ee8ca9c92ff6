"""Input pipelines: one tf.data pipeline per task, zipped into one element per multi-task step.

Preprocessing follows the paper: a random horizontal flip for every dataset, and for CIFAR,
Tiny-ImageNet and STL-10 a zero padding of 4 pixels with a random crop back to size; then
per-dataset normalisation. All randomness is stateless with seeds derived from one base seed, and
the pipelines are built only from checkpointable ops (no py_function, no generators), so a
training iterator saved with ``tf.train.Checkpoint(iterator=...)`` resumes at the same element
with the same augmentations.

Tasks that read the same dataset without a class filter (M3: CIFAR-100's fine and coarse labels)
get the same shuffle and augmentation seeds, so at every step both see the same images; tasks on
slices of one dataset's classes (M2) are augmented each with its own seed. A training pass reads
a TFDS split's files in a new seeded order (``sources.load_source``) before the shuffle buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from den_tf.datasets import seeds, sources
from den_tf.tasks import Task

SPLITS = ("train", "validation", "test")
DEFAULT_VALIDATION_FRACTION = 0.05
# Shuffle buffers hold encoded images; they are part of every iterator checkpoint.
DEFAULT_SHUFFLE_BUFFER = 10_000
AUTOTUNE = tf.data.AUTOTUNE


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flips an HxWxC image left-right with probability 1/2, as decided by ``seed`` ([2] ints)."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_random_crop(image: tf.Tensor, seed: tf.Tensor, padding: int = 4) -> tf.Tensor:
    """Zero-pads by ``padding`` pixels per side and crops the original size at a seeded offset.

    The content moves by at most ``padding`` pixels; uncovered pixels are zero.
    """
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed)
    return tf.ensure_shape(cropped, image.shape)


def augment(image: tf.Tensor, seed: tf.Tensor, crop_padding: int) -> tf.Tensor:
    """The paper's training augmentation: random flip, then pad-and-crop if ``crop_padding``."""
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_flip(image, flip_seed)
    if crop_padding:
        image = pad_and_random_crop(image, crop_seed, crop_padding)
    return image


def normalize(image: tf.Tensor, preprocessing: sources.Preprocessing) -> tf.Tensor:
    """Float32 pixels 0..255 -> standardized per channel with the dataset's mean and std."""
    mean = tf.constant(preprocessing.mean, tf.float32) * 255.0
    std = tf.constant(preprocessing.std, tf.float32) * 255.0
    return (image - mean) / std


def validation_indices(dataset: str, num_examples: int, fraction: float, seed: int) -> np.ndarray:
    """Positions (sorted) of the training examples carved out as ``dataset``'s validation split.

    ``round(fraction * num_examples)`` examples, the same ones for the same seed; all tasks on one
    dataset share the carve, so no task trains on another's validation examples.
    """
    _check_fraction(fraction)
    count = round(fraction * num_examples)
    return seeds.sample_indices(num_examples, count, seeds.derive_seed(seed, dataset, "validation"))


def task_dataset(
    task: Task,
    split: str,
    batch_size: int,
    *,
    seed: int,
    training: bool,
    task_id: int = 0,
    data_dir: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    download: bool = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    order_seed: int | None = None,
    shard: tuple[int, int] = (1, 0),
) -> tf.data.Dataset:
    """Batches of one task: dicts with ``image`` float32 [B, S, S, 3] (normalized, S =
    ``task.input_size``), ``label`` int32 [B] in 0..num_classes-1, ``task`` int32 ``task_id``, and
    the source's extra per-example features (the synthetic data's ``difficulty``).

    ``split`` is 'train', 'validation' (the seeded ``validation_fraction`` of the training data,
    never in 'train') or 'test'. With ``training``: shuffled, augmented, repeated forever, full
    batches only; without: in a fixed order, not augmented, one pass, last batch possibly partial.
    Examples whose label is outside the task's classes are dropped (M2 tasks); images whose size
    differs from the task's input size are resized.

    ``seed`` carves the validation split; ``order_seed`` (default: ``seed``) shuffles and
    augments. ``shard`` = (count, index) keeps the training examples whose stored position is
    index modulo count (``worker_share``: one input pipeline of several workers).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    _check_fraction(validation_fraction)
    if split == "validation" and validation_fraction == 0:
        raise ValueError("validation_fraction: must be > 0 to read the 'validation' split")
    _check_positive("batch_size", batch_size)
    _check_positive("shuffle_buffer", shuffle_buffer)

    order_seed = seed if order_seed is None else order_seed
    file_order_seed = seeds.derive_seed(order_seed, task.dataset, "files") if training else None
    source = sources.load_source(task.dataset, "test" if split == "test" else "train",
                                 data_dir=data_dir, download=download,
                                 file_order_seed=file_order_seed, labels=_label_range(task))
    _check_task(task, source)
    examples = source.examples
    if split != "test" and validation_fraction > 0:
        carved = np.zeros(source.num_examples, bool)
        carved[validation_indices(task.dataset, source.num_examples, validation_fraction, seed)] = 1
        is_carved = tf.constant(carved)
        want_carved = split == "validation"
        examples = examples.filter(lambda ex: tf.gather(is_carved, ex["position"]) == want_carved)
    if not _covers_all_classes(task, source):
        examples = examples.filter(lambda ex: belongs_to_task(task, ex[task.label_key]))

    def prepare(example: dict[str, tf.Tensor], augment_seed: tf.Tensor | None = None):
        image = _decoded(example["image"], source.image_size)
        if source.image_size != (task.input_size, task.input_size):
            image = tf.image.resize(image, [task.input_size, task.input_size], antialias=True)
        if augment_seed is not None:
            image = augment(image, augment_seed, source.preprocessing.crop_padding)
        label = tf.cast(example[task.label_key] - task.first_class, tf.int32)
        extras = {key: example[key] for key in source.extras}
        return {"image": normalize(image, source.preprocessing), "label": label, **extras}

    if training:
        count, index = shard
        if not 0 <= index < count:
            raise ValueError(f"shard: expected (count, index) with 0 <= index < count, got {shard}")
        if count > 1:
            examples = worker_share(examples, count, index)
        # Tasks on one dataset's class slices (M2's) are augmented each with its own seed; tasks
        # on all its classes (M3's) share one, and so see the same images at every step.
        augment_seed = tf.constant(
            seeds.derive_seed(order_seed, task.dataset, "augment", *_class_slice(task, source)),
            tf.int64)
        shuffle_seed = seeds.derive_seed(order_seed, task.dataset, "shuffle")
        examples = (
            examples.shuffle(shuffle_buffer, seed=shuffle_seed)
            .repeat()
            .enumerate()  # the element counter makes each augmentation's seed
            .map(
                lambda i, ex: prepare(ex, tf.stack([augment_seed, i])), num_parallel_calls=AUTOTUNE
            )
        )
    else:
        examples = examples.map(prepare, num_parallel_calls=AUTOTUNE)
    task_tensor = tf.constant(task_id, tf.int32)
    return (
        examples.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
        .map(lambda batch: {**batch, "task": task_tensor})
        .prefetch(AUTOTUNE)
    )


def multitask_dataset(
    tasks: Sequence[Task],
    split: str,
    batch_size: int | Sequence[int],
    *,
    seed: int,
    training: bool,
    data_dir: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    download: bool = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    order_seed: int | None = None,
    shard: tuple[int, int] = (1, 0),
) -> tf.data.Dataset:
    """One element per step: a tuple with one ``task_dataset`` batch per task, in task order,
    each with its task id (position in ``tasks``). ``batch_size``: one for all, or one per task.

    For evaluation splits the zip ends with the shortest task; evaluate tasks one by one with
    ``task_dataset`` to see all their examples.
    """
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("tasks: at least one task is required")
    sizes = [batch_size] * len(tasks) if isinstance(batch_size, int) else list(batch_size)
    if len(sizes) != len(tasks):
        raise ValueError(
            f"batch_size: expected one int or {len(tasks)} (one per task), got {batch_size!r}"
        )
    return tf.data.Dataset.zip(
        tuple(
            task_dataset(
                task,
                split,
                size,
                seed=seed,
                training=training,
                task_id=task_id,
                data_dir=data_dir,
                validation_fraction=validation_fraction,
                download=download,
                shuffle_buffer=shuffle_buffer,
                order_seed=order_seed,
                shard=shard,
            )
            for task_id, (task, size) in enumerate(zip(tasks, sizes))
        )
    )


def worker_share(examples: tf.data.Dataset, count: int, index: int) -> tf.data.Dataset:
    """One of ``count`` input pipelines' disjoint shares of a source's examples: those whose
    stored position is ``index`` modulo ``count``. By position, not by place in the stream:
    each pipeline reads the files in its own order (its own seed), and every count-th example
    of different orders would overlap."""
    return examples.filter(lambda ex: ex["position"] % count == index)


def _decoded(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Float32 HxWx3 pixels 0..255 from encoded bytes (TFDS) or a uint8 array (in memory)."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
        image = tf.ensure_shape(image, [*size, 3])
    return tf.cast(image, tf.float32)


def belongs_to_task(task: Task, label):
    """Whether a dataset label is one of the task's classes (tensor or int)."""
    return (label >= task.first_class) & (label < task.first_class + task.num_classes)


def _class_slice(task: Task, source: sources.Source) -> tuple[str, ...]:
    """Names the task's classes where they are a slice of its dataset's (M2's tasks), so that
    each slice gets its own augmentation seed; empty where the task has all of them (M3's) or
    an in-memory source's count of classes is not known and the slice starts at 0."""
    available = source.num_classes[task.label_key]
    if task.first_class == 0 and available in (None, task.num_classes):
        return ()
    return (f"classes {task.first_class}-{task.first_class + task.num_classes - 1}",)


def _label_range(task: Task) -> tuple[int, int] | None:
    """The (first, count) of the task's classes among its dataset's labels (M2's tasks take a
    slice of them), for a source that stores each label's examples together."""
    return (task.first_class, task.num_classes) if task.label_key == "label" else None


def _covers_all_classes(task: Task, source: sources.Source) -> bool:
    return task.first_class == 0 and task.num_classes == source.num_classes[task.label_key]


def _check_task(task: Task, source: sources.Source) -> None:
    if task.label_key not in source.num_classes:
        raise ValueError(
            f"task {task.name!r}: label_key {task.label_key!r} is not a label of dataset "
            f"{task.dataset!r}; its labels: {sorted(source.num_classes)}"
        )
    available = source.num_classes[task.label_key]
    if available is not None and task.first_class + task.num_classes > available:
        raise ValueError(
            f"task {task.name!r}: classes {task.first_class}..."
            f"{task.first_class + task.num_classes - 1} exceed the {available} classes of "
            f"{task.dataset!r} ({task.label_key})"
        )


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction: must be in [0, 1), got {fraction!r}")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: must be a positive int, got {value!r}")
