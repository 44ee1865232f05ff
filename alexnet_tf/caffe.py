"""Caffe's bvlc_alexnet without Caffe: the paper's two-column net trained on ILSVRC-2012.

    net = load_net("bvlc_alexnet.caffemodel", mean="imagenet_mean.binaryproto")  # a nets.TrainedNet
    net.model, net.config, net.class_names, net.stats
    runs.write_net(net, "runs/bvlc_alexnet")  # the run folder every command reads (`convert` does this)

`read_caffemodel` (alexnet_tf.caffemodel) reads the file without Caffe, V1 (bvlc_alexnet's,
2014) or V2; `check_alexnet` names the first layer, setting or blob shape that is not
bvlc_alexnet's; `keras_weights` converts Caffe's layouts to ours. The result computes what
Caffe computes, through the settings in `CAFFE_SETTINGS`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import tensorflow as tf
from google.protobuf import message

from alexnet_tf import config as config_lib
from alexnet_tf import paths
from alexnet_tf.caffemodel import CaffeError, CaffeLayer, CaffeNet, read_caffemodel, read_mean
from alexnet_tf.config import Config
from alexnet_tf.data.records import imagenet_class_descriptions
from alexnet_tf.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Stats
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet

# models/bvlc_alexnet/readme.md in BVLC Caffe: the published file (243.9 MB)
BVLC_ALEXNET_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"

# What makes the Keras net compute what Caffe computes (`caffe_config`).
CAFFE_SETTINGS = {
    "model.lrn_convention": "caffe",  # Caffe's LRN divides alpha by n and has k = 1
    "model.lrn_scope": "layer",  # norm1 and norm2 span all the maps of conv1 and conv2
    "model.dropout_form": "inverted",  # Caffe's dropout scales in training: the identity at test
    "data.channel_order": "bgr",  # Caffe reads images with OpenCV: the net takes BGR
    "data.resize": "warp",  # Caffe's ImageNet data: every image warped to 256x256 (data.ops.resize_warp)
    "data.pca_noise_std": 0.0,  # bvlc_alexnet's readme: "not training with the relighting data-augmentation"
    "data.input_scale": 1.0,  # pixels 0..255 minus the mean, unscaled
}
# Caffe's per-channel ImageNet mean (B, G, R), used where no imagenet_mean.binaryproto is given
CAFFE_MEAN_BGR = (104.0, 116.7, 122.7)

# bvlc_alexnet's layers that compute, in order (models/bvlc_alexnet/deploy.prototxt), and
# their types by name: ReLU, LRN, then pooling, as in Sec. 3.5 (CaffeNet pools before LRN)
ALEXNET_LAYERS = (
    "conv1 relu1 norm1 pool1 conv2 relu2 norm2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 "
    "fc6 relu6 drop6 fc7 relu7 drop7 fc8"
).split()
LAYER_TYPES = {
    "conv": "Convolution",
    "relu": "ReLU",
    "norm": "LRN",
    "pool": "Pooling",
    "fc": "InnerProduct",
    "drop": "Dropout",
}
# Blob shapes in Caffe's layout: weights (out, in / group, kh, kw) or (out, in), biases (out,)
ALEXNET_SHAPES = {
    "conv1": ((96, 3, 11, 11), (96,)),
    "conv2": ((256, 48, 5, 5), (256,)),  # two groups
    "conv3": ((384, 256, 3, 3), (384,)),
    "conv4": ((384, 192, 3, 3), (384,)),  # two groups
    "conv5": ((256, 192, 3, 3), (256,)),  # two groups
    "fc6": ((4096, 9216), (4096,)),
    "fc7": ((4096, 4096), (4096,)),
    "fc8": ((1000, 4096), (1000,)),
}
# (kernel, stride, pad, group) of each convolution, and (kernel, stride) of each pooling
CONV_SETTINGS = {
    "conv1": (11, 4, 0, 1),
    "conv2": (5, 1, 2, 2),
    "conv3": (3, 1, 1, 1),
    "conv4": (3, 1, 1, 2),
    "conv5": (3, 1, 1, 2),
}
POOL_SETTINGS = (3, 2)
LRN_SETTINGS = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}  # Sec. 3.3's, read as Caffe reads them
POOL5_SHAPE = (256, 6, 6)  # (C, H, W): what fc6 sees, in Caffe's flatten order


class ChecksumWarning(UserWarning):
    """bvlc_alexnet's net with weights other than the published file's."""


def _shape(shape: tuple) -> str:
    return "x".join(map(str, shape))


def _spatial(settings: message.Message, name: str, default: int) -> int:
    """A square setting (kernel, stride, pad): NAME_h where given, else NAME_size or NAME
    (a value, or a list whose first counts)."""
    if settings.HasField(name + "_h"):
        return getattr(settings, name + "_h")
    value = getattr(settings, "kernel_size" if name == "kernel" else name)
    return value if isinstance(value, int) else (value[0] if value else default)


def _settings(layer: CaffeLayer, ours: str) -> tuple[dict, dict]:
    """(the layer's settings, bvlc_alexnet's) for the settings the Keras net fixes."""
    p = layer.settings
    if layer.type == "Convolution" and p.HasField("convolution_param"):
        c = p.convolution_param
        found = {"kernel": _spatial(c, "kernel", 0), "stride": _spatial(c, "stride", 1)}
        found |= {"pad": _spatial(c, "pad", 0), "group": c.group}
        return found, dict(zip(("kernel", "stride", "pad", "group"), CONV_SETTINGS[ours]))
    if layer.type == "Pooling" and p.HasField("pooling_param"):
        c = p.pooling_param
        found = {"pool": c.pool, "kernel": _spatial(c, "kernel", 0), "stride": _spatial(c, "stride", 1)}
        found |= {"pad": _spatial(c, "pad", 0), "global_pooling": c.global_pooling}
        kernel, stride = POOL_SETTINGS
        return found, {"pool": 0, "kernel": kernel, "stride": stride, "pad": 0, "global_pooling": False}
    if layer.type == "LRN" and p.HasField("lrn_param"):
        found = {k: getattr(p.lrn_param, k) for k in (*LRN_SETTINGS, "norm_region")}
        return found, {k: float(np.float32(v)) for k, v in LRN_SETTINGS.items()} | {"norm_region": 0}
    if layer.type == "Dropout" and p.HasField("dropout_param"):
        return {"dropout_ratio": p.dropout_param.dropout_ratio}, {"dropout_ratio": float(np.float32(0.5))}
    if layer.type == "InnerProduct" and p.HasField("inner_product_param"):
        c = p.inner_product_param
        return {"axis": c.axis, "transpose": c.transpose}, {"axis": 1, "transpose": False}
    return {}, {}


def check_alexnet(net: CaffeNet) -> dict:
    """{our layer name: (weights, biases)} in Caffe's layout, if `net` is bvlc_alexnet's
    net; else raises CaffeError naming the first layer, setting or blob shape that differs."""
    layers = [layer for layer in net.layers if layer.type in LAYER_TYPES.values()]
    blobs = {}
    for i, ours in enumerate(ALEXNET_LAYERS):
        kind = LAYER_TYPES[ours.rstrip("0123456789")]
        if i >= len(layers):
            raise CaffeError(f"{net.path}: the net ends before bvlc_alexnet's {ours!r} ({kind})")
        layer = layers[i]
        if layer.type != kind:
            caffenet = {layer.type, kind} == {"LRN", "Pooling"}
            raise CaffeError(
                f"{net.path}: layer {layer.name!r} ({layer.type}) is where bvlc_alexnet has {ours!r} ({kind})"
                + (": pooling before LRN is CaffeNet's order, not the paper's" if caffenet else "")
            )
        found, want = _settings(layer, ours)
        for key, value in want.items():
            if found[key] != value:
                raise CaffeError(
                    f"{net.path}: layer {layer.name!r} ({layer.type}) has {key}={found[key]:.7g}; "
                    f"bvlc_alexnet's {ours!r} has {value:.7g}"
                )
        if ours in ALEXNET_SHAPES:
            blobs[ours] = _weights(net.path, layer, ALEXNET_SHAPES[ours])
    if len(layers) > len(ALEXNET_LAYERS):
        extra = layers[len(ALEXNET_LAYERS)]
        raise CaffeError(f"{net.path}: layer {extra.name!r} ({extra.type}) comes after fc8, where bvlc_alexnet ends")
    return blobs


def _weights(path: str, layer: CaffeLayer, shapes: tuple) -> tuple:
    """The layer's (weights, biases) in `shapes`; a V1 file's 4-D shapes have leading 1s."""
    if len(layer.blobs) != 2:
        raise CaffeError(
            f"{path}: layer {layer.name!r} has {len(layer.blobs)} blobs; bvlc_alexnet's has 2 (weights, biases)"
        )
    out = []
    for blob, want, what in zip(layer.blobs, shapes, ("weights", "biases")):
        shape = blob.shape
        while len(shape) > len(want) and shape[0] == 1:
            shape = shape[1:]
        if shape != want:
            raise CaffeError(
                f"{path}: layer {layer.name!r} has {what} of shape {_shape(blob.shape)}; bvlc_alexnet's are {_shape(want)}"
            )
        out.append(blob.reshape(want))
    return tuple(out)


def keras_weights(blobs: dict) -> dict:
    """{layer: [kernel, bias]} in Keras' layouts from `check_alexnet`'s Caffe blobs.

    Convolutions: (out, in / groups, kh, kw) -> (kh, kw, in / groups, out); Caffe's groups
    are contiguous blocks of output maps, each seeing its block of input maps, as in Keras'
    Conv2D(groups=2), and both cross-correlate. Inner products: (out, in) -> (in, out),
    fc6's inputs reordered from Caffe's (C, H, W) flatten of pool5 to our (H, W, C).
    The transposes run in TensorFlow (blocked, multi-threaded): NumPy's copy of a
    transposed 150 MB matrix takes several times as long.
    """
    out = {}
    for name, (w, b) in blobs.items():
        if w.ndim == 4:
            kernel = tf.transpose(w, (2, 3, 1, 0))
        elif name == "fc6":
            c, h, width = POOL5_SHAPE
            kernel = tf.reshape(tf.transpose(tf.reshape(w, (-1, c, h, width)), (2, 3, 1, 0)), (h * width * c, -1))
        else:
            kernel = tf.transpose(w)
        out[name] = [kernel.numpy(), b]
    return out


def caffe_config() -> Config:
    """The paper's config (Config()) with Caffe's conventions (CAFFE_SETTINGS)."""
    return config_lib.override(Config(), CAFFE_SETTINGS)


def imagenet_class_names() -> list:
    """ILSVRC-2012's 1000 synsets in sorted order: Caffe's labels ("we sort the synset
    names in their ASCII order", its ImageNet tutorial) and TFDS imagenet2012's, read from
    the installed tensorflow_datasets package."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    folders = spec.submodule_search_locations if spec else []
    for folder in folders:
        path = os.path.join(folder, "datasets", "imagenet2012", "labels.txt")
        if os.path.isfile(path):
            with open(path) as f:
                names = f.read().split()
            if len(names) == 1000 and names == sorted(names):
                return names
    raise CaffeError(
        "ImageNet's class names come from tensorflow_datasets (labels.txt): pip install tensorflow-datasets"
    )


def caffe_stats(mean_path: str | None = None, size: int = 256) -> Stats:
    """The mean image of imagenet_mean.binaryproto (or Caffe's per-channel mean, as an
    image) in RGB, and the usual ImageNet colour statistics (unused: no relighting)."""
    if mean_path:
        mean = read_mean(mean_path)
        if mean.shape[:2] != (size, size):
            raise CaffeError(
                f"{mean_path} is a {_shape(mean.shape[:2])} mean image; bvlc_alexnet's data are {size}x{size}"
            )
    else:
        mean = np.broadcast_to(np.asarray(CAFFE_MEAN_BGR[::-1], np.float32), (size, size, 3)).copy()
    return Stats(mean, np.asarray(IMAGENET_EIGVAL, np.float32), np.asarray(IMAGENET_EIGVEC, np.float32))


def load_net(path: str, mean: str | None = None) -> TrainedNet:
    """bvlc_alexnet's net from `path` as a trained net (our Keras model with Caffe's
    settings, ILSVRC-2012's synsets, the mean of `mean` or Caffe's per-channel one),
    checked: CaffeError if it is not that net; a ChecksumWarning if the file is not the
    published one. Its `origin` names the file, its format and its sha1. Paths relative
    to the working directory or absolute."""
    path, mean = paths.resolve(path), mean and paths.resolve(mean)
    net = read_caffemodel(path)
    blobs = check_alexnet(net)
    if net.sha1 != BVLC_ALEXNET_SHA1:
        warnings.warn(
            f"{path} has sha1 {net.sha1}, not bvlc_alexnet.caffemodel's {BVLC_ALEXNET_SHA1}: other weights "
            "in bvlc_alexnet's net, imported as such",
            ChecksumWarning,
            stacklevel=2,
        )
    config = caffe_config()
    stats = caffe_stats(mean, config.data.resize_size)
    model = build_model(config.model)
    for name, values in keras_weights(blobs).items():
        model.get_layer(name).set_weights(values)
    origin = f"{path} ({net.format} format, sha1 {net.sha1})"
    names = imagenet_class_names()
    return TrainedNet(config, model, stats, names, origin, imagenet_class_descriptions(names) or ())
