"""Test setup: two logical CPU devices, so MirroredStrategy tests run on a CPU-only host.

This must happen before anything starts the TensorFlow runtime.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from alexnet_tf.distribute import configure_logical_cpus  # noqa: E402

configure_logical_cpus(2)
del tf
