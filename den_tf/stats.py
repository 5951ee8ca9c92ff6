"""Statistics for claims over runs and instances: t intervals, paired differences, rank
correlation and quantile bins. Pure numpy, tested against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Two-sided 95% quantiles of Student's t (0.975 one-sided) for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z975 = 1.959964


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (table to 30, then
    the Cornish-Fisher expansion, within 1e-3)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_interval(values: Sequence[float]) -> dict:
    """Mean and the half-width of its 95% t interval over runs: {mean, half_width, n, low,
    high}. One run has no interval (half_width None)."""
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"need a non-empty 1-d sequence of values, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"values must be finite (a figure missing from a run?), got {values}")
    mean = float(values.mean())
    if len(values) == 1:
        return {"mean": mean, "half_width": None, "n": 1, "low": None, "high": None}
    half = t_quantile_975(len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return {"mean": mean, "half_width": half, "n": len(values), "low": mean - half,
            "high": mean + half}


def interval_text(interval: dict, scale: float = 1.0, digits: int = 2) -> str:
    """``mean_interval``'s result as "mean ± half-width" (the mean alone for one run), both
    multiplied by ``scale``."""
    mean = interval["mean"] * scale
    if interval["half_width"] is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {interval['half_width'] * scale:.{digits}f}"


def runs_text(runs: int) -> str:
    """How a table over ``runs`` runs states its figures: one run has no interval, so none of
    its differences can be placed against the noise."""
    if runs == 1:
        return ("One run: the figures have no interval, and no difference between them can be "
                "placed against the noise.")
    return f"Over {runs} runs: mean ± half-width of the 95% t interval."


def paired_text(paired: dict) -> str:
    """``paired_difference``'s result as text, marked " *" where its interval excludes zero."""
    return interval_text(paired) + (" *" if paired["excludes_zero"] else "")


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """``mean_interval`` of a - b over runs paired by position (same seed); ``excludes_zero``
    says whether the interval lies wholly on one side of zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal shapes, got {a.shape} and {b.shape}")
    interval = mean_interval(a - b)
    low, high = interval["low"], interval["high"]
    interval["excludes_zero"] = low is not None and (low > 0 or high < 0)
    return interval


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties given their average rank. NaN has no rank (ValueError)."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError("values to rank must be finite")
    order = np.argsort(values, kind="mergesort")
    positions = np.empty(len(values), np.float64)
    positions[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=positions) / counts)[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation; NaN when either variable is constant."""
    rx, ry = ranks(x), ranks(y)
    if len(rx) != len(ry):
        raise ValueError(f"x and y need equal lengths, got {len(rx)} and {len(ry)}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator else float("nan")


def quantile_bins(key: Sequence[float], bins: int = 5) -> list[np.ndarray]:
    """Indices of the instances in ``bins`` equal-count groups of increasing ``key``
    (the first groups take one more when the count does not divide)."""
    order = np.argsort(np.asarray(key), kind="mergesort")
    return np.array_split(order, bins)
