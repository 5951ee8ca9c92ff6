"""The demo with the straight-through selector gradient and a selector twice as wide.

    python -m den_tf.sweep --config=experiments/demo_straight_through.py \\
        --workdir=runs/demo_straight_through --seeds=10

Everything as ``experiments/demo.py`` except the selector: widths 16/32/64 and a 16-channel
stem (the demo's: 8/16/32, 8), and its gradient (``train.selector.gradient``, not in the
paper): each image's one sampled structure runs on the masked path as straight-through level
weights, and the cost R is differentiated through the frozen estimator.
Expected result (2026-12-01, 2-core AMD EPYC with AVX-512, oneDNN on, 10 seeds; README,
"Why the selector adds little"): DEN 89.8 +- 0.4 % average accuracy at 54 % of the full
structure's FLOPs, equal to the full structure (0.0 +- 0.2 points); 1.04 +- 0.13 points above
random structures with the selector's level frequencies (the demo: 1.1 +- 0.5); the hardest
fifth of the images gets 47-85 % more FLOPs than the easiest (rank correlations 0.7-0.8);
about 4 minutes of training a seed (the demo: 5.5-6).
"""

import importlib.util
import pathlib

_DEMO = pathlib.Path(__file__).with_name("demo.py")


def get_config():
    spec = importlib.util.spec_from_file_location("demo", _DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = demo.get_config()
    config.selector.widths = (16, 32, 64)
    config.selector.stem_channels = 16
    config.train.selector.gradient = "straight_through"
    config.train.selector.samples = 1
    return config
