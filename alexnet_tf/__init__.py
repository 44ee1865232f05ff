"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in TensorFlow and Keras."""

import sys

__version__ = "0.1.0"

if sys.argv[:1] == ["-m"]:  # `python -m alexnet_tf.<command>`, before TensorFlow loads
    from alexnet_tf import console

    console.quiet()
