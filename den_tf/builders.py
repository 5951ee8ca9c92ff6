"""Experiment configs turned into objects, in one place: nothing else reads a config.

``base_config()`` holds every field with its default; each file in ``experiments/`` starts
from it and sets what its scenario needs. The builders below turn a config into the models,
the phases of Algorithm 1 (steps, optimizers, schedules, plateaus) and the input-pipeline
arguments (the loop's own intervals: ``train.LoopSettings.from_config``). Each object checks
its own arguments, so a bad value stops the run with a ValueError before any work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import keras
import ml_collections
import numpy as np
from absl import app
from ml_collections import config_flags

from den_tf import backbones, distribute, methods, phases, steps
from den_tf import structure as structure_lib
from den_tf.datasets import sources
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
    # The compared method (methods.METHODS): den | baseline | nestednet | packnet.
    config.method = "den"
    # NestedNet and PackNet*: the tasks from the lowest level to the highest ('': task-id
    # order). M1: Tiny-ImageNet, CIFAR-100, STL-10 (paper 4.2).
    config.task_order = ""
    # The baseline: one network per task trained independently (M1, M3), or one network
    # shared by the tasks with a head per task (M2).
    config.separate_networks = True
    # BlockDrop: the penalty of a wrong prediction (its reward: 1 - kept^2 when correct) and
    # the exploration alpha (probabilities pulled toward 1/2).
    config.blockdrop = ml_collections.ConfigDict(dict(gamma=5.0, alpha=0.8))

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
    # 0.384M parameters and 0.111 GFLOPs with WRN-32-4 in M1 (paper: 0.37M, 0.11G).
    config.selector.widths = (36, 72, 144)
    config.selector.stem_channels = 16
    config.selector.stem_kernel = 7
    config.selector.trunk_size = 32
    # One logits layer per task: the task id reaches a selector whose tasks share a stem.
    config.selector.per_task_heads = False

    config.data = ml_collections.ConfigDict()
    # TFDS data directory, where `make data` prepares the datasets ('': TFDS's default).
    config.data.data_dir = sources.DATA_DIR
    # Download missing datasets (else a missing dataset fails at once with the command
    # that prepares it).
    config.data.download = False
    # Fraction of each training set held out for validation (convergence, checkpoints).
    config.data.validation_fraction = 0.05
    config.data.shuffle_buffer = 10_000

    config.train = ml_collections.ConfigDict()
    config.train.stages = 4  # S of Algorithm 1: three decays of each learning rate (paper)
    config.train.batch_size = 128  # per task
    config.train.eval_batch_size = 256
    # Per-task weights of the training losses (empty: all 1).
    config.train.task_weights = ()
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    # A phase converges after this many evaluations without a validation gain of min_delta.
    config.train.patience = 5
    config.train.min_delta = 1e-3

    config.train.estimator = ml_collections.ConfigDict()
    config.train.estimator.steps = 30_000  # step budget of each estimator phase
    config.train.estimator.initial_steps = 60_000  # budget of the first one (0: steps)
    config.train.estimator.lr = 0.1
    config.train.estimator.lr_decay = 0.1  # per stage
    config.train.estimator.momentum = 0.9
    config.train.estimator.weight_decay = 1e-4  # L2 on kernels, not on BN or biases
    config.train.estimator.tau = 0.75  # Eq. (8)
    # The first stage's structures: 'eq8', 'uniform' or 'selector' (the untrained selector's
    # distribution; paper A.2).
    config.train.estimator.initial_distribution = "eq8"
    # Structures of later estimator phases: sampled from the selector (Algorithm 1) or its
    # argmax (the authors' code).
    config.train.estimator.structures = "sample"

    config.train.selector = ml_collections.ConfigDict()
    config.train.selector.steps = 10_000
    config.train.selector.initial_steps = 0  # budget of the first selector phase (0: steps)
    config.train.selector.lr = 1e-5  # Adam (paper)
    config.train.selector.lr_decay = 0.1
    config.train.selector.samples = 4  # |Z| of Eq. (7)
    config.train.selector.baseline = "leave_one_out"  # none | leave_one_out | greedy
    # The selector's gradient: 'reinforce' (Eq. 7, the paper) or 'straight_through' (not in
    # the paper: the cost differentiated through the estimator's masked path; no baseline).
    config.train.selector.gradient = "reinforce"
    # Weight of the selector's mean per-block entropy subtracted from its loss (not in the
    # paper; 0: none).
    config.train.selector.entropy = 0.0
    # The per-instance cost R: 'den' (cross-entropy + S(z), the paper) or 'den_error' (the 0/1
    # error + S(z); den_tf/cost.py).
    config.train.selector.cost = "den"
    # epsilon-greedy exploration: epsilon * epsilon_decay^step, restarting every phase.
    config.train.selector.epsilon = 1.0
    config.train.selector.epsilon_decay = 0.99
    # How the frozen estimator scores samples: 'sliced' skips the dropped channels.
    config.train.selector.execution = "auto"  # auto | sliced | masked (selector_execution)

    # TF op determinism: a resumed run then ends exactly as an uninterrupted one.
    config.deterministic = False
    # XLA-compiled training steps (the selector then scores on the masked path).
    config.jit_compile = False
    # tf.distribute strategy (distribute.STRATEGIES); train.batch_size stays the global batch
    # per task. config.tpu: a TPU name, or 'local' on a TPU VM.
    config.strategy = "auto"
    config.tpu = ""
    # Keras dtype policy of the models (PRECISIONS): mixed_* compute in 16 bits with float32
    # weights, batch norm, logits and costs; mixed_float16 scales the losses.
    config.precision = "float32"
    return config


def data_kwargs(config: ml_collections.ConfigDict) -> dict:
    """Input-pipeline arguments shared by every split ('' as data_dir: TFDS's default)."""
    return {
        "data_dir": config.data.data_dir or None,
        "download": config.data.download,
        "validation_fraction": config.data.validation_fraction,
        "shuffle_buffer": config.data.shuffle_buffer,
    }


def build_estimator(config: ml_collections.ConfigDict) -> Estimator:
    """The estimator of ``config.model`` for ``config.tasks``. NestedNet and PackNet* on
    several tasks have one non-empty level per task (``methods.nested_levels_for``), with the
    halving group fractions."""
    model = config.model
    spec = _backbone_spec(config)
    tasks = get_tasks(config.tasks)
    levels, fractions = _levels_and_fractions(config, spec, len(tasks))
    return Estimator(
        spec,
        tasks,
        levels=levels,
        fractions=fractions,
        trunk_size=model.trunk_size,
        per_task_stems=model.per_task_stems,
        bn_momentum=model.bn_momentum,
        name="estimator",
    )


def _backbone_spec(config: ml_collections.ConfigDict) -> backbones.BackboneSpec:
    return backbones.build_backbone(config.model.backbone,
                                    **config.model.backbone_args.to_dict())


def _residual(spec: backbones.BackboneSpec) -> bool:
    """Whether the blocks are residual (level 0 skips them) or plain."""
    return spec.blocks[0].kind != "plain"


def _estimator_levels(config: ml_collections.ConfigDict, spec, n_tasks: int) -> int:
    return methods.nested_levels_for(config.method, n_tasks, _residual(spec),
                                     config.model.levels)


def _levels_and_fractions(config: ml_collections.ConfigDict, spec, n_tasks: int
                          ) -> tuple[int, tuple[float, ...]]:
    """The estimator's levels and group fractions (empty: the halving default)."""
    levels = _estimator_levels(config, spec, n_tasks)
    if config.method == "blockdrop":
        return levels, (1.0,)  # level 0 skips the block, level 1 runs it whole
    return levels, tuple(config.model.fractions) if levels == config.model.levels else ()


def kept_fractions(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The fraction of a block's width each level of ``config``'s estimator keeps (before
    rounding to whole channels), without building it: (0, 1/4, 1/2, 1) for four residual
    levels, (1/2, 1) for two plain ones."""
    spec = _backbone_spec(config)
    levels, fractions = _levels_and_fractions(config, spec, len(get_tasks(config.tasks)))
    residual = _residual(spec)
    fractions = fractions or structure_lib.default_fractions(levels, residual)
    return (0.0,) * residual + tuple(float(f) for f in np.cumsum(fractions))


def build_selector(config: ml_collections.ConfigDict, estimator: Estimator) -> Selector:
    """The selector of ``config.selector`` for the estimator's tasks and blocks."""
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
        per_task_heads=selector.per_task_heads,
        name="selector",
    )


def build_models(config: ml_collections.ConfigDict) -> tuple[Estimator, Selector | None]:
    """The estimator and its selector (None for a fixed-structure method)."""
    estimator = build_estimator(config)
    if config.method in methods.FIXED_STRUCTURE_METHODS:
        return estimator, None
    return estimator, build_selector(config, estimator)


def require_selector(config: ml_collections.ConfigDict, what: str) -> None:
    """Raises ValueError when ``config.method`` has no selector, which ``what`` needs."""
    methods.check_method(config.method)
    if config.method in methods.FIXED_STRUCTURE_METHODS:
        raise ValueError(f"{what} needs a selector (methods 'den', 'blockdrop'); method "
                         f"{config.method!r} has none")


def unread_settings(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The settings a run of ``config`` does not read, each with the reason: dotted config
    keys, a key standing for every field under it."""
    method = config.method
    methods.check_method(method)
    unread: dict[str, str] = {}

    def mark(keys: Sequence[str], why: str) -> None:
        unread.update(dict.fromkeys(keys, why))

    if method != "blockdrop":
        mark(["blockdrop"], "only method 'blockdrop' reads it")
    if method != "baseline":
        mark(["separate_networks"], "only method 'baseline' reads it")
    if method not in ("nestednet", "packnet"):
        mark(["task_order"], "only methods 'nestednet' and 'packnet' read it")
    if method in methods.FIXED_STRUCTURE_METHODS:
        mark(["rho", "selector", "train.selector", "train.estimator.tau",
              "train.estimator.initial_distribution", "train.estimator.structures"],
             f"method {method!r} has no selector (its structures are fixed per task)")
    elif config.train.selector.gradient == "straight_through":
        mark(["train.selector.baseline"], "the straight-through gradient has no baseline")
    if method == "blockdrop":
        mark(["rho", "model.levels", "model.fractions", "train.selector.samples",
              "train.selector.baseline", "train.selector.cost", "train.selector.epsilon",
              "train.selector.epsilon_decay", "train.estimator.tau",
              "train.estimator.initial_distribution"],
             "method 'blockdrop' sets it: two levels (skipped, whole), its reward (gamma, not "
             "rho), one sample, the greedy baseline, no epsilon-greedy, tau = 1")
    n_tasks = len(get_tasks(config.tasks))
    levels = _estimator_levels(config, _backbone_spec(config), n_tasks)
    if method in ("nestednet", "packnet") and levels != config.model.levels:
        # (model.levels is read: only a run of model.levels levels takes model.fractions)
        mark(["model.fractions"],
             f"method {method!r} on {n_tasks} tasks has {levels} levels, one per task "
             f"(methods.nested_levels_for), not model.levels ({config.model.levels}): the "
             f"halving fractions")
    return unread


def check_overrides(config: ml_collections.ConfigDict, overridden: Iterable[str]) -> None:
    """Raises ValueError naming every overridden key (``--config.<key>``) that the run of
    ``config`` would not read (``unread_settings``): a value that changes nothing must not
    pass for one that does."""
    unread = unread_settings(config)
    refused = []
    for key in overridden:
        covering = [k for k in unread if key == k or key.startswith(k + ".")]
        if covering:
            refused.append(f"--config.{key}: {unread[covering[0]]}")
    if refused:
        raise ValueError("these settings would change nothing in this run; remove them:\n  "
                         + "\n  ".join(refused))


def check_command_line(config_flag) -> None:
    """``check_overrides`` on the keys given to ``config_flag`` (``FLAGS['config']`` of a
    command), as a usage error."""
    try:
        check_overrides(config_flag.value, config_flags.get_override_values(config_flag))
    except ValueError as error:
        raise app.UsageError(str(error)) from None


# DEN's per-instance costs R (den_tf/cost.py); BlockDrop's reward comes with its method.
SELECTOR_COSTS = ("den", "den_error")


def step_settings(config: ml_collections.ConfigDict) -> steps.StepSettings:
    """What the training steps need, from ``config.rho`` and ``config.train`` (rho 0 for the
    methods without a selector: their validation objective is the cross-entropy). BlockDrop's
    definition replaces the selector's settings: its reward and exploration
    (``config.blockdrop``), one sample per instance, the self-critical (greedy) baseline, no
    epsilon-greedy, and a first estimator phase on the full network (tau = 1)."""
    train = config.train
    if train.selector.cost not in SELECTOR_COSTS:
        raise ValueError(f"train.selector.cost must be one of {SELECTOR_COSTS}, got "
                         f"{train.selector.cost!r} (BlockDrop's is set by method 'blockdrop')")
    settings = dict(
        rho=config.rho,
        task_weights=tuple(train.task_weights),
        weight_decay=train.estimator.weight_decay,
        tau=train.estimator.tau,
        initial_distribution=train.estimator.initial_distribution,
        samples=train.selector.samples,
        baseline=train.selector.baseline,
        gradient=train.selector.gradient,
        execution=selector_execution(config),
        jit_compile=config.jit_compile,
        draws="portable" if uses_tpu(config) else None,
        entropy=train.selector.entropy,
        cost=train.selector.cost,
    )
    if config.method in methods.FIXED_STRUCTURE_METHODS:
        # No selector: the sparsity cost of a task's fixed structure would only add a
        # constant to the validation objective (and a resumed run's best would hold another).
        settings.update(rho=0.0)
    if config.method == "blockdrop":
        settings.update(rho=0.0, cost="blockdrop", gamma=config.blockdrop.gamma,
                        squash=config.blockdrop.alpha, samples=1, baseline="greedy", tau=1.0,
                        initial_distribution="eq8")
    return steps.StepSettings(**settings)


def instance_cost(config: ml_collections.ConfigDict):
    """The per-instance cost R that validation averages: BlockDrop's for its runs, else DEN's."""
    return step_settings(config).instance_cost


def uses_tpu(config: ml_collections.ConfigDict) -> bool:
    """Whether the run trains on a TPU (``config.strategy``, with 'auto' and a TPU name)."""
    return config.strategy == "tpu" or (
        config.strategy == "auto" and bool(distribute.tpu_name(config.tpu)))


def selector_execution(config: ml_collections.ConfigDict) -> str:
    """How the selector step scores its samples: ``config.train.selector.execution``, where
    'auto' is the sliced path (fewer FLOPs), or the masked one under XLA and on TPUs (static
    shapes)."""
    execution = config.train.selector.execution
    static = config.jit_compile or uses_tpu(config)
    if execution == "auto":
        return "masked" if static else "sliced"
    if execution == "sliced" and uses_tpu(config):
        raise ValueError("a TPU needs static shapes: train.selector.execution must be 'masked' "
                         "or 'auto', not 'sliced'")
    return execution


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def precision(name: str):
    """Models built inside compute in the Keras dtype policy ``name`` (``PRECISIONS``)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_phases(
    config: ml_collections.ConfigDict, estimator: Estimator, selector: Selector | None
) -> tuple[phases.Phase, ...]:
    """The phases of one stage of ``config.method``, in order, with their optimizers (SGD
    with Nesterov momentum for the estimator, Adam for the selector): Algorithm 1's two for
    DEN; one estimator phase at fixed levels for the baseline and NestedNet; for PackNet*
    every task lowest first, each through ``train.stages`` learning-rate decays (its run has
    one stage: ``stages``)."""
    methods.check_method(config.method)
    train, settings = config.train, step_settings(config)
    settings.weights_for(len(estimator.tasks))  # one weight per task, or none
    estimator_optimizer = _optimizer(config, keras.optimizers.SGD(
        train.estimator.lr, momentum=train.estimator.momentum, nesterov=True
    ), estimator)
    estimator_schedule = phases.PhaseSchedule(
        train.estimator.steps, train.estimator.lr, train.estimator.lr_decay,
        train.estimator.initial_steps,
    )

    def plateau(model, name):
        return phases.Plateau(model.weights, train.patience, train.min_delta, name=name)

    if config.method in methods.FIXED_STRUCTURE_METHODS:
        levels = methods.task_levels(config.method, estimator, config.task_order)
        step_args = (estimator, None, estimator_optimizer, settings)
        if config.method != "packnet":
            step = steps.FixedStructureStep(*step_args, task_levels=levels)
            return (phases.FixedStructurePhase(step, estimator_schedule,
                                               plateau(estimator, "estimator_plateau")),)
        order = methods.task_order(estimator, config.task_order)
        shared_plateau = plateau(estimator, "estimator_plateau")
        packnet = []
        for position, task in enumerate(order):
            trainable, frozen = methods.packnet_masks(estimator, levels, order, position)
            step = steps.FixedStructureStep(
                *step_args, task_levels=levels, trained=(task,), trainable=trainable,
                frozen=frozen)
            name = f"packnet_{estimator.tasks[task].name}"
            packnet += [phases.PackNetPhase(step, estimator_schedule, shared_plateau, name, d)
                        for d in range(train.stages)]
        return tuple(packnet)

    selector_optimizer = _optimizer(config, keras.optimizers.Adam(train.selector.lr), selector)
    epsilon = 0.0 if config.method == "blockdrop" else train.selector.epsilon
    return (
        phases.EstimatorPhase(
            steps.EstimatorStep(estimator, selector, estimator_optimizer, settings),
            estimator_schedule,
            plateau(estimator, "estimator_plateau"),
            later_structures=train.estimator.structures,
        ),
        phases.SelectorPhase(
            steps.SelectorStep(estimator, selector, selector_optimizer, settings),
            phases.PhaseSchedule(
                train.selector.steps, train.selector.lr, train.selector.lr_decay,
                train.selector.initial_steps,
            ),
            plateau(selector, "selector_plateau"),
            epsilon=epsilon,
            epsilon_decay=train.selector.epsilon_decay,
        ),
    )


def _optimizer(config: ml_collections.ConfigDict, optimizer, model):
    """``optimizer`` built on ``model``'s weights, with dynamic loss scaling against underflow
    under mixed_float16."""
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def stages(config: ml_collections.ConfigDict) -> int:
    """How many times the run goes through its phases: ``train.stages``, or 1 for PackNet*,
    whose phases hold the decays (``build_phases``)."""
    return 1 if config.method == "packnet" else config.train.stages
