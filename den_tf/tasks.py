"""Tasks: what a classification task is (name, dataset, input size, classes) and the known ones.

A task is one classifier head of the estimator. Several tasks may share a dataset (M2 splits
Mini-ImageNet's 50 classes into 10 tasks of 5; M3 reads CIFAR-100's fine and coarse labels of
the same images), so a task names the dataset, the label feature and the slice of classes it
uses. This module is the one place where tasks are defined.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Task:
    """One classification task.

    Attributes:
      name: unique task name, used in configs, results and TensorBoard tags.
      dataset: dataset name as the input pipeline loads it (a TFDS name, possibly with a
        builder config such as ``mini_imagenet/84``, or ``synthetic/...`` for the demo).
      input_size: height = width of the images the task takes.
      num_classes: number of classes of the task's head.
      label_key: the dataset feature that holds the label.
      first_class: labels ``first_class .. first_class + num_classes - 1`` of the dataset
        belong to the task and are mapped to ``0 .. num_classes - 1``; examples with other
        labels are dropped. 0 with ``num_classes`` = all classes for whole-dataset tasks.
    """

    name: str
    dataset: str
    input_size: int
    num_classes: int
    label_key: str = "label"
    first_class: int = 0


MINI_IMAGENET_TASKS = 10
MINI_IMAGENET_CLASSES_PER_TASK = 5
MINI_IMAGENET_SIZES = (84, 224)


def _known_tasks() -> dict[str, Task]:
    tasks = [
        Task("cifar10", "cifar10", 32, 10),
        Task("cifar100", "cifar100", 32, 100),
        Task("cifar100_coarse", "cifar100", 32, 20, label_key="coarse_label"),
        Task("tiny_imagenet", "tiny_imagenet", 64, 200),
        Task("stl10", "stl10", 96, 10),
    ]
    for size in MINI_IMAGENET_SIZES:
        for k in range(MINI_IMAGENET_TASKS):
            tasks.append(
                Task(
                    f"mini_imagenet{size}_task{k}",
                    f"mini_imagenet/{size}",
                    size,
                    MINI_IMAGENET_CLASSES_PER_TASK,
                    first_class=k * MINI_IMAGENET_CLASSES_PER_TASK,
                )
            )
    return {task.name: task for task in tasks}


TASKS: dict[str, Task] = _known_tasks()


def register_task(task: Task) -> None:
    """Adds a task to the registry (e.g. the synthetic demo tasks); names must be unique."""
    if task.name in TASKS and TASKS[task.name] != task:
        raise ValueError(f"task {task.name!r} is already registered as {TASKS[task.name]}")
    TASKS[task.name] = task


def get_task(name: str) -> Task:
    """Returns the registered task called ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def get_tasks(names: str | tuple[str, ...] | list[str]) -> tuple[Task, ...]:
    """Tasks from a comma-separated string or a sequence of names, in the given order."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError("tasks: at least one task name is required")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: names must be unique, got {list(names)}")
    return tuple(get_task(n) for n in names)
