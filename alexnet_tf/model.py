"""The network of Sec. 3 (Fig. 2) as a Keras functional graph.

Two columns ("GPUs") that talk only at conv3 and the fully connected layers: conv2, conv4
and conv5 are grouped convolutions with two groups. Layer names follow the paper:
conv1, lrn1, pool1, conv2, lrn2, pool2, conv3, conv4, conv5, pool5, fc6, fc7, fc8.
The model maps a float batch (already mean-subtracted, see `alexnet_tf.data`) to fc8
logits in float32.
"""

from __future__ import annotations

import zlib

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from alexnet_tf.config import ComputeConfig, ModelConfig

# Sec. 3.5 / Fig. 2: (filters, kernel, stride, groups in the two-column net)
CONV_SPECS = {
    "conv1": (96, 11, 4, 1),
    "conv2": (256, 5, 1, 2),
    "conv3": (384, 3, 1, 1),  # sees both columns
    "conv4": (384, 3, 1, 2),
    "conv5": (256, 3, 1, 2),
}
FC_UNITS = {"fc6": 4096, "fc7": 4096}  # Sec. 3.5
BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")  # Sec. 5


def layer_seed(seed: int, layer_name: str) -> int:
    """The random seed of one layer: a pure function of the run's seed and the layer's
    name, so that every layer draws its own numbers (Sec. 5 draws each weight
    independently), the same ones in every model form and under every strategy, and
    adding or removing a layer changes no other layer's draw."""
    entropy = [seed & 0xFFFFFFFF, zlib.crc32(layer_name.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocalResponseNormalization(layers.Layer):
    """Brightness normalisation across neighbouring maps, Sec. 3.3.

    b[c] = a[c] / (k + alpha' * sum_{c' in [c - n//2, c + n//2]} a[c']^2) ** beta

    `convention` fixes how the constants are read:
      paper:        alpha' = alpha,     k = 2   (the formula as printed, no 1/n)
      cuda-convnet: alpha' = alpha / n, k = 2   (Alex's released code)
      caffe:        alpha' = alpha / n, k = 1   (bvlc_alexnet)
    `groups`: the maps fall into this many consecutive groups (the columns of Sec. 3.2)
    and the window stops at a group's edge as at the layer's: 2 normalizes each column
    over its own maps, 1 over all the maps of the layer (`model.lrn_scope`).
    Computed in float32 whatever the dtype policy (tf.nn.local_response_normalization
    has no bf16 kernel and does not compile in bf16); `implementation` says with which ops.
    """

    CONVENTIONS = {"paper": (2.0, False), "cuda-convnet": (2.0, True), "caffe": (1.0, True)}
    # How the window sum and the power are computed; the same numbers (float32), different
    # speed: "ops" squares, pads and adds 5 shifted slices (XLA fuses them into one pass);
    # "matmul" multiplies the squares by a 0/1 band matrix (one matmul forward, two in the
    # gradient: without XLA on a CPU far fewer passes over memory than the slices and their
    # gradients); "tf_op" is tf.nn.local_response_normalization (native float32 kernels).
    # alexnet_tf.forms picks one per device.
    IMPLEMENTATIONS = ("ops", "matmul", "tf_op")

    def __init__(self, size=5, alpha=1e-4, beta=0.75, convention="paper", implementation="ops", groups=1, **kwargs):
        super().__init__(**kwargs)
        if convention not in self.CONVENTIONS:
            raise ValueError(f"convention must be one of {sorted(self.CONVENTIONS)}, got {convention!r}")
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {self.IMPLEMENTATIONS}, got {implementation!r}")
        if size % 2 != 1:
            raise ValueError(f"size must be odd, got {size}")
        if groups < 1:
            raise ValueError(f"groups must be 1 or more, got {groups}")
        self.size, self.alpha, self.beta, self.convention = size, alpha, beta, convention
        self.implementation, self.groups = implementation, groups
        self.k, per_term = self.CONVENTIONS[convention]
        self.scaled_alpha = alpha / size if per_term else alpha

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(f"{input_shape[-1]} maps do not fall into {self.groups} groups of one size")
        super().build(input_shape)

    def call(self, x):
        in_dtype = x.dtype
        x = ops.cast(x, "float32")
        r, g = self.size // 2, self.groups
        channels = x.shape[-1]
        if self.implementation == "tf_op":
            # each group's maps as a position of their own: (B, H, W * g, C / g)
            shape = tf.shape(x)
            grouped = tf.reshape(x, [shape[0], shape[1], shape[2] * g, channels // g]) if g > 1 else x
            y = tf.nn.local_response_normalization(grouped, r, self.k, self.scaled_alpha, self.beta)
            return ops.cast(tf.reshape(y, shape) if g > 1 else y, in_dtype)
        squares = ops.square(x)
        if self.implementation == "matmul":
            c = np.arange(channels)
            near = np.abs(c[:, None] - c[None, :]) <= r
            same_group = (c[:, None] * g) // channels == (c[None, :] * g) // channels
            band = (near & same_group).astype("float32")  # (C, C): maps c' of c's group with |c - c'| <= n//2
            window = ops.matmul(squares, band)
        else:
            if g > 1:  # (B, H, W, g, C / g): the window runs within the last axis
                squares = tf.reshape(squares, tf.concat([tf.shape(squares)[:-1], [g, channels // g]], 0))
            width = channels // g
            padded = ops.pad(squares, [[0, 0]] * (len(squares.shape) - 1) + [[r, r]])
            window = padded[..., 0:width]
            for i in range(1, self.size):
                window = window + padded[..., i : i + width]
            if g > 1:
                window = tf.reshape(window, tf.shape(x))
        y = x * self._inverse_power(self.k + self.scaled_alpha * window)
        return ops.cast(y, in_dtype)

    def _inverse_power(self, t):
        """t ** -beta; for Sec. 3.3's beta = 0.75 as rsqrt(t) * sqrt(rsqrt(t)), which costs
        (and differentiates) as a few multiplications where pow takes exp and log."""
        if self.beta == 0.75:
            inv_sqrt = ops.rsqrt(t)
            return inv_sqrt * ops.sqrt(inv_sqrt)
        return ops.power(t, -self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "alpha": self.alpha,
            "beta": self.beta,
            "convention": self.convention,
            "implementation": self.implementation,
            "groups": self.groups,
        }


def rows_or_none(x, fn, out_shape, dtype):
    """`fn(x)`, or zeros of shape (0, *out_shape) when `x` has no rows (a replica's share of
    a last, short batch; a serving request of no instances). TensorFlow's oneDNN Conv2D on
    a CPU returns its input for a batch of no rows (TF 2.21: `tf.nn.conv2d` of (0, 67, 67,
    3) by an 11x11 stride-4 kernel gives (0, 67, 67, 3)), so a convolution is never handed
    one. The whole of `fn` (convolution, bias, activation) sits in the branch so that
    Grappler still fuses them; under XLA the shape is static and the branch not taken is
    dropped when compiling."""
    if x.shape[0]:  # a batch size known when tracing, and not 0
        return fn(x)
    return tf.cond(tf.shape(x)[0] > 0, lambda: fn(x), lambda: tf.zeros((0, *out_shape), dtype))


@keras.saving.register_keras_serializable(package="alexnet_tf")
class Conv2D(layers.Conv2D):
    """keras.layers.Conv2D that takes a batch of no rows (`rows_or_none`)."""

    def call(self, inputs):
        shape = tuple(self.compute_output_shape(tuple(inputs.shape)))[1:]
        if None in shape:  # a map size known only at run time: the plain layer
            return super().call(inputs)
        return rows_or_none(inputs, super().call, shape, self.compute_dtype)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class SplitConv2D(Conv2D):
    """Conv2D(groups=g) computed as g plain convolutions on channel slices + concat.

    Same variables and shapes as `keras.layers.Conv2D(groups=g)`, so weights move
    between the two forms unchanged. Keras' grouped Conv2D runs through a must-compile
    XLA function; this form needs no XLA (TF Serving runs with XLA off).
    """

    def convolution_op(self, inputs, kernel):
        g = self.groups
        if g == 1:
            return super().convolution_op(inputs, kernel)
        # tf.split, not slicing: its gradient is one concat, where each slice's gradient
        # writes a zero-padded copy of the whole input and the copies are then summed
        columns, kernels = tf.split(inputs, g, axis=-1), tf.split(kernel, g, axis=-1)
        outs = [
            tf.nn.conv2d(x, k, strides=self.strides, padding=self.padding.upper(), dilations=self.dilation_rate)
            for x, k in zip(columns, kernels)
        ]
        return ops.concatenate(outs, axis=-1)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class Dropout(layers.Dropout):
    """Dropout as Sec. 4.2 computes it, with masks that depend on the global batch alone.

    `form="paper"`: in training each unit is set to zero with probability `rate` and
    the others pass unchanged; at test all units pass, multiplied by 1 - rate ("at test
    time, we use all the neurons but multiply their outputs by 0.5"). `form="inverted"`:
    the kept units are divided by 1 - rate in training and test passes them unchanged
    (keras.layers.Dropout, PyTorch, Caffe). Both give the same test-time function; their
    training differs by that factor in what the next layer sees.

    The mask of a training call is one draw for the whole global batch, keyed by the
    layer's seed state (the run's seed and layer, advanced once per call: once per step)
    and taken row by row by the example's index in the global batch. Under a
    tf.distribute strategy, replica r of R holds rows r * b .. r * b + b - 1 of it (the
    input pipelines cut the global batch so, `alexnet_tf.data.train_dataset`): each
    replica draws the global mask and keeps its rows, so one device and eight zero the
    same units of the same example. (The seed state of Keras' Dropout is mirrored: a
    per-replica draw would give every replica the same mask.)
    """

    FORMS = ("paper", "inverted")

    def __init__(self, rate, form="paper", **kwargs):
        super().__init__(rate, **kwargs)
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}")
        self.form = form

    def call(self, inputs, training=False):
        if self.rate == 0:
            return inputs
        if not training:
            return inputs * (1.0 - self.rate) if self.form == "paper" else inputs
        return self.drop(inputs, self.seed_generator.next())

    def drop(self, inputs, seed):
        """`inputs` (this replica's rows of the global batch) with the units that the mask
        of `seed` (a seed state of `seed_generator`) zeroes set to zero, the others
        passed as the form says."""
        ctx = tf.distribute.get_replica_context()
        replicas, replica = (ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group) if ctx else (1, 0)
        shape = tf.shape(inputs)
        rows = shape[0]
        if self.noise_shape is not None:  # None: that axis as the input's
            shape = tf.stack([shape[i] if n is None else n for i, n in enumerate(self.noise_shape)])
        per_row = self.noise_shape is None or self.noise_shape[0] is None
        if per_row and replicas > 1:  # the mask of the global batch (B * R, ...), this replica's rows
            shape = tf.concat([[rows * replicas], shape[1:]], 0)
        u = tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int64))
        if per_row and replicas > 1:
            u = u[replica * rows : (replica + 1) * rows]
        keep = tf.cast(u >= self.rate, inputs.dtype)
        # Sec. 4.2 passes the kept units as they are; the inverted form divides by 1 - rate
        return inputs * keep if self.form == "paper" else inputs * keep / tf.cast(1.0 - self.rate, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "form": self.form}


def model_forms(conv_form: str = "auto", lrn_impl: str = "auto") -> tuple[str, str]:
    """(conv_form, lrn_impl) as given; an "auto" (a model built without a run's Runtime,
    e.g. in a notebook) takes alexnet_tf.forms' choice for this process's devices in
    float32."""
    if "auto" not in (conv_form, lrn_impl):
        return conv_form, lrn_impl
    from alexnet_tf import forms

    compute = ComputeConfig(conv_form=conv_form, lrn_impl=lrn_impl, update_op="keras", jit_compile=False)
    chosen = forms.resolve(forms.device_kind(), "float32", compute)
    return chosen.conv_form, chosen.lrn_impl


def _widths(config: ModelConfig) -> dict:
    """Filters/units per layer after the column and width switches."""
    out = {}
    for name, (filters, *_rest) in CONV_SPECS.items():
        if not config.two_columns and name != "conv5":
            # Sec. 3.2: one column with half the kernels; footnote 2: the one-GPU net
            # keeps conv5 (and the fc layers) at full size.
            filters //= 2
        out[name] = max(2, 2 * round(filters * config.width / 2))
    for name, units in FC_UNITS.items():
        out[name] = max(2, round(units * config.width))
    return out


class _Layers:
    """The paper's layers as `config` switches them, each by its name in Fig. 2."""

    def __init__(self, config: ModelConfig, seed: int, conv_form: str, lrn_impl: str):
        self.config, self.seed, self.widths = config, seed, _widths(config)
        self.conv_form, self.lrn_impl = model_forms(conv_form, lrn_impl)

    def initializer(self, name: str):
        # One initializer per layer: a shared one would give every layer the same draw.
        seed = layer_seed(self.seed, name)
        if self.config.init == "fan_in":
            return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)
        return keras.initializers.RandomNormal(stddev=self.config.init_std, seed=seed)  # Sec. 5

    def bias(self, name: str):
        one = self.config.bias_one and name in BIAS_ONE  # Sec. 5
        return keras.initializers.Constant(1.0 if one else 0.0)

    def conv(self, x, name: str):
        c = self.config
        _, kernel, stride, groups = CONV_SPECS[name]
        return (SplitConv2D if self.conv_form == "split" else Conv2D)(
            self.widths[name],
            kernel,
            strides=stride,
            padding="valid" if name == "conv1" else "same",
            groups=groups if c.two_columns else 1,
            activation=c.activation,
            kernel_initializer=self.initializer(name),
            bias_initializer=self.bias(name),
            name=name,
        )(x)

    def lrn(self, x, name: str):
        c = self.config
        if not c.lrn:
            return x
        groups = 2 if c.two_columns and c.lrn_scope == "column" else 1  # Sec. 3.2: each column its own maps
        lrn = LocalResponseNormalization(
            c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_convention, self.lrn_impl, groups, name=name
        )
        return lrn(x)

    def pool(self, x, name: str):
        size, stride = (3, 2) if self.config.overlap_pooling else (2, 2)  # Sec. 3.4: z=3, s=2
        return layers.MaxPooling2D(size, stride, padding="valid", name=name)(x)

    def dense(self, x, name: str, units: int, activation=None):
        init, bias = self.initializer(name), self.bias(name)
        return layers.Dense(units, activation, kernel_initializer=init, bias_initializer=bias, name=name)(x)

    def dropout(self, x, name: str):
        c = self.config
        return Dropout(c.dropout, c.dropout_form, seed=layer_seed(self.seed, name), name=name)(x)


def build_model(
    config: ModelConfig, seed: int = 0, name: str = "alexnet", conv_form: str = "auto", lrn_impl: str = "auto"
) -> keras.Model:
    """Builds the paper's net (or an ablation of it) as a functional Keras model.

    `seed` (the run's `train.seed`) fixes every layer's initial weights and dropout
    masks; each layer draws from its own seed (`layer_seed`). `conv_form` and `lrn_impl`
    say how the grouped convolutions and the LRN are computed (the same numbers; see
    alexnet_tf.forms and the config's `compute` section): a run passes its Runtime's,
    "auto" takes the fastest for this process's devices.
    """
    make = _Layers(config, seed, conv_form, lrn_impl)
    s = config.input_size
    inputs = keras.Input((s, s, 3), name="image")  # (B, 227, 227, 3)
    x = make.conv(inputs, "conv1")  # (B, 55, 55, 96)
    x = make.pool(make.lrn(x, "lrn1"), "pool1")  # (B, 27, 27, 96)
    x = make.conv(x, "conv2")  # (B, 27, 27, 256), two groups
    x = make.pool(make.lrn(x, "lrn2"), "pool2")  # (B, 13, 13, 256)
    x = make.conv(x, "conv3")  # (B, 13, 13, 384), both columns
    x = make.conv(x, "conv4")  # (B, 13, 13, 384), two groups
    x = make.conv(x, "conv5")  # (B, 13, 13, 256), two groups
    x = make.pool(x, "pool5")  # (B, 6, 6, 256)
    x = layers.Flatten(name="flatten")(x)  # (B, 9216)
    for fc in ("fc6", "fc7"):
        if config.dropout_placement == "inputs":
            x = make.dropout(x, f"dropout{fc[-1]}")  # torchvision: the inputs of fc6 and fc7
        x = make.dense(x, fc, make.widths[fc], config.activation)  # (B, 4096)
        if config.dropout_placement == "outputs":
            x = make.dropout(x, f"dropout{fc[-1]}")  # Sec. 4.2: the outputs of fc6 and fc7
    x = make.dense(x, "fc8", config.num_classes)  # (B, 1000)
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


# The forms that compute the net fastest without XLA (TF Serving runs without it): the
# grouped layers as two convolutions + concat, the LRN's window sum as a band matmul.
SERVING_FORMS = {"conv_form": "split", "lrn_impl": "matmul"}


def to_split_form(model: keras.Model, config: ModelConfig) -> keras.Model:
    """The same net in SERVING_FORMS (SplitConv2D for the grouped layers), the same weights."""
    split = build_model(config, name=model.name, **SERVING_FORMS)  # weights copied below
    split.set_weights(model.get_weights())
    return split


def model_variables(model: keras.Model) -> dict:
    """The model's variables by layer and name, the form in which checkpoints hold them.

    Keras 3 models are not tracked by tf.train.Checkpoint themselves; this nested dict
    is, so checkpoint keys read "model/conv1/kernel/...", "model/dropout6/seed_generator_state/...",
    whatever the placement (a weight split over two devices by `alexnet_tf.columns` as one).
    """
    out = {}
    for layer in model.layers:
        weights = {v.name: v for v in layer.variables}
        if hasattr(getattr(layer, "kernel", None), "halves"):  # alexnet_tf.columns.place: saved whole
            weights = {"kernel": layer.kernel, "bias": layer.bias}
        if weights:
            out[layer.name] = weights
    return out
