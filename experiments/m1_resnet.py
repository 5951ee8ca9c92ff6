"""M1 on ResNet-42: CIFAR-100 (32), Tiny-ImageNet (64) and STL-10 (96) in one network.

    python -m den_tf.main --config=experiments/m1_resnet.py --workdir=runs/m1_resnet/den_rho1 \
        --config.method=den --config.rho=1   # the run `make table2` reports (and trains)

Model figures (``--mode=summary``): ResNet-42 trunk (4 stages x 5 basic blocks, widths
64/128/256/512), 20 blocks x 4 levels, entered through per-task 3x3 stems to 64 channels with
stride input/32 (1, 2, 3): 29.79M parameters under the paper's convention (paper: 29.8M) and
2.910 GFLOPs per image at the full structure (paper: 2.91G): 2.9067G in the blocks' convolutions,
3.5M in the stem, 0.1M in the head (``macs_full_by_part`` of the summary). The paper's figure
pins the stem down: the authors' 7x7 stem to 64 channels would add 15.7M (2.926G, 0.55% over),
and a 7x7 stem to 16 channels would shrink the first block's convolution (2.855G).
Expected: the paper's result (Table 2a, DEN rho=1), 74.30 / 56.74 / 83.90 % at 1.35 GFLOPs;
not run here: the real datasets cannot be downloaded on the machine this project is
developed on, so no result of this config has been measured.
"""

from den_tf.builders import base_config


def get_config():
    config = base_config()
    config.model.backbone = "resnet"
    config.task_order = "tiny_imagenet,cifar100,stl10"  # NestedNet, PackNet* (paper 4.2)
    config.model.backbone_args.depth = 42
    config.model.backbone_args.widths = (64, 128, 256, 512)
    config.model.backbone_args.stem_channels = 64
    config.model.backbone_args.stem_kernel = 3
    # 1.46M parameters, 0.162 GFLOPs (paper: 1.49M, 0.15G): wide stages on a 16x16 trunk.
    config.selector.widths = (132, 132, 264)
    config.selector.trunk_size = 16
    return config
