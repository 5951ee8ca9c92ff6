"""M2: 10 five-way tasks from Mini-ImageNet on SimpleConvNet; argument = input size (84, 224).

    make m2   # = python -m den_tf.main --config=experiments/m2.py:84 \
              #     --workdir=runs/m2_84/den_rho1 --config.method=den --config.rho=1

``python -m den_tf.main --config=experiments/m2.py:84 --mode=summary``: 4 plain blocks x 2
levels (the lowest keeps half the channels), no stem, shared FC 128, 10 heads of 5 classes:
0.137M parameters, 27.44M multiply-adds per image at 84x84 (paper, Table 3: 0.14M, 27.4M).
At 224x224 the same network costs 195.9M multiply-adds (the paper's 224 figures cannot come
from this network; README, Model figures).
Expected: the paper's result (Table 3), DEN_s 60.78 % (rho=1) at 84x84, DEN 63.20 % (rho=1) at
224x224; not run here: the real datasets cannot be downloaded on the machine this project is
developed on, so no result of this config has been measured.
"""

from den_tf.builders import base_config
from den_tf.tasks import MINI_IMAGENET_SIZES, MINI_IMAGENET_TASKS


def get_config(size: str = "84"):
    size = int(size)
    if size not in MINI_IMAGENET_SIZES:
        raise ValueError(f"m2.py: input size must be one of {MINI_IMAGENET_SIZES}, got {size}")
    config = base_config()
    config.scenario = "M2"
    config.tasks = ",".join(f"mini_imagenet{size}_task{k}" for k in range(MINI_IMAGENET_TASKS))
    config.model.backbone = "simple_convnet"
    config.model.backbone_args = dict(channels=32, num_blocks=4, hidden_units=(128,))
    config.model.levels = 2
    config.model.fractions = (0.5, 0.5)
    config.model.trunk_size = size
    config.model.per_task_stems = False
    # The baseline: one network with a head per task (Table 3's caption).
    config.separate_networks = False
    # The selector looks at a 4x (84) or 8x (224) downsampled image.
    config.selector.trunk_size = 21 if size == 84 else 28
    # 0.41M parameters (paper: 0.4M); one logits layer per task gives it the task id (the
    # ten tasks share one stem).
    config.selector.widths = (48, 72, 144)
    config.selector.stem_channels = 32
    config.selector.per_task_heads = True
    return config
