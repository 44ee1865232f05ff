"""Caffe's bvlc_alexnet: caffemodels written by an independent writer (tests/caffe_writer.py,
classes compiled by protoc from its own caffe.proto text) with random weights in
bvlc_alexnet's shapes, imported, and run against a NumPy forward pass written from Caffe's
layer definitions; the refusals; the data switches for Caffe's conventions."""

import dataclasses
import hashlib
import json
import os
import warnings

import caffe_writer
import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from alexnet_tf import caffe, convert, evaluate
from alexnet_tf import data as data_lib
from alexnet_tf.applications import load_net
from alexnet_tf.config import DataConfig

R, C = 256, 227  # Caffe's warped images and crops
TOP = (R - C) // 2  # 14: Caffe's centre crop offset


# --- Caffe's forward pass in NumPy, from its layer definitions (float64)


def conv(x, w, b, stride=1, pad=0, group=1):
    """Caffe's Convolution: a cross-correlation of x (N, C, H, W) with w (O, C / group, k, k),
    the output maps in `group` contiguous blocks, each seeing its block of input maps."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, k, k)
    cin, cout = x.shape[1] // group, w.shape[0] // group
    outs = [
        np.einsum("nchwij,ocij->nohw", windows[:, g * cin : (g + 1) * cin], w[g * cout : (g + 1) * cout], optimize=True)
        for g in range(group)
    ]
    return np.concatenate(outs, axis=1) + b[None, :, None, None]


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRN across channels: x / (k + alpha / size * sum of x^2 over `size` maps) ^ beta."""
    squares = np.pad(x**2, ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
    window = sum(squares[:, i : i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def max_pool(x, k=3, stride=2):
    """Caffe's max pooling: ceil((H - k) / stride) + 1 outputs, the last windows clipped."""
    h, w = x.shape[2:]
    ho, wo = -(-(h - k) // stride) + 1, -(-(w - k) // stride) + 1
    x = np.pad(
        x, ((0, 0), (0, 0), (0, (ho - 1) * stride + k - h), (0, (wo - 1) * stride + k - w)), constant_values=-np.inf
    )
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(-2, -1))


def caffe_forward(images, mean_bgr, weights):
    """fc8 of bvlc_alexnet's deploy net, as Caffe runs it on the centre crops of 256x256
    RGB images (N, 256, 256, 3): BGR, (C, H, W), minus the same crop of the mean image."""
    w = {name: [v.astype(np.float64) for v in values] for name, values in weights.items()}
    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    x = images.astype(np.float64)[..., ::-1].transpose(0, 3, 1, 2) - mean_bgr  # (N, 3, 256, 256) BGR
    x = x[:, :, TOP : TOP + C, TOP : TOP + C]  # (N, 3, 227, 227)
    x = max_pool(lrn(relu(conv(x, *w["conv1"], stride=4))))  # (N, 96, 27, 27)
    x = max_pool(lrn(relu(conv(x, *w["conv2"], pad=2, group=2))))  # (N, 256, 13, 13)
    x = relu(conv(x, *w["conv3"], pad=1))
    x = relu(conv(x, *w["conv4"], pad=1, group=2))
    x = max_pool(relu(conv(x, *w["conv5"], pad=1, group=2)))  # (N, 256, 6, 6)
    x = x.reshape(len(x), -1)  # InnerProduct flattens (C, H, W)
    for fc in ("fc6", "fc7"):  # drop6, drop7: the identity at test (Caffe scales in training)
        x = relu(x @ w[fc][0].T + w[fc][1])
    return x @ w["fc8"][0].T + w["fc8"][1]  # (N, 1000)


def keras_logits(net, images):
    """The imported net on the same centre crops (of images already 256 x 256), through
    its own preprocessing: the prediction path that evaluate and export use."""
    assert images.shape[1:3] == (R, R) and (R - C) // 2 == TOP
    batch = data_lib.batch.center(tf.constant(images), net.config.data)
    return net.predict(batch, output="logits").numpy()


def assert_close_to_caffe(logits, expected):
    # float32 sums over up to 9,216 terms against float64: relative errors of about 1e-6;
    # any layout or convention error moves the logits by their own size
    scale = np.abs(expected).max()
    assert 1.0 < scale < 1e4 and np.isfinite(logits).all()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * scale)


# --- fixtures: the random weights, turned into protobuf blobs once


@pytest.fixture(scope="module")
def weights():
    return caffe_writer.random_weights(seed=0)


@pytest.fixture(scope="module")
def blobs(weights):
    return caffe_writer.encode(weights)


@pytest.fixture(scope="module")
def v1_caffemodel(blobs, tmp_path_factory):
    """The random weights as a V1 (bvlc_alexnet's format) .caffemodel."""
    path = str(tmp_path_factory.mktemp("caffe") / "net.caffemodel")
    return caffe_writer.write_caffemodel(path, caffe_writer.alexnet_layers(blobs), "V1")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (3, R, R, 3), dtype=np.uint8)


def test_v1_caffemodel_through_the_command_matches_caffe(v1_caffemodel, weights, images, tmp_path, capsys):
    """The V1 format (bvlc_alexnet's), with imagenet_mean.binaryproto, imported by the
    command into a run folder that load_net (evaluate, export, figures) restores."""
    path = v1_caffemodel
    rng = np.random.default_rng(2)
    mean = (rng.uniform(90, 130, (3, 1, 1)) + rng.uniform(-20, 20, (3, R, R))).astype(np.float32)  # BGR (3, H, W)
    mean_path = caffe_writer.write_mean(str(tmp_path / "imagenet_mean.binaryproto"), mean)
    workdir = str(tmp_path / "bvlc_alexnet")
    assert convert.main([path, "--workdir", workdir, "--mean", mean_path]) == 0
    err = capsys.readouterr().err
    assert f"not bvlc_alexnet.caffemodel's {caffe.BVLC_ALEXNET_SHA1}" in err  # a checksum warning

    run = load_net(workdir)
    assert run.origin.endswith("ckpt-0")
    assert_close_to_caffe(keras_logits(run, images), caffe_forward(images, mean, weights))
    d, m = run.config.data, run.config.model
    assert (d.channel_order, d.resize, d.resize_size, d.crop_size, d.input_scale) == ("bgr", "warp", 256, 227, 1.0)
    assert (m.lrn_convention, m.dropout_form, m.num_classes) == ("caffe", "inverted", 1000)
    with open(os.path.join(workdir, "classes.json")) as f:
        names = json.load(f)
    synsets = [name for name, _ in names]  # each beside its readable name (RunFolder.write_classes)
    assert len(synsets) == 1000 and synsets == sorted(synsets) and synsets[0] == "n01440764"  # Caffe's sorted synsets
    assert names[0][1] == "tench, Tinca tinca"
    assert convert.main([path, "--workdir", workdir]) == 2  # a run folder is never overwritten
    assert "not empty" in capsys.readouterr().err


def test_the_commands_take_a_caffemodel_as_the_api_does(v1_caffemodel, image_folder, capsys):
    """--workdir bvlc_alexnet.caffemodel works wherever alexnet_tf.load_net(it) does:
    evaluate reads the imported net and checks its 1000 classes against the data."""
    path = v1_caffemodel
    assert evaluate.main(["--workdir", path, "--data", f"folder:{image_folder}", "--crops", "center"]) == 2
    assert "predicts 1000 classes" in capsys.readouterr().err


@pytest.mark.slow
def test_v2_caffemodel_matches_caffe(blobs, weights, images, tmp_path, monkeypatch):
    """The current format (`layer`, BlobShape), imported in memory, with Caffe's
    per-channel mean; a file with the published checksum imports without a warning."""
    path = caffe_writer.write_caffemodel(str(tmp_path / "net.caffemodel"), caffe_writer.alexnet_layers(blobs), "V2")
    with open(path, "rb") as f:
        monkeypatch.setattr(caffe, "BVLC_ALEXNET_SHA1", hashlib.sha1(f.read()).hexdigest())
    with warnings.catch_warnings():
        warnings.simplefilter("error", caffe.ChecksumWarning)
        imported = caffe.load_net(path)
    assert "(V2 format, sha1" in imported.origin
    mean = np.asarray(caffe.CAFFE_MEAN_BGR, np.float64)[:, None, None]  # (104.0, 116.7, 122.7) BGR
    assert_close_to_caffe(keras_logits(imported, images), caffe_forward(images, mean, weights))


def small_net(tmp_path, change, version="V1"):
    """bvlc_alexnet's first layers with one thing changed (a small file: the check stops there)."""
    rng = np.random.default_rng(0)
    weights = {
        "conv1": (rng.normal(size=(96, 3, 11, 11)), rng.normal(size=96)),
        "conv2": (rng.normal(size=(256, 48, 5, 5)), rng.normal(size=256)),
    }
    layers = caffe_writer.alexnet_layers(caffe_writer.encode(weights), caffenet_order=change == "caffenet")[:7]
    if change == "conv1_64":
        layers[1] = layers[1][:5] + (caffe_writer.encode({"w": (rng.normal(size=(64, 3, 11, 11)), np.zeros(64))})["w"],)
    if change == "conv2_group1":
        name, v2, v1, field, settings, blobs = layers[5]
        layers[5] = (name, v2, v1, field, {**settings, "group": 1}, blobs)
    return caffe_writer.write_caffemodel(str(tmp_path / f"{change}.caffemodel"), layers, version), weights


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_layers_and_blobs_read_from_both_formats(tmp_path, version):
    path, weights = small_net(tmp_path, None, version)
    net = caffe.read_caffemodel(path)
    assert net.format == version
    assert [(layer.name, layer.type) for layer in net.layers][1:5] == [
        ("conv1", "Convolution"),
        ("relu1", "ReLU"),
        ("norm1", "LRN"),
        ("pool1", "Pooling"),
    ]
    conv2 = net.layers[5].blobs
    legacy = version == "V1"  # 4-D num x channels x height x width, biases 1 x 1 x 1 x 256
    assert [b.shape for b in conv2] == [(256, 48, 5, 5), (1, 1, 1, 256) if legacy else (256,)]
    np.testing.assert_array_equal(conv2[0], weights["conv2"][0].astype(np.float32))
    np.testing.assert_array_equal(conv2[1].ravel(), weights["conv2"][1].astype(np.float32))


@pytest.mark.parametrize("version", ["V1", "V2"])
@pytest.mark.parametrize(
    "change, message",
    [
        ("conv1_64", "layer 'conv1' has weights of shape 64x3x11x11; bvlc_alexnet's are 96x3x11x11"),
        ("conv2_group1", "layer 'conv2' (Convolution) has group=1; bvlc_alexnet's 'conv2' has 2"),
        (
            "caffenet",
            "layer 'pool1' (Pooling) is where bvlc_alexnet has 'norm1' (LRN): pooling before LRN is CaffeNet's",
        ),
    ],
)
def test_other_nets_are_refused_naming_the_layer(tmp_path, capsys, change, message, version):
    path, _ = small_net(tmp_path, change, version)
    with pytest.raises(caffe.CaffeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        caffe.check_alexnet(caffe.read_caffemodel(path))
    assert convert.main([path, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err  # one line
    assert not os.path.exists(tmp_path / "run")


def test_files_that_are_not_caffemodels(tmp_path):
    jpeg = tf.io.encode_jpeg(tf.zeros((8, 8, 3), tf.uint8)).numpy()
    cases = {"photo.jpg": jpeg, "deploy.prototxt": b'name: "AlexNet"\nlayer {\n  name: "conv1"\n}\n', "empty": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(caffe.CaffeError, match="is not a caffemodel"):
            caffe.read_caffemodel(str(tmp_path / name))
    with pytest.raises(caffe.CaffeError, match="cannot read"):
        caffe.read_caffemodel(str(tmp_path / "missing.caffemodel"))
    with pytest.raises(caffe.CaffeError, match="not a 1x3xHxW mean image|not a Caffe mean image"):
        caffe.read_mean(str(tmp_path / "photo.jpg"))


def test_mean_image_bgr_chw_to_rgb_hwc_and_unpacked_values(tmp_path):
    """imagenet_mean.binaryproto (1 x 3 x H x W, BGR) becomes our (H, W, 3) RGB mean; values
    written without packing (legal protobuf) are read as well."""
    mean = np.random.default_rng(0).uniform(0, 255, (3, 4, 5)).astype(np.float32)
    path = caffe_writer.write_mean(str(tmp_path / "mean.binaryproto"), mean)
    np.testing.assert_array_equal(caffe.read_mean(path), mean.transpose(1, 2, 0)[..., ::-1])
    blob = caffe_writer.classes(packed=False)["BlobProto"](num=1, channels=3, height=4, width=5)
    blob.data.extend(mean.ravel().tolist())
    (tmp_path / "unpacked").write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(caffe.read_mean(str(tmp_path / "unpacked")), mean.transpose(1, 2, 0)[..., ::-1])


# --- the data switches: data.resize and data.channel_order


def test_warp_resize_keeps_the_whole_image(tmp_path):
    """Caffe's warp squeezes the whole image into the square; Sec. 2's resize keeps the
    aspect ratio and cuts the central square. A 100x200 image, its left fifth red."""
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :40, 0] = 255
    image[:, 40:, 2] = 255
    png = tf.io.encode_png(image)
    for data in (png, tf.constant(image)):
        encoded = data.dtype == tf.string
        warped = data_lib.decode_and_resize(data, 64, encoded, resize="warp").numpy()
        assert warped.shape == (64, 64, 3)
        assert (warped[:, :11, 0] == 255).all() and (warped[:, 15:, 2] == 255).all()  # the red fifth kept
        central = data_lib.decode_and_resize(data, 64, encoded).numpy()
        assert (central[..., 2] == 255).all()  # the central square is all blue
        in_dataset = tf.data.Dataset.from_tensors(data).map(
            lambda x, encoded=encoded: data_lib.decode_and_resize(x, 64, encoded, "warp")
        )
        np.testing.assert_array_equal(next(iter(in_dataset)).numpy(), warped)
    with pytest.raises(ValueError, match="shorter_side, warp"):
        data_lib.resize_square(tf.constant(image), 64, "stretch")


def test_pipelines_warp_with_data_resize(image_folder):
    """Training and evaluation crops of a warp run are crops of the warped image."""
    config = DataConfig(source=f"folder:{image_folder}", resize="warp", resize_size=40, crop_size=32)
    source = data_lib.open_source(config.source, config)

    def warped(split):  # the folder's images (36x44) warped to 40x40
        return [data_lib.resize_warp(tf.io.decode_jpeg(x), 40).numpy() for _, x, _, _ in source.examples(split)]

    batch = next(iter(data_lib.eval_dataset(source, config, "val", 4)))
    for crop, full in zip(batch["image"].numpy(), warped("val")[:4]):
        np.testing.assert_array_equal(crop, full[4:36, 4:36])
    train = next(iter(data_lib.train_dataset(source, config, "train", 4, seed=3)))
    images = warped("train")
    for crop, (top, left) in zip(train["image"].numpy(), train["offset"].numpy()):
        assert any(np.array_equal(crop, full[top : top + 32, left : left + 32]) for full in images)
    central = dataclasses.replace(config, resize="shorter_side")
    batch = next(iter(data_lib.eval_dataset(source, central, "val", 4)))
    assert not np.array_equal(batch["image"].numpy()[0], warped("val")[0][4:36, 4:36])


def test_bgr_is_the_last_step_of_device_preprocess():
    """The mean image and the colour noise are RGB; the net of a bgr run gets the result
    with its channels reversed."""
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    stats = {"mean_image": mean, "eigval": np.float32([0.2, 0.02, 0.005]), "eigvec": np.float32(np.eye(3)[::-1])}
    batch = {
        "image": rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8),
        "offset": np.int32([[1, 2], [0, 0]]),
        "flip": np.array([True, False]),
        "alpha": np.float32([[0.1, -0.2, 0.3], [0.0, 0.1, 0.0]]),
    }
    config = DataConfig(resize_size=8, crop_size=6, channel_order="bgr")
    out = data_lib.device_preprocess(batch, {k: tf.constant(v) for k, v in stats.items()}, config).numpy()
    for i in range(2):
        (top, left), alpha = batch["offset"][i], batch["alpha"][i]
        rgb = (
            batch["image"][i] - mean[top : top + 6, left : left + 6] + 255 * stats["eigvec"] @ (alpha * stats["eigval"])
        )
        rgb = rgb[:, ::-1] if batch["flip"][i] else rgb
        np.testing.assert_allclose(out[i], rgb[..., ::-1], rtol=1e-5, atol=1e-3)
