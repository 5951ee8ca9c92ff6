"""M3: hierarchical classification of CIFAR-100, coarse (20) and fine (100) labels, WRN-32-4.

    make m3   # = python -m den_tf.main --config=experiments/m3.py \
              #     --workdir=runs/m3/den_rho1 --config.method=den --config.rho=1

``python -m den_tf.main --config=experiments/m3.py --mode=summary``: both tasks read the same
32x32 image through one 3x3 stem; 7.35M parameters and 2.13 GFLOPs at the full structure
(paper, Table 4: 7.35M; its 2.91G is ResNet-42's figure: README, Model figures).
Expected: the paper's result (Table 4, DEN rho=1), coarse 84.87 %, fine 75.93 % at 1.37
GFLOPs; not run here: the real datasets cannot be downloaded on the machine this project is
developed on, so no result of this config has been measured.
"""

from den_tf.builders import base_config


def get_config():
    config = base_config()
    config.scenario = "M3"
    config.tasks = "cifar100_coarse,cifar100"
    # NestedNet and PackNet*: coarse at the lower level, fine at the higher (paper 4.3).
    config.task_order = "cifar100_coarse,cifar100"
    config.model.backbone_args.stem_kernel = 3
    config.model.per_task_stems = False
    config.selector.stem_kernel = 3
    return config
