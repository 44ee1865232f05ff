"""`python -m alexnet_tf.bench`: see alexnet_tf/bench/__init__.py."""

import sys

from alexnet_tf.bench import main

sys.exit(main())
