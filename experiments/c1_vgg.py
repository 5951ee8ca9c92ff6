"""C1: network compression of the paper's "VGG-16" on CIFAR-10 (``--config.tasks=cifar100``).

    python -m den_tf.main --config=experiments/c1_vgg.py \
        --workdir=runs/c1_cifar10/vgg/den_rho0.1 --config.method=den --config.rho=0.1 \
        --config.tasks=cifar10   # the run `make table5` reports (and trains, with the others)

``python -m den_tf.main --config=experiments/c1_vgg.py --mode=summary``: VGG-19's 16-conv
stack as 8 two-conv blocks x 2 levels (the lowest keeps half of each block), FC 512-4096-4096:
38.89M parameters (paper, Table 5: 38.9M), 0.834 GFLOPs per 32x32 image. The selector, sized
to the paper's 3.9M parameters (3.91M), costs 1.284 GFLOPs per image, more than the full
estimator: the paper fixes its parameters only, and the compression ratios count the
estimator's FLOPs alone.
Expected: the paper's result (Table 5, DEN rho=0.1), 92.31 % on CIFAR-10 at 2.4x fewer FLOPs;
not run here: the real datasets cannot be downloaded on the machine this project is
developed on, so no result of this config has been measured.
"""

from den_tf.builders import base_config


def get_config():
    config = base_config()
    config.scenario = "C1"
    config.tasks = "cifar10"
    config.model.backbone = "vgg"
    config.model.backbone_args = dict(
        widths=(64, 128, 256, 512, 512), convs_per_stage=(2, 2, 4, 4, 4),
        hidden_units=(4096, 4096),
    )
    config.model.levels = 2
    config.model.fractions = (0.5, 0.5)
    config.model.per_task_stems = False
    config.selector.widths = (140, 280, 420)  # 3.91M parameters (paper: 3.9M)
    config.selector.stem_kernel = 3
    config.rho = 0.1
    return config
