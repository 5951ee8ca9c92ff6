"""M1 on ResNet-42: CIFAR-100 (32), Tiny-ImageNet (64) and STL-10 (96) in one network.

Model figures (``python -m den_tf.main --config=experiments/m1_resnet.py --mode=summary``):
ResNet-42 trunk (4 stages x 5 basic blocks, widths 64/128/256/512) with per-task 7x7 stems
to 64 channels, 20 blocks x 4 levels; 29.81M parameters under the paper's convention (paper:
29.8M), 2.92 GFLOPs per image at the full structure (paper: 2.91G).
Paper result (Table 2a, DEN rho=1): 74.30 / 56.74 / 83.90 % at 1.35 GFLOPs.
"""

from den_tf.experiment import base_config


def get_config():
    config = base_config()
    config.model.backbone = "resnet"
    config.model.backbone_args.depth = 42
    config.model.backbone_args.widths = (64, 128, 256, 512)
    config.model.backbone_args.stem_channels = 64
    config.selector.widths = (64, 128, 256)
    return config
