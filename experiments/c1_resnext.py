"""C1: network compression of ResNeXt-29 (c x 64d) on CIFAR-10; argument = cardinality c.

    make c1   # = python -m den_tf.main --config=experiments/c1_resnext.py:8 \
              #     --workdir=runs/c1_cifar10/resnext8/den_rho0.1 --config.method=den \
              #     --config.rho=0.1 --config.tasks=cifar10

``python -m den_tf.main --config=experiments/c1_resnext.py:8 --mode=summary``: 9 bottleneck
blocks; 8x64d has 4 levels (groups 1/4, 1/4, 1/2 of the cardinal groups), 4x64d and 2x64d
have 3 levels (halves). Parameters under the paper's convention: 22.38M / 11.19M / 5.60M for
c = 8 / 4 / 2 (paper, Table 5: 22.4M / 11.2M / 5.6M); 6.78 GFLOPs per 32x32 image for 8x64d.
Expected: the paper's result (Table 5, CIFAR-10, DEN rho=0.1), 94.61 % (8x64d), 94.47 %
(4x64d); not run here: the real datasets cannot be downloaded on the machine this project is
developed on, so no result of this config has been measured.
"""

from den_tf.builders import base_config

CARDINALITIES = (2, 4, 8)


def get_config(cardinality: str = "8"):
    cardinality = int(cardinality)
    if cardinality not in CARDINALITIES:
        raise ValueError(f"c1_resnext.py: cardinality must be one of {CARDINALITIES}")
    config = base_config()
    config.scenario = "C1"
    config.tasks = "cifar10"
    config.model.backbone = "resnext"
    config.model.backbone_args = dict(
        cardinality=cardinality, base_width=64, depth=29, widths=(64, 128, 256),
        stem_channels=64, stem_kernel=3,
    )
    config.model.levels = 4 if cardinality == 8 else 3
    config.model.fractions = (0.25, 0.25, 0.5) if cardinality == 8 else (0.5, 0.5)
    config.model.per_task_stems = False
    config.selector.widths = (112, 224, 448)  # 3.54M parameters (paper: 3.6M)
    config.selector.stem_kernel = 3
    config.rho = 0.1
    return config
