"""Prepares datasets for the pipelines, downloading where the dataset allows it.

    python -m den_tf.datasets.prepare --datasets=cifar100,tiny_imagenet \\
        [--manual_dir=data/manual] [--data_dir=data/tfds]

``mini_imagenet`` alone means both of its configs (84 and 224). CIFAR-10/100, STL-10 and
Tiny-ImageNet download by themselves; Tiny-ImageNet also builds from its zip or folder in the
manual directory; Mini-ImageNet needs ILSVRC-2012 in the manual directory.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from den_tf.datasets import sources

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags; called only when run, so that importing this module (tests,
    other tools) never collides with flags of the same name defined elsewhere."""
    flags.DEFINE_list(
        "datasets", None, f"Datasets to prepare, from: {', '.join(sources.TFDS_DATASETS)}."
    )
    flags.DEFINE_string(
        "data_dir", sources.DATA_DIR, "TFDS data directory, where every config looks by default."
    )
    flags.DEFINE_string(
        "manual_dir", sources.MANUAL_DIR, "Folder with manually downloaded data (data/README.md)."
    )
    flags.mark_flag_as_required("datasets")


def expand(names: list[str]) -> list[str]:
    """Dataset names with configs: a bare name of a dataset with configs means all of them."""
    expanded = []
    for name in names:
        configs = [d for d in sources.TFDS_DATASETS if d.startswith(f"{name}/")]
        expanded += configs or [name]
    for name in expanded:
        sources.check_dataset(name)
    return expanded


def prepare(names: list[str], *, data_dir: str | None, manual_dir: str | None) -> None:
    """Prepares the datasets ``names`` (see ``expand``); prints a JSON line for each."""
    for name in expand(names):
        start = time.time()
        builder = sources.prepare_dataset(name, data_dir=data_dir, manual_dir=manual_dir)
        splits = {split: info.num_examples for split, info in builder.info.splits.items()}
        seconds = round(time.time() - start, 1)
        print(
            json.dumps(
                {
                    "dataset": name,
                    "dir": str(builder.data_dir),
                    "splits": splits,
                    "seconds": seconds,
                }
            )
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    prepare(FLAGS.datasets, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)
