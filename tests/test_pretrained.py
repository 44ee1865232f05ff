"""weights="imagenet": the published bvlc_alexnet fetched once with keras.utils.get_file
into Keras' cache folder, its SHA-1 checked, then imported; a cached file or one named by
$ALEXNET_TF_WEIGHTS used without a network; a failed fetch or a wrong file refused in one
line that says where to put the file by hand. The origin here is a file:// URL serving a
caffemodel written by tests/caffe_writer.py (its own SHA-1 standing for the published
one): nothing is fetched from the network."""

import hashlib
import os
import shutil
import warnings

import caffe_writer
import numpy as np
import pytest

import alexnet_tf
from alexnet_tf import caffe, cli, pretrained


def sha1_of(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache folder, no $ALEXNET_TF_WEIGHTS, an origin that holds nothing."""
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(pretrained.FILE_ENV, raising=False)
    monkeypatch.setenv(pretrained.URL_ENV, (tmp_path / "nowhere" / "bvlc_alexnet.caffemodel").as_uri())
    return home


@pytest.fixture
def published(caffemodel, monkeypatch):
    """The tests' caffemodel standing for the published file (its SHA-1 the published one)."""
    monkeypatch.setattr(caffe, "BVLC_ALEXNET_SHA1", sha1_of(caffemodel))
    return caffemodel


def cached(home):
    return home / "models" / "bvlc_alexnet.caffemodel"


def test_imagenet_is_fetched_once_into_the_cache_then_read_from_it(keras_home, published, monkeypatch):
    monkeypatch.setenv(pretrained.URL_ENV, f"file://{published}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", caffe.ChecksumWarning)  # the published file's SHA-1: no warning
        net = alexnet_tf.load_net("imagenet")
    assert pretrained.cached_path() == str(cached(keras_home))
    assert sha1_of(cached(keras_home)) == caffe.BVLC_ALEXNET_SHA1
    assert net.origin.startswith(f"{cached(keras_home)} (V1 format, sha1 {caffe.BVLC_ALEXNET_SHA1}")
    assert net.class_names[0] == "n01440764" and net.class_descriptions[0] == "tench, Tinca tinca"
    fc8 = caffe_writer.random_weights(seed=0)["fc8"]  # what tests/caffe_writer.py wrote
    np.testing.assert_array_equal(net.model.get_layer("fc8").kernel.numpy(), fc8[0].T)
    np.testing.assert_array_equal(net.model.get_layer("fc8").bias.numpy(), fc8[1])
    # the origin gone: the cached file is used, no fetch
    monkeypatch.setenv(pretrained.URL_ENV, (keras_home / "gone.caffemodel").as_uri())
    assert pretrained.weights_file() == str(cached(keras_home))


def test_a_file_named_by_the_environment_is_used_as_it_is(keras_home, caffemodel, monkeypatch, user_cwd):
    shutil.copy(caffemodel, user_cwd / "mine.caffemodel")
    monkeypatch.setenv(pretrained.FILE_ENV, "mine.caffemodel")  # relative to the working directory
    assert pretrained.weights_file() == str(user_cwd / "mine.caffemodel")
    assert not cached(keras_home).exists()
    monkeypatch.setenv(pretrained.FILE_ENV, "missing.caffemodel")
    with pytest.raises(pretrained.WeightsError, match="ALEXNET_TF_WEIGHTS=missing.caffemodel names no file"):
        pretrained.weights_file()


def test_a_failed_fetch_says_where_to_put_the_file(keras_home, capsys):
    with pytest.raises(pretrained.WeightsError) as e:
        alexnet_tf.AlexNet(weights="imagenet")
    message = str(e.value)
    assert "\n" not in message and message.startswith("could not fetch bvlc_alexnet.caffemodel (URL fetch failure")
    assert f"download {pretrained.URL} by hand (sha1 {caffe.BVLC_ALEXNET_SHA1}) to {cached(keras_home)}" in message
    assert "or set ALEXNET_TF_WEIGHTS=PATH" in message and not cached(keras_home).exists()
    # through a command: one line, exit 2
    assert cli.run(pretrained.weights_file) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_file_with_another_sha1_is_refused_and_not_kept(keras_home, tmp_path, monkeypatch):
    other = tmp_path / "other.caffemodel"
    other.write_bytes(b"not the published file")
    monkeypatch.setenv(pretrained.URL_ENV, other.as_uri())
    with pytest.raises(pretrained.WeightsError) as e:
        pretrained.weights_file()
    found = hashlib.sha1(b"not the published file").hexdigest()
    assert f"gave a file with sha1 {found}, not the published {caffe.BVLC_ALEXNET_SHA1} (not kept)" in str(e.value)
    assert f"to {cached(keras_home)}" in str(e.value) and not cached(keras_home).exists()
    # a cached file with another SHA-1 (a partial download) is fetched again
    os.makedirs(cached(keras_home).parent, exist_ok=True)
    cached(keras_home).write_bytes(b"partial")
    good = tmp_path / "good.caffemodel"
    good.write_bytes(b"stands for the published file")
    monkeypatch.setattr(caffe, "BVLC_ALEXNET_SHA1", hashlib.sha1(b"stands for the published file").hexdigest())
    monkeypatch.setenv(pretrained.URL_ENV, good.as_uri())
    assert pretrained.weights_file() == str(cached(keras_home))
    assert cached(keras_home).read_bytes() == b"stands for the published file"


def test_nothing_is_fetched_before_a_net_asks(keras_home, monkeypatch):
    """preprocess_input and decode_predictions for "imagenet" need no weights."""
    monkeypatch.setattr(pretrained, "weights_file", lambda: pytest.fail("fetched"))
    x = alexnet_tf.preprocess_input(np.zeros((1, 256, 256, 3), np.uint8), "imagenet")
    assert x.shape == (1, 227, 227, 3)
    assert alexnet_tf.decode_predictions(np.eye(1000)[:1], top=1, net="imagenet")[0][0][0] == "n01440764"
    assert not cached(keras_home).exists()
