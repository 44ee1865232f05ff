"""The per-example and per-batch operations of Sec. 2 and 4.1, eager or in tf.data.

Host side (in tf.data): decode, rescale the shorter side to `resize_size` and take the
central square (Sec. 2; or warp the whole image to that square, `data.resize`), cut the crop that `random_choices` names, keep its flip bit and
colour-noise coefficients beside it (Sec. 4.1); or the ten test crops. Device side,
inside the compiled step (`device_preprocess`): cast, subtract the same crop of the
mean image, add the colour noise, mirror the flipped rows (and put the channels in the
net's order, `data.channel_order`). Every random choice is a pure
function of (seed, epoch, example index).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from alexnet_tf.config import DataConfig
from alexnet_tf.data import batch as batch_lib


@functools.cache
def _tiny_jpeg() -> bytes:
    with tf.init_scope():
        return tf.io.encode_jpeg(tf.zeros((1, 1, 3), tf.uint8)).numpy()


def _is_square_jpeg(data: tf.Tensor, size: int) -> tf.Tensor:
    """True for a JPEG already `size` x `size` (e.g. from prepare.py): decode+crop can fuse.

    Other bytes have their header read from a 1x1 JPEG instead: no branch per image.
    """
    is_jpeg = tf.io.is_jpeg(data)
    shape = tf.image.extract_jpeg_shape(tf.where(is_jpeg, data, _tiny_jpeg()))
    return is_jpeg & tf.equal(shape[0], size) & tf.equal(shape[1], size)


def resize_central(image: tf.Tensor, size: int) -> tf.Tensor:
    """Sec. 2: rescale the shorter side to `size`, then take the central size x size patch.

    Images smaller than `size` are enlarged, so every image yields every crop; an image
    already size x size is returned as it is (what the resize would give).
    """
    return _unless_square(image, size, _resize_central)


def _unless_square(image: tf.Tensor, size: int, resize) -> tf.Tensor:
    """`resize(image, size)`, or a uint8 image (H, W, 3), or batch of them (B, H, W, 3),
    that is already size x size as it is."""
    static = tuple(image.shape[-3:-1])
    if image.dtype != tf.uint8 or static == (size, size) or None not in static:
        return image if static == (size, size) and image.dtype == tf.uint8 else resize(image, size)
    shape = tf.shape(image)
    square = tf.logical_and(tf.equal(shape[-3], size), tf.equal(shape[-2], size))

    def as_it_is():
        return _sized(tf.identity(image), size)

    return tf.cond(square, as_it_is, lambda: resize(image, size))


def _sized(image: tf.Tensor, size: int) -> tf.Tensor:
    image.set_shape(image.shape[:-3].concatenate((size, size, 3)))
    return image


def _resize_central(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    h, w = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
    nh = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    nw = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    image = tf.image.resize(image, (nh, nw), antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    image = image[..., top : top + size, left : left + size, :]
    return _sized(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), size)


def resize_warp(image: tf.Tensor, size: int) -> tf.Tensor:
    """Both sides rescaled to `size`, whatever the aspect ratio: the whole image, squeezed.

    Caffe's ImageNet data were made so (its tutorial: `convert_imageset --resize_height=256
    --resize_width=256`, or ImageMagick's `convert -resize 256x256!`), and bvlc_alexnet was
    trained and measured on them: its mean image is 256x256, which Caffe's
    `compute_image_mean` only makes from images of one size. The filter is ours (the
    antialiased bilinear one of `resize_central`), not OpenCV's. An image already size x size
    is returned as it is.
    """

    def warp(image, size):
        out = tf.image.resize(image, (size, size), antialias=True)
        return _sized(tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8), size)

    return _unless_square(image, size, warp)


RESIZE = {"shorter_side": resize_central, "warp": resize_warp}  # data.resize


def resize_square(image: tf.Tensor, size: int, resize: str = "shorter_side") -> tf.Tensor:
    """The size x size image of Sec. 2 (`resize_central`) or Caffe's warped one (`resize_warp`);
    of one image (H, W, 3) or of each image of a batch (B, H, W, 3): one size for all."""
    if resize not in RESIZE:
        raise ValueError(f"resize must be one of {', '.join(RESIZE)}, got {resize!r}")
    return RESIZE[resize](image, size)


def decode_and_resize(image: tf.Tensor, size: int, encoded: bool, resize: str = "shorter_side") -> tf.Tensor:
    """Decoded (any of JPEG incl. CMYK and grey, PNG, GIF, BMP) and `resize_square`-d.

    A JPEG that is already size x size is only decoded.
    """
    if not encoded:
        return resize_square(image, size, resize)

    def general():
        return resize_square(tf.io.decode_image(image, channels=3, expand_animations=False), size, resize)

    def square():
        out = tf.io.decode_jpeg(image, channels=3)
        out.set_shape((size, size, 3))
        return out

    return tf.cond(_is_square_jpeg(image, size), square, general)


def resize_images(images: tf.Tensor, size: int, encoded: bool, resize: str = "shorter_side") -> tf.Tensor:
    """Encoded image bytes (B,) or uint8 images (B, H, W, 3) of any size -> (B, size, size, 3)
    by `decode_and_resize`. A uint8 batch has one size: resized as a whole (as it is when
    already size x size); encoded images one by one."""
    if not encoded:
        return resize_square(images, size, resize)
    return tf.map_fn(
        lambda x: decode_and_resize(x, size, True, resize),
        images,
        fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8),
    )


def decode_crop(data: tf.Tensor, offset: tf.Tensor, crop: int, size: int, resize: str = "shorter_side") -> tf.Tensor:
    """The `crop` x `crop` patch at `offset` of the resized image, decoding only that
    window when the file is already a size x size JPEG (decode_and_crop_jpeg)."""

    def fused():
        out = tf.io.decode_and_crop_jpeg(data, tf.stack([offset[0], offset[1], crop, crop]), channels=3)
        out.set_shape((crop, crop, 3))
        return out

    def general():
        image = decode_and_resize(data, size, True, resize)
        return tf.slice(image, [offset[0], offset[1], 0], [crop, crop, 3])

    return tf.cond(_is_square_jpeg(data, size), fused, general)


def random_label(name: tf.Tensor, seed: int, num_classes: int) -> tf.Tensor:
    """The control run's label (`data.random_labels`): a hash of the example's name (its
    file name, tfds_id, record hash or position in an in-memory split) keyed by the
    seed, so an example keeps its random label in every epoch, order and worker."""
    return tf.cast(tf.strings.to_hash_bucket_strong(name, num_classes, key=[seed, 0x5EED]), tf.int32)


DRAWS = 6  # uniforms per training example: crop corner (2), flip (1), noise coefficients (3)


def random_draws(indices: tf.Tensor, seed: int, epoch: int) -> tf.Tensor:
    """`DRAWS` uniforms in (0, 1) per example index, float64, shape indices.shape + (DRAWS,).

    Each is SipHash-2-4 (`tf.strings.to_hash_bucket_strong`, keyed by seed and epoch) of
    the number index * DRAWS + k: a pure function of (seed, epoch, index), so a chunk of
    examples gets its draws from two ops, whichever chunk, worker or order they come in.
    """
    numbers = tf.cast(indices, tf.int64)[..., None] * DRAWS + tf.range(DRAWS, dtype=tf.int64)
    buckets = tf.strings.to_hash_bucket_strong(tf.strings.as_string(numbers), 2**53, key=[seed, epoch])
    return (tf.cast(buckets, tf.float64) + 0.5) / 2.0**53


def random_choices(indices, config: DataConfig, training: bool, seed: int = 0, epoch: int = 0):
    """(offset (..., 2), flip (...), alpha (..., 3)) for the examples `indices` (any shape).

    Training: a random crop corner, a flip bit and the colour-noise coefficients (Sec.
    4.1) from `random_draws` (alpha through the inverse normal CDF). Evaluation: the
    central crop, no flip, no noise.
    """
    r, c = config.resize_size, batch_lib.cut_size(config)
    shape = tf.shape(indices)
    if training:
        u = random_draws(indices, seed, epoch)
        offset = tf.minimum(tf.cast(u[..., 0:2] * (r - c + 1), tf.int32), r - c)
        flip = config.random_flip & (u[..., 2] < 0.5)
        # In float64 and then rounded: the same alpha for an example in a batch of any
        # size (float32's vectorized and scalar ndtri can differ in the last bit).
        # (The top bucket rounds to 1.0, whose ndtri is inf: clipped, |alpha| < 8.2 sd.)
        u = tf.clip_by_value(u, 2.0**-53, 1 - 2.0**-53)
        alpha = tf.cast(tf.math.ndtri(u[..., 3:6]) * config.pca_noise_std, tf.float32)
    else:
        offset = tf.fill(tf.concat([shape, [2]], 0), (r - c) // 2)
        flip = tf.zeros(shape, tf.bool)
        alpha = tf.zeros(tf.concat([shape, [3]], 0), tf.float32)
    return offset, flip, alpha


def crop_example(image, label, choices, config: DataConfig, encoded: bool = False):
    """Cuts the crop that `choices` (one example's `random_choices`) names and keeps the
    flip bit and colour-noise coefficients beside it (Sec. 4.1).

    `image` is the resized (R, R, 3) uint8 image, or its encoded bytes with `encoded`. The
    crop is returned as cut: `device_preprocess` (or `apply_flips`) mirrors it.
    """
    c = batch_lib.cut_size(config)
    offset, flip, alpha = choices
    if encoded:
        crop = decode_crop(image, offset, c, config.resize_size, config.resize)
    else:
        crop = tf.slice(image, [offset[0], offset[1], 0], [c, c, 3])
    return batch_lib.make(crop, offset, flip, alpha, label)


def apply_flips(images: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Mirrors (left-right) the images (B, H, W, C) whose flip bit (B,) is set."""
    return tf.where(flips[:, None, None, None], tf.reverse(images, [2]), images)


def device_preprocess(
    batch: dict, stats: dict, config: DataConfig, dtype=tf.float32, crop_at: tuple[int, int] | None = None
) -> tf.Tensor:
    """uint8 crops -> mean-subtracted, colour-noised, flipped float images (runs on the device).

    `stats` holds tensors: mean_image (R, R, 3), eigval (3,), eigvec (3, 3), all RGB. The
    mean image's crop is subtracted before the flip, so each pixel loses its own mean; the
    channels are put in the net's order (`data.channel_order`) last. With `crop_at` (top,
    left), every crop of the batch was cut there, unflipped and without colour noise (the
    centre crops of evaluation and serving): the same function, its mean a slice of the
    mean image, and no gather, flip or noise op.
    """
    image = tf.cast(batch["image"], tf.float32)  # (B, c, c, 3), c = batch.cut_size
    pc = image.shape[1]
    if config.subtract_mean and crop_at is not None:
        top, left = crop_at
        image = image - stats["mean_image"][top : top + pc, left : left + pc]
    elif config.subtract_mean:
        ar = tf.range(pc)
        rows = batch["offset"][:, 0:1] + ar  # (B, pc)
        cols = batch["offset"][:, 1:2] + ar
        mean = tf.gather(stats["mean_image"], rows)  # (B, pc, R, 3)
        mean = tf.gather(mean, cols, axis=2, batch_dims=1)  # (B, pc, pc, 3)
        image = image - mean
    if config.pca_noise_std > 0 and crop_at is None:
        # Sec. 4.1: add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, in [0, 1] units, scaled to 0..255.
        shift = 255.0 * tf.linalg.matvec(stats["eigvec"], batch["alpha"] * stats["eigval"])  # (B, 3)
        image = image + shift[:, None, None, :]
    if crop_at is None:
        image = apply_flips(image, batch["flip"])
    if config.input_scale != 1.0:
        image = image * config.input_scale
    if config.pad_crop:
        extra = config.crop_size - pc
        image = tf.pad(image, [[0, 0], [extra // 2, extra - extra // 2], [extra // 2, extra - extra // 2], [0, 0]])
    if config.channel_order == "bgr":  # nets trained in Caffe
        image = tf.reverse(image, [-1])
    return tf.cast(image, dtype)
