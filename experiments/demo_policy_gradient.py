"""The demo with the paper's policy-gradient selector step (the demo until 2026-12-01).

    python -m den_tf.sweep --config=experiments/demo_policy_gradient.py \\
        --workdir=runs/demo_policy_gradient --seeds=5

Everything as ``experiments/demo.py`` except the selector: Eq. 7's policy gradient over
|Z| = 8 structures sampled per image, with the leave-one-out baseline (a step's gradient is
about 18% signal against 2% at |Z| = 4), and a selector half as wide (widths 8/16/32, an
8-channel stem).
Expected result (2026-11-30, 2-core AMD EPYC, oneDNN off, 5 seeds): DEN 89.5 +- 0.6 % average
accuracy at 46 % of the full structure's 35.4 MFLOPs; full structure 89.9 %; random structures
80.2 % (uniform) and 88.5 % (the selector's level frequencies, same FLOPs: DEN 1.0 +- 0.4
points above); the hardest fifth of the images gets 46-68 % more FLOPs than the easiest (rank
correlations 0.8); one seed 10.5-12 minutes. On a 2-core AMD EPYC with AVX-512 (oneDNN on by
default), 10 seeds: DEN 89.4 +- 0.4 % at 47 %, full structure 89.9 %, 1.1 +- 0.5 points above
the matched random control (1.4 +- 0.6 above the selector's own structures shuffled among the
images), spreads 44-70 %; 6-6.5 minutes a seed. Single seeds differ between CPUs (README, Demo).
"""

import importlib.util
import pathlib

_DEMO = pathlib.Path(__file__).with_name("demo.py")


def get_config():
    spec = importlib.util.spec_from_file_location("demo", _DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = demo.get_config()
    config.selector.widths = (8, 16, 32)
    config.selector.stem_channels = 8
    config.train.selector.gradient = "reinforce"
    config.train.selector.samples = 8
    return config
