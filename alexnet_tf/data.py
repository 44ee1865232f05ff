"""Input pipeline: the paper's preprocessing (Sec. 2) and augmentation (Sec. 4.1).

Host side (tf.data): read, decode, resize the shorter side to `resize_size` and take the
central square (Sec. 2), pick a random `crop_size` crop and a flip (Sec. 4.1), draw the
per-image PCA colour-noise coefficients, batch. Batches travel as uint8 with the crop
offset, flip bit and noise coefficients beside them, a quarter of the bytes of float32.

Device side (`device_preprocess`, inside the compiled step): cast, subtract the same
crop (and flip) of the mean image, add the colour noise.

Batches are dicts: image uint8 (B, C, C, 3), offset int32 (B, 2), flip bool (B,),
alpha float32 (B, 3), label int32 (B,), weight float32 (B,) (0 for eval padding).
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np
import tensorflow as tf

from alexnet_tf.config import DataConfig

AUTOTUNE = tf.data.AUTOTUNE
BUILTIN_FASHION_MNIST = os.path.join(os.path.dirname(__file__), "assets", "fashion_mnist_subset.npz")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# Sec. 4.1 constants commonly used for ImageNet, the fallback when no stats file from
# `python -m alexnet_tf.stats` is given. Mean in 0..255; eigenvalues of the covariance of
# RGB pixels scaled to [0, 1] (the convention these constants come in).
IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class DataError(RuntimeError):
    """A data source that cannot be read; the message says what to do."""


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
            return cls(f["mean_image"].astype(np.float32), f["eigval"].astype(np.float32), f["eigvec"].astype(np.float32))

    @classmethod
    def imagenet(cls, size: int) -> Stats:
        mean = np.broadcast_to(np.asarray(IMAGENET_MEAN_RGB, np.float32), (size, size, 3)).copy()
        return cls(mean, np.asarray(IMAGENET_EIGVAL, np.float32), np.asarray(IMAGENET_EIGVEC, np.float32))


@dataclasses.dataclass
class Source:
    """A dataset with two splits of (image uint8 HxWx3 or encoded bytes, label)."""

    name: str
    class_names: list
    splits: dict  # split name -> callable() returning a tf.data.Dataset of (image, label)
    sizes: dict  # split name -> number of examples
    encoded: bool  # images are encoded bytes (JPEG/PNG) rather than uint8 arrays

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> tf.data.Dataset:
        if name not in self.splits:
            raise DataError(f"{self.name} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]()


def _fashion_mnist_arrays(spec: str) -> dict:
    if spec == "builtin":
        with np.load(BUILTIN_FASHION_MNIST) as f:
            return {k: f[k] for k in f.files}
    folder = spec or DEBIAN_FASHION_MNIST
    files = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [f for f in files.values() if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}); "
            "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or put "
            "the four gzip files of the original release there"
        )
    out = {}
    for key, name in files.items():
        with gzip.open(os.path.join(folder, name)) as f:
            raw = f.read()
        if key.endswith("images"):
            out[key] = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        else:
            out[key] = np.frombuffer(raw, np.uint8, offset=8).astype(np.int32)
    with np.load(BUILTIN_FASHION_MNIST) as f:
        out["class_names"] = f["class_names"]
    return out


def fashion_mnist_source(folder: str = "builtin") -> Source:
    """Fashion-MNIST, grey replicated to RGB; `builtin` is the subset shipped here."""
    arrays = _fashion_mnist_arrays(folder)

    def make(prefix):
        def fn():
            images = arrays[f"{prefix}_images"][..., None]
            return tf.data.Dataset.from_tensor_slices((images, arrays[f"{prefix}_labels"])).map(
                lambda x, y: (tf.image.grayscale_to_rgb(x), y)
            )

        return fn

    sizes = {"train": len(arrays["train_labels"]), "test": len(arrays["test_labels"])}
    return Source(
        name="fashion_mnist",
        class_names=[str(c) for c in arrays["class_names"]],
        splits={"train": make("train"), "test": make("test")},
        sizes=sizes,
        encoded=False,
    )


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def folder_source(path: str) -> Source:
    """`PATH/train/<class>/*` and `PATH/val/<class>/*` (also `validation/`, `test/`)."""
    if not os.path.isdir(path):
        raise DataError(f"folder {path!r} not found; expected {path}/train/<class>/*.JPEG and {path}/val/<class>/*")
    split_dirs = {s: os.path.join(path, s) for s in ("train", "val", "validation", "test") if os.path.isdir(os.path.join(path, s))}
    if "train" not in split_dirs:
        raise DataError(f"{path!r} has no train/ folder; expected {path}/train/<class>/*.JPEG")
    class_names = sorted(d for d in os.listdir(split_dirs["train"]) if os.path.isdir(os.path.join(split_dirs["train"], d)))
    if not class_names:
        raise DataError(f"{split_dirs['train']!r} has no class folders")
    index = {c: i for i, c in enumerate(class_names)}
    files, sizes = {}, {}
    for split, d in split_dirs.items():
        paths, labels = [], []
        for c in sorted(os.listdir(d)):
            if c not in index:
                continue
            for f in sorted(os.listdir(os.path.join(d, c))):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(d, c, f))
                    labels.append(index[c])
        files[split] = (paths, np.asarray(labels, np.int32))
        sizes[split] = len(paths)

    def make(split):
        def fn():
            paths, labels = files[split]
            return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
                lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=AUTOTUNE
            )

        return fn

    return Source("folder:" + path, class_names, {s: make(s) for s in files}, sizes, encoded=True)


def open_source(spec: str) -> Source:
    """Parses a data spec (`folder:PATH`, `fashion_mnist:DIR`, `builtin:fashion_mnist`, ...)."""
    kind, _, arg = spec.partition(":")
    if kind == "builtin" and arg == "fashion_mnist":
        return fashion_mnist_source("builtin")
    if kind == "fashion_mnist":
        return fashion_mnist_source(arg or DEBIAN_FASHION_MNIST)
    if kind == "folder":
        return folder_source(arg)
    known = "folder:PATH, tfds:NAME[:SPLIT], tfrecord:GLOB, fashion_mnist:DIR, builtin:fashion_mnist"
    if kind in ("tfds", "tfrecord"):
        raise DataError(f"data source {spec!r}: {kind} sources are not available in this version; use one of {known}")
    raise DataError(f"unknown data source {spec!r}; valid forms: {known}")


def decode_and_resize(image: tf.Tensor, size: int, encoded: bool) -> tf.Tensor:
    """Sec. 2: rescale the shorter side to `size`, then take the central size x size patch."""
    if encoded:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
    nh = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    nw = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    image = tf.image.resize(image, (nh, nw), antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    image = image[top : top + size, left : left + size, :]
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    image.set_shape((size, size, 3))
    return image


def crop_example(image, label, key, config: DataConfig, training: bool):
    """Picks the crop and flip (Sec. 4.1) and the colour-noise coefficients."""
    r, c = config.resize_size, config.pad_crop or config.crop_size
    if training:
        seeds = tf.random.experimental.stateless_split(key, 3)
        offset = tf.random.stateless_uniform((2,), seeds[0], 0, r - c + 1, dtype=tf.int32)
        flip = config.random_flip & (tf.random.stateless_uniform((), seeds[1]) < 0.5)
        alpha = tf.random.stateless_normal((3,), seeds[2], stddev=config.pca_noise_std)
    else:
        offset = tf.constant([(r - c) // 2, (r - c) // 2], tf.int32)
        flip = tf.constant(False)
        alpha = tf.zeros((3,), tf.float32)
    crop = tf.slice(image, [offset[0], offset[1], 0], [c, c, 3])
    crop = tf.cond(flip, lambda: tf.reverse(crop, [1]), lambda: crop)
    return {
        "image": crop,
        "offset": offset,
        "flip": flip,
        "alpha": alpha,
        "label": tf.cast(label, tf.int32),
        "weight": tf.constant(1.0),
    }


def ten_crop_offsets(resize_size: int, crop_size: int) -> list:
    """Sec. 4.1 test crops: the four corners and the centre, (top, left) each."""
    m = resize_size - crop_size
    return [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]


def ten_crop_example(image, label, config: DataConfig):
    """Ten crops of one image (five patches and their reflections), stacked (10, ...)."""
    c = config.pad_crop or config.crop_size
    crops, offsets, flips = [], [], []
    for top, left in ten_crop_offsets(config.resize_size, c):
        crop = image[top : top + c, left : left + c, :]
        for flip in (False, True):
            crops.append(tf.reverse(crop, [1]) if flip else crop)
            offsets.append((top, left))
            flips.append(flip)
    return {
        "image": tf.stack(crops),
        "offset": tf.constant(offsets, tf.int32),
        "flip": tf.constant(flips),
        "alpha": tf.zeros((10, 3), tf.float32),
        "label": tf.fill([10], tf.cast(label, tf.int32)),
        "weight": tf.ones((10,), tf.float32),
    }


def make_dataset(
    source: Source,
    config: DataConfig,
    split: str,
    batch_size: int,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    skip_batches: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    crops: str = "center",
    limit: int = 0,
) -> tf.data.Dataset:
    """One epoch of batches for one input pipeline.

    Every random choice is a stateless function of (seed, epoch, example index), and
    training batches are slices of the same global batches whatever the number of
    replicas or workers; `skip_batches` (global batches) resumes an epoch exactly.
    `batch_size` is the per-replica batch, in examples (the global batch without a
    strategy). With `crops="ten"` (eval only) each example becomes its ten Sec. 4.1
    crops in consecutive rows, so a batch has 10 * batch_size rows. `limit` > 0 keeps
    only the split's first `limit` examples.
    """
    if crops not in ("center", "ten"):
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    if crops == "ten" and training:
        raise ValueError("ten crops are for evaluation")
    ds = source.split(split)
    ds = ds.enumerate()
    if limit:
        ds = ds.take(limit)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    pipeline = input_context.input_pipeline_id if input_context is not None else 0
    replicas = input_context.num_replicas_in_sync if input_context is not None else 1
    global_batch = batch_size * replicas
    if pipelines > 1 and not training:
        ds = ds.shard(pipelines, pipeline)
    if config.cache and not source.encoded:
        # Small in-memory datasets: resize once, keep the result.
        ds = ds.map(
            lambda i, ex: (i, (decode_and_resize(ex[0], config.resize_size, False), ex[1])),
            num_parallel_calls=AUTOTUNE,
        ).cache()
    if training:
        ds = ds.shuffle(config.shuffle_buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
        if skip_batches:
            ds = ds.skip(skip_batches * global_batch)
        if pipelines > 1:
            # Every pipeline walks the same shuffled order and decodes only its slice of
            # each global batch: the global batch is the same for 1 or N workers.
            width = global_batch // pipelines
            lo = pipeline * width
            ds = ds.batch(global_batch, drop_remainder=True)
            ds = ds.map(lambda i, ex: (i[lo : lo + width], (ex[0][lo : lo + width], ex[1][lo : lo + width])))
            ds = ds.unbatch()

    cached = config.cache and not source.encoded

    def prepare(index, example):
        image, label = example
        if not cached:
            image = decode_and_resize(image, config.resize_size, source.encoded)
        if crops == "ten":
            return ten_crop_example(image, label, config)
        if training and config.random_labels:
            # The same random label for an example in every epoch.
            label = tf.random.stateless_uniform(
                (), tf.stack([tf.cast(seed, tf.int64), index]), 0, source.num_classes, dtype=tf.int32
            )
        key = tf.stack([tf.cast(seed, tf.int64) * 7919 + epoch, index])
        return crop_example(image, label, tf.cast(key, tf.int64), config, training)

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    if training:
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = ds.batch(batch_size).map(lambda b: _pad_batch(b, batch_size))
        if crops == "ten":
            ds = ds.map(lambda b: {k: tf.reshape(v, [-1, *v.shape[2:]]) for k, v in b.items()})
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a short final eval batch with weight-0 examples so XLA sees one shape."""
    n = tf.shape(batch["label"])[0]
    pad = batch_size - n

    def pad_one(t):
        paddings = [[0, pad]] + [[0, 0]] * (len(t.shape) - 1)
        t = tf.pad(t, paddings)
        t.set_shape([batch_size] + t.shape[1:].as_list())
        return t

    return {k: pad_one(v) for k, v in batch.items()}


def compute_stats(images: tf.data.Dataset, size: int) -> Stats:
    """Mean image and RGB covariance eigen-decomposition over uint8 (size, size, 3) images."""
    total = np.zeros((size, size, 3), np.float64)
    s1 = np.zeros(3, np.float64)
    s2 = np.zeros((3, 3), np.float64)
    count = 0
    for batch in images.batch(256).as_numpy_iterator():
        x = batch.astype(np.float64)
        total += x.sum(0)
        px = x.reshape(-1, 3)
        s1 += px.sum(0)
        s2 += px.T @ px
        count += len(batch)
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


def dataset_stats(source: Source, config: DataConfig, split: str = "train") -> Stats:
    """The stats a run uses: the stats file if given, else computed for small in-memory
    sources, else the ImageNet constants (per-channel mean)."""
    if config.stats_path:
        stats = Stats.load(config.stats_path)
        if stats.mean_image.shape[:2] != (config.resize_size, config.resize_size):
            raise DataError(
                f"stats file {config.stats_path!r} has a {stats.mean_image.shape[0]} px mean image, "
                f"but data.resize_size is {config.resize_size}"
            )
        return stats
    if not source.encoded:
        images = source.split(split).map(
            lambda x, y: decode_and_resize(x, config.resize_size, False), num_parallel_calls=AUTOTUNE
        )
        return compute_stats(images, config.resize_size)
    return Stats.imagenet(config.resize_size)


def device_preprocess(batch: dict, stats: dict, config: DataConfig, dtype=tf.float32) -> tf.Tensor:
    """uint8 crops -> mean-subtracted, colour-noised float images (runs on the device).

    `stats` holds tensors: mean_image (R, R, 3), eigval (3,), eigvec (3, 3).
    """
    image = tf.cast(batch["image"], tf.float32)  # (B, c, c, 3), c = pad_crop or crop_size
    pc = image.shape[1]
    if config.subtract_mean:
        ar = tf.range(pc)
        rows = batch["offset"][:, 0:1] + ar  # (B, pc)
        cols = batch["offset"][:, 1:2] + ar
        mean = tf.gather(stats["mean_image"], rows)  # (B, pc, R, 3)
        mean = tf.gather(mean, cols, axis=2, batch_dims=1)  # (B, pc, pc, 3)
        mean = tf.where(batch["flip"][:, None, None, None], tf.reverse(mean, [2]), mean)
        image = image - mean
    if config.pca_noise_std > 0:
        # Sec. 4.1: add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, in [0, 1] units, scaled to 0..255.
        shift = 255.0 * tf.linalg.matvec(stats["eigvec"], batch["alpha"] * stats["eigval"])  # (B, 3)
        image = image + shift[:, None, None, :]
    if config.pad_crop:
        extra = config.crop_size - pc
        image = tf.pad(image, [[0, 0], [extra // 2, extra - extra // 2], [extra // 2, extra - extra // 2], [0, 0]])
    return tf.cast(image, dtype)
