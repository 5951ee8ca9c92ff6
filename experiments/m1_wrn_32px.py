"""M1 on WRN-32-4 with every task at 32x32 (CIFAR-100, Tiny-ImageNet and STL-10 resized), for
the paper's Fig. 3: images of different tasks compared by their selector distributions.

    python -m den_tf.main --config=experiments/m1_wrn_32px.py --workdir=runs/m1_wrn_32px
    python -m den_tf.analyze --config=experiments/m1_wrn_32px.py --workdir=runs/m1_wrn_32px

The same network as ``m1_wrn`` (7x7 task stems, now all at stride 1): 7.35M parameters,
2.14 GFLOPs per image at the full structure. Expected: ``analysis/fig3_neighbours.png`` shows,
for a query of each task, images of every task with similar selector distributions (the paper
shows no numbers for this setting; not run here, since the real datasets cannot be downloaded
on the machine this project is developed on).
"""

from den_tf.builders import base_config


def get_config():
    config = base_config()
    config.tasks = "cifar100,tiny_imagenet_32px,stl10_32px"
    config.task_order = "tiny_imagenet_32px,cifar100,stl10_32px"
    return config
