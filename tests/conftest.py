"""Test setup: two logical CPU devices, so MirroredStrategy tests run on a CPU-only host
(this must happen before anything starts the TensorFlow runtime); one tiny trained run
(and its export) for the evaluate, export, serve and figures tests, trained once per
session; a small image folder.

Tiers: `python -m pytest -q` runs the fast tier (model, data, a few real steps end to
end); `python -m pytest -q -m slow` the rest (subprocesses, several workers, SIGTERM,
export and serving end to end, the ablation and benchmark commands, the wheel)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from alexnet_tf.distribute import configure_logical_cpus  # noqa: E402

configure_logical_cpus(2)
del tf

import helpers  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """Three steps of the quickstart recipe, a checkpoint after each (ckpt-1, ckpt-2,
    ckpt-3: distinct models to average)."""
    from alexnet_tf.training import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("run") / "quick")
    train_and_evaluate(helpers.tiny(**{"train.checkpoint_every": 1, "train.log_every": 3}), workdir)
    return workdir


@pytest.fixture(scope="session")
def export_dir(trained_workdir, tmp_path_factory):
    from alexnet_tf.exporting import export_saved_model
    from alexnet_tf.runs import load_net

    out = str(tmp_path_factory.mktemp("export") / "alexnet" / "1")
    export_saved_model(load_net(trained_workdir), out, crops="center")
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return helpers.make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture
def user_cwd(tmp_path, monkeypatch):
    """A fresh working directory, as a user's clone is: the test gives the commands and
    the Python API relative paths in it, as users paste them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def caffemodel(tmp_path_factory):
    """A V1 caffemodel in bvlc_alexnet's shapes with random weights, written once by the
    independent writer (tests/caffe_writer.py) as bvlc_alexnet.caffemodel, and Caffe's
    mean image file beside it as imagenet_mean.binaryproto; its path."""
    import caffe_writer
    import numpy as np

    folder = tmp_path_factory.mktemp("caffe")
    blobs = caffe_writer.encode(caffe_writer.random_weights(seed=0))
    path = caffe_writer.write_caffemodel(str(folder / "bvlc_alexnet.caffemodel"), caffe_writer.alexnet_layers(blobs))
    rng = np.random.default_rng(2)
    mean = (rng.uniform(90, 130, (3, 1, 1)) + rng.uniform(-20, 20, (3, 256, 256))).astype(np.float32)
    caffe_writer.write_mean(str(folder / "imagenet_mean.binaryproto"), mean)
    return path
