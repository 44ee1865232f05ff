"""Trained nets for notebooks and scripts, in the style of Keras Applications.

    import alexnet_tf

    net = alexnet_tf.load_net("runs/paper")                  # or "bvlc_alexnet.caffemodel", "imagenet"
    probs = net.predict_images(images)                         # pixels 0..255, encoded bytes or paths
    feats = net.predict_images(images, output="features")      # fc7, Sec. 6.1 / Fig. 4

    model = alexnet_tf.AlexNet(weights="imagenet")             # probabilities (softmax), as in Keras
    x = alexnet_tf.preprocess_input(images, "imagenet")         # resized, cropped, mean subtracted, BGR
    alexnet_tf.decode_predictions(model.predict(x), top=5)      # [[("n02123045", "tabby, tabby cat", 0.61), ...]]
    base = alexnet_tf.AlexNet(weights="runs/paper", include_top=False)  # fc7 features

`AlexNet` gives the Keras model alone: its inputs are crops prepared as the net was
trained (`net.config.data`: mean image subtracted, ...), which `preprocess_input` makes
and `TrainedNet.predict` and `predict_images` make for themselves.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from alexnet_tf import paths, pretrained
from alexnet_tf.config import Config, ModelConfig
from alexnet_tf.data import Stats, device_preprocess, resize_images
from alexnet_tf.data import batch as batch_lib
from alexnet_tf.inference import features_model
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet, _image_batches


def load_net(path: str | os.PathLike, best: bool = False) -> TrainedNet:
    """A trained net: a run folder (its newest readable checkpoint, or with `best` the
    one with the lowest validation error), one checkpoint in one, Caffe's bvlc_alexnet
    .caffemodel (read without Caffe, see `alexnet_tf.caffe`), or "imagenet": the published
    bvlc_alexnet, fetched once (see `alexnet_tf.pretrained`; a folder named imagenet is
    "./imagenet"). Paths relative to the working directory or absolute."""
    if os.fspath(path) == pretrained.NAME:
        return pretrained.load_net()
    path = paths.resolve(path)
    if path.endswith(".caffemodel"):
        from alexnet_tf import caffe

        return caffe.load_net(path)
    from alexnet_tf.runs import load_net as load_run_net

    return load_run_net(path, best)


def AlexNet(  # noqa: N802 (Keras Applications' naming)
    weights: str | os.PathLike | None = None,
    include_top: bool = True,
    config: ModelConfig | None = None,
    seed: int = 0,
    *,
    classes: int | None = None,
    classifier_activation: str | None = "softmax",
    input_shape: tuple | None = None,
) -> keras.Model:
    """The paper's net as a Keras model, with Keras Applications' arguments:

    weights: None (untrained: built from `config`, the paper's by default, with `seed`),
        "imagenet" (Caffe's published bvlc_alexnet, fetched once), or a run folder,
        checkpoint or .caffemodel (`load_net`)
    include_top: with fc8, the classifier; False ends the model at fc7's activations
        (4096 per image, after the ReLU: the representation of Sec. 6.1), the layer under
        which a new classifier goes
    classes: the number of outputs; with weights, that of the weights (with
        `include_top`, another number is a ValueError, as in Keras: put a top of your own
        on `include_top=False`)
    classifier_activation: "softmax" (probabilities, as in Keras) or None (fc8's logits);
        without weights any Keras activation
    input_shape: (crop, crop, 3) of the net, if given: fc6 sees pool5's 6x6 maps, which
        fixes the input size (227 for the paper's net and Caffe's)
    """
    if weights is None:
        model_config = config or ModelConfig()
        if classes is not None:
            if classes < 1:
                raise ValueError(f"classes must be 1 or more, got {classes}")
            model_config = dataclasses.replace(model_config, num_classes=classes)
        model = build_model(model_config, seed=seed)
    else:
        if config is not None:
            raise ValueError("give either weights (the net comes with its own config) or config, not both")
        if include_top and classifier_activation not in (None, "softmax"):
            raise ValueError(
                f"with weights, classifier_activation must be 'softmax' or None, got {classifier_activation!r}"
            )
        model = load_net(weights).model
        found = model.output.shape[-1]
        if include_top and classes is not None and classes != found:
            raise ValueError(
                f"weights={os.fspath(weights)!r} has {found} classes, so with include_top=True classes must be "
                f"{found}, got {classes}; use include_top=False and put a classifier of your own on it"
            )
    if input_shape is not None and tuple(input_shape) != tuple(model.input.shape[1:]):
        raise ValueError(
            f"input_shape must be {tuple(model.input.shape[1:])} for this net (fc6 sees pool5's 6x6 maps, "
            f"which fixes the input size), got {tuple(input_shape)}"
        )
    if not include_top:
        return features_model(model)
    if classifier_activation in (None, "linear"):
        return model
    # float32 whatever the policy, as the softmax of Keras Applications' mixed-precision models
    probs = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(model.output)
    return keras.Model(model.inputs, probs, name=model.name)


def preprocess_input(
    images, net, crops: str = "center", stats: Stats | str | None = None, batch_size: int = 32
) -> np.ndarray:
    """The images as the net's Keras model takes them (`AlexNet`, `TrainedNet.model`):
    float32 crops (N, crop, crop, 3), or (N * 10, ...) with crops="ten" (Sec. 4.1's ten
    views of each image, consecutive; average the model's outputs over each ten), each
    prepared as evaluation and `predict_images` prepare it: resized as the net's data
    config says (Sec. 2's shorter side to 256 and central square, or Caffe's warp), cropped,
    the mean image of its training set subtracted, the channels in its order (BGR for
    Caffe's nets), scaled by its `data.input_scale`.

    images: what `TrainedNet.predict_images` takes (pixels 0..255 as a batch, one image or
        a list of images of any sizes; encoded bytes; file paths; PIL images)
    net: a TrainedNet; "imagenet" or a .caffemodel (Caffe's preprocessing and per-channel
        mean: no weights read); a run folder or checkpoint (loaded); or a Config, with
        `stats` (a `data.Stats` or a stats .npz) or its data.stats_path for the mean image
    """
    config, stats_value = _preprocessing(net, stats)
    data = config.data
    stats_tensors = stats_value.tensors()
    crop_at = batch_lib.crop_at(data, crops)
    parts = []
    for pixels in _image_batches(images, data, batch_size):  # a batch array as it is, a list resized
        batch, _ = batch_lib.views(resize_images(pixels, data.resize_size, False, data.resize), data, crops)
        parts.append(device_preprocess(batch, stats_tensors, data, crop_at=crop_at).numpy())
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, data.crop_size, data.crop_size, 3), np.float32)


def _preprocessing(net, stats) -> tuple[Config, Stats]:
    """(config, stats) that `preprocess_input` prepares images with."""
    name = os.fspath(net) if isinstance(net, (str, os.PathLike)) else None
    if name == pretrained.NAME or (name and name.endswith(".caffemodel")):  # Caffe's, as caffe.load_net without a mean
        from alexnet_tf import caffe

        config = caffe.caffe_config()
        return config, caffe.caffe_stats(None, config.data.resize_size)
    if isinstance(net, (str, os.PathLike)):
        net = load_net(net)
    if isinstance(net, TrainedNet):
        return net.config, net.stats
    if not isinstance(net, Config):
        raise ValueError(
            f"net is a {type(net).__name__}: expected a TrainedNet, 'imagenet', a run folder, checkpoint or "
            ".caffemodel, or a Config"
        )
    path = stats if isinstance(stats, (str, os.PathLike)) else (stats is None and net.data.stats_path)
    if path:
        stats = Stats.load(paths.resolve(path))
    if stats is None:
        if net.data.subtract_mean:
            raise ValueError("a Config has no mean image: give stats= (a data.Stats or a stats .npz), or the net")
        size = net.data.resize_size
        stats = Stats(np.zeros((size, size, 3), np.float32), np.ones(3, np.float32), np.eye(3, dtype=np.float32))
    return net, stats


def decode_predictions(preds, top: int = 5, net=None) -> list[list[tuple[str, str, float]]]:
    """Keras Applications' `decode_predictions`: per image (row of `preds`, probabilities
    (N, classes)), its `top` classes, likeliest first, as (class_name, description, score).

    net: whose classes the columns are: None or "imagenet" (ILSVRC-2012's 1,000 synsets,
    "n01440764" with "tench, Tinca tinca"), a TrainedNet, a run folder or checkpoint (its
    classes.json), a .caffemodel, or the class names themselves. A class without a
    readable name is described by its name."""
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise ValueError(f"decode_predictions expects a batch of predictions (N, classes), got shape {preds.shape}")
    names, descriptions = _classes(net, preds.shape[1])
    if len(names) != preds.shape[1]:
        raise ValueError(f"predictions have {preds.shape[1]} classes but the net has {len(names)}")
    descriptions = descriptions or names
    out = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        out.append([(names[i], descriptions[i], float(row[i])) for i in best])
    return out


def _classes(net, num_classes: int) -> tuple[list, list]:
    """(class names, readable names or []) of `decode_predictions`' net."""
    if isinstance(net, TrainedNet):
        return list(net.class_names), list(net.class_descriptions)
    path = os.fspath(net) if isinstance(net, (str, os.PathLike)) else None
    if net is None or path == pretrained.NAME or (path and path.endswith(".caffemodel")):
        from alexnet_tf.caffe import imagenet_class_names
        from alexnet_tf.data.records import imagenet_class_descriptions

        if num_classes != 1000:
            raise ValueError(
                f"ImageNet's predictions have 1000 classes, these {num_classes}: give net= (the net, its run folder)"
            )
        names = imagenet_class_names()
        return names, imagenet_class_descriptions(names) or []
    if path is not None:
        from alexnet_tf.runs import read_classes, resolve_checkpoint

        path = paths.resolve(path)
        names, descriptions = read_classes(path if os.path.isdir(path) else resolve_checkpoint(path)[0], num_classes)
        return names, descriptions or []
    return [str(n) for n in net], []
