"""The paper's five backbones as plain specifications (README, Model figures, gives their counts).

A backbone is a stem, a sequence of blocks and a neck. Specifications are plain data so that
the estimator can store them in its Keras config; ``estimator.py`` turns them into layers and
``structure.py`` decides which channels each level keeps.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block: ``kind`` is 'basic', 'bottleneck' or 'plain'; ``width`` is nested."""

    kind: str
    width: int
    out_channels: int
    stride: int = 1
    groups: int = 1  # bottleneck: cardinality of the grouped convolution
    convs: int = 2  # plain: one or two convolutions
    pool: bool = False  # plain: 2x2 max pooling after the block


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A backbone.

    Attributes:
      name: display name, e.g. 'WRN-32-4'.
      blocks: the trunk's blocks, in order.
      stem_channels: channels of the stem convolution; 0 for no stem (the first block reads
        the image, and every task must then have the trunk's input size).
      stem_kernel: kernel size of the stem convolution.
      neck: 'gap' (BN-ReLU-global average pooling, for pre-activation nets) or 'flatten'.
      hidden_units: fully connected layers (with ReLU) between the neck and the task heads.
      heads_in_paper_params: whether the paper's parameter count includes the task heads.
    """

    name: str
    blocks: tuple[BlockSpec, ...]
    stem_channels: int
    stem_kernel: int
    neck: str
    hidden_units: tuple[int, ...] = ()
    heads_in_paper_params: bool = False

    def to_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> BackboneSpec:
        config = dict(config)
        config["blocks"] = tuple(BlockSpec(**b) for b in config["blocks"])
        config["hidden_units"] = tuple(config["hidden_units"])
        return cls(**config)


def _blocks_per_stage(depth: int, layers_per_block: int, stages: int, name: str) -> int:
    """He et al.'s depth counting: depth = layers_per_block * stages * n + 2."""
    n, rest = divmod(depth - 2, layers_per_block * stages)
    if rest or n < 1:
        raise ValueError(
            f"{name}: depth must be {layers_per_block * stages}n+2 with n >= 1, got {depth}"
        )
    return n


def _check_widths(widths, stages: int, name: str) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) != stages or any(w < 1 for w in widths):
        raise ValueError(f"{name}: widths must be {stages} positive ints, got {widths}")
    return widths


def _residual_stages(widths, n, kind, internal=None, groups=1) -> tuple[BlockSpec, ...]:
    blocks = []
    for s, width in enumerate(widths):
        for b in range(n):
            blocks.append(
                BlockSpec(
                    kind=kind,
                    width=internal[s] if internal else width,
                    out_channels=width,
                    stride=2 if s > 0 and b == 0 else 1,
                    groups=groups,
                )
            )
    return tuple(blocks)


def wrn(
    depth: int = 32,
    widths: tuple[int, ...] = (64, 128, 256),
    stem_channels: int = 16,
    stem_kernel: int = 3,
) -> BackboneSpec:
    """Pre-activation wide ResNet: 3 stages of (depth-2)/6 basic blocks (WRN-32-4 default)."""
    widths = _check_widths(widths, 3, "wrn")
    n = _blocks_per_stage(depth, 2, 3, "wrn")
    k, rest = divmod(widths[0], 16)
    if not rest and widths == (16 * k, 32 * k, 64 * k):
        name = f"WRN-{depth}-{k}"
    else:
        name = f"WRN-{depth} (widths {'/'.join(map(str, widths))})"
    return BackboneSpec(
        name, _residual_stages(widths, n, "basic"), stem_channels, stem_kernel, "gap"
    )


def resnet(
    depth: int = 42,
    widths: tuple[int, ...] = (64, 128, 256, 512),
    stem_channels: int = 64,
    stem_kernel: int = 3,
) -> BackboneSpec:
    """Pre-activation ResNet of basic blocks, 4 stages of (depth-2)/8 (ResNet-42 default)."""
    widths = _check_widths(widths, 4, "resnet")
    n = _blocks_per_stage(depth, 2, 4, "resnet")
    return BackboneSpec(
        f"ResNet-{depth}", _residual_stages(widths, n, "basic"), stem_channels, stem_kernel,
        "gap",
    )


def resnext(
    cardinality: int = 8,
    base_width: int = 64,
    depth: int = 29,
    widths: tuple[int, ...] = (64, 128, 256),
    stem_channels: int = 64,
    stem_kernel: int = 3,
) -> BackboneSpec:
    """ResNeXt-29 (c x 64d): 3 stages of (depth-2)/9 bottleneck blocks.

    Stage s has internal width cardinality * base_width * 2^s and output width widths[s].
    """
    widths = _check_widths(widths, 3, "resnext")
    n = _blocks_per_stage(depth, 3, 3, "resnext")
    internal = [cardinality * base_width * 2**s for s in range(3)]
    return BackboneSpec(
        f"ResNeXt-{depth} ({cardinality}x{base_width}d)",
        _residual_stages(widths, n, "bottleneck", internal, cardinality),
        stem_channels,
        stem_kernel,
        "gap",
    )


def vgg(
    widths: tuple[int, ...] = (64, 128, 256, 512, 512),
    convs_per_stage: tuple[int, ...] = (2, 2, 4, 4, 4),
    hidden_units: tuple[int, ...] = (4096, 4096),
) -> BackboneSpec:
    """The paper's "VGG-16": VGG-19's 16-conv stack as 8 two-conv blocks, 5 pools, FC layers."""
    widths = _check_widths(widths, len(convs_per_stage), "vgg")
    blocks = []
    for width, convs in zip(widths, convs_per_stage):
        if convs % 2:
            raise ValueError(f"vgg: convs_per_stage must be even (two-conv blocks), got {convs}")
        for b in range(convs // 2):
            blocks.append(BlockSpec("plain", width, width, pool=b == convs // 2 - 1))
    return BackboneSpec(
        "VGG-16", tuple(blocks), 0, 3, "flatten", tuple(int(u) for u in hidden_units)
    )


def simple_convnet(
    channels: int = 32, num_blocks: int = 4, hidden_units: tuple[int, ...] = (128,)
) -> BackboneSpec:
    """SimpleConvNet of M2: num_blocks x [conv3x3, BN, ReLU, max-pool 2], FC, task heads."""
    blocks = tuple(
        BlockSpec("plain", channels, channels, convs=1, pool=True) for _ in range(num_blocks)
    )
    return BackboneSpec(
        "SimpleConvNet", blocks, 0, 3, "flatten", tuple(int(u) for u in hidden_units),
        heads_in_paper_params=True,
    )


BACKBONES: dict[str, Callable[..., BackboneSpec]] = {
    "wrn": wrn,
    "resnet": resnet,
    "resnext": resnext,
    "vgg": vgg,
    "simple_convnet": simple_convnet,
}


def build_backbone(name: str, **kwargs) -> BackboneSpec:
    """The backbone ``name`` with its arguments (widths, depth, ...); errors name the culprit."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    builder = BACKBONES[name]
    allowed = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"backbone {name!r} takes no argument(s) {unknown}; allowed: {', '.join(allowed)}"
        )
    return builder(**kwargs)
