"""Running a net on a prepared batch: the one prediction function that evaluation (one
net or an ensemble), the compiled eval step, export and the figures use.

A batch (see `alexnet_tf.data.batch`) holds uint8 crops with their offsets, flip bits and
colour-noise coefficients; `predict` applies the net's preprocessing (the mean image of
its training set, Sec. 2; flips; `data.input_scale`) and the net, and gives per image

    probabilities  the softmax over the classes (B, classes), averaged over each image's
                   views: Sec. 4.1's test ("averaging the predictions of the softmax
                   layer on the ten patches")
    logits         fc8's outputs (B * views, classes), one row per view
    features       fc7's activations after its ReLU (B, 4096), averaged over the views:
                   the representation of Sec. 6.1 and Fig. 4
"""

from __future__ import annotations

from typing import Literal

import keras
import tensorflow as tf

from alexnet_tf.config import DataConfig
from alexnet_tf.data import device_preprocess

Output = Literal["probabilities", "logits", "features"]
OUTPUTS = ("probabilities", "logits", "features")
FEATURE_LAYER = "fc7"


def features_model(model: keras.Model, layer: str = FEATURE_LAYER) -> keras.Model:
    """The same weights, ending at `layer`'s output (fc7: after its ReLU, before dropout)."""
    return keras.Model(model.inputs, model.get_layer(layer).output, name=f"{model.name}_{layer}")


def average_views(values: tf.Tensor, views: int) -> tf.Tensor:
    """Rows (B * views, ...) averaged over each image's consecutive views: (B, ...)."""
    if views == 1:
        return values
    return tf.reduce_mean(tf.reshape(values, [-1, views, *values.shape[1:]]), axis=1)


def predict(
    call,
    batch: dict,
    stats: dict,
    data: DataConfig,
    views: int = 1,
    output: Output = "probabilities",
    dtype=tf.float32,
    crop_at: tuple[int, int] | None = None,
) -> tf.Tensor:
    """`call(images, training=False)` (the model, or its `features_model` for
    output="features") on a batch: the net's preprocessing with `stats` (tensors, see
    `Stats.tensors`) and `data` (the net's data config; `crop_at`: see
    `device_preprocess`), then the output as the module docstring says. Traceable: it runs
    inside tf.function and XLA."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    images = device_preprocess(batch, stats, data, dtype, crop_at)  # (B * views, c, c, 3)
    out = tf.cast(call(images, training=False), tf.float32)
    if output == "logits":
        return out
    if output == "probabilities":
        out = tf.nn.softmax(out)
    return average_views(out, views)
