"""`python -m alexnet_tf.bench`: see alexnet_tf/bench/__init__.py."""

from alexnet_tf import cli
from alexnet_tf.bench import main  # loads no TensorFlow: cli.program quiets it first

cli.program(main)
