"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in TensorFlow and Keras."""

__version__ = "0.1.0"
