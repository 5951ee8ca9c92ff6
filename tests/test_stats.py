"""Intervals, paired differences, rank correlation and bins against hand-computed values."""

import math

import numpy as np
import pytest

from den_tf import stats


def test_mean_interval_by_hand():
    # Values 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t(4) = 2.776.
    interval = stats.mean_interval([1, 2, 3, 4, 5])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert interval["mean"] == 3.0 and interval["n"] == 5
    assert math.isclose(interval["half_width"], half, rel_tol=1e-12)
    assert math.isclose(interval["low"], 3 - half) and math.isclose(interval["high"], 3 + half)
    single = stats.mean_interval([7.5])
    assert single["mean"] == 7.5 and single["half_width"] is None
    with pytest.raises(ValueError, match="non-empty"):
        stats.mean_interval([])


def test_t_quantiles():
    assert stats.t_quantile_975(1) == 12.706 and stats.t_quantile_975(30) == 2.042
    # Beyond the table: t(40) = 2.021, t(120) = 1.980.
    assert abs(stats.t_quantile_975(40) - 2.021) < 1e-3
    assert abs(stats.t_quantile_975(120) - 1.980) < 1e-3


def test_paired_difference_by_hand():
    a, b = [86.0, 87.0, 85.5], [85.0, 86.0, 85.0]
    # Differences 1, 1, 0.5: mean 5/6, sd sqrt(1/12), t(2) = 4.303.
    diff = stats.paired_difference(a, b)
    half = 4.303 * math.sqrt(1 / 12) / math.sqrt(3)
    assert math.isclose(diff["mean"], 5 / 6) and math.isclose(diff["half_width"], half)
    assert diff["excludes_zero"] == (5 / 6 - half > 0)
    assert not stats.paired_difference([1.0, -1.0], [0.0, 0.0])["excludes_zero"]
    assert stats.paired_difference([2.0, 2.1, 1.9], [0.0, 0.0, 0.0])["excludes_zero"]


def test_interval_texts():
    # 1, 2, 3: mean 2, sd 1, half-width 4.303 / sqrt(3) = 2.484.
    assert stats.interval_text(stats.mean_interval([1.0, 2.0, 3.0])) == "2.00 ± 2.48"
    assert stats.interval_text(stats.mean_interval([0.1, 0.2, 0.3]), 100, 1) == "20.0 ± 24.8"
    assert stats.interval_text(stats.mean_interval([5.0])) == "5.00"  # one run: no interval
    assert stats.paired_text(stats.paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])) \
        == "3.00 ± 2.48 *"
    assert stats.paired_text(stats.paired_difference([1.0, -1.0, 3.0], [0.0, 0.0, 0.0])) \
        == "1.00 ± 4.97"


def test_ranks_and_spearman_by_hand():
    assert stats.ranks([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, -1, 1): 1 - 6 * 2 / (4 * 15) = 0.8.
    assert stats.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert math.isnan(stats.spearman([1, 2, 3], [5, 5, 5]))


def test_quantile_bins():
    key = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0, 0.95])
    bins = stats.quantile_bins(key, 5)
    assert [len(b) for b in bins] == [3, 2, 2, 2, 2]
    assert key[bins[0]].tolist() == [0.0, 0.1, 0.2]
    assert key[bins[-1]].tolist() == [0.9, 0.95]


def test_gradient_snr_by_hand():
    from den_tf.diagnose import gradient_snr

    # Two draws of a 2-d gradient, (1, 0) and (3, 0): mean (2, 0); noise (1 + 1) / (2 - 1) = 2;
    # signal 4 - 2 / 2 = 3.
    result = gradient_snr([[np.array([1.0]), np.array([0.0])],
                           [np.array([3.0]), np.array([0.0])]])
    assert result["signal"] == 3.0 and result["noise"] == 2.0 and result["snr"] == 1.5
    assert result["cosine_to_mean"] == pytest.approx(1.0)
    opposite = gradient_snr([[np.array([1.0, 0.0])], [np.array([-1.0, 0.0])]])
    assert opposite["signal"] == 0.0 and opposite["snr"] == 0.0
    with pytest.raises(ValueError, match="at least 2 draws"):
        gradient_snr([[np.array([1.0])]])
