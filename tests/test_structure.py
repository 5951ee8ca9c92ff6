"""Levels and structures: nested channel counts, defaults and validation."""

import pytest
import tensorflow as tf

from den_tf import structure


def test_default_fractions_halve():
    assert structure.default_fractions(4, residual=True) == (0.25, 0.25, 0.5)
    assert structure.default_fractions(2, residual=True) == (1.0,)
    assert structure.default_fractions(3, residual=False) == (0.25, 0.25, 0.5)
    assert structure.default_fractions(5, residual=True) == (0.125, 0.125, 0.25, 0.5)


def test_level_channels_residual_and_plain():
    assert structure.level_channels(64, (0.25, 0.25, 0.5), residual=True) == (0, 16, 32, 64)
    assert structure.level_channels(32, (0.5, 0.5), residual=False) == (16, 32)
    # ResNeXt 8 groups of 64: levels keep whole groups.
    assert structure.level_channels(512, (0.25, 0.25, 0.5), True, unit=64) == (0, 128, 256, 512)


@pytest.mark.parametrize(
    "width, fractions, unit, match",
    [
        (4, (0.125, 0.125, 0.25, 0.5), 1, "non-empty groups"),
        (128, (0.25, 0.25, 0.5), 64, "non-empty groups"),
        (100, (0.5, 0.5), 64, "multiple of the channel unit"),
    ],
)
def test_level_channels_rejects_unsplittable(width, fractions, unit, match):
    with pytest.raises(ValueError, match=match):
        structure.level_channels(width, fractions, residual=True, unit=unit)


@pytest.mark.parametrize("levels", [1, 6, 2.5, "4"])
def test_levels_out_of_range(levels):
    with pytest.raises(ValueError, match=r"levels must be an integer in \[2, 5\]"):
        structure.check_levels(levels)


def test_fractions_validation_names_the_problem():
    with pytest.raises(ValueError, match="sum to 1"):
        structure.check_fractions((0.25, 0.25, 0.25), 4, residual=True)
    with pytest.raises(ValueError, match="need 3 group fractions"):
        structure.check_fractions((0.5, 0.5), 4, residual=True)
    with pytest.raises(ValueError, match="positive"):
        structure.check_fractions((1.5, -0.5), 3, residual=True)


def test_check_structure_eager_and_graph():
    good = tf.constant([[0, 3], [2, 1]])
    assert structure.check_structure(good, 2, 4).dtype == tf.int32
    with pytest.raises(ValueError, match=r"lie in \[0, 4\), got values in \[0, 4\]"):
        structure.check_structure(tf.constant([[0, 4]]), 2, 4)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        structure.check_structure(good, 3, 4)
    with pytest.raises(ValueError, match="integer tensor"):
        structure.check_structure(tf.constant([[0.0, 1.0]]), 2, 4)
    checked = tf.function(lambda z: structure.check_structure(z, 2, 4))
    with pytest.raises(tf.errors.InvalidArgumentError, match="lie in"):
        checked(tf.constant([[-1, 0]]))


def test_full_structure():
    z = structure.full_structure(3, 5, 4)
    assert z.shape == (3, 5) and int(tf.reduce_min(z)) == 3 and int(tf.reduce_max(z)) == 3
