"""What a batch is: the one definition that the input pipelines, the compiled steps,
evaluation, export and the benchmarks share.

A batch is a dict of tensors with a leading batch axis B:

    image   uint8 (B, c, c, 3)  the crop as cut from the resized image, before its flip
                                (c = `cut_size`: data.pad_crop, else data.crop_size)
    offset  int32 (B, 2)        the crop's (top, left) in the resized image: where the
                                mean image is read from
    flip    bool (B,)           mirror it (Sec. 4.1)
    alpha   float32 (B, 3)      the colour-noise coefficients (Sec. 4.1)
    label   int32 (B,)          the class
    weight  float32 (B,)        1, or 0 for a row that stands for an unreadable file or
                                pads a short batch: it counts for nothing

The first four are what the net needs (`INPUTS`, read by `data.device_preprocess`); the
last two are what the metrics need. Ten-crop batches hold each image's ten views as ten
consecutive rows.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf.config import DataConfig

INPUTS = ("image", "offset", "flip", "alpha")
KEYS = (*INPUTS, "label", "weight")


def cut_size(config: DataConfig) -> int:
    """The side of the crops as they are cut (before any padding to data.crop_size)."""
    return config.pad_crop or config.crop_size


def center_offset(config: DataConfig) -> int:
    """Top (= left) of the central crop in the resized image."""
    return (config.resize_size - cut_size(config)) // 2


def ten_crop_offsets(config: DataConfig) -> list[tuple[int, int]]:
    """Sec. 4.1's test patches: the four corners and the centre, (top, left) each."""
    m = config.resize_size - cut_size(config)
    return [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]


def make(image, offset, flip, alpha, label=None, weight=None) -> dict:
    """A batch (or one example, without the batch axis) from its parts; labels default
    to 0 and weights to 1."""
    shape = tf.shape(flip)
    return {
        "image": image,
        "offset": tf.cast(offset, tf.int32),
        "flip": tf.cast(flip, tf.bool),
        "alpha": tf.cast(alpha, tf.float32),
        "label": tf.zeros(shape, tf.int32) if label is None else tf.cast(label, tf.int32),
        "weight": tf.ones(shape, tf.float32) if weight is None else tf.cast(weight, tf.float32),
    }


def inputs(batch: dict) -> dict:
    """The part of a batch the net's preprocessing reads."""
    return {k: batch[k] for k in INPUTS}


def center(images: tf.Tensor, config: DataConfig, labels=None) -> dict:
    """The central crops of resized images (B, R, R, 3): evaluation's view (Sec. 4.1)."""
    c, top = cut_size(config), center_offset(config)
    n = tf.shape(images)[0]
    return make(
        images[:, top : top + c, top : top + c, :],
        tf.fill([n, 2], top),
        tf.zeros([n], tf.bool),
        tf.zeros([n, 3]),
        labels,
    )


def ten_crops(image: tf.Tensor, config: DataConfig, label=0) -> dict:
    """The ten test crops of one resized image (R, R, 3) as ten rows: each of the five
    patches as cut and with its flip bit set, for its reflection (Sec. 4.1)."""
    c = cut_size(config)
    crops, offsets, flips = [], [], []
    for top, left in ten_crop_offsets(config):
        for flip in (False, True):
            crops.append(image[top : top + c, left : left + c, :])
            offsets.append((top, left))
            flips.append(flip)
    return make(tf.stack(crops), tf.constant(offsets), tf.constant(flips), tf.zeros((10, 3)), tf.fill([10], label))


def views(images: tf.Tensor, config: DataConfig, crops: str) -> tuple[dict, int]:
    """(batch, views per image) of resized images (B, R, R, 3): their centre crops, or
    their ten crops as ten consecutive rows each."""
    if crops == "center":
        return center(images, config), 1
    if crops != "ten":
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    c = cut_size(config)
    ten = tf.map_fn(
        lambda x: ten_crops(x, config),
        images,
        fn_output_signature={
            "image": tf.TensorSpec((10, c, c, 3), tf.uint8),
            "offset": tf.TensorSpec((10, 2), tf.int32),
            "flip": tf.TensorSpec((10,), tf.bool),
            "alpha": tf.TensorSpec((10, 3), tf.float32),
            "label": tf.TensorSpec((10,), tf.int32),
            "weight": tf.TensorSpec((10,), tf.float32),
        },
    )
    return flatten_views(ten), 10


def crop_at(config: DataConfig, crops: str) -> tuple[int, int] | None:
    """Where every crop of a `views` batch was cut, unflipped (`device_preprocess`'s
    `crop_at`): the centre for centre crops; None for ten crops (five places, flips)."""
    return (center_offset(config),) * 2 if crops == "center" else None


def flatten_views(batch: dict) -> dict:
    """(B, views, ...) rows to (B * views, ...)."""
    return {k: tf.reshape(v, [-1, *v.shape[2:]]) for k, v in batch.items()}


def placeholders(labels: tf.Tensor, config: DataConfig, views: int = 1) -> dict:
    """Weight-0 stand-ins (black centre crops) for examples that could not be decoded,
    (N, ...) rows, or (N, views, ...) with several views."""
    c, m = cut_size(config), center_offset(config)
    n = tf.shape(labels)[0]
    shape = [n, views] if views > 1 else [n]
    labels = tf.cast(labels, tf.int32)
    return make(
        tf.zeros(shape + [c, c, 3], tf.uint8),
        tf.fill(shape + [2], tf.constant(m, tf.int32)),
        tf.zeros(shape, tf.bool),
        tf.zeros(shape + [3], tf.float32),
        tf.repeat(labels[:, None], views, axis=1) if views > 1 else labels,
        tf.zeros(shape, tf.float32),
    )
