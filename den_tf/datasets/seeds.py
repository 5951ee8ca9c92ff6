"""Reproducible randomness for datasets: named seeds derived from a base seed, and subsets.

Seeds are derived by hashing (not Python's salted ``hash``), and subsets are drawn with NumPy's
legacy ``RandomState``, whose stream NumPy keeps fixed across versions, so a chosen subset is the
same on every machine and release.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *names: str) -> int:
    """A 31-bit seed determined by ``seed`` and ``names`` (e.g. a dataset and a purpose)."""
    text = "/".join([str(int(seed)), *names])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") >> 1


def sample_indices(population: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct indices of ``range(population)``, sorted, chosen by ``seed``."""
    if not 0 <= count <= population:
        raise ValueError(f"count: must be in [0, {population}], got {count}")
    return np.sort(np.random.RandomState(seed).permutation(population)[:count])
