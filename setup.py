"""den_tf: Deep Elastic Networks with model selection for multi-task learning (TF2/Keras 3)."""

import setuptools

setuptools.setup(
    name="den_tf",
    version="0.1.0",
    description=(
        "Deep Elastic Networks with Model Selection for Multi-Task Learning "
        "(Ahn, Kim, Oh, ICCV 2019) in TensorFlow 2 / Keras 3"
    ),
    packages=setuptools.find_packages(include=["den_tf", "den_tf.*"]),
    package_data={"den_tf": ["datasets/*.txt"]},
    python_requires=">=3.10",
    install_requires=[
        # The plain wheel runs on CPU and GPU; CUDA libraries come only with [cuda].
        "tensorflow==2.21.*",
        "tensorflow-datasets>=4.9",
        "tensorboard>=2.21",  # no longer pulled in by TensorFlow; tf.summary needs it
        "importlib_resources",  # tfds.load imports it
        "numpy",
        "absl-py",
        "ml-collections",
        "matplotlib",
        "pillow",
    ],
    extras_require={
        "cuda": ["tensorflow[and-cuda]==2.21.*"],
        "test": ["pytest", "ruff"],
    },
)
