"""`weights="imagenet"`, as Keras Applications has it: Caffe's published bvlc_alexnet (the
paper's two-column net trained on ILSVRC-2012), fetched once from Caffe's model zoo with
`keras.utils.get_file` into Keras' cache folder, its SHA-1 checked, and imported without
Caffe by `alexnet_tf.caffe`.

    net = alexnet_tf.load_net("imagenet")            # a TrainedNet
    model = alexnet_tf.AlexNet(weights="imagenet")    # the Keras model

Where the file comes from, first found first used (only the last needs a network):
  $ALEXNET_TF_WEIGHTS          a bvlc_alexnet.caffemodel of yours, used as it is
  KERAS_CACHE/models/bvlc_alexnet.caffemodel   (KERAS_CACHE: $KERAS_HOME, else ~/.keras)
                               fetched there once, or put there by hand
  $ALEXNET_TF_WEIGHTS_URL      the origin to fetch from (a mirror; file:// works), else
                               Caffe's model zoo (`URL`)
A fetched or cached file whose SHA-1 is not the published file's is refused (a cached one
is fetched again); nothing is fetched before a net asks for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from alexnet_tf import caffe, paths
from alexnet_tf.config import ConfigError
from alexnet_tf.nets import TrainedNet

NAME = "imagenet"  # the name `load_net` and `AlexNet(weights=...)` take for these weights
FILE_NAME = "bvlc_alexnet.caffemodel"
# BVLC Caffe's models/bvlc_alexnet/readme.md: caffemodel_url (its sha1: caffe.BVLC_ALEXNET_SHA1)
URL = "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel"
CACHE_SUBDIR = "models"  # where Keras Applications keep their weights
FILE_ENV = "ALEXNET_TF_WEIGHTS"
URL_ENV = "ALEXNET_TF_WEIGHTS_URL"


class WeightsError(ConfigError):
    """The published weights could not be had; the message says where to put them by hand."""


def cache_dir() -> str:
    """Keras' cache folder, as `keras.utils.get_file` chooses it: $KERAS_HOME, else
    ~/.keras, else (neither writable) /tmp/.keras."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        os.makedirs(base, exist_ok=True)  # as Keras makes it when it loads
    except OSError:
        pass
    return base if os.access(base, os.W_OK) else os.path.join(tempfile.gettempdir(), ".keras")


def cached_path() -> str:
    """Where the fetched file is kept, and where a file put by hand is found."""
    return os.path.join(cache_dir(), CACHE_SUBDIR, FILE_NAME)


def sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_file() -> str:
    """The path of bvlc_alexnet.caffemodel: $ALEXNET_TF_WEIGHTS, else the cached file, else
    fetched into the cache now (see the module docstring); WeightsError, in one line
    saying where to put the file by hand, if none can be had."""
    named = os.environ.get(FILE_ENV)
    if named:
        path = paths.resolve(named)
        if not os.path.isfile(path):
            raise WeightsError(f"{FILE_ENV}={named} names no file: point it at your bvlc_alexnet.caffemodel")
        return path
    target, expected = cached_path(), caffe.BVLC_ALEXNET_SHA1
    if os.path.isfile(target) and sha1(target) == expected:
        return target
    url = os.environ.get(URL_ENV) or URL
    by_hand = f"download {URL} by hand (sha1 {expected}) to {target}, or set {FILE_ENV}=PATH to your copy"
    import keras

    try:  # a cached file with another sha1 (a partial copy, another file) is fetched again
        path = keras.utils.get_file(
            FILE_NAME, url, cache_subdir=CACHE_SUBDIR, cache_dir=cache_dir(), force_download=os.path.exists(target)
        )
    except Exception as e:  # noqa: BLE001 (get_file raises a bare Exception for a failed fetch)
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"could not fetch {FILE_NAME} ({reason}); {by_hand}") from None
    found = sha1(path)
    if found != expected:
        os.remove(path)
        raise WeightsError(f"{url} gave a file with sha1 {found}, not the published {expected} (not kept); {by_hand}")
    return path


def load_net() -> TrainedNet:
    """bvlc_alexnet's net with the published weights (`weights_file`), as `caffe.load_net`
    imports it: Caffe's settings, ILSVRC-2012's 1,000 synsets with their readable names,
    Caffe's per-channel mean."""
    return caffe.load_net(weights_file())
