"""What this process runs on: the device, and whether TensorFlow's CPU kernels use oneDNN.

Benchmarks print both, since they change the timings (TensorFlow leaves oneDNN off by
default on some CPUs, AMD EPYC among them).
"""

from __future__ import annotations

import os
import platform

import tensorflow as tf


def onednn_enabled() -> bool:
    """Whether this TensorFlow process runs its CPU kernels through oneDNN."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def device_description() -> str:
    """The first GPU's name, or the CPU's with its core count."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
