"""The paper's own placement (Sec. 3.2): column A on one device, column B on another.

`distribute.strategy=columns` with two devices (`distribute.devices=gpu:0,gpu:1`, or
`cpu:2`) runs the two-column net as the paper split it over its two GTX 580s: each device
holds column A's or column B's half of the kernels and biases of every layer (`place`:
half of each layer's output maps or units, with their momentum), computes those maps
(`forward`; the training step places each gradient beside its forward op) and updates
them (the fused update kernel runs where its variable is). It is model parallelism with
one replica, run without XLA (an XLA cluster lives on one device); the numbers are those
of the one-device model.

What crosses between the devices, forward (the backward pass sends the gradients of the
same tensors back the other way):
- the image batch, which both columns' conv1 kernels read;
- with `model.lrn_scope="layer"` only: the n // 2 = 2 maps at the column's edge of conv1's
  and conv2's outputs, each way, which the LRN window of the other column spans (with
  "column", the paper recipe's, nothing crosses before conv3);
- pool2's output (B, 13, 13, 128 in the paper's net), each way: conv3 sees both columns;
- pool5's output (B, 6, 6, 128), each way: fc6 sees both columns;
- fc6's and fc7's outputs (B, 2048), each way: fc7 and fc8 see the whole layer (dropout
  is drawn on both devices from the one seed that column A's device steps, two integers);
- fc8's column B half (B, 500) to column A, where the logits and the loss are.
No weight crosses: each half and its momentum are updated on their own device.

For speed, data parallelism (`mirrored`) is the better use of two modern GPUs; this
mode exists to reproduce the paper's layout and to study it.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from alexnet_tf.model import LocalResponseNormalization, rows_or_none


def _halves(n: int) -> list[tuple[int, int]]:
    return [(0, n // 2), (n // 2, n)]


class ColumnWeight(tf.__internal__.tracking.Trackable):
    """A weight of the two-column net (a layer's kernel or bias) as two variables: column
    A's half of its last axis (the layer's output maps or units) on column A's device,
    column B's on column B's. It reads (`value`, `numpy`, as a tensor), assigns and
    checkpoints as the whole weight, so checkpoints are those of the one-device model."""

    def __init__(self, variable, devices: list[str], layer_name: str):
        value = tf.convert_to_tensor(variable)
        self.name, self.dtype, self.trainable = variable.name, variable.dtype, variable.trainable
        self.halves = []
        for d, (lo, hi) in enumerate(_halves(value.shape[-1])):
            with tf.device(devices[d]), keras.name_scope(layer_name):
                half = keras.Variable(
                    value[..., lo:hi], dtype=self.dtype, trainable=self.trainable, name=f"{self.name}_{'ab'[d]}"
                )
            self.halves.append(half)

    @property
    def shape(self) -> tf.TensorShape:
        a, b = (h.shape for h in self.halves)
        return tf.TensorShape([*a[:-1], a[-1] + b[-1]])

    @property
    def value(self) -> tf.Tensor:
        return tf.concat([h.value for h in self.halves], -1)

    def numpy(self):
        return self.value.numpy()

    def assign(self, value) -> None:
        value = tf.convert_to_tensor(value, self.dtype)
        for half, (lo, hi) in zip(self.halves, _halves(value.shape[-1])):
            half.assign(value[..., lo:hi])

    def __tf_tensor__(self, dtype=None, name=None):
        return tf.convert_to_tensor(self.value, dtype=dtype, name=name)

    # checkpoints: the whole weight under the key a variable has
    def _serialize_to_tensors(self):
        return {"VARIABLE_VALUE": self.value}

    def _restore_from_tensors(self, restored_tensors):
        self.assign(restored_tensors["VARIABLE_VALUE"])


def place(model: keras.Model, devices: list[str]) -> None:
    """Puts column A's half of every conv and fc layer's kernel and bias on `devices[0]`
    and column B's on `devices[1]` (`ColumnWeight`), in place of the layer's variables:
    `model.trainable_variables` are then the halves (an optimizer built afterwards keeps
    each half's momentum beside it), `layer.kernel` and `layer.bias` the whole weights,
    and `alexnet_tf.model.model_variables` checkpoints them whole. Call before building the optimizer."""
    _check(model, devices)
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            continue
        kernel = ColumnWeight(layer.kernel, devices, layer.name)
        bias = ColumnWeight(layer.bias, devices, layer.name)
        # Keras keeps a layer's weights in these attributes; the old variables are released
        layer._kernel, layer.bias = kernel, bias
        layer._trainable_variables[:] = [*kernel.halves, *bias.halves]


def _half(weight, d: int) -> tf.Tensor:
    """Column d's half of a weight's last axis: its own variable where `place` put it."""
    if isinstance(weight, ColumnWeight):
        return weight.halves[d]
    lo, hi = _halves(weight.shape[-1])[d]
    return weight[..., lo:hi]


def _conv(layer: keras.layers.Conv2D, inputs: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    """Each device computes its half of the layer's kernel maps. `inputs[d]` is what the
    kernels of column d see: its own column's maps, or for a layer where the columns
    talk (conv1 sees the image, conv3 both columns) the whole input."""
    dtype = layer.compute_dtype
    out = []
    for d in range(2):
        with tf.device(devices[d]):
            # Grouped layers: group d's kernels read column d's maps, (k, k, cin / 2, out / 2).
            kernel = ops.cast(_half(layer.kernel, d), dtype)
            bias = ops.cast(_half(layer.bias, d), dtype)

            def conv(x, kernel=kernel, bias=bias):
                y = tf.nn.conv2d(x, kernel, strides=layer.strides, padding=layer.padding.upper())
                return layer.activation(y + bias)

            shape = (*layer.compute_output_shape(tuple(inputs[d].shape))[1:-1], kernel.shape[-1])
            out.append(rows_or_none(inputs[d], conv, shape, dtype))
    return out


def _dense(layer: keras.layers.Dense, full: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    """Each device computes half the units from the whole input (the columns talk)."""
    dtype = layer.compute_dtype
    out = []
    for d in range(2):
        with tf.device(devices[d]):
            y = tf.matmul(full[d], ops.cast(_half(layer.kernel, d), dtype)) + ops.cast(_half(layer.bias, d), dtype)
            out.append(layer.activation(y))
    return out


def _lrn(layer: LocalResponseNormalization, halves: list[tf.Tensor], devices: list[str]) -> list[tf.Tensor]:
    """Within each column (groups=2: nothing crosses), or over the layer (groups=1: each
    column with the `size // 2` maps beyond its edge that the window reads)."""
    if layer.groups == 2:
        own = LocalResponseNormalization.from_config({**layer.get_config(), "groups": 1})
        return _per_column(own, halves, devices)
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


def _check(model: keras.Model, devices: list[str]) -> None:
    if len(devices) != 2:
        raise ValueError(f"the paper's placement needs two devices, got {devices}")
    if model.get_layer("conv2").groups != 2:
        raise ValueError("the paper's placement needs the two-column net (model.two_columns=True)")


def forward(model: keras.Model, images: tf.Tensor, devices: list[str], training: bool = False) -> tf.Tensor:
    """`model(images, training)` computed column by column on `devices` (two of them).

    `model` is `build_model`'s two-column net (either conv form, placed by `place` or
    not); returns float32 logits.
    """
    _check(model, devices)
    get = model.get_layer
    names = [layer.name for layer in model.layers]

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
        """The whole layer's mask on each device, from one seed: the same units dropped."""
        layer = get(layer_name)
        if not training or layer.rate == 0:
            return _per_column(lambda v: layer(v, training=training), x, devices)
        with tf.device(devices[0]):
            seed = layer.seed_generator.next()  # once per step, as on one device
        return _per_column(lambda v: layer.drop(v, seed), x, devices)

    for fc in ("fc6", "fc7"):
        if inputs_dropped:
            x = dropout(f"dropout{fc[-1]}", x)
        x = _both(_dense(get(fc), x, devices), devices)  # (B, 4096) on each device
        if not inputs_dropped:
            x = dropout(f"dropout{fc[-1]}", x)  # Sec. 4.2: fc6's and fc7's outputs
    cols = _dense(get("fc8"), x, devices)
    with tf.device(devices[0]):
        return get("logits")(tf.concat(cols, -1))
