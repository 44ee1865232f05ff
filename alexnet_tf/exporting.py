"""A trained net as a SavedModel for TF Serving and `tf.saved_model.load`:
`export_saved_model(net, out)`, which `python -m alexnet_tf.export` calls.

Signatures (all return the top-5 classes, best first):
  serving_default  images: tf.string (B,), JPEG/PNG/GIF/BMP bytes of any size
  serve_uint8      images: tf.uint8 (B, H, W, 3), RGB pixels of any size
  outputs          classes int32 (B, 5), class_names string (B, 5), probabilities float32 (B, 5),
                   and for ImageNet's synsets class_descriptions string (B, 5) ("tench, Tinca tinca")
  classification   TF Serving's Classify API: inputs: tf.string (B,), serialized tf.train.Example
                   with the image bytes as feature "image/encoded" (as `prepare` writes them);
                   outputs classes string (B, 5) (the class names), scores float32 (B, 5)
The class names, index by index, are also in EXPORT_DIR/assets.extra/classes.json, and the
run's TF32 setting (train.tf32), which a server sets before it loads the model, and the
net's multiply-adds per image, by which `python -m alexnet_tf.serve` plans its threads,
in EXPORT_DIR/assets.extra/settings.json.

The preprocessing of training is inside: shorter side to `data.resize_size` and the
central square (Sec. 2; or the whole image warped to that square, `data.resize`), the
centre crop or the ten crops of Sec. 4.1 (softmax averaged), minus the training set's
mean image, the channels in the net's order. Class names and the mean image are
baked in. The net is written in the form of `alexnet_tf.serving_form`: the same numbers,
no XLA needed (TF Serving's default), each column's convolutions as single fused ops. An
existing SavedModel at EXPORT_DIR is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import os
import shutil

import keras
import tensorflow as tf

from alexnet_tf.config import ConfigError
from alexnet_tf.nets import TrainedNet
from alexnet_tf.serving_form import multiply_adds

TOP_K = 5
# The class names beside the SavedModel (assets.extra: files for the model's users, not
# read by its graph): {"class_names": [...], "class_descriptions": [...] for ImageNet's
# synsets}, index by index, as the REST server's GET /v1/models/NAME/classes answers.
CLASSES_FILE = "assets.extra/classes.json"
# What decides how a server computes, beside the SavedModel: {"tf32": train.tf32,
# "multiply_adds_per_image": the net's, all views of an image}. TensorFlow's TF32 switch and
# its thread pools are process-wide and not in the graph; a server sets them before it loads.
SETTINGS_FILE = "assets.extra/settings.json"
VIEWS = {"center": 1, "ten": 10}  # net rows per image, by `crops`
EXAMPLE_FEATURES = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}  # of `classification`'s inputs


def class_outputs(net: TrainedNet, indices: tf.Tensor) -> dict:
    """`class_names` of the classes at `indices` and, where the net has them (ImageNet's
    synsets), `class_descriptions`: the synset stays the class id, as in Keras'
    `decode_predictions` (class_name, class_description, score)."""
    out = {"class_names": tf.gather(tf.constant(list(net.class_names)), indices)}
    if net.class_descriptions:
        out["class_descriptions"] = tf.gather(tf.constant(list(net.class_descriptions)), indices)
    return out


def export_saved_model(net: TrainedNet, out: str, crops: str = "center", overwrite: bool = False) -> str:
    """Writes `net` (in its serving form, which needs no XLA) as a SavedModel in `out`."""
    if crops not in VIEWS:
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    if os.path.exists(os.path.join(out, "saved_model.pb")):
        if not overwrite:
            raise ConfigError(f"{out} already holds a SavedModel; give another version folder, or --overwrite")
        shutil.rmtree(out)
    net = net.split_form()
    k = min(TOP_K, net.num_classes)

    def serve(images, encoded: bool) -> dict:
        top = tf.math.top_k(net.predict_raw(images, encoded, crops), k=k)  # of the probabilities (B, classes)
        return {
            "classes": top.indices,  # (B, k) int32
            **class_outputs(net, top.indices),  # (B, k) string each
            "probabilities": top.values,  # (B, k) float32
        }

    def classify(images) -> dict:  # TF Serving's classification signature: exactly these two outputs
        out = serve(images, True)
        return {"classes": out["class_names"], "scores": out["probabilities"]}

    # The endpoints' variables are tracked by add_endpoint itself; `archive.track(model)`
    # would store every weight a second time (keras-team/keras#23553: twice the disk and
    # twice the memory of every server that loads it).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        "serving_default", lambda images: serve(images, True), [tf.TensorSpec([None], tf.string, name="images")]
    )
    archive.add_endpoint(
        "serve_uint8",
        lambda images: serve(images, False),
        [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "classification",
        lambda inputs: classify(tf.io.parse_example(inputs, EXAMPLE_FEATURES)["image/encoded"]),
        [tf.TensorSpec([None], tf.string, name="inputs")],
    )
    archive.write_out(out, verbose=False)
    classes = {"class_names": list(net.class_names)}
    if net.class_descriptions:
        classes["class_descriptions"] = list(net.class_descriptions)
    os.makedirs(os.path.join(out, os.path.dirname(CLASSES_FILE)), exist_ok=True)
    with open(os.path.join(out, CLASSES_FILE), "w", encoding="utf-8") as f:
        json.dump(classes, f, ensure_ascii=False)
    settings = {"tf32": net.config.train.tf32, "multiply_adds_per_image": multiply_adds(net.model) * VIEWS[crops]}
    with open(os.path.join(out, SETTINGS_FILE), "w", encoding="utf-8") as f:
        json.dump(settings, f)
    return out


def read_export_settings(path: str) -> dict:
    """SETTINGS_FILE of the SavedModel folder `path`; for an export written without it (or
    without a key), TF32 off (train.tf32's default) and the multiply-adds unknown (None).
    Reads no tensor: a server may call it before TensorFlow starts."""
    settings = {"tf32": False, "multiply_adds_per_image": None}
    file = os.path.join(path, SETTINGS_FILE)
    if os.path.exists(file):
        with open(file, encoding="utf-8") as f:
            settings.update(json.load(f))
    return settings


def apply_export_settings(path: str) -> dict:
    """Sets what the SavedModel folder `path`'s run decided for the process that serves
    it (`read_export_settings`): TF32 as its train.tf32, float32 as float32 unless the run
    asked for TF32 (TensorFlow's own default is TF32 on Ampere and newer GPUs). Returns
    the settings."""
    settings = read_export_settings(path)
    tf.config.experimental.enable_tensor_float_32_execution(bool(settings["tf32"]))
    return settings
