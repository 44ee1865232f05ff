"""Caffe's files without Caffe: a .caffemodel (a binary NetParameter) and a mean image
(a binary BlobProto), read with the protobuf runtime from the subset of BVLC Caffe's
src/caffe/proto/caffe.proto that holds weights and layer settings, built here as a
descriptor (no protoc, no generated code). Both formats of a caffemodel: V1
(`NetParameter.layers`, enum layer types, blobs with 4-D num/channels/height/width;
Caffe's model zoo of 2014) and the current one (`NetParameter.layer`, string types,
`BlobShape`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from alexnet_tf.config import ConfigError


class CaffeError(ConfigError):
    """A file that is not a caffemodel, or not the net expected; the message says which part."""


_LAYER_TYPES = (  # V1LayerParameter.LayerType
    "NONE ACCURACY BNLL CONCAT CONVOLUTION DATA DROPOUT EUCLIDEAN_LOSS FLATTEN HDF5_DATA HDF5_OUTPUT IM2COL "
    "IMAGE_DATA INFOGAIN_LOSS INNER_PRODUCT LRN MULTINOMIAL_LOGISTIC_LOSS POOLING RELU SIGMOID SOFTMAX "
    "SOFTMAX_LOSS SPLIT TANH WINDOW_DATA ELTWISE POWER SIGMOID_CROSS_ENTROPY_LOSS HINGE_LOSS MEMORY_DATA "
    "ARGMAX THRESHOLD DUMMY_DATA SLICE MVN ABSVAL SILENCE CONTRASTIVE_LOSS EXP DECONVOLUTION"
).split()  # numbered 0..39 in this order
# V1's enum names of the types that have another name in V2
V1_TYPES = {
    "CONVOLUTION": "Convolution",
    "RELU": "ReLU",
    "POOLING": "Pooling",
    "INNER_PRODUCT": "InnerProduct",
    "DROPOUT": "Dropout",
    "DATA": "Data",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "ACCURACY": "Accuracy",
}
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
    """A caffemodel's layers in file order, with the file's path, sha1 and format."""

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


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CaffeError(f"cannot read {path}: {e.strerror or e}") from e


def read_caffemodel(path: str) -> CaffeNet:
    """The layers of a .caffemodel (a binary NetParameter), V1 or V2, with their blobs."""
    data = _read(path)
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
    for layer, kind in layers:
        kind = V1_TYPES.get(kind, kind)
        blobs = [_blob_array(b, f"{path}: layer {layer.name!r} blob {i}") for i, b in enumerate(layer.blobs)]
        out.append(CaffeLayer(layer.name, kind, blobs, layer))
    return CaffeNet(path, sha1, version, out)


def read_mean(path: str) -> np.ndarray:
    """Caffe's mean image (a BlobProto, 1 x 3 x H x W, BGR) as our (H, W, 3) RGB float32."""
    data = _read(path)
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
