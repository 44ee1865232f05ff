"""Figures tier: Fig. 3 puts each conv1 kernel where it belongs, Fig. 4 finds true nearest
neighbours in fc7 space, and both PNGs are written."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.drawing import COLUMN_GAP, GAP, TILE, conv1_grid
from alexnet_tf.figures import main, make_figures, nearest
from alexnet_tf.runs import load_net


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


@pytest.mark.slow
def test_cli(trained_workdir, tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["--workdir", trained_workdir, "--out", out, "--queries", "2", "--neighbours", "2", "--train-examples", "40"]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["fig3_conv1_kernels.png", "fig4_neighbours.png"]
    assert main(["--workdir", str(tmp_path / "missing"), "--out", out]) == 2
    assert capsys.readouterr().err.startswith("error: ")
