"""`python -m alexnet_tf.bench`: see alexnet_tf/bench/__init__.py."""

import sys

from alexnet_tf import console
from alexnet_tf.bench import main

console.quiet()  # before main's parser imports the benchmarks, which load TensorFlow
sys.exit(main())
