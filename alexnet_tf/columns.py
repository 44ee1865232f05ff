"""The paper's own placement (Sec. 3.2): column A on one device, column B on another.

`distribute.strategy=columns` with two devices (`distribute.devices=gpu:0,gpu:1`, or
`cpu:2`) runs the forward and backward pass of the two-column net as the paper split it
over its two GTX 580s: each device holds half of the kernel maps of every layer and
computes them; the devices exchange activations only where the paper's columns talk
(the input to conv3 and to fc6, fc7 and fc8), plus the two maps at the column edge that
the LRN window of Sec. 3.3 spans in `model.LocalResponseNormalization` (so the numbers
are those of the one-device model). It is model parallelism with one replica, run
without XLA (an XLA cluster lives on one device). The variables stay where Keras puts
them (the first device); each device reads its column's slice of every kernel.

For speed, data parallelism (`mirrored`) is the better use of two modern GPUs; this
mode exists to reproduce the paper's layout and to study it.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from alexnet_tf.model import LocalResponseNormalization


def _halves(n: int) -> list[tuple[int, int]]:
    return [(0, n // 2), (n // 2, n)]


def _conv(layer: keras.layers.Conv2D, inputs: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    """Each device computes its half of the layer's kernel maps. `inputs[d]` is what the
    kernels of column d see: its own column's maps, or for a layer where the columns
    talk (conv1 sees the image, conv3 both columns) the whole input."""
    dtype = layer.compute_dtype
    out = []
    for d, (lo, hi) in enumerate(_halves(layer.filters)):
        with tf.device(devices[d]):
            x = inputs[d]
            # Grouped layers: group d's kernels read column d's maps, (k, k, cin / 2, out / 2).
            kernel = ops.cast(layer.kernel[..., lo:hi], dtype)
            y = tf.nn.conv2d(x, kernel, strides=layer.strides, padding=layer.padding.upper())
            y = y + ops.cast(layer.bias[lo:hi], dtype)
            out.append(layer.activation(y))
    return out


def _dense(layer: keras.layers.Dense, full: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    """Each device computes half the units from the whole input (the columns talk)."""
    dtype = layer.compute_dtype
    out = []
    for d, (lo, hi) in enumerate(_halves(layer.units)):
        with tf.device(devices[d]):
            y = tf.matmul(full[d], ops.cast(layer.kernel[:, lo:hi], dtype)) + ops.cast(layer.bias[lo:hi], dtype)
            out.append(layer.activation(y))
    return out


def _lrn(layer: LocalResponseNormalization, halves: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    """Per column, with the `size // 2` maps beyond the column edge that the window reads."""
    r = layer.size // 2
    a, b = halves
    with tf.device(devices[0]):
        ya = layer(tf.concat([a, b[..., :r]], -1))[..., : a.shape[-1]]
    with tf.device(devices[1]):
        yb = layer(tf.concat([a[..., -r:], b], -1))[..., r:]
    return [ya, yb]


def _per_column(layer, halves: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    out = []
    for d, x in enumerate(halves):
        with tf.device(devices[d]):
            out.append(layer(x))
    return out


def _both(halves: list[tf.Tensor], devices: list[str], flatten: bool = False) -> list[tf.Tensor]:
    """The whole layer on each device: where the columns talk."""
    out = []
    for d in range(2):
        with tf.device(devices[d]):
            x = tf.concat(halves, -1)
            out.append(tf.reshape(x, [tf.shape(x)[0], -1]) if flatten else x)
    return out


def forward(model: keras.Model, images: tf.Tensor, devices: list[str], training: bool = False) -> tf.Tensor:
    """`model(images, training)` computed column by column on `devices` (two of them).

    `model` is `build_model`'s two-column net (either conv form); returns float32 logits.
    """
    if len(devices) != 2:
        raise ValueError(f"the paper's placement needs two devices, got {devices}")
    get = model.get_layer
    names = [layer.name for layer in model.layers]
    if get("conv2").groups != 2:
        raise ValueError("the paper's placement needs the two-column net (model.two_columns=True)")

    cols = _conv(get("conv1"), [images, images], devices)  # (B, 55, 55, 48) each
    for i, conv_name in ((1, None), (2, "conv2")):
        if conv_name:
            cols = _conv(get(conv_name), cols, devices)
        if f"lrn{i}" in names:
            cols = _lrn(get(f"lrn{i}"), cols, devices)
        cols = _per_column(get(f"pool{i}"), cols, devices)
    cols = _conv(get("conv3"), _both(cols, devices), devices)  # the columns talk
    cols = _conv(get("conv4"), cols, devices)
    cols = _conv(get("conv5"), cols, devices)
    cols = _per_column(get("pool5"), cols, devices)  # (B, 6, 6, 128) each
    x = _both(cols, devices, flatten=True)  # (B, 9216) on each device, Fig. 2's order
    inputs_dropped = names.index("dropout6") < names.index("fc6")  # model.dropout_placement

    def dropout(layer_name, x):
        with tf.device(devices[0]):
            kept = get(layer_name)(x[0], training=training)  # one mask for the whole layer
        return [kept, kept]

    for fc in ("fc6", "fc7"):
        if inputs_dropped:
            x = dropout(f"dropout{fc[-1]}", x)
        x = _both(_dense(get(fc), x, devices), devices)  # (B, 4096) on each device
        if not inputs_dropped:
            x = dropout(f"dropout{fc[-1]}", x)  # Sec. 4.2: fc6's and fc7's outputs
    cols = _dense(get("fc8"), x, devices)
    with tf.device(devices[0]):
        return get("logits")(tf.concat(cols, -1))
