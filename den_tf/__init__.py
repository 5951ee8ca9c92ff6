"""den_tf: Deep Elastic Networks with model selection for multi-task learning."""
