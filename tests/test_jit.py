"""XLA-compiled training steps (``config.jit_compile``) against the uncompiled ones."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from den_tf import backbones, builders
from den_tf.estimator import Estimator
from den_tf.selector import Selector
from den_tf.steps import EstimatorStep, SelectorStep, StepSettings
from den_tf.tasks import Task

TASKS = [Task("a", "a", 16, 3), Task("b", "b", 32, 4)]


def _models():
    est = Estimator(backbones.wrn(depth=8, widths=(8, 8, 8), stem_channels=8), TASKS, levels=3,
                    trunk_size=16)
    sel = Selector(TASKS, est.n_blocks, est.levels, widths=(8,), trunk_size=16, stem_channels=8)
    return est, sel


def _optimizer(kind, variables):
    optimizer = (keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True) if kind == "sgd"
                 else keras.optimizers.Adam(1e-2))
    optimizer.build(variables)
    return optimizer


def test_compiled_steps_match_the_uncompiled_steps():
    """Two estimator steps (Eq. 8 structures, then the selector's samples) and two selector
    steps give the same losses and weights compiled with XLA as without (float32, 1e-4)."""
    runs = []
    reference = None
    for jit in (False, True):
        est, sel = _models()
        if reference is None:
            reference = (est.get_weights(), sel.get_weights())
        est.set_weights(reference[0])
        sel.set_weights(reference[1])
        settings = StepSettings(rho=0.3, samples=3, execution="masked", jit_compile=jit,
                                draws="portable")
        est_step = EstimatorStep(est, sel, _optimizer("sgd", est.trainable_variables), settings)
        sel_step = SelectorStep(est, sel, _optimizer("adam", sel.trainable_variables), settings)
        rng = np.random.RandomState(0)
        batch = tuple({"image": tf.constant(rng.normal(size=(4, t.input_size, t.input_size, 3)),
                                            tf.float32),
                       "label": tf.constant(rng.randint(0, t.num_classes, 4), tf.int32)}
                      for t in TASKS)
        losses = []
        for k, source in enumerate(("initial", "sample")):
            losses.append(float(est_step(batch, tf.constant([k, 1], tf.int64), source)["loss"]))
        for k in range(2):
            losses.append(float(sel_step(batch, tf.constant([k, 2], tf.int64), 0.2)["loss"]))
        runs.append((losses, est.get_weights() + sel.get_weights()))
    (plain_losses, plain_weights), (xla_losses, xla_weights) = runs
    np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-4, atol=1e-4)
    assert np.abs(np.array(plain_losses[:2]) - plain_losses[0]).max() > 0  # steps move
    for a, b in zip(xla_weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(plain_weights, [
        *reference[0], *reference[1]]))  # the weights did change


def test_jit_compile_scores_on_the_masked_path():
    config = builders.base_config()
    assert builders.selector_execution(config) == "sliced"
    config.jit_compile = True
    assert builders.selector_execution(config) == "masked"
    assert builders.step_settings(config).jit_compile
    assert builders.step_settings(config).random_draws == "portable"
    config.train.selector.execution = "sliced"
    with pytest.raises(ValueError, match="jit_compile needs execution 'masked'"):
        builders.step_settings(config)
    with pytest.raises(ValueError, match="jit_compile needs draws 'portable'"):
        StepSettings(execution="masked", jit_compile=True, draws="tensorflow")
    assert StepSettings().random_draws == "tensorflow"
