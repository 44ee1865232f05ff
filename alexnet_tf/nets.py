"""A trained net as a value: what evaluation, export, the figures, serving and fine-tuning
take, wherever the net came from (a training run's folder, imported weights, a test, a
notebook).

    net = alexnet_tf.load_net("runs/paper")            # a run folder or one checkpoint
    probs = net.predict_images(images)                   # pixels 0..255, encoded bytes or paths
    feats = net.predict_images(images, output="features")  # fc7, Sec. 6.1

A `TrainedNet` holds the Keras model, the config it was built and trained with (its
`model` section builds the net; its `data` section says how images are prepared for it:
resize, crop, mean image, channel order), the statistics of its training set (Sec. 2's
mean image, Sec. 4.1's RGB covariance) and its class names. `alexnet_tf.runs` reads and
writes it as a run folder.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import inference, serving_form
from alexnet_tf.config import Config
from alexnet_tf.data import Stats, decode_and_resize, resize_images
from alexnet_tf.data import batch as batch_lib
from alexnet_tf.model import SERVING_FORMS


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedNet:
    """A trained net and what it needs to see images as it saw them in training.

    config: the run's Config (model: the net; data: its preprocessing)
    model: the Keras model (inputs (B, c, c, 3) float, outputs fc8 logits)
    stats: the mean image and RGB covariance of its training set (`data.Stats`)
    class_names: one string per output, in output order
    origin: where it came from, for messages (a checkpoint path, a file)
    class_descriptions: readable names beside the class names, or () (ImageNet's synsets
        "n01440764" come with "tench, Tinca tinca")
    """

    config: Config
    model: keras.Model
    stats: Stats
    class_names: tuple
    origin: str = ""
    class_descriptions: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "class_descriptions", tuple(str(c) for c in self.class_descriptions or ()))
        if self.class_descriptions and len(self.class_descriptions) != len(self.class_names):
            raise ValueError("class_descriptions must have one entry per class name")
        outputs = self.model.output.shape[-1]
        if outputs != len(self.class_names):
            raise ValueError(f"the model has {outputs} outputs but {len(self.class_names)} class names were given")
        # Every command and the Python API run a net through its TrainedNet: float32 is
        # float32 here as in the net's training unless its run set train.tf32 (TensorFlow's
        # own default is TF32 on Ampere and newer GPUs). Process-wide: the latest net decides.
        tf.config.experimental.enable_tensor_float_32_execution(self.config.train.tf32)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_form(self) -> TrainedNet:
        """The same net in the form the export writes (`alexnet_tf.serving_form`): no XLA
        needed (TF Serving's default), each column's convolutions with their bias and ReLU
        as single fused ops, the input scale, channel order and test-time dropout factor
        folded into the kernels. The same function of the images, to float rounding; its
        model takes the crops that its `config.data` prepares."""
        if serving_form.is_serving_model(self.model):
            return self
        model = serving_form.serving_model(self.model, self.config.data)
        config = dataclasses.replace(
            self.config,
            compute=dataclasses.replace(self.config.compute, **SERVING_FORMS),
            data=serving_form.serving_data(self.config.data),
        )
        return dataclasses.replace(self, config=config, model=model)

    @functools.cached_property
    def stats_tensors(self) -> dict:
        return self.stats.tensors()

    @functools.cached_property
    def features_model(self) -> keras.Model:
        """The model up to fc7's activations (Sec. 6.1), with the same weights."""
        return inference.features_model(self.model)

    def caller(self, output: inference.Output = "probabilities"):
        """What `predict` calls: the model, or for features the model up to fc7."""
        return self.features_model if output == "features" else self.model

    def predict(
        self, batch: dict, views: int = 1, output: inference.Output = "probabilities", crop_at=None
    ) -> tf.Tensor:
        """The net on a prepared batch (`alexnet_tf.data.batch`): see `alexnet_tf.inference`."""
        data = self.config.data
        return inference.predict(self.caller(output), batch, self.stats_tensors, data, views, output, crop_at=crop_at)

    def predict_images(
        self,
        images,
        crops: str = "center",
        output: inference.Output = "probabilities",
        batch_size: int = 32,
    ) -> np.ndarray:
        """Probabilities (N, classes), logits (N * views, classes) or fc7 features (N, 4096)
        of N images of any size, each prepared as in evaluation: Sec. 2's resize and
        central square, the centre crop or Sec. 4.1's ten crops, the training set's mean
        subtracted.

        images: RGB pixels 0..255, uint8 or float: a batch (N, H, W, 3) or one image
        (H, W, 3); or a sequence or iterable (a list, a generator) of such images of
        different sizes (arrays, PIL images), of encoded JPEG/PNG/GIF/BMP bytes or of image
        file paths, mixed as you like; or one PIL image, bytes object or path. One image gives one row. Anything else,
        and floats in 0..1, raise a ValueError that says what is expected.

        The net sees `batch_size` images per call and an iterable is read as it goes, so
        memory grows with `batch_size`, not with N."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
        parts = [
            self.predict_raw(batch, False, crops, output).numpy()
            for batch in _image_batches(images, self.config.data, batch_size)
        ]
        if parts:
            return np.concatenate(parts)
        width = self.features_model.output.shape[-1] if output == "features" else self.num_classes
        return np.zeros((0, width), np.float32)

    def predict_raw(
        self, images: tf.Tensor, encoded: bool, crops: str = "center", output: inference.Output = "probabilities"
    ) -> tf.Tensor:
        """`predict_images` on a tensor of encoded images (B,) or uint8 images (B, H, W, 3);
        traceable (the export's signatures are this)."""
        data = self.config.data
        resized = resize_images(images, data.resize_size, encoded, data.resize)
        batch, views = batch_lib.views(resized, data, crops)
        return self.predict(batch, views, output, crop_at=batch_lib.crop_at(data, crops))


IMAGES = (
    "RGB pixels 0..255 (uint8 or float) as (N, H, W, 3) or (H, W, 3), or a list of such images "
    "(arrays, PIL images), encoded JPEG/PNG/GIF/BMP bytes or image file paths"
)


def _image_batches(images, data, batch_size: int):
    """uint8 batches (B <= batch_size, H, W, 3) of `images` (see `predict_images`): a
    batch array sliced as it is; anything else image by image, each resized to the
    `data.resize_size` square of the net's data config (as `predict_raw` would) so that
    images of any size and kind share a batch."""
    if isinstance(images, tf.Tensor):
        images = images.numpy()
    elif _array_like(images) and not isinstance(images, np.ndarray):  # a PIL image, ...
        images = np.asarray(images)
    if isinstance(images, np.ndarray) and images.dtype.kind in "uif":  # pixels: a batch, or one image
        array = images[None] if images.ndim == 3 else images
        if array.ndim != 4:
            raise ValueError(f"images of shape {images.shape}: expected {IMAGES}")
        for start in range(0, len(array), batch_size):
            yield tf.convert_to_tensor(_pixels(array[start : start + batch_size], f"images[{start}:]"))
        return
    if isinstance(images, (bytes, str, os.PathLike)):
        images = [images]
    elif isinstance(images, np.ndarray):  # encoded images (bytes or object), or something else
        images = images.reshape(-1) if images.dtype.kind in "OS" else [images]
    try:
        items = iter(images)
    except TypeError:
        raise ValueError(f"images of type {type(images).__name__}: expected {IMAGES}") from None
    batch = []
    for i, item in enumerate(items):
        batch.append(_resized(item, i, data.resize_size, data.resize))
        if len(batch) == batch_size:
            yield tf.stack(batch)
            batch = []
    if batch:
        yield tf.stack(batch)


def _resized(item, index: int, size: int, resize: str) -> tf.Tensor:
    """One image of a list (pixels, encoded bytes or a file path) as uint8 (size, size, 3)."""
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            item = f.read()
    if isinstance(item, (bytes, bytearray, np.bytes_)):
        try:
            return decode_and_resize(tf.constant(bytes(item)), size, True, resize)
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(
                f"images[{index}]: {len(item)} bytes that are no JPEG, PNG, GIF or BMP ({e.message})"
            ) from None
    if isinstance(item, (np.ndarray, tf.Tensor, list, tuple)) or _array_like(item):
        pixels = _pixels(np.asarray(item), f"images[{index}]")
        if pixels.ndim != 3:
            raise ValueError(f"images[{index}] has shape {pixels.shape}: expected one image (H, W, 3) per entry")
        return decode_and_resize(tf.convert_to_tensor(pixels), size, False, resize)
    raise ValueError(f"images[{index}] is a {type(item).__name__}: expected {IMAGES}")


def _array_like(value) -> bool:
    """Whether NumPy reads `value` as an array of its own (a PIL image, a framework's tensor)."""
    return hasattr(value, "__array__") or hasattr(value, "__array_interface__")


def _pixels(array: np.ndarray, what: str) -> np.ndarray:
    """`array` as uint8 pixels, checked: RGB (..., H, W, 3), values 0..255 (floats
    rounded); floats that all lie in 0..1 are refused (scaled images: multiply by 255)."""
    if array.ndim < 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"{what} has shape {array.shape}: expected {IMAGES}")
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{what} has dtype {array.dtype}: expected {IMAGES}")
    low, high = array.min(), array.max()
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ValueError(f"{what} has values from {low} to {high}: expected RGB pixels 0..255")
    if np.issubdtype(array.dtype, np.floating) and 0 < high <= 1:
        raise ValueError(
            f"{what} holds floats in 0..1 (max {high:.3g}): expected pixels 0..255, as the net was trained on; "
            "multiply by 255"
        )
    return np.rint(array).astype(np.uint8)
