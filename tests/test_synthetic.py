"""The demo's synthetic data: difficulty travels with the examples, and training's left-right
flip never turns one class into another."""

import numpy as np

from den_tf.datasets import synthetic
from den_tf.tasks import SYNTHETIC_TASKS


def _best_shift_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Largest normalized circular cross-correlation of two patterns over all shifts."""
    a, b = a - a.mean(), b - b.mean()
    correlation = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real
    return float(correlation.max() / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_a_flipped_texture_is_its_own_class():
    size, period = 64, 8.0
    y, x = np.mgrid[0:size, 0:size].astype(float)
    u, v = (x - 32) / 20, (y - 32) / 20
    patterns = [synthetic._texture(k, x, y, period, u, v, 20.0) for k in range(10)]
    for k, pattern in enumerate(patterns):
        flipped = pattern[:, ::-1]
        scores = [_best_shift_correlation(flipped, other) for other in patterns]
        assert int(np.argmax(scores)) == k, (k, np.round(scores, 2))
        assert scores[k] > 0.9


def test_difficulty_comes_with_every_example():
    sizes = dict(synthetic.SPLIT_SIZES)
    synthetic.SPLIT_SIZES.update(test=30)
    synthetic.generate.cache_clear()
    try:
        images, labels, extras = synthetic.generate(SYNTHETIC_TASKS[1].dataset, "test")
        difficulty = extras["difficulty"]
        assert images.shape == (30, 64, 64, 3) and labels.shape == difficulty.shape == (30,)
        assert difficulty.dtype == np.float32 and 0 <= difficulty.min() < difficulty.max() <= 1
        # Harder images carry more noise: compare the easiest and hardest thirds.
        order = np.argsort(difficulty)
        roughness = np.abs(np.diff(images.astype(float), axis=2)).mean(axis=(1, 2, 3))
        assert roughness[order[-10:]].mean() > roughness[order[:10]].mean()
    finally:
        synthetic.SPLIT_SIZES.update(sizes)
        synthetic.generate.cache_clear()
