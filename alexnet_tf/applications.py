"""Trained nets for notebooks and scripts, in the style of Keras Applications.

    import alexnet_tf

    net = alexnet_tf.load_net("runs/paper")                  # or "bvlc_alexnet.caffemodel"
    probs = net.predict_images(images)                         # pixels 0..255, encoded bytes or paths
    feats = net.predict_images(images, output="features")      # fc7, Sec. 6.1 / Fig. 4

    model = alexnet_tf.AlexNet(weights="runs/paper")                       # logits
    base = alexnet_tf.AlexNet(weights="runs/paper", include_top=False)     # fc7 features

`AlexNet` gives the Keras model alone: its inputs are crops prepared as the net was
trained (`net.config.data`: mean image subtracted, ...), which `TrainedNet.predict` and
`predict_images` do for you.
"""

from __future__ import annotations

import os

import keras

from alexnet_tf import paths
from alexnet_tf.config import ModelConfig
from alexnet_tf.inference import features_model
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet


def load_net(path: str | os.PathLike, best: bool = False) -> TrainedNet:
    """A trained net: a run folder (its newest readable checkpoint, or with `best` the
    one with the lowest validation error), one checkpoint in one, or Caffe's
    bvlc_alexnet .caffemodel (read without Caffe, see `alexnet_tf.caffe`); relative to the
    working directory or absolute."""
    path = paths.resolve(path)
    if path.endswith(".caffemodel"):
        from alexnet_tf import caffe

        return caffe.load_net(path)
    from alexnet_tf.runs import load_net as load_run_net

    return load_run_net(path, best)


def AlexNet(  # noqa: N802 (Keras Applications' naming)
    weights: str | None = None, include_top: bool = True, config: ModelConfig | None = None, seed: int = 0
) -> keras.Model:
    """The paper's net as a Keras model: untrained (`weights=None`, built from `config`,
    the paper's by default, with `seed`), or with the weights of a run folder, checkpoint
    or .caffemodel. `include_top=False` ends it at fc7's activations (4096 per image)."""
    if weights is None:
        model = build_model(config or ModelConfig(), seed=seed)
    else:
        if config is not None:
            raise ValueError("give either weights (the net comes with its own config) or config, not both")
        model = load_net(weights).model
    return model if include_top else features_model(model)
