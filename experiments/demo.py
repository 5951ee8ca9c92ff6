"""Offline demo in the shape of M1: three synthetic tasks (32, 64, 96 px), narrow WRN-32.

    make demo   # = python -m den_tf.main --config=experiments/demo.py --workdir=runs/demo --analyze

Trains on the embedded synthetic dataset (den_tf/datasets/synthetic.py; nothing to
download): per-task 7x7 stems into a 16x16 trunk, WRN-32 with widths 16/32/64 (15 blocks x
4 levels), two stages of Algorithm 1, rho = 0.3; the selector trained with the straight-through
gradient (``experiments/demo_policy_gradient.py`` has the paper's).
Expected result (2026-12-01, 2-core AMD EPYC with AVX-512, oneDNN on, 10 seeds: ``make demo
SEEDS=10``): DEN 89.8 +- 0.4 % average accuracy at 54 % of the full structure's 35.4 MFLOPs,
equal to the full structure (0.0 +- 0.2 points); random structures 81.1 % (uniform) and 88.8 %
(the selector's level frequencies, same FLOPs: DEN 1.04 +- 0.13 points above); the hardest
fifth of the images gets 47-85 % more FLOPs than the easiest (rank correlations 0.7-0.8); one
seed (``make demo``) 4 minutes 52 s. With oneDNN off on the same machine, 10 seeds: DEN
89.8 +- 0.3 % at 53 %, full structure 89.9 %, 1.2 +- 0.4 points above the matched random
control; one seed 6 minutes 19 s. All 35 runs of the README's Demo section (four CPU settings,
seeds 0-19): 1.18 +- 0.17 points above the matched random control.
Single seeds differ between CPUs (README, Demo).
"""

from den_tf.builders import base_config
from den_tf.tasks import SYNTHETIC_TASKS


def get_config():
    config = base_config()
    config.scenario = "demo (M1-shaped, synthetic)"
    config.tasks = ",".join(task.name for task in SYNTHETIC_TASKS)
    config.rho = 0.3
    # NestedNet and PackNet*, as M1: the 64-px task lowest, the 96-px task highest.
    config.task_order = "synthetic_textures,synthetic_shapes,synthetic_colors"
    config.model.backbone_args.widths = (16, 32, 64)
    config.model.trunk_size = 16
    config.selector.widths = (16, 32, 64)
    config.selector.stem_channels = 16
    config.selector.trunk_size = 16

    config.data.validation_fraction = 0.1
    config.data.shuffle_buffer = 2000

    config.train.stages = 2
    config.train.batch_size = 32
    config.train.eval_batch_size = 250
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    config.train.patience = 3
    config.train.estimator.initial_steps = 800
    config.train.estimator.steps = 250
    config.train.estimator.lr = 0.05
    config.train.estimator.weight_decay = 5e-4
    # No epsilon-greedy exploration and a larger rate: on one stage-1 estimator these reached
    # the lowest validation objective and FLOPs. The last selector phase is the one deployed:
    # 600 steps at the undecayed rate made the selector follow difficulty where 150 steps at a
    # tenth of the rate did not (5 seeds; docs/selector-investigation.md).
    config.train.selector.initial_steps = 150
    config.train.selector.steps = 600
    config.train.selector.lr_decay = 1.0
    config.train.selector.lr = 3e-3
    config.train.selector.epsilon = 0.0
    # The straight-through gradient (not in the paper; experiments/demo_policy_gradient.py has
    # the paper's): one sampled structure per image, run as one-hot level weights on the masked
    # path, the cost R differentiated through the frozen estimator. Its step is about twelve
    # times less noisy than the policy gradient's at |Z| = 8 and three times cheaper; with this
    # selector (twice the policy-gradient demo's widths) it matched the full structure's
    # accuracy and trained a seed in 4 minutes instead of 5.5-6, at the same margin over the
    # matched random control (10 seeds; docs/selector-investigation.md).
    config.train.selector.gradient = "straight_through"
    config.train.selector.samples = 1
    # A small entropy bonus (not in the paper): without it the selector becomes nearly certain
    # (top probability 0.89-0.96 per block) and in some seeds settles on one structure per
    # task; with 0.1 the last selector phase gave wider FLOPs spreads between easy and hard
    # images on every task and a larger margin over the matched random control, at the same
    # accuracy and FLOPs (5 seeds; docs/selector-investigation.md). 0.5 kept the
    # distributions nearly uniform.
    config.train.selector.entropy = 0.1
    return config
