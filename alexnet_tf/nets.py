"""A trained net as a value: what evaluation, export, the figures, serving and fine-tuning
take, wherever the net came from (a training run's folder, imported weights, a test, a
notebook).

    net = alexnet_tf.load_net("runs/paper")            # a run folder or one checkpoint
    probs = net.predict_images(images)                   # uint8 (B, H, W, 3) or encoded bytes
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

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import predict as predict_lib
from alexnet_tf import serving_form
from alexnet_tf.config import Config
from alexnet_tf.data import Stats, resize_images
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
        m = self.config.model
        model = serving_form.serving_model(self.model, self.config.data)
        config = dataclasses.replace(
            self.config, model=dataclasses.replace(m, **SERVING_FORMS), data=serving_form.serving_data(self.config.data)
        )
        return dataclasses.replace(self, config=config, model=model)

    @functools.cached_property
    def stats_tensors(self) -> dict:
        return self.stats.tensors()

    @functools.cached_property
    def features_model(self) -> keras.Model:
        """The model up to fc7's activations (Sec. 6.1), with the same weights."""
        return predict_lib.features_model(self.model)

    def caller(self, output: predict_lib.Output = "probabilities"):
        """What `predict` calls: the model, or for features the model up to fc7."""
        return self.features_model if output == "features" else self.model

    def predict(
        self, batch: dict, views: int = 1, output: predict_lib.Output = "probabilities", crop_at=None
    ) -> tf.Tensor:
        """The net on a prepared batch (`alexnet_tf.data.batch`): see `alexnet_tf.predict`."""
        data = self.config.data
        return predict_lib.predict(self.caller(output), batch, self.stats_tensors, data, views, output, crop_at=crop_at)

    def predict_images(self, images, crops: str = "center", output: predict_lib.Output = "probabilities") -> np.ndarray:
        """Probabilities (B, classes), logits (B * views, classes) or fc7 features (B, 4096)
        of images of any size: uint8 (B, H, W, 3) RGB, or a list of encoded JPEG/PNG/GIF/BMP
        bytes. Each is prepared as in evaluation: Sec. 2's resize and central square, the
        centre crop or Sec. 4.1's ten crops, the training set's mean subtracted."""
        encoded = bool(isinstance(images, (list, tuple)) and images and isinstance(images[0], bytes))
        images = tf.constant(images) if encoded else tf.convert_to_tensor(np.asarray(images, np.uint8))
        return self.predict_raw(images, encoded, crops, output).numpy()

    def predict_raw(
        self, images: tf.Tensor, encoded: bool, crops: str = "center", output: predict_lib.Output = "probabilities"
    ) -> tf.Tensor:
        """`predict_images` on a tensor of encoded images (B,) or uint8 images (B, H, W, 3);
        traceable (the export's signatures are this)."""
        data = self.config.data
        resized = resize_images(images, data.resize_size, encoded, data.resize)
        batch, views = batch_lib.views(resized, data, crops)
        return self.predict(batch, views, output, crop_at=batch_lib.crop_at(data, crops))
