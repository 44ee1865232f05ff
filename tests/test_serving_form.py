"""The export's form of the net (alexnet_tf.serving_form): the trained net's numbers, checked
against the trained Keras model and against Fig. 2's net computed in NumPy from the same
weights; the optimized graph of the exported signature runs each convolution of each
column with its bias and ReLU as one fused op."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from helpers import QUICKSTART
from numpy.lib.stride_tricks import sliding_window_view

from alexnet_tf import data as data_lib
from alexnet_tf.config import ModelConfig, load_recipe
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet
from alexnet_tf.serving_form import ServingLRN, is_serving_model

SMALL = ModelConfig(input_size=67, width=0.25, num_classes=10, init="fan_in")
# (model switches, data switches): the paper's two columns, dropout form and LRN (within
# each column), with an input scale that is not a power of two and Caffe's BGR order; the
# two columns with the LRN over the whole layer (Caffe's bvlc_alexnet); and the ablations'
# one column with torchvision's dropout and Caffe's LRN constants
CASES = {
    "two_columns": ({}, {"input_scale": 1 / 50, "channel_order": "bgr"}),
    "two_columns_layer_lrn": ({"lrn_scope": "layer"}, {}),
    "one_column": (
        {"two_columns": False, "dropout_form": "inverted", "dropout_placement": "inputs", "lrn_convention": "caffe"},
        {},
    ),
}


def _net(case: str) -> TrainedNet:
    model_sets, data_sets = CASES[case]
    config = load_recipe(QUICKSTART)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(SMALL, **model_sets),
        data=dataclasses.replace(config.data, **data_sets),
    )
    model = build_model(config.model, seed=3, conv_form="grouped", lrn_impl="ops")
    rng = np.random.default_rng(4)
    for layer in model.layers:  # biases away from 0 and 1, so that a bias in the wrong column shows
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype("float32"))
    r = config.data.resize_size
    stats = data_lib.Stats.imagenet(r)
    stats = dataclasses.replace(stats, mean_image=rng.uniform(60, 200, (r, r, 3)).astype("float32"))
    return TrainedNet(config, model, stats, [str(i) for i in range(10)])


def _conv(x, kernel, bias, stride, same, groups):
    kh = kernel.shape[0]
    if same:
        x = np.pad(x, [(0, 0), (kh // 2, kh // 2), (kh // 2, kh // 2), (0, 0)])
    patches = sliding_window_view(x, (kh, kh), axis=(1, 2))[:, ::stride, ::stride]  # (B, H, W, C, kh, kw)
    cin, cout = kernel.shape[2], kernel.shape[3] // groups
    out = [
        np.einsum(
            "bhwcij,ijco->bhwo", patches[..., g * cin : (g + 1) * cin, :, :], kernel[..., g * cout : (g + 1) * cout]
        )
        for g in range(groups)
    ]
    return np.maximum(np.concatenate(out, -1) + bias, 0.0)


def _lrn(a, k, alpha, groups=1):
    """Sec. 3.3: b = a / (k + alpha * sum of a^2 over the 5 neighbouring maps) ** 0.75, the
    neighbours taken within each of `groups` consecutive groups of maps (the columns)."""
    if groups > 1:
        return np.concatenate([_lrn(part, k, alpha) for part in np.split(a, groups, axis=-1)], -1)
    sq = np.pad(a**2, [(0, 0)] * 3 + [(2, 2)])
    window = sum(sq[..., i : i + a.shape[-1]] for i in range(5))
    return a / (k + alpha * window) ** 0.75


def _pool(a):
    return sliding_window_view(a, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def numpy_logits(net: TrainedNet, images: np.ndarray) -> np.ndarray:
    """Fig. 2's net in float64 from `net.model`'s weights, on uint8 images at the resize
    size: centre crop, mean image, input scale, channel order (Sec. 2, 4.1), then the net."""
    m, d = net.config.model, net.config.data
    c, top = d.crop_size, (d.resize_size - d.crop_size) // 2
    x = images[:, top : top + c, top : top + c].astype(np.float64) - net.stats.mean_image[top : top + c, top : top + c]
    x = x * d.input_scale
    if d.channel_order == "bgr":
        x = x[..., ::-1]

    def w(name):
        layer = net.model.get_layer(name)
        return layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)

    k, alpha = (2.0, 1e-4) if m.lrn_convention == "paper" else (1.0, 1e-4 / 5)
    groups = 2 if m.two_columns else 1
    lrn_groups = groups if m.lrn_scope == "column" else 1
    x = _pool(_lrn(_conv(x, *w("conv1"), 4, False, 1), k, alpha, lrn_groups))
    x = _pool(_lrn(_conv(x, *w("conv2"), 1, True, groups), k, alpha, lrn_groups))
    x = _conv(x, *w("conv3"), 1, True, 1)
    x = _conv(x, *w("conv4"), 1, True, groups)
    x = _pool(_conv(x, *w("conv5"), 1, True, groups))
    x = x.reshape(len(x), -1)  # (B, 6 * 6 * 256) at 227 px, channels last as Keras flattens
    keep = 0.5 if m.dropout_form == "paper" else 1.0  # Sec. 4.2's test-time factor
    for fc in ("fc6", "fc7"):
        kernel, bias = w(fc)
        if m.dropout_placement == "inputs":
            x = x * keep
        x = np.maximum(x @ kernel + bias, 0.0)
        if m.dropout_placement == "outputs":
            x = x * keep
    kernel, bias = w("fc8")
    return x @ kernel + bias


@pytest.mark.parametrize("case", sorted(CASES))
def test_serving_form_gives_the_trained_nets_logits(case):
    net = _net(case)
    serving = net.split_form()
    assert is_serving_model(serving.model) and serving.split_form() is serving
    r = net.config.data.resize_size
    images = np.random.default_rng(5).integers(0, 256, (3, r, r, 3), dtype=np.uint8)
    ours = serving.predict_images(images, output="logits")
    trained = net.predict_images(images, output="logits")
    expected = numpy_logits(net, images)
    scale = np.abs(expected).max()
    assert np.ptp(expected, axis=0).max() > 0.1 * scale  # the images, not the biases, make the logits
    np.testing.assert_allclose(trained, expected, rtol=0, atol=2e-5 * scale)  # the reference itself
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(ours, trained, rtol=0, atol=2e-5 * scale)
    # fc7's features (Sec. 6.1) too: the dropout factor folded into the next kernel leaves them as they were
    features = net.predict_images(images, output="features")
    np.testing.assert_allclose(
        serving.predict_images(images, output="features"), features, rtol=0, atol=2e-5 * np.abs(features).max()
    )


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("convention,k,alpha", [("paper", 2.0, 1e-4), ("caffe", 1.0, 1e-4 / 5)])
def test_serving_lrn_both_kernels_match_the_formula(convention, k, alpha, large, groups, monkeypatch):
    monkeypatch.setattr(ServingLRN, "LARGE", 0 if large else 10**12)  # the band matmul, or tf's LRN op
    a = np.random.default_rng(6).normal(scale=30.0, size=(2, 3, 3, 16)).astype("float32")
    layer = ServingLRN(convention=convention, groups=groups)
    np.testing.assert_allclose(layer(a).numpy(), _lrn(a.astype(np.float64), k, alpha, groups), rtol=1e-5)
    assert layer(np.zeros((0, 3, 3, 16), "float32")).shape == (0, 3, 3, 16)  # an empty batch


def optimized_ops(signature) -> collections.Counter:
    """The op types of `signature`'s graph after grappler's default CPU optimizations (the
    function library inlined, the remapper's fusions applied), as the runtime runs it."""
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    graph_def = signature.graph.as_graph_def(add_shapes=True)
    for node in [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]:
        node.device = "/device:CPU:0"
    meta = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=signature.graph)
    meta.collection_def["train_op"].CopyFrom(
        meta_graph_pb2.CollectionDef(
            node_list=meta_graph_pb2.CollectionDef.NodeList(value=[t.op.name for t in signature.outputs])
        )
    )
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
    nodes = [*optimized.node, *(n for f in optimized.library.function for n in f.node_def)]
    fused = [n.attr["fused_ops"].list.s for n in nodes if n.op in ("_FusedConv2D", "_FusedMatMul")]
    assert all(ops[0] == b"BiasAdd" for ops in fused)
    return collections.Counter(n.op for n in nodes)


def test_exported_graph_fuses_each_columns_convolution_bias_and_relu(tmp_path):
    from alexnet_tf.exporting import export_saved_model

    net = _net("two_columns")
    loaded = tf.saved_model.load(export_saved_model(net, str(tmp_path / "1")))
    ops = optimized_ops(loaded.signatures["serve_uint8"])
    assert ops["_FusedConv2D"] == 9  # conv1, and conv2 to conv5 in each of the two columns
    # fc6, fc7, fc8 as kernel @ batch (KernelFirstDense), then their biases and fc6's and fc7's ReLUs
    assert ops["MatMul"] == 3 and ops["_FusedMatMul"] == 0
    assert ops["BiasAdd"] == 3 and ops["Relu"] == 2
    assert ops["Conv2D"] == 0
    assert ops["Split"] == 1 and ops["ConcatV2"] == 2  # the columns part at conv2 and at conv5 only
