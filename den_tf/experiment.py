"""Configs to objects, in one place: the model code never reads a config.

``base_config()`` holds every field with its default; each file in ``experiments/`` starts
from it and sets what its scenario needs. The builders below turn a config into plain
arguments for the estimator and the selector.
"""

from __future__ import annotations

import ml_collections

from den_tf import backbones
from den_tf.estimator import Estimator
from den_tf.selector import Selector
from den_tf.tasks import get_tasks


def base_config() -> ml_collections.ConfigDict:
    """Every field with its default (M1 on WRN-32-4)."""
    config = ml_collections.ConfigDict()
    config.scenario = "M1"
    # Comma-separated task names (den_tf/tasks.py), in task-id order.
    config.tasks = "cifar100,tiny_imagenet,stl10"
    config.seed = 0
    # Weight of the sparsity cost S(z) (Eq. 5).
    config.rho = 1.0

    config.model = ml_collections.ConfigDict()
    config.model.backbone = "wrn"
    # Arguments of the backbone builder (den_tf/backbones.py).
    config.model.backbone_args = ml_collections.ConfigDict(
        dict(depth=32, widths=(64, 128, 256), stem_channels=16, stem_kernel=7)
    )
    config.model.levels = 4
    config.model.fractions = (0.25, 0.25, 0.5)
    # Resolution at which every task enters the shared trunk.
    config.model.trunk_size = 32
    config.model.per_task_stems = True
    config.model.bn_momentum = 0.9

    config.selector = ml_collections.ConfigDict()
    config.selector.widths = (32, 64, 128)
    config.selector.stem_channels = 16
    config.selector.stem_kernel = 7
    config.selector.trunk_size = 32
    return config


def build_estimator(config: ml_collections.ConfigDict) -> Estimator:
    model = config.model
    spec = backbones.build_backbone(model.backbone, **model.backbone_args.to_dict())
    return Estimator(
        spec,
        get_tasks(config.tasks),
        levels=model.levels,
        fractions=tuple(model.fractions),
        trunk_size=model.trunk_size,
        per_task_stems=model.per_task_stems,
        bn_momentum=model.bn_momentum,
        name="estimator",
    )


def build_selector(config: ml_collections.ConfigDict, estimator: Estimator) -> Selector:
    selector = config.selector
    return Selector(
        estimator.tasks,
        estimator.n_blocks,
        estimator.levels,
        widths=tuple(selector.widths),
        trunk_size=selector.trunk_size,
        stem_channels=selector.stem_channels,
        stem_kernel=selector.stem_kernel,
        per_task_stems=config.model.per_task_stems,
        bn_momentum=config.model.bn_momentum,
        name="selector",
    )


def build_models(config: ml_collections.ConfigDict) -> tuple[Estimator, Selector]:
    estimator = build_estimator(config)
    return estimator, build_selector(config, estimator)
