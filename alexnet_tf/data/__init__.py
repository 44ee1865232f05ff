"""Input: the paper's preprocessing (Sec. 2) and augmentation (Sec. 4.1).

    sources   what an example is (the Source protocol), and the sources of folders and
              in-memory arrays
    records   the sources of sharded record files (prepare's TFRecords, TFDS)
    specs     the kinds of source (`SOURCES`; a new one is a function registered with
              `@data_source("kind:ARG")`), `open_source("folder:PATH")`, the splits a run uses
    batch     what a batch is (`batch.make`, `batch.center`, `batch.ten_crops`, ...)
    ops       decode, resize, crop and the random choices (host), `device_preprocess`
              (inside the compiled step)
    pipeline  `train_dataset`, `eval_dataset` (batches with weights; unreadable files
              as weight-0 rows), `decoded_examples` for the commands
    stats     the mean image and the RGB covariance of a training set

Host side, batches travel as uint8 crops with the crop offset, flip bit and noise
coefficients beside them, a quarter of the bytes of float32; every pixel operation after
the crop runs on the device, fused by XLA, and leaves the host CPUs to decoding.
"""

from alexnet_tf.data import batch
from alexnet_tf.data.ops import (
    DRAWS,
    apply_flips,
    crop_example,
    decode_and_resize,
    decode_crop,
    device_preprocess,
    random_choices,
    random_draws,
    random_label,
    resize_central,
    resize_images,
    resize_square,
    resize_warp,
)
from alexnet_tf.data.pipeline import (
    BadFiles,
    decoded_examples,
    eval_dataset,
    resized_images,
    synthetic_batch,
    train_dataset,
)
from alexnet_tf.data.records import METADATA_FILE, TFRECORD_FEATURES
from alexnet_tf.data.sources import REASONS, DataError, Source
from alexnet_tf.data.specs import SOURCES, data_source, open_source, resolve_splits
from alexnet_tf.data.stats import Stats, compute_stats, dataset_stats

__all__ = [
    "DRAWS",
    "METADATA_FILE",
    "REASONS",
    "SOURCES",
    "TFRECORD_FEATURES",
    "BadFiles",
    "DataError",
    "Source",
    "Stats",
    "apply_flips",
    "batch",
    "compute_stats",
    "crop_example",
    "data_source",
    "dataset_stats",
    "decode_and_resize",
    "decode_crop",
    "decoded_examples",
    "device_preprocess",
    "eval_dataset",
    "open_source",
    "random_choices",
    "random_draws",
    "random_label",
    "resize_central",
    "resize_images",
    "resize_square",
    "resize_warp",
    "resized_images",
    "resolve_splits",
    "synthetic_batch",
    "train_dataset",
]
