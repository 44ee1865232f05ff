"""Caffe's files for the tests, made without alexnet_tf.caffe: message classes compiled by
protoc (grpcio-tools) from CAFFE_PROTO below, a subset of BVLC Caffe's
src/caffe/proto/caffe.proto written out as .proto text (the same field names and numbers),
so that a wrong field number in the reader's hand-built descriptor cannot hide behind
the same mistake here. Also bvlc_alexnet's layers (models/bvlc_alexnet/train_val.prototxt)
with given weights, in the V1 format (`layers`, enum types, 4-D legacy blob dims) and
the current one (`layer`, string types, BlobShape)."""

import functools
import os
import subprocess
import sys
import tempfile

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CAFFE_PROTO = """
syntax = "proto2";
package caffe;

message BlobShape { repeated int64 dim = 1 [packed = true]; }

message BlobProto {
  optional BlobShape shape = 7;
  repeated float data = 5 [packed = true];
  repeated double double_data = 8 [packed = true];
  optional int32 num = 1 [default = 0];
  optional int32 channels = 2 [default = 0];
  optional int32 height = 3 [default = 0];
  optional int32 width = 4 [default = 0];
}

message ConvolutionParameter {
  optional uint32 num_output = 1;
  repeated uint32 pad = 3;
  repeated uint32 kernel_size = 4;
  optional uint32 group = 5 [default = 1];
  repeated uint32 stride = 6;
}

message PoolingParameter {
  enum PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
  optional PoolMethod pool = 1 [default = MAX];
  optional uint32 kernel_size = 2;
  optional uint32 stride = 3 [default = 1];
}

message LRNParameter {
  optional uint32 local_size = 1 [default = 5];
  optional float alpha = 2 [default = 1.];
  optional float beta = 3 [default = 0.75];
  optional float k = 5 [default = 1.];
}

message InnerProductParameter { optional uint32 num_output = 1; }

message DropoutParameter { optional float dropout_ratio = 1 [default = 0.5]; }

message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated string bottom = 3;
  repeated string top = 4;
  repeated BlobProto blobs = 7;
  optional ConvolutionParameter convolution_param = 106;
  optional DropoutParameter dropout_param = 108;
  optional InnerProductParameter inner_product_param = 117;
  optional LRNParameter lrn_param = 118;
  optional PoolingParameter pooling_param = 121;
}

message V1LayerParameter {
  enum LayerType {
    NONE = 0; CONVOLUTION = 4; DATA = 5; DROPOUT = 6; INNER_PRODUCT = 14; LRN = 15;
    POOLING = 17; RELU = 18; SOFTMAX_LOSS = 21;
  }
  repeated string bottom = 2;
  repeated string top = 3;
  optional string name = 4;
  optional LayerType type = 5;
  repeated BlobProto blobs = 6;
  optional ConvolutionParameter convolution_param = 10;
  optional DropoutParameter dropout_param = 12;
  optional InnerProductParameter inner_product_param = 17;
  optional LRNParameter lrn_param = 18;
  optional PoolingParameter pooling_param = 19;
}

message NetParameter {
  optional string name = 1;
  repeated V1LayerParameter layers = 2;
  repeated LayerParameter layer = 100;
}
"""

# bvlc_alexnet's train_val.prototxt: (name, V2 type, V1 type, settings field, settings)
ALEXNET = [
    ("conv1", "Convolution", "CONVOLUTION", "convolution_param", dict(num_output=96, kernel_size=[11], stride=[4])),
    ("relu1", "ReLU", "RELU", None, None),
    ("norm1", "LRN", "LRN", "lrn_param", dict(local_size=5, alpha=1e-4, beta=0.75)),
    ("pool1", "Pooling", "POOLING", "pooling_param", dict(pool=0, kernel_size=3, stride=2)),
    (
        "conv2",
        "Convolution",
        "CONVOLUTION",
        "convolution_param",
        dict(num_output=256, pad=[2], kernel_size=[5], group=2),
    ),
    ("relu2", "ReLU", "RELU", None, None),
    ("norm2", "LRN", "LRN", "lrn_param", dict(local_size=5, alpha=1e-4, beta=0.75)),
    ("pool2", "Pooling", "POOLING", "pooling_param", dict(pool=0, kernel_size=3, stride=2)),
    ("conv3", "Convolution", "CONVOLUTION", "convolution_param", dict(num_output=384, pad=[1], kernel_size=[3])),
    ("relu3", "ReLU", "RELU", None, None),
    (
        "conv4",
        "Convolution",
        "CONVOLUTION",
        "convolution_param",
        dict(num_output=384, pad=[1], kernel_size=[3], group=2),
    ),
    ("relu4", "ReLU", "RELU", None, None),
    (
        "conv5",
        "Convolution",
        "CONVOLUTION",
        "convolution_param",
        dict(num_output=256, pad=[1], kernel_size=[3], group=2),
    ),
    ("relu5", "ReLU", "RELU", None, None),
    ("pool5", "Pooling", "POOLING", "pooling_param", dict(pool=0, kernel_size=3, stride=2)),
    ("fc6", "InnerProduct", "INNER_PRODUCT", "inner_product_param", dict(num_output=4096)),
    ("relu6", "ReLU", "RELU", None, None),
    ("drop6", "Dropout", "DROPOUT", "dropout_param", dict(dropout_ratio=0.5)),
    ("fc7", "InnerProduct", "INNER_PRODUCT", "inner_product_param", dict(num_output=4096)),
    ("relu7", "ReLU", "RELU", None, None),
    ("drop7", "Dropout", "DROPOUT", "dropout_param", dict(dropout_ratio=0.5)),
    ("fc8", "InnerProduct", "INNER_PRODUCT", "inner_product_param", dict(num_output=1000)),
]
# weights (out, in / group, kh, kw) or (out, in); biases (out,)
SHAPES = {
    "conv1": (96, 3, 11, 11),
    "conv2": (256, 48, 5, 5),
    "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3),
    "conv5": (256, 192, 3, 3),
    "fc6": (4096, 9216),
    "fc7": (4096, 4096),
    "fc8": (1000, 4096),
}


@functools.cache
def classes(packed=True):
    """The message classes compiled from CAFFE_PROTO by protoc, in a pool of their own;
    `packed=False`: blob values written one field each (legal, though not Caffe's way).
    protoc runs in a process of its own: in-process, its libprotobuf and TensorFlow's clash."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "caffe.proto"), "w") as f:
            f.write(CAFFE_PROTO if packed else CAFFE_PROTO.replace("[packed = true]", "[packed = false]"))
        out = os.path.join(folder, "caffe.pb")
        protoc = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{folder}",
            f"--descriptor_set_out={out}",
            "caffe.proto",
        ]
        subprocess.run(protoc, check=True, cwd=folder)
        with open(out, "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(files.file[0])
    names = ("NetParameter", "BlobProto")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}")) for n in names}


def random_weights(seed=0):
    """Random weights in bvlc_alexnet's shapes, scaled by sqrt(2 / fan-in) so that every
    layer's outputs keep about the spread of the centred pixels (tens), large enough for
    Caffe's LRN to matter and small enough to stay finite."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        fan_in = int(np.prod(shape[1:]))
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        out[name] = (w, rng.standard_normal(shape[0], dtype=np.float32))
    return out


def encode(weights):
    """{layer: [(BlobProto holding the values, shape)]} of {layer: (weights, biases)}: the
    values are turned into protobuf floats once, then copied into each file's blobs."""
    blob = classes()["BlobProto"]
    return {
        name: [(blob(data=np.asarray(v, np.float32).ravel().tolist()), np.shape(v)) for v in values]
        for name, values in weights.items()
    }


def set_shape(blob, shape, legacy):
    """4-D num/channels/height/width with leading 1s (V1, as Caffe wrote them) or a BlobShape."""
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - len(shape)) + tuple(shape)
    else:
        blob.shape.dim.extend(shape)
    return blob


def alexnet_layers(blobs, caffenet_order=False):
    """bvlc_alexnet's layers with the blobs of `encode`, the data layer first and the loss
    last, as a caffemodel of the training net holds them. `caffenet_order`: pooling
    before LRN, as CaffeNet has them."""
    layers = list(ALEXNET)
    if caffenet_order:
        for i in (2, 6):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    rows = [("data", "Data", "DATA", None, None)] + layers + [("loss", "SoftmaxWithLoss", "SOFTMAX_LOSS", None, None)]
    return [(name, v2, v1, field, settings, blobs.get(name, ())) for name, v2, v1, field, settings in rows]


def net_message(layers, version="V1"):
    """A NetParameter of `layers` (from `alexnet_layers`) in the V1 or the V2 format,
    each layer reading the previous one's top (ReLU and dropout in place, as in Caffe)."""
    net = classes()["NetParameter"](name="AlexNet")
    bottom = None
    for name, v2, v1, field, settings, blobs in layers:
        layer = net.layers.add(type=v1) if version == "V1" else net.layer.add(type=v2)
        layer.name = name
        if bottom:
            layer.bottom.append(bottom)
        top = bottom if v2 in ("ReLU", "Dropout") else name
        if v2 != "SoftmaxWithLoss":
            layer.top.append(top)
        bottom = top
        if field:
            getattr(layer, field).CopyFrom(getattr(layer, field).__class__(**settings))
        for values, shape in blobs:
            blob = layer.blobs.add()
            blob.CopyFrom(values)
            set_shape(blob, shape, legacy=version == "V1")
    return net


def write_caffemodel(path, layers, version="V1"):
    with open(path, "wb") as f:
        f.write(net_message(layers, version).SerializeToString())
    return path


def write_mean(path, mean_bgr_chw):
    """imagenet_mean.binaryproto: a BlobProto of shape 1 x 3 x H x W, BGR, as
    Caffe's compute_image_mean writes it (legacy 4-D dims)."""
    blob = classes()["BlobProto"](data=np.asarray(mean_bgr_chw, np.float32).ravel().tolist())
    with open(path, "wb") as f:
        f.write(set_shape(blob, (1, *np.shape(mean_bgr_chw)), legacy=True).SerializeToString())
    return path
