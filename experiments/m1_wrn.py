"""M1 on WRN-32-4: CIFAR-100 (32), Tiny-ImageNet (64) and STL-10 (96) in one network.

    make m1   # = python -m den_tf.main --config=experiments/m1_wrn.py \
              #     --workdir=runs/m1_wrn/den_rho1 --config.method=den --config.rho=1

Model figures (``python -m den_tf.main --config=experiments/m1_wrn.py --mode=summary``):
WRN-32-4 trunk with per-task 7x7 stems, 15 blocks x 4 levels (groups 1/4, 1/4, 1/2);
7.352M parameters under the paper's convention (paper: 7.35M), 2.138 GFLOPs per image at the
full structure (paper: 2.13G); selector 0.384M parameters, 0.111 GFLOPs (paper: 0.37M, 0.11G).
Expected: the paper's result (Table 2b, DEN rho=1), 75.43 / 58.17 / 87.54 % at 1.13 GFLOPs;
not run here: the real datasets cannot be downloaded on the machine this project is
developed on, so no result of this config has been measured.
"""

from den_tf.builders import base_config


def get_config():
    config = base_config()
    # NestedNet and PackNet*: Tiny-ImageNet at the lowest level, STL-10 at the highest (4.2).
    config.task_order = "tiny_imagenet,cifar100,stl10"
    return config
