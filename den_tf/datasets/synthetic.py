"""An embedded multi-task image dataset for the demo: generated, deterministic, no download.

Three tasks in the shape of scenario M1, each with its own ten classes and input size:

- ``synthetic_shapes`` (32 px): the outline class of one shape (disk, square, ring, ...).
- ``synthetic_textures`` (64 px): the pattern inside a patch (vertical or horizontal stripes
  at two frequencies, checkerboards and dot grids at two scales, concentric rings, a diagonal
  checkerboard). No class is the mirror image of another: training flips images left-right,
  which would make such a pair indistinguishable (stripes at 45 and 135 degrees were, capping
  the task at 80%).
- ``synthetic_colors`` (96 px): the colour (five hues) and form (disk or bar) of an object.

Every image has its own difficulty d in [0, 1]: the object shrinks and loses contrast, and
noise and distracting clutter grow with d (more strongly for the textures, whose many periods
would otherwise average the noise away). Easy images are recognisable by a small network and
hard ones need more capacity, so choosing a network per instance pays off.

The tasks are defined in ``den_tf/tasks.py``; ``sources.py`` serves ``generate`` under the
``synthetic`` prefix through the same pipeline as the real datasets.
"""

from __future__ import annotations

import functools

import numpy as np

from den_tf.tasks import SYNTHETIC_TASKS as TASKS

PREFIX = "synthetic"
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 6000, "test": 2000}
SPLIT_SEEDS = {"train": 1, "test": 2}
HUES = np.array(
    [[0.9, 0.15, 0.1], [0.15, 0.8, 0.2], [0.15, 0.3, 0.95], [0.95, 0.85, 0.1], [0.85, 0.2, 0.85]]
)
HUE_NAMES = ("red", "green", "blue", "yellow", "magenta")
CLASS_NAMES = {
    "shapes": ("disk", "square", "triangle", "ring", "plus", "x", "horizontal bar",
               "vertical bar", "diamond", "two dots"),
    "textures": ("vertical stripes", "fine vertical stripes", "horizontal stripes",
                 "fine horizontal stripes", "checkerboard", "fine checkerboard", "dense dots",
                 "sparse dots", "rings", "diagonal checkerboard"),
    "colors": tuple(f"{hue} {form}" for form in ("disk", "bar") for hue in HUE_NAMES),
}


def class_names(dataset: str) -> tuple[str, ...]:
    """The names of the classes of ``dataset`` ('synthetic/<task>'), by label."""
    return CLASS_NAMES[dataset.removeprefix(PREFIX + "/")]


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape ``kind`` in coordinates (u, v) scaled so the shape spans about [-1, 1]."""
    masks = (
        lambda: np.hypot(u, v) < 0.9,  # disk
        lambda: np.maximum(abs(u), abs(v)) < 0.75,  # square
        lambda: (v > -0.7) & (v < 0.7) & (abs(u) < (v + 0.7) * 0.6),  # triangle
        lambda: (np.hypot(u, v) > 0.55) & (np.hypot(u, v) < 0.95),  # ring
        lambda: ((abs(u) < 0.25) & (abs(v) < 0.9)) | ((abs(v) < 0.25) & (abs(u) < 0.9)),  # plus
        lambda: ((abs(u - v) < 0.3) | (abs(u + v) < 0.3))
        & (np.maximum(abs(u), abs(v)) < 0.85),  # X
        lambda: (abs(v) < 0.3) & (abs(u) < 0.95),  # horizontal bar
        lambda: (abs(u) < 0.3) & (abs(v) < 0.95),  # vertical bar
        lambda: abs(u) + abs(v) < 0.95,  # diamond
        lambda: (np.hypot(u - 0.5, v) < 0.4) | (np.hypot(u + 0.5, v) < 0.4),  # two dots
    )
    return masks[kind]()  # only the one asked for is computed


def _stripes(coordinate: np.ndarray, period: float) -> np.ndarray:
    # Half a pixel off the zero crossings: no pixel lands on a stripe's edge, so the stripes
    # are as wide on both sides and a flipped pattern is a shifted one.
    return (np.sin((coordinate + 0.5) / period * 2 * np.pi) > 0).astype(float)


def _checkerboard(x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    return ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(float)


def _dots(x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    return (np.hypot(x % cell - cell / 2, y % cell - cell / 2) < cell / 4).astype(float)


def _texture(kind: int, x: np.ndarray, y: np.ndarray, period: float, u: np.ndarray,
             v: np.ndarray, scale: float) -> np.ndarray:
    """Pattern ``kind`` in [0, 1] on pixel coordinates (x, y); (u, v) are the coordinates
    relative to the patch (scaled by ``scale`` pixels), for the rings. Every pattern is its own
    mirror image up to a shift, so flipping never turns one class into another."""
    patterns = (
        lambda: _stripes(x, period),  # vertical stripes
        lambda: _stripes(x, period / 2),
        lambda: _stripes(y, period),  # horizontal stripes
        lambda: _stripes(y, period / 2),
        lambda: _checkerboard(x, y, period / 2),
        lambda: _checkerboard(x, y, period / 4),
        lambda: _dots(x, y, period / 2),
        lambda: _dots(x, y, period),
        lambda: _stripes(np.hypot(u, v) * scale, period / 2),  # concentric rings
        lambda: _checkerboard(x + y, x - y, period / 2),  # diagonal checkerboard
    )
    return patterns[kind]()


def _render(task: str, label: int, size: int, difficulty: float, rng) -> np.ndarray:
    """One float image in [0, 1] of class ``label``."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    shrink, fade, noise = (0.28, 0.8, 0.4) if task == "textures" else (0.22, 0.7, 0.3)
    scale = size * (0.42 - shrink * difficulty) * rng.uniform(0.85, 1.15)
    cx, cy = rng.uniform(size / 2 - (size / 2 - scale) * 0.8, size / 2 + (size / 2 - scale) * 0.8,
                         2)
    u, v = (x - cx) / scale, (y - cy) / scale
    background = rng.uniform(0.2, 0.8, 3)
    contrast = (1.0 - fade * difficulty) * rng.choice([-1.0, 1.0])
    image = np.broadcast_to(background, (size, size, 3)).copy()
    if task == "shapes":
        mask = _shape_mask(label, u, v)
        color = np.clip(background + contrast * 0.45, 0, 1)
    elif task == "textures":
        mask = np.hypot(u, v) < 1.0
        pattern = _texture(label, x, y, size / 8, u, v, scale)
        color = np.clip(background[None, None] + contrast * 0.45 * (pattern[..., None] - 0.5)
                        * 2, 0, 1)
    else:
        mask = _shape_mask(0 if label < 5 else 6, u, v)
        hue = HUES[label % 5]
        color = np.clip(0.5 + (hue - 0.5) * (1.0 - 0.75 * difficulty), 0, 1)
    image[mask] = color[mask] if np.ndim(color) == 3 else color
    for _ in range(int(round(6 * difficulty))):  # clutter: random bright or dark strokes
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.1, 0.4) * size
        distance = abs((x - x0) * np.sin(angle) - (y - y0) * np.cos(angle))
        along = abs((x - x0) * np.cos(angle) + (y - y0) * np.sin(angle))
        image[(distance < size / 40 + 0.5) & (along < length / 2)] = rng.uniform(0, 1, 3)
    image += rng.normal(0, 0.04 + noise * difficulty, image.shape)
    return np.clip(image, 0, 1)


@functools.cache
def generate(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Images (uint8, N x S x S x 3), labels and ``{"difficulty": d}`` (float32 in [0, 1])
    of ``dataset`` ('synthetic/<task>'): the difficulty travels with every example."""
    kind = dataset.removeprefix(PREFIX + "/")
    task = next((t for t in TASKS if t.dataset == dataset), None)
    if task is None or split not in SPLIT_SIZES:
        raise ValueError(
            f"synthetic data: unknown dataset {dataset!r} or split {split!r}; datasets: "
            f"{', '.join(t.dataset for t in TASKS)}; splits: {', '.join(SPLIT_SIZES)}"
        )
    rng = np.random.RandomState([SPLIT_SEEDS[split], TASKS.index(task)])
    count = SPLIT_SIZES[split]
    labels = np.arange(count) % task.num_classes
    rng.shuffle(labels)
    difficulty = rng.uniform(0, 1, count) ** 1.5
    images = np.empty((count, task.input_size, task.input_size, 3), np.uint8)
    for i in range(count):
        images[i] = np.round(255 * _render(kind, labels[i], task.input_size, difficulty[i], rng))
    return images, labels.astype(np.int64), {"difficulty": difficulty.astype(np.float32)}

