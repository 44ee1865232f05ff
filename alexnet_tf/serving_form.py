"""The net as the export runs it: the trained model's function, in fewer and larger ops.

TF Serving runs a SavedModel without XLA, so each op is one kernel call with its own fixed
cost, and grappler's remapper makes a convolution, its bias and its ReLU one oneDNN call
(`_MklNativeFusedConv2D`) only where they follow each other. The training forms do not
give it that: a grouped layer there is a split of its input and of its kernel, two
convolutions, a concat, then the bias and the ReLU over the whole map. `serving_model`
builds the same net from the trained model's layers and weights so that:

- the two columns of Sec. 3.2 run as two chains of convolutions, each with its own bias
  and activation: conv2 splits its input and joins its columns' outputs (LRN2 spans both);
  conv3, which sees both columns, writes each column's half with its own convolution;
  conv4 and conv5 stay in their column, and the columns join before pool5. No kernel is
  split per call, nothing is split or joined between conv3 and conv5, and the columns
  may run side by side;
- `data.input_scale` and Caffe's BGR channel order (`data.channel_order`) are folded into
  conv1's kernel, and the test-time factor of the paper's dropout (Sec. 4.2: "multiply
  their outputs by 0.5") into the kernel of the layer that reads its output; the flatten
  before fc6 is one reshape;
- fc6 to fc8 multiply their kernel by the batch rather than the batch by their kernel
  (`KernelFirstDense`), the order in which oneDNN reads a large kernel faster;
- each LRN and max-pooling takes the kernel that suits its size: oneDNN's hand each call
  to the thread pool and wait for it (tens of microseconds with two threads), which pays
  on Fig. 2's large maps and not on small ones, where TensorFlow's own kernels run on the
  calling thread (`ServingLRN`, `EigenMaxPooling2D`).

The numbers are the trained model's to float rounding (tests/test_serving_form.py checks
them against it and against Fig. 2's net computed in NumPy).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from alexnet_tf.config import DataConfig
from alexnet_tf.model import Dropout as PaperDropout
from alexnet_tf.model import LocalResponseNormalization

FLOAT32 = "float32"  # the export computes in float32, whatever policy trained the net


def serving_data(data: DataConfig) -> DataConfig:
    """The preprocessing that `serving_model`'s net expects: `data` less what conv1 took in
    (the input scale and the channel order)."""
    return dataclasses.replace(data, input_scale=1.0, channel_order="rgb")


def serving_model(model: keras.Model, data: DataConfig) -> keras.Model:
    """`model` (any conv form, trained with `data`'s preprocessing) rebuilt as the module
    docstring says, with its weights; it takes the images that `serving_data(data)`
    prepares and gives the same logits. A model that is already in this form is returned
    as it is."""
    if is_serving_model(model):
        return model
    chain = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    inputs = keras.Input(model.input_shape[1:], dtype=FLOAT32, name=model.inputs[0].name)
    # a batch of no rows once for the whole net, where the training forms guard each
    # convolution (`model.rows_or_none`): here that would be ~120 more ops a call
    x, columns = AtLeastOneRow(name="at_least_one_row")(inputs), None  # columns: the columns' maps while apart
    first = True
    scale = 1.0  # what the next layer with a kernel multiplies its input by
    for i, layer in enumerate(chain):
        after = chain[i + 1] if i + 1 < len(chain) else None
        if isinstance(layer, layers.Conv2D):  # also SplitConv2D
            kernel = np.asarray(layer.kernel.numpy(), np.float32) * scale
            if first:
                kernel = kernel * data.input_scale
                if data.channel_order == "bgr":
                    kernel = kernel[:, :, ::-1, :]  # conv1 reads RGB and weighs it as BGR
            groups = layer.groups
            out_columns = after.groups if isinstance(after, layers.Conv2D) and after.groups > 1 else 1
            x, columns = _conv_columns(layer, kernel, x, columns, groups, out_columns)
            scale, first = 1.0, False
        elif isinstance(layer, layers.Dense):
            kernel = np.asarray(layer.kernel.numpy(), np.float32) * scale
            config = layer.get_config()
            fc = KernelFirstDense(config["units"], config["activation"], name=layer.name, dtype=FLOAT32)
            x = fc(x)
            fc.set_weights([np.ascontiguousarray(kernel.T), np.asarray(layer.bias.numpy(), np.float32)])
            scale = 1.0
        elif isinstance(layer, PaperDropout):
            scale *= (1.0 - layer.rate) if layer.form == "paper" else 1.0  # Sec. 4.2, at test
        elif isinstance(layer, layers.Dropout):
            pass  # inverted dropout: the identity at test
        elif isinstance(layer, layers.Flatten):
            x = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        elif isinstance(layer, layers.Activation) and layer.get_config()["activation"] == "linear":
            pass  # the float32 logits of a mixed-precision net: the identity here
        elif isinstance(layer, LocalResponseNormalization):
            x = ServingLRN.from_config({**layer.get_config(), "dtype": FLOAT32})(x)
        elif isinstance(layer, layers.MaxPooling2D):
            small = not _large(x) and layer.data_format == "channels_last"
            pool = EigenMaxPooling2D if small else layers.MaxPooling2D
            x = pool.from_config({**layer.get_config(), "dtype": FLOAT32})(x)
        else:
            raise ValueError(f"serving_model does not know layer {layer.name!r} ({type(layer).__name__})")
    if columns is not None:
        raise ValueError("the net ends while its columns run apart")
    serving = keras.Model(inputs, FirstRows(name="first_rows")(x, inputs), name=model.name)
    serving.serving_form = True
    return serving


def multiply_adds(model: keras.Model) -> int:
    """The multiply-adds of one image through `model`'s convolutions and fully connected
    layers (each output value: one per weight that it reads), in any of the net's forms."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):  # also SplitConv2D and the columns' convolutions
            kh, kw, cin, cout = layer.kernel.shape  # cin: the inputs of one group
            total += int(np.prod(layer.output.shape[1:-1])) * kh * kw * cin * cout
        elif isinstance(layer, (layers.Dense, KernelFirstDense)):
            total += int(np.prod(layer.kernel.shape))
    return total


def is_serving_model(model: keras.Model) -> bool:
    """Whether `model` was made by `serving_model`."""
    return bool(getattr(model, "serving_form", False))


@keras.saving.register_keras_serializable(package="alexnet_tf")
class AtLeastOneRow(layers.Layer):
    """The batch, or one row of zeros for a batch of none: TensorFlow's oneDNN Conv2D on a
    CPU returns its input for a batch of no rows (TF 2.21). `FirstRows` drops it again."""

    def call(self, x):
        return tf.cond(tf.shape(x)[0] > 0, lambda: x, lambda: tf.zeros((1, *x.shape[1:]), x.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="alexnet_tf")
class FirstRows(layers.Layer):
    """The first rows of `y`, as many as `like` has."""

    def call(self, y, like):
        return y[: tf.shape(like)[0]]

    def compute_output_shape(self, y_shape, like_shape):
        return y_shape


# Per image, the size of a map above which oneDNN's kernels are worth their fixed cost:
# each call hands its work to the thread pool and waits (20-70 us with two threads), where
# TensorFlow's own kernels run a small op on the calling thread. Fig. 2's maps at 227 px
# (conv1's 290,400 and conv2's 186,624 values) are above it; the quickstart's are far below.
LARGE_MAP = 100_000


def _large(x) -> bool:
    return int(np.prod(x.shape[1:])) >= LARGE_MAP


@keras.saving.register_keras_serializable(package="alexnet_tf")
class EigenMaxPooling2D(layers.MaxPooling2D):
    """MaxPooling2D computed by TensorFlow's own kernel (MaxPoolV2, which oneDNN does not
    take over): the same maxima, without oneDNN's fixed cost per call on small maps."""

    def call(self, inputs):
        size, strides = (1, *self.pool_size, 1), (1, *self.strides, 1)
        return tf.raw_ops.MaxPoolV2(input=inputs, ksize=size, strides=strides, padding=self.padding.upper())


@keras.saving.register_keras_serializable(package="alexnet_tf")
class ServingLRN(LocalResponseNormalization):
    """Sec. 3.3's normalisation (`LocalResponseNormalization`'s numbers) by the work of
    the call: on at least `LARGE` values the window sums as one matmul of the squares by
    the band matrix (alpha' in it), then a few elementwise ops that use both cores well;
    below it TensorFlow's own LRN kernel, one op that runs on the calling thread."""

    LARGE = 1_000_000  # values per call; e.g. conv1's maps of 4 images at 227 px

    def call(self, x):
        x = tf.cast(x, tf.float32)
        c, r, g = x.shape[-1], self.size // 2, self.groups
        i = np.arange(c)
        # the window stops at the edge of a map's group (`model.lrn_scope`: a column's maps)
        band = (np.abs(i[:, None] - i[None, :]) <= r) & ((i[:, None] * g) // c == (i[None, :] * g) // c)
        band = band.astype(np.float32) * np.float32(self.scaled_alpha)

        def banded():
            # (B, H, W, C) @ (C, C): BatchMatMulV2 broadcasts the band, no reshape
            return x * self._inverse_power(tf.matmul(tf.square(x), band) + self.k)

        def native():
            if g == 1:
                return tf.nn.local_response_normalization(x, r, self.k, self.scaled_alpha, self.beta)
            # each group's maps as a position of their own, (B, H, W * g, C / g), so that
            # TensorFlow's window, which stops at the last axis' ends, stops at the group's
            shape = tf.shape(x)
            grouped = tf.reshape(x, [shape[0], shape[1], shape[2] * g, c // g])
            y = tf.nn.local_response_normalization(grouped, r, self.k, self.scaled_alpha, self.beta)
            return tf.reshape(y, shape)

        return tf.cond(tf.size(x, out_type=tf.int64) >= self.LARGE, banded, native)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class KernelFirstDense(layers.Layer):
    """A fully connected layer (Dense's numbers) that multiplies its kernel, stored
    (units, inputs), by the batch, (units, inputs) @ (inputs, B), and transposes the
    (units, B) product back: oneDNN's matmul reads a large kernel faster as the left
    factor than as the right one of (B, inputs) @ (inputs, units), which is what fc6-fc8
    spend their time on (their kernels are read once per call). 2-core Xeon, float32, one
    9216 x 4096 layer (fc6): 18.7 against 27.2 ms at batch 32, 5.9-6.3 against 6.5-6.9 ms
    at batch 1. The bias and activation follow as their own ops."""

    def __init__(self, units: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.units, input_shape[-1]), initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        y = tf.transpose(tf.matmul(self.kernel, x, transpose_b=True))  # (B, units)
        return self.activation(tf.nn.bias_add(y, self.bias))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": keras.activations.serialize(self.activation)}


def _conv_columns(layer, kernel: np.ndarray, x, columns, groups: int, out_columns: int):
    """`layer` (groups `groups`) as `out_columns` (or `groups`) plain convolutions with
    bias and activation each. Returns (x, None) when their outputs are joined into one
    map, or (None, columns) when the next convolution (grouped into `out_columns`) reads
    them column by column."""
    bias = np.zeros(kernel.shape[-1], np.float32) if layer.bias is None else np.asarray(layer.bias.numpy(), np.float32)
    n = max(groups, out_columns)
    if groups > 1 and out_columns > 1 and groups != out_columns:
        raise ValueError(f"{layer.name}: {groups} groups feeding {out_columns} groups")
    if groups > 1:
        ins = columns if columns is not None else ops.split(x, groups, axis=-1)
    else:
        ins = [x if columns is None else ops.concatenate(columns, axis=-1)] * n
    config = layer.get_config()
    width = kernel.shape[-1] // n
    outs = []
    for i in range(n):
        conv = layers.Conv2D(
            width,
            config["kernel_size"],
            strides=config["strides"],
            padding=config["padding"],
            dilation_rate=config["dilation_rate"],
            activation=config["activation"],
            dtype=FLOAT32,
            name=layer.name if n == 1 else f"{layer.name}_column{i + 1}",
        )
        outs.append(conv(ins[i]))
        conv.set_weights([kernel[..., i * width : (i + 1) * width], bias[i * width : (i + 1) * width]])
    if out_columns > 1:
        return None, outs
    return (outs[0] if n == 1 else ops.concatenate(outs, axis=-1)), None
