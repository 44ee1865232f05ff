"""Caffe's bvlc_alexnet without Caffe: the paper's two-column net trained on ILSVRC-2012.

    imported = import_caffemodel("bvlc_alexnet.caffemodel", mean="imagenet_mean.binaryproto")
    imported.model, imported.config, imported.class_names, imported.stats
    write_run(imported, "runs/bvlc_alexnet")  # the run folder evaluate, export and figures read

`read_caffemodel` parses a .caffemodel with the protobuf runtime, from the subset of BVLC
Caffe's caffe.proto that holds weights and layer settings, built here as a descriptor (no
protoc, no generated code, no Caffe). Both formats: V1 (`NetParameter.layers`, enum
layer types, blobs with 4-D num/channels/height/width; bvlc_alexnet, 2014) and the
current one (`NetParameter.layer`, string types, `BlobShape`). `check_alexnet` names the
first layer or blob that is not bvlc_alexnet's; `keras_weights` converts Caffe's layouts
to ours. The result computes what Caffe computes, through the settings in
`CAFFE_SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from alexnet_tf import config as config_lib
from alexnet_tf.config import Config, ConfigError
from alexnet_tf.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Stats
from alexnet_tf.model import build_model, model_variables

# models/bvlc_alexnet/readme.md in BVLC Caffe: the published file (243.9 MB)
BVLC_ALEXNET_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"

# What makes the Keras net compute what Caffe computes (`caffe_config`).
CAFFE_SETTINGS = {
    "model.lrn_convention": "caffe",  # Caffe's LRN divides alpha by n and has k = 1
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
LAYER_TYPES = {  # (the type in a V2 file, in a V1 file)
    "conv": ("Convolution", "CONVOLUTION"),
    "relu": ("ReLU", "RELU"),
    "norm": ("LRN", "LRN"),
    "pool": ("Pooling", "POOLING"),
    "fc": ("InnerProduct", "INNER_PRODUCT"),
    "drop": ("Dropout", "DROPOUT"),
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


class CaffeError(ConfigError):
    """A file that is not a caffemodel, or not bvlc_alexnet's net; the message says which part."""


class ChecksumWarning(UserWarning):
    """bvlc_alexnet's net with weights other than the published file's."""


# --- the caffe.proto subset

_LAYER_TYPES = (  # V1LayerParameter.LayerType
    "NONE ACCURACY BNLL CONCAT CONVOLUTION DATA DROPOUT EUCLIDEAN_LOSS FLATTEN HDF5_DATA HDF5_OUTPUT IM2COL "
    "IMAGE_DATA INFOGAIN_LOSS INNER_PRODUCT LRN MULTINOMIAL_LOGISTIC_LOSS POOLING RELU SIGMOID SOFTMAX "
    "SOFTMAX_LOSS SPLIT TANH WINDOW_DATA ELTWISE POWER SIGMOID_CROSS_ENTROPY_LOSS HINGE_LOSS MEMORY_DATA "
    "ARGMAX THRESHOLD DUMMY_DATA SLICE MVN ABSVAL SILENCE CONTRASTIVE_LOSS EXP DECONVOLUTION"
).split()  # numbered 0..39 in this order
_ENUMS = {
    "V1LayerParameter": {"LayerType": _LAYER_TYPES},
    "PoolingParameter": {"PoolMethod": ("MAX", "AVE", "STOCHASTIC"), "RoundMode": ("CEIL", "FLOOR")},
    "LRNParameter": {"NormRegion": ("ACROSS_CHANNELS", "WITHIN_CHANNEL")},
}
# caffe.proto's lines, one message each: "[repeated] TYPE NAME = NUMBER [DEFAULT]; ..."
_MESSAGES = {
    "BlobShape": "repeated int64 dim = 1",
    # caffe.proto's `repeated float data = 5 [packed = true]` (and double_data) is one
    # length-delimited record of little-endian values: read as bytes, handed to NumPy whole
    "BlobProto": "int32 num = 1; int32 channels = 2; int32 height = 3; int32 width = 4; repeated bytes data = 5; "
    "BlobShape shape = 7; repeated bytes double_data = 8",
    # the same fields as values, for a writer that did not pack them
    "BlobValues": "repeated float data = 5; repeated double double_data = 8",
    "ConvolutionParameter": "uint32 num_output = 1; bool bias_term = 2 [true]; repeated uint32 pad = 3; "
    "repeated uint32 kernel_size = 4; uint32 group = 5 [1]; repeated uint32 stride = 6; uint32 pad_h = 9; "
    "uint32 pad_w = 10; uint32 kernel_h = 11; uint32 kernel_w = 12; uint32 stride_h = 13; uint32 stride_w = 14",
    "PoolingParameter": "PoolMethod pool = 1; uint32 kernel_size = 2; uint32 stride = 3 [1]; uint32 pad = 4; "
    "uint32 kernel_h = 5; uint32 kernel_w = 6; uint32 stride_h = 7; uint32 stride_w = 8; uint32 pad_h = 9; "
    "uint32 pad_w = 10; bool global_pooling = 12; RoundMode round_mode = 13",
    "LRNParameter": "uint32 local_size = 1 [5]; float alpha = 2 [1]; float beta = 3 [0.75]; "
    "NormRegion norm_region = 4; float k = 5 [1]",
    "InnerProductParameter": "uint32 num_output = 1; bool bias_term = 2 [true]; int32 axis = 5 [1]; bool transpose = 6",
    "DropoutParameter": "float dropout_ratio = 1 [0.5]",
    "LayerParameter": "string name = 1; string type = 2; repeated string bottom = 3; repeated string top = 4; "
    "repeated BlobProto blobs = 7; ConvolutionParameter convolution_param = 106; "
    "DropoutParameter dropout_param = 108; InnerProductParameter inner_product_param = 117; "
    "LRNParameter lrn_param = 118; PoolingParameter pooling_param = 121",
    "V0LayerParameter": "string name = 1; string type = 2; repeated BlobProto blobs = 50",
    "V1LayerParameter": "V0LayerParameter layer = 1; repeated string bottom = 2; repeated string top = 3; "
    "string name = 4; LayerType type = 5; repeated BlobProto blobs = 6; "
    "ConvolutionParameter convolution_param = 10; DropoutParameter dropout_param = 12; "
    "InnerProductParameter inner_product_param = 17; LRNParameter lrn_param = 18; "
    "PoolingParameter pooling_param = 19",
    "NetParameter": "string name = 1; repeated V1LayerParameter layers = 2; repeated LayerParameter layer = 100",
}
_SCALARS = {
    name: getattr(descriptor_pb2.FieldDescriptorProto, "TYPE_" + name.upper())
    for name in ("string", "bytes", "bool", "int32", "int64", "uint32", "float", "double")
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="alexnet_tf/caffe_subset.proto", package="caffe", syntax="proto2")
    for name, fields in _MESSAGES.items():
        m = proto.message_type.add(name=name)
        enums = _ENUMS.get(name, {})
        for enum, values in enums.items():
            m.enum_type.add(name=enum).value.extend(
                descriptor_pb2.EnumValueDescriptorProto(name=v, number=i) for i, v in enumerate(values)
            )
        for line in fields.split(";"):
            words = line.split()
            repeated = words[0] == "repeated"
            kind, field_name, _, number, *default = words[repeated:]
            f = m.field.add(name=field_name, number=int(number))
            f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if kind in _SCALARS:
                f.type = _SCALARS[kind]
            elif kind in enums:
                f.type, f.type_name = F.TYPE_ENUM, f".caffe.{name}.{kind}"
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".caffe.{kind}"
            if default:
                f.default_value = default[0].strip("[]")
    return proto


@functools.cache
def message_classes() -> dict:
    """The message classes of the caffe.proto subset, by name (a pool of their own)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in _MESSAGES}


# --- reading


@dataclasses.dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type ("Convolution", ...), blobs as stored
    (Caffe's layout; a V1 file's shapes are 4-D) and its message (for its settings)."""

    name: str
    type: str
    blobs: list
    settings: message.Message


@dataclasses.dataclass
class CaffeNet:
    path: str
    sha1: str
    format: str  # "V1" (NetParameter.layers) or "V2" (NetParameter.layer)
    layers: list


def _blob_array(blob: message.Message, where: str) -> np.ndarray:
    """A BlobProto's values as float32 in its shape (the legacy 4-D one if it has no BlobShape)."""
    shape = tuple(blob.shape.dim) if blob.HasField("shape") else (blob.num, blob.channels, blob.height, blob.width)
    if blob.data:
        values = np.frombuffer(b"".join(blob.data), "<f4")
    else:
        values = np.frombuffer(b"".join(blob.double_data), "<f8")
    if values.size != np.prod(shape):  # values written unpacked: one field each
        unpacked = message_classes()["BlobValues"].FromString(blob.SerializeToString())
        values = np.asarray(unpacked.data or unpacked.double_data, np.float64)
    if values.size != np.prod(shape):
        raise CaffeError(f"{where} holds {values.size} values for its shape {'x'.join(map(str, shape))}")
    return values.astype(np.float32, copy=False).reshape(shape)


def read_caffemodel(path: str) -> CaffeNet:
    """The layers of a .caffemodel (a binary NetParameter), V1 or V2, with their blobs."""
    with open(path, "rb") as f:
        data = f.read()
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        net = message_classes()["NetParameter"].FromString(data)
    except message.DecodeError as e:
        raise CaffeError(f"{path} is not a caffemodel (not a binary Caffe NetParameter: {e})") from e
    del data
    if net.layer:
        version, layers = "V2", [(layer, layer.type) for layer in net.layer]
    else:
        version, layers = "V1", [(layer, _LAYER_TYPES[layer.type]) for layer in net.layers]
    if not layers:
        raise CaffeError(f"{path} is not a caffemodel: it holds no layers")
    if any(layer.HasField("layer") for layer, _ in layers if version == "V1"):
        raise CaffeError(
            f"{path} is in Caffe's V0 format (before 2014): upgrade it with Caffe's upgrade_net_proto_binary"
        )
    out = []
    v2_type = {v1: v2 for v2, v1 in LAYER_TYPES.values()}
    for layer, kind in layers:
        kind = v2_type.get(kind, kind)
        blobs = [_blob_array(b, f"{path}: layer {layer.name!r} blob {i}") for i, b in enumerate(layer.blobs)]
        out.append(CaffeLayer(layer.name, kind, blobs, layer))
    return CaffeNet(path, sha1, version, out)


def read_mean(path: str) -> np.ndarray:
    """Caffe's mean image (a BlobProto, 1 x 3 x H x W, BGR) as our (H, W, 3) RGB float32."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        blob = message_classes()["BlobProto"].FromString(data)
    except message.DecodeError as e:
        raise CaffeError(f"{path} is not a Caffe mean image (not a binary BlobProto: {e})") from e
    mean = _blob_array(blob, path)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3 or mean.shape[0] != 3:
        raise CaffeError(f"{path} holds a blob of shape {'x'.join(map(str, mean.shape))}, not a 1x3xHxW mean image")
    return np.ascontiguousarray(mean[::-1].transpose(1, 2, 0))  # (C, H, W) BGR -> (H, W, C) RGB


# --- checking and converting


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
    types = {v2 for v2, _ in LAYER_TYPES.values()}
    layers = [layer for layer in net.layers if layer.type in types]
    blobs = {}
    for i, ours in enumerate(ALEXNET_LAYERS):
        kind = LAYER_TYPES[ours.rstrip("0123456789")][0]
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
    """
    out = {}
    for name, (w, b) in blobs.items():
        if w.ndim == 4:
            kernel = w.transpose(2, 3, 1, 0)
        elif name == "fc6":
            c, h, width = POOL5_SHAPE
            kernel = w.reshape(-1, c, h, width).transpose(2, 3, 1, 0).reshape(h * width * c, -1)
        else:
            kernel = w.T
        out[name] = [np.ascontiguousarray(kernel), b]
    return out


# --- the imported net


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


@dataclasses.dataclass
class ImportedNet:
    """A trained net from a caffemodel: what a run folder holds, in memory."""

    config: Config
    model: keras.Model
    class_names: list
    stats: Stats
    source: str  # the caffemodel's path
    sha1: str
    format: str  # "V1" or "V2"


def import_caffemodel(path: str, mean: str | None = None) -> ImportedNet:
    """bvlc_alexnet's net from `path`, checked (CaffeError if it is not that net; a warning
    if the file is not the published one), as our Keras model with Caffe's settings."""
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
    return ImportedNet(config, model, imagenet_class_names(), stats, path, net.sha1, net.format)


def write_run(imported: ImportedNet, workdir: str) -> str:
    """Writes `imported` as a run folder (config.json, classes.json, stats.npz,
    checkpoints/ckpt-0) in `workdir`, which must be new or empty; returns the checkpoint.
    Written beside it and renamed: a failure leaves no half folder."""
    from alexnet_tf.runs import write_json

    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise CaffeError(f"{workdir} exists and is not empty: give a new --workdir")
    parent = os.path.dirname(os.path.abspath(workdir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(workdir))}.convert-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        config_lib.save(imported.config, os.path.join(tmp, "config.json"))
        write_json(os.path.join(tmp, "classes.json"), imported.class_names)
        imported.stats.save(os.path.join(tmp, "stats.npz"))
        checkpoint = tf.train.Checkpoint(model=model_variables(imported.model))
        manager = tf.train.CheckpointManager(checkpoint, os.path.join(tmp, "checkpoints"), max_to_keep=1)
        prefix = manager.save(checkpoint_number=0)
        os.replace(tmp, workdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(workdir, os.path.relpath(prefix, tmp))
