"""Figures tier: Fig. 3 puts each conv1 kernel where it belongs, Fig. 4 finds true nearest
neighbours in fc7 space, and both PNGs are written; also for a net with Caffe's conventions."""

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf
from helpers import QUICKSTART

from alexnet_tf import caffe
from alexnet_tf import data as data_lib
from alexnet_tf.config import load_recipe, override
from alexnet_tf.drawing import COLUMN_GAP, GAP, TILE, conv1_grid
from alexnet_tf.figures import main, make_figures, nearest
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet
from alexnet_tf.runs import load_net, write_net


def test_conv1_grid_layout():
    kernel = np.random.RandomState(0).randn(11, 11, 3, 96).astype(np.float32)
    kernel[..., 5] *= 1000  # per-kernel scaling: a large kernel must not wash out the others
    image = conv1_grid(kernel)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    f = math.ceil(TILE / 11)
    size = 11 * f
    cols = math.ceil(math.sqrt(48 * 0.75))  # 6 tiles a row, 8 rows per half
    half_width = cols * (size + GAP) - GAP
    assert image.shape[1] == 2 * half_width + COLUMN_GAP + 4 * GAP

    def tile(i):
        half, j = divmod(i, 48)
        r, c = divmod(j, cols)
        top = 2 * GAP + r * (size + GAP)
        left = 2 * GAP + half * (half_width + COLUMN_GAP) + c * (size + GAP)
        return image[top : top + size, left : left + size]

    for i in (0, 5, 47, 48, 95):
        k = kernel[..., i]
        expected = np.round(255 * (k - k.min()) / (k.max() - k.min())).astype(np.uint8)
        np.testing.assert_array_equal(tile(i)[::f, ::f], expected)
        assert tile(i).min() == 0 and tile(i).max() == 255
    # A one-column net: one grid.
    assert conv1_grid(kernel[..., :48], columns=1).shape[1] < image.shape[1] / 2


def test_nearest_is_euclidean():
    rng = np.random.RandomState(1)
    pool = rng.randn(50, 16).astype(np.float32)
    queries = np.concatenate([pool[[7, 21]] + 1e-3, rng.randn(3, 16).astype(np.float32)])
    index = nearest(queries, pool, 4)
    brute = np.argsort(np.linalg.norm(queries[:, None] - pool[None], axis=-1), axis=1)[:, :4]
    np.testing.assert_array_equal(index, brute)
    assert index[0, 0] == 7 and index[1, 0] == 21


def test_make_figures(trained_workdir, tmp_path):
    out = str(tmp_path / "figs")
    run = load_net(trained_workdir)
    result = make_figures(run, out, queries=3, neighbours=4, train_examples=100, stream=None)
    fig3 = tf.io.decode_png(tf.io.read_file(result["fig3"])).numpy()
    np.testing.assert_array_equal(fig3, conv1_grid(run.model.get_layer("conv1").kernel.numpy()))
    fig4 = tf.io.decode_png(tf.io.read_file(result["fig4"])).numpy()
    assert fig4.shape[2] == 3 and fig4.shape[0] > 3 * 96 and fig4.shape[1] > 5 * 96  # 3 rows, 1 + 4 columns

    # Neighbours recomputed here: fc7 (after its ReLU) of centre crops, Euclidean distance.
    source = data_lib.open_source(run.config.data.source)
    d = run.config.data
    features = keras.Model(run.model.inputs, run.model.get_layer("fc7").output)

    def fc7(split, n):
        b = next(iter(data_lib.eval_dataset(source, d, split, n)))
        return features(data_lib.device_preprocess(b, run.stats.tensors(), d), training=False).numpy()

    q, p = fc7(d.eval_split, 3), fc7(d.train_split, 100)
    dist = np.linalg.norm(q[:, None] - p[None], axis=-1)  # (3, 100)
    got = np.asarray(result["neighbours"])
    assert got.shape == (3, 4)
    chosen = np.take_along_axis(dist, got, 1)
    np.testing.assert_allclose(chosen, np.sort(dist, axis=1)[:, :4], rtol=1e-4)


def test_cli_error_is_one_line(tmp_path, capsys):
    """(The command on a run folder runs as docs/serving.md prints it, in tests/test_docs.py,
    and on a relative one in tests/test_paths.py.)"""
    assert main(["--workdir", str(tmp_path / "missing"), "--out", str(tmp_path / "cli")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_figures_of_a_net_with_caffes_conventions(image_folder, tmp_path, capsys):
    """An imported Caffe net's conventions (BGR input, images warped to the square, a mean
    image, unscaled pixels) on a small net: Fig. 3 shows its conv1 kernels in RGB (their
    channels reversed), Fig. 4's neighbours are those of fc7 computed here from the crops
    in BGR; with no --data, the net's own data unreadable, the error says to give --data."""
    sets = {**caffe.CAFFE_SETTINGS, "data.source": f"folder:{tmp_path / 'gone'}", "model.num_classes": 3}
    config = override(load_recipe(QUICKSTART), sets)
    d = config.data
    mean = np.random.default_rng(0).uniform(0, 255, (d.resize_size, d.resize_size, 3)).astype(np.float32)
    stats = data_lib.Stats(mean, *(getattr(data_lib.Stats.imagenet(8), k) for k in ("eigval", "eigvec")))
    workdir = str(tmp_path / "imported")
    write_net(TrainedNet(config, build_model(config.model, seed=1), stats, ["a", "b", "c"]), workdir)
    net = load_net(workdir)
    spec = dataclasses.replace(net.config.data, source=f"folder:{image_folder}", eval_split="")
    result = make_figures(net, str(tmp_path / "figs"), spec, queries=3, neighbours=4, train_examples=48, stream=None)

    kernel = net.model.get_layer("conv1").kernel.numpy()  # (11, 11, 3, N) in B, G, R order
    fig3 = tf.io.decode_png(tf.io.read_file(result["fig3"])).numpy()
    np.testing.assert_array_equal(fig3, conv1_grid(kernel[:, :, ::-1]))
    assert not np.array_equal(fig3, conv1_grid(kernel))

    source = data_lib.open_source(spec.source)
    c, top = d.crop_size, (d.resize_size - d.crop_size) // 2
    fc7 = keras.Model(net.model.inputs, net.model.get_layer("fc7").output)

    def features(split, n):
        crops = next(iter(data_lib.eval_dataset(source, spec, split, n)))["image"].numpy().astype(np.float32)
        x = (crops - mean[top : top + c, top : top + c]) * d.input_scale  # RGB, minus the mean
        return fc7(x[..., ::-1], training=False).numpy()  # the net reads BGR

    q, p = features("val", 3), features("train", 48)
    dist = np.linalg.norm(q[:, None] - p[None], axis=-1)  # (3, 48)
    chosen = np.take_along_axis(dist, np.asarray(result["neighbours"]), 1)
    np.testing.assert_allclose(chosen, np.sort(dist, axis=1)[:, :4], rtol=1e-4)

    out = str(tmp_path / "no_data")
    assert main(["--workdir", workdir, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Fig. 4 needs images") and "give some with --data folder:DIR" in err
    assert os.listdir(out) == ["fig3_conv1_kernels.png"]
