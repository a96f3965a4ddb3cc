"""Compression for Keras 3 models: magnitude pruning (unstructured or 2:4).

The TensorFlow Model Optimization Toolkit only accepts tf_keras (Keras 2) models
(tensorflow/model-optimization#1119), so pruning is built here on Keras 3 itself:
masks on the weights, re-applied after every optimizer step, and a plain Keras model
at the end (no wrapper layers). Importing this package does not import TensorFlow.
"""
