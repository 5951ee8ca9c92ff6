"""den_tf: Deep Elastic Networks with model selection for multi-task learning."""

import os

# TensorFlow's C++ warnings (e.g. the graph optimizer's cost estimates for convolutions on
# dynamically partitioned batches) drown the training log; set the variable to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
