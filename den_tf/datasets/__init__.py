"""Datasets and input pipelines: CIFAR-10/100 and STL-10 from TFDS, Tiny-ImageNet and
Mini-ImageNet from TFDS builders of our own (registered on import), in-memory sources, and the
per-task and multi-task tf.data pipelines."""

from den_tf.datasets.image_files import DatasetLayoutError
from den_tf.datasets.pipeline import (
    SPLITS,
    augment,
    multitask_dataset,
    normalize,
    pad_and_random_crop,
    random_flip,
    task_dataset,
    validation_indices,
)
from den_tf.datasets.sources import (
    TFDS_DATASETS,
    DatasetNotPreparedError,
    is_prepared,
    prepare_dataset,
    register_source,
)

__all__ = [
    "SPLITS",
    "TFDS_DATASETS",
    "DatasetLayoutError",
    "DatasetNotPreparedError",
    "augment",
    "is_prepared",
    "multitask_dataset",
    "normalize",
    "pad_and_random_crop",
    "prepare_dataset",
    "random_flip",
    "register_source",
    "task_dataset",
    "validation_indices",
]
