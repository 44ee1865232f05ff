"""The statistics of Sec. 2 and 4.1: the training set's mean image and the eigen-
decomposition of the 3x3 covariance of its RGB pixels."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from alexnet_tf.config import DataConfig
from alexnet_tf.data.pipeline import BadFiles, resized_images
from alexnet_tf.data.sources import DataError, Source

# The constants commonly used for ImageNet (Sec. 2 and 4.1), for work whose numbers do
# not depend on them (benchmarks, tests). Mean in 0..255; eigenvalues of the covariance
# of RGB pixels scaled to [0, 1] (the convention these constants come in).
IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@dataclasses.dataclass
class Stats:
    """Mean image (resize x resize x 3, 0..255) and RGB covariance eigen-decomposition."""

    mean_image: np.ndarray  # (R, R, 3), pixel scale 0..255
    eigval: np.ndarray  # (3,), descending, covariance of pixels scaled to [0, 1]
    eigvec: np.ndarray  # (3, 3), columns are eigenvectors

    def save(self, path: str) -> None:
        np.savez(path, mean_image=self.mean_image, eigval=self.eigval, eigvec=self.eigvec)

    @classmethod
    def load(cls, path: str) -> Stats:
        if not os.path.isfile(path):
            raise DataError(f"stats file {path!r} not found; make it with `python -m alexnet_tf.stats SRC {path}`")
        with np.load(path) as f:
            return cls(
                f["mean_image"].astype(np.float32), f["eigval"].astype(np.float32), f["eigvec"].astype(np.float32)
            )

    def tensors(self) -> dict:
        """The statistics as the constants `device_preprocess` reads (eager tensors, made
        outside any function being traced, so that every function may capture them)."""
        with tf.init_scope():
            return {k: tf.constant(getattr(self, k)) for k in ("mean_image", "eigval", "eigvec")}

    @classmethod
    def imagenet(cls, size: int) -> Stats:
        mean = np.broadcast_to(np.asarray(IMAGENET_MEAN_RGB, np.float32), (size, size, 3)).copy()
        return cls(mean, np.asarray(IMAGENET_EIGVAL, np.float32), np.asarray(IMAGENET_EIGVEC, np.float32))


def compute_stats(images: tf.data.Dataset, size: int, progress=None) -> Stats:
    """Mean image and RGB covariance eigen-decomposition over uint8 (size, size, 3) images,
    streaming; `progress(count)` is called after each batch."""
    total = np.zeros((size, size, 3), np.float64)
    s1 = np.zeros(3, np.float64)
    s2 = np.zeros((3, 3), np.float64)
    count = 0
    for batch in images.batch(32).prefetch(2).as_numpy_iterator():
        total += batch.sum(0, dtype=np.float64)
        px = batch.reshape(-1, 3).astype(np.float64)
        s1 += px.sum(0)
        s2 += px.T @ px
        count += len(batch)
        if progress:
            progress(count)
    if count == 0:
        raise DataError("cannot compute statistics over an empty dataset")
    n_px = count * size * size
    mean_px = s1 / n_px
    cov = (s2 / n_px - np.outer(mean_px, mean_px)) / 255.0**2  # pixels in [0, 1]
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    return Stats(
        (total / count).astype(np.float32),
        np.clip(eigval[order], 0, None).astype(np.float32),
        eigvec[:, order].astype(np.float32),
    )


def dataset_stats(
    source: Source, config: DataConfig, split: str = "train", progress=None, bad_files: BadFiles | None = None
) -> Stats:
    """The stats a run uses: those of `data.stats_path` if given, else computed over every
    readable training image (Sec. 2: the mean over the training set; Sec. 4.1: the RGB
    covariance). `progress(count)` is called as images are read."""
    if config.stats_path:
        stats = Stats.load(config.stats_path)
        if stats.mean_image.shape[:2] != (config.resize_size, config.resize_size):
            raise DataError(
                f"stats file {config.stats_path!r} has a {stats.mean_image.shape[0]} px mean image, "
                f"but data.resize_size is {config.resize_size}"
            )
        return stats
    images = resized_images(source, split, config.resize_size, bad_files, config.resize)
    return compute_stats(images, config.resize_size, progress)
