"""Input pipeline: the paper's preprocessing (Sec. 2) and augmentation (Sec. 4.1).

Host side (tf.data): read, decode, resize the shorter side to `resize_size` and take the
central square (Sec. 2), cut a random `crop_size` crop, draw the flip bit and the
per-image PCA colour-noise coefficients (Sec. 4.1), batch. Batches travel as uint8 with
the crop offset, flip bit and noise coefficients beside them, a quarter of the bytes of
float32.

Device side (`device_preprocess`, inside the compiled step): cast, subtract the same
crop of the mean image, add the colour noise, mirror the images whose flip bit is set.
Every pixel operation after the crop runs there, fused by XLA, and leaves the host CPUs
to decoding.

Batches are dicts: image uint8 (B, C, C, 3) (the crop as cut, before its flip), offset
int32 (B, 2), flip bool (B,), alpha float32 (B, 3), label int32 (B,), weight float32
(B,) (0 for eval padding). `apply_flips` gives the images as the net sees them.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
from collections.abc import Callable

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
            return cls(
                f["mean_image"].astype(np.float32), f["eigval"].astype(np.float32), f["eigvec"].astype(np.float32)
            )

    @classmethod
    def imagenet(cls, size: int) -> Stats:
        mean = np.broadcast_to(np.asarray(IMAGENET_MEAN_RGB, np.float32), (size, size, 3)).copy()
        return cls(mean, np.asarray(IMAGENET_EIGVAL, np.float32), np.asarray(IMAGENET_EIGVEC, np.float32))


@dataclasses.dataclass
class Source:
    """A dataset with named splits of (image uint8 HxWx3 or encoded bytes, label)."""

    name: str
    class_names: list
    splits: dict  # split name -> callable() returning a tf.data.Dataset of (image, label)
    sizes: dict  # split name -> number of examples
    encoded: bool  # images are encoded bytes (JPEG/PNG) rather than uint8 arrays
    # split name -> callable() returning (image, label, name) where a file name is known;
    # `name` identifies an example in the bad-file report.
    named: dict = dataclasses.field(default_factory=dict)
    # split name -> (paths, labels) numpy arrays for sources of image files: training
    # shuffles the whole list, and each file is read where it is decoded.
    files: dict = dataclasses.field(default_factory=dict)
    # split name -> callable(seed) returning what `named` returns, with the shards read
    # in an order drawn from `seed`, for sharded sources (training: a new order each epoch).
    reordered: dict = dataclasses.field(default_factory=dict)
    # split name -> callable(seed) returning serialized records, and `parse` turning a
    # batch of them into (images, labels, names), for record files: training moves the
    # records through shuffle and batching and parses each batch at once.
    records: dict = dataclasses.field(default_factory=dict)
    parse: Callable | None = None
    aliases: dict = dataclasses.field(default_factory=dict)  # other names of splits: {"validation": "val"}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _check(self, name: str) -> None:
        if name not in self.splits:
            raise DataError(f"{self.name} has no split {name!r}; it has {', '.join(self.splits)}")

    def split(self, name: str) -> tf.data.Dataset:
        self._check(name)
        return self.splits[name]()

    def examples(self, name: str, shard_seed=None) -> tf.data.Dataset:
        """(image, label, name) triples; the name is `SOURCE:SPLIT#INDEX` if no file name is
        known. With `shard_seed` (ints) a sharded source reads its shards in an order drawn
        from it; other sources ignore it."""
        self._check(name)
        if shard_seed is not None and name in self.reordered:
            return self.reordered[name](shard_seed)
        if name in self.named:
            return self.named[name]()
        prefix = f"{self.name}:{name}#"
        return (
            self.splits[name]()
            .enumerate()
            .map(lambda i, ex: (ex[0], ex[1], prefix + tf.strings.as_string(i)), num_parallel_calls=AUTOTUNE)
        )

    def unread_examples(self, name: str, order=None) -> tf.data.Dataset | None:
        """(index, (path, label, path)) for a source of image files (None for others):
        every file, or those at the positions `order` in that order; index is the
        file's position in the split."""
        self._check(name)
        if name not in self.files:
            return None
        paths, labels = self.files[name]
        index = np.arange(len(paths), dtype=np.int64) if order is None else np.asarray(order, np.int64)
        return tf.data.Dataset.from_tensor_slices((index, (paths[index], labels[index], paths[index])))


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
# Label files looked for beside a flat validation folder (first found wins).
LABEL_FILES = ("val_labels.txt", "val.txt", "LOC_val_solution.csv")


def _files_source(name: str, class_names: list, files: dict, aliases: dict | None = None) -> Source:
    """A Source over {split: (paths, labels)} of encoded image files."""
    splits, named, lists, sizes = {}, {}, {}, {}

    def make(split, with_names):
        def fn():
            paths, labels = lists[split]
            ds = tf.data.Dataset.from_tensor_slices((paths, labels))
            if with_names:
                return ds.map(lambda p, y: (tf.io.read_file(p), y, p), num_parallel_calls=AUTOTUNE)
            return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=AUTOTUNE)

        return fn

    for split, (paths, labels) in files.items():
        encoded_paths = np.array([os.fsencode(p) for p in paths] or [b""], dtype=object)[: len(paths)]
        lists[split] = (encoded_paths, np.asarray(labels, np.int32))
        splits[split], named[split], sizes[split] = make(split, False), make(split, True), len(paths)
    added = {}
    for alias, target in (aliases or {}).items():
        if target in files and alias not in files:
            splits[alias], named[alias], lists[alias] = splits[target], named[target], lists[target]
            sizes[alias], added[alias] = sizes[target], target
    return Source(name, class_names, splits, sizes, encoded=True, named=named, files=lists, aliases=added)


def _read_label_file(path: str, index: dict) -> dict:
    """file name (without folders) -> label index, from `NAME LABEL` lines or LOC_val_solution.csv.

    LABEL is a class folder name (e.g. a WordNet id n01440764) or a 0-based class index.
    """
    labels = {}
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    csv = path.endswith(".csv")
    if csv and lines and lines[0].lower().startswith("imageid"):
        lines = lines[1:]
    for n, line in enumerate(lines, 1):
        if csv:
            image_id, _, rest = line.partition(",")
            name, label = image_id, rest.split()[0] if rest.split() else ""
        else:
            parts = line.replace(",", " ").split()
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected `FILE LABEL`, got {line!r}")
            name, label = parts[0], parts[1]
        if label in index:
            y = index[label]
        elif label.isdigit() and int(label) < len(index):
            y = int(label)
        else:
            raise DataError(
                f"{path}:{n}: label {label!r} is neither a class folder name nor a class index below {len(index)}"
            )
        labels[os.path.splitext(os.path.basename(name))[0]] = y
    return labels


def folder_source(path: str, label_file: str = "") -> Source:
    """`PATH/train/<class>/*` plus `PATH/val/<class>/*` (also `validation/`, `test/`), or a
    flat `PATH/val/*.JPEG` (ImageNet's layout) labelled by a file: `label_file`, else the
    first of PATH/val_labels.txt, PATH/val.txt, PATH/LOC_val_solution.csv found.

    Class names are the train folder names in sorted order (so label i is the i-th name).
    The split `val` is also reachable as `validation` (the DataConfig default).
    """
    if not os.path.isdir(path):
        raise DataError(f"folder {path!r} not found; expected {path}/train/<class>/*.JPEG and {path}/val/<class>/*")
    split_dirs = {
        s: os.path.join(path, s) for s in ("train", "val", "validation", "test") if os.path.isdir(os.path.join(path, s))
    }
    if "train" not in split_dirs:
        raise DataError(f"{path!r} has no train/ folder; expected {path}/train/<class>/*.JPEG")
    class_names = sorted(
        d for d in os.listdir(split_dirs["train"]) if os.path.isdir(os.path.join(split_dirs["train"], d))
    )
    if not class_names:
        raise DataError(f"{split_dirs['train']!r} has no class folders")
    index = {c: i for i, c in enumerate(class_names)}
    files = {}
    for split, d in split_dirs.items():
        paths, labels = [], []
        flat = sorted(
            f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(d, f))
        )
        if split != "train" and flat:
            candidates = [label_file] if label_file else [os.path.join(path, f) for f in LABEL_FILES]
            found = [c for c in candidates if c and os.path.isfile(c)]
            if not found:
                raise DataError(
                    f"{d} holds images directly; give their labels with data.label_file=FILE "
                    f"(lines `FILE_NAME CLASS_FOLDER_NAME_OR_INDEX`) or put {LABEL_FILES[0]} in {path}"
                )
            by_name = _read_label_file(found[0], index)
            unlabelled = [f for f in flat if os.path.splitext(f)[0] not in by_name]
            if unlabelled:
                raise DataError(f"{len(unlabelled)} files in {d} have no label in {found[0]}, e.g. {unlabelled[0]}")
            paths = [os.path.join(d, f) for f in flat]
            labels = [by_name[os.path.splitext(f)[0]] for f in flat]
        else:
            for c in sorted(os.listdir(d)):
                if c not in index:
                    continue
                for f in sorted(os.listdir(os.path.join(d, c))):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        paths.append(os.path.join(d, c, f))
                        labels.append(index[c])
        files[split] = (paths, np.asarray(labels, np.int32))
    return _files_source("folder:" + path, class_names, files, aliases={"validation": "val", "val": "validation"})


# --------------------------------------------------------------------------- TFRecords
METADATA_FILE = "metadata.json"
TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def tfrecord_source(pattern: str) -> Source:
    """Shards written by `python -m alexnet_tf.prepare`: a folder, or a glob inside one.

    `metadata.json` beside the shards gives the class names and each shard's split and
    example count (so sizes are known without reading the shards).
    """
    folder = pattern if os.path.isdir(pattern) else os.path.dirname(pattern) or "."
    meta_path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise DataError(
            f"no {METADATA_FILE} in {folder!r}; tfrecord sources are folders written by "
            "`python -m alexnet_tf.prepare SRC OUT` (use tfrecord:OUT or tfrecord:OUT/train-*)"
        )
    with open(meta_path) as f:
        meta = json.load(f)
    matched = set(tf.io.gfile.glob(os.path.join(pattern, "*") if os.path.isdir(pattern) else pattern))
    shards = {}  # split -> [(path, count)]
    for shard in meta["shards"]:
        path = os.path.join(folder, shard["file"])
        if path in matched:
            shards.setdefault(shard["split"], []).append((path, int(shard["count"])))
    if not shards:
        raise DataError(
            f"{pattern!r} matches none of the finished shards listed in {meta_path}; is prepare still running?"
        )

    def records(split):
        def fn(seed=None):
            paths = [p for p, _ in sorted(shards[split])]
            if seed is not None:
                paths = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
            return tf.data.TFRecordDataset(paths, num_parallel_reads=min(len(paths), 8) if len(paths) > 1 else None)

        return fn

    def parse(serialized):
        """(image bytes, label, name) of one record, or of a batch of them at once. The
        name is the file name, or for a record without one a hash of its image bytes:
        the same in every epoch and order."""
        parse_fn = tf.io.parse_single_example if serialized.shape.rank == 0 else tf.io.parse_example
        e = parse_fn(serialized, TFRECORD_FEATURES)
        data, name = e["image/encoded"], e["image/filename"]
        unnamed = tf.equal(name, "")
        name = tf.cond(
            tf.reduce_any(unnamed),
            lambda: tf.where(
                unnamed, "bytes:" + tf.strings.as_string(tf.strings.to_hash_bucket_fast(data, 2**62)), name
            ),
            lambda: name,
        )
        return data, tf.cast(e["image/class/label"], tf.int32), name

    def make(split, with_names):
        def fn(seed=None):
            ds = records(split)(seed).map(parse, num_parallel_calls=AUTOTUNE)
            return ds if with_names else ds.map(lambda image, label, _: (image, label))

        return fn

    return Source(
        "tfrecord:" + pattern,
        list(meta["class_names"]),
        {s: make(s, False) for s in shards},
        {s: sum(c for _, c in v) for s, v in shards.items()},
        encoded=True,
        named={s: make(s, True) for s in shards},
        reordered={s: make(s, True) for s in shards},
        records={s: records(s) for s in shards},
        parse=parse,
    )


# --------------------------------------------------------------------------- TFDS
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def tfds_source(name: str, train_split: str = "", data_dir: str = "", manual_dir: str = "") -> Source:
    """Any TFDS image-classification dataset, images left encoded (SkipDecoding) so that
    decoding and cropping fuse. `train_split` (e.g. `train[:10%]`) replaces the train split.
    """
    import tensorflow_datasets as tfds  # heavy; only imported for tfds sources

    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # unknown name
        raise DataError(
            f"TFDS has no dataset {name!r} ({type(e).__name__}); see https://www.tensorflow.org/datasets/catalog"
        ) from e
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2:
        raise DataError(
            f"TFDS dataset {name!r} has no (image, label) supervised keys; it is not an image-classification set"
        )
    image_key, label_key = keys
    label_feature = builder.info.features[label_key]
    class_names = list(getattr(label_feature, "names", None) or [str(i) for i in range(label_feature.num_classes)])
    has_file_name = "file_name" in builder.info.features

    def as_dataset(split, seed=None):
        # With a seed, TFDS reads the split's files in an order drawn from it. Without
        # a file name, an example is named by its tfds_id (file and position in it),
        # which stays the same in every order.
        shuffle_seed = None if seed is None else int(np.random.default_rng(seed).integers(2**31))
        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, add_tfds_id=not has_file_name)
        return builder.as_dataset(
            split=split,
            shuffle_files=seed is not None,
            read_config=read_config,
            decoders={image_key: tfds.decode.SkipDecoding()},
        )

    def ensure_prepared():
        try:
            as_dataset(list(builder.info.splits)[0] if builder.info.splits else "train")
            return
        except (AssertionError, Exception) as e:  # TFDS raises AssertionError when not generated
            not_prepared = e
        if name.split("/")[0].split(":")[0] == "imagenet2012":
            root = os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))
            manual = manual_dir or os.path.join(root, "downloads", "manual")
            missing = [t for t in IMAGENET_TARS if not os.path.isfile(os.path.join(manual, t))]
            if missing:
                raise DataError(
                    f"imagenet2012 is not prepared in {root} and {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not in {manual}; download "
                    f"{' and '.join(IMAGENET_TARS)} from https://image-net.org (login needed) into {manual} "
                    "(or set data.tfds_manual_dir), then run again; TFDS prepares them once (hours)"
                ) from not_prepared
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
        except Exception as e:
            raise DataError(f"TFDS could not prepare {name!r}: {type(e).__name__}: {str(e)[:300]}") from e

    ensure_prepared()
    split_names = list(builder.info.splits) or ["train", "validation", "test"]
    exprs = {s: s for s in split_names}
    if train_split:
        exprs["train"] = train_split

    def size_of(expr):
        try:
            return int(builder.info.splits[expr].num_examples)
        except (KeyError, ValueError):  # no split metadata (e.g. mocked): count
            n = int(as_dataset(expr).cardinality())
            return n if n >= 0 else int(as_dataset(expr).reduce(0, lambda c, _: c + 1))

    def make(expr, with_names):
        key = "file_name" if has_file_name else "tfds_id"

        def fn(seed=None):
            ds = as_dataset(expr, seed)
            if with_names:
                return ds.map(lambda e: (e[image_key], tf.cast(e[label_key], tf.int32), e[key]))
            return ds.map(lambda e: (e[image_key], tf.cast(e[label_key], tf.int32)))

        return fn

    sizes, splits, named = {}, {}, {}
    for s, expr in exprs.items():
        try:
            sizes[s] = size_of(expr)
        except Exception:  # a split this dataset does not have
            continue
        splits[s], named[s] = make(expr, False), make(expr, True)
    return Source(f"tfds:{name}", class_names, splits, sizes, encoded=True, named=named, reordered=named)


EVAL_SPLITS = ("validation", "val", "test")  # a source's validation split, the first it has


def resolve_splits(source: Source, config: DataConfig, evaluate: bool = True) -> DataConfig:
    """`config` with `eval_split` "" replaced by the source's validation split; raises
    DataError, naming the source's splits, for a split it does not have (the eval split
    only if `evaluate`)."""
    own = [s for s in source.splits if s not in source.aliases]
    eval_split = config.eval_split or next((s for s in EVAL_SPLITS if s in own), "")
    if not eval_split and evaluate:
        raise DataError(
            f"{source.name} has no validation split ({', '.join(EVAL_SPLITS)}); it has {', '.join(source.splits)}: "
            "set data.eval_split=NAME"
        )
    for key, split in (("train_split", config.train_split), ("eval_split", eval_split)):
        if (split or evaluate) and split not in source.splits:
            raise DataError(f"data.{key}={split!r}: {source.name} has no such split; it has {', '.join(source.splits)}")
    return dataclasses.replace(config, eval_split=eval_split)


def open_source(spec: str, config: DataConfig | None = None) -> Source:
    """Parses a data spec: folder:PATH, tfds:NAME[:SPLIT], tfrecord:GLOB, fashion_mnist:DIR,
    builtin:fashion_mnist. `config` supplies the folder label file and TFDS directories."""
    config = config or DataConfig()
    kind, _, arg = spec.partition(":")
    if kind == "builtin" and arg == "fashion_mnist":
        return fashion_mnist_source("builtin")
    if kind == "fashion_mnist":
        return fashion_mnist_source(arg or DEBIAN_FASHION_MNIST)
    if kind == "folder":
        return folder_source(arg, config.label_file)
    if kind == "tfrecord":
        return tfrecord_source(arg)
    if kind == "tfds":
        name, _, split = arg.partition(":")
        if not name:
            raise DataError("tfds source needs a dataset name, e.g. tfds:imagenet2012 or tfds:imagenette:train[:10%]")
        return tfds_source(name, split, config.tfds_data_dir, config.tfds_manual_dir)
    known = "folder:PATH, tfds:NAME[:SPLIT], tfrecord:GLOB, fashion_mnist:DIR, builtin:fashion_mnist"
    raise DataError(f"unknown data source {spec!r}; valid forms: {known}")


# --------------------------------------------------------------------------- bad files
class BadFiles:
    """Files that could not be decoded, by name, with the reason; shared by every pipeline.

    Kept in a TF hash table that the tf.data graphs write to, so it works in parallel
    maps and counts each file once however many epochs meet it.
    """

    def __init__(self):
        self._table = None

    @property
    def table(self):
        if self._table is None:
            with tf.init_scope(), tf.device("/cpu:0"):
                self._table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int32, default_value=-1)
        return self._table

    def record(self, name: tf.Tensor, reason: tf.Tensor) -> tf.Tensor:
        return self.table.insert(tf.reshape(name, [1]), tf.reshape(reason, [1]))

    def count(self) -> int:
        return 0 if self._table is None else int(self._table.size())

    def summary(self, limit: int = 5) -> dict:
        """{"count": N, "examples": [{"file": ..., "reason": ...}, ...]} (first `limit` by name)."""
        if self._table is None or self.count() == 0:
            return {"count": 0, "examples": []}
        keys, values = self._table.export()
        pairs = sorted(zip(keys.numpy().tolist(), values.numpy().tolist()))
        return {
            "count": len(pairs),
            "examples": [{"file": k.decode(errors="replace"), "reason": REASONS[v]} for k, v in pairs[:limit]],
        }

    def message(self, limit: int = 5) -> str:
        """One log line: empty when every file decoded."""
        s = self.summary(limit)
        if not s["count"]:
            return ""
        shown = "; ".join(f"{e['file']} ({e['reason']})" for e in s["examples"])
        more = f"; and {s['count'] - len(s['examples'])} more" if s["count"] > len(s["examples"]) else ""
        return f"skipped {s['count']} unreadable image file(s): {shown}{more}"

    def reset(self) -> None:
        if self._table is not None:
            keys, _ = self._table.export()
            self._table.remove(keys)


BAD_FILES = BadFiles()


def bad_file_summary(limit: int = 5) -> dict:
    """Files skipped so far in this process: {"count": N, "examples": [{"file", "reason"}]}."""
    return BAD_FILES.summary(limit)


REASONS = ("empty file", "not an image (unknown format)", "truncated or corrupt image", "cannot be read")


def _why_unreadable(data: tf.Tensor) -> tf.Tensor:
    """Index into REASONS for bytes that failed to decode (elementwise: any shape)."""
    head = tf.strings.substr(data, 0, 4)
    known = (
        tf.io.is_jpeg(data)
        | tf.equal(head, b"\x89PNG")
        | tf.equal(tf.strings.substr(data, 0, 3), b"GIF")
        | tf.equal(tf.strings.substr(data, 0, 2), b"BM")
    )
    return tf.where(
        tf.equal(tf.strings.length(data), 0),
        0,
        tf.where(known, 2, 1),
    )


def _why_unreadable_files(paths: tf.Tensor) -> tf.Tensor:
    """Index into REASONS for files (a vector of paths) that failed to read or decode."""

    def reasons(paths):
        out = []
        for path in paths.numpy():
            try:
                with open(path, "rb") as f:
                    out.append(int(_why_unreadable(tf.constant(f.read()))))
            except OSError:
                out.append(REASONS.index("cannot be read"))
        return tf.constant(out, tf.int32)

    return tf.reshape(tf.py_function(reasons, [paths], tf.int32), tf.shape(paths))


# --------------------------------------------------------------------------- decoding
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

    Images smaller than `size` are enlarged, so every image yields every crop.
    """
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


def decode_and_resize(image: tf.Tensor, size: int, encoded: bool) -> tf.Tensor:
    """Decoded (any of JPEG incl. CMYK and grey, PNG, GIF, BMP) and `resize_central`-ed.

    A JPEG that is already size x size is only decoded.
    """
    if not encoded:
        return resize_central(image, size)

    def general():
        return resize_central(tf.io.decode_image(image, channels=3, expand_animations=False), size)

    def square():
        out = tf.io.decode_jpeg(image, channels=3)
        out.set_shape((size, size, 3))
        return out

    return tf.cond(_is_square_jpeg(image, size), square, general)


def decode_crop(data: tf.Tensor, offset: tf.Tensor, crop: int, size: int) -> tf.Tensor:
    """The `crop` x `crop` patch at `offset` of the resized image, decoding only that
    window when the file is already a size x size JPEG (decode_and_crop_jpeg)."""

    def fused():
        out = tf.io.decode_and_crop_jpeg(data, tf.stack([offset[0], offset[1], crop, crop]), channels=3)
        out.set_shape((crop, crop, 3))
        return out

    def general():
        image = decode_and_resize(data, size, True)
        return tf.slice(image, [offset[0], offset[1], 0], [crop, crop, 3])

    return tf.cond(_is_square_jpeg(data, size), fused, general)


def random_label(name: tf.Tensor, seed: int, num_classes: int) -> tf.Tensor:
    """The control run's label (`data.random_labels`): a hash of the example's name (its
    file name, tfds_id, record hash or position in an in-memory split) keyed by the
    seed, so an example keeps its random label in every epoch, order and worker."""
    return tf.cast(tf.strings.to_hash_bucket_strong(name, num_classes, key=[seed, 0x5EED]), tf.int32)


DRAWS = 6  # uniforms per training example: crop corner (2), flip (1), noise coefficients (3)


def random_draws(indices: tf.Tensor, seed: int, epoch: int) -> tf.Tensor:
    """`DRAWS` uniforms in (0, 1) per example index, shape indices.shape + (DRAWS,).

    Each is SipHash-2-4 (`tf.strings.to_hash_bucket_strong`, keyed by seed and epoch) of
    the number index * DRAWS + k: a pure function of (seed, epoch, index), so a chunk of
    examples gets its draws from two ops, whichever chunk, worker or order they come in.
    """
    numbers = tf.cast(indices, tf.int64)[..., None] * DRAWS + tf.range(DRAWS, dtype=tf.int64)
    buckets = tf.strings.to_hash_bucket_strong(tf.strings.as_string(numbers), 2**53, key=[seed, epoch])
    return tf.cast((tf.cast(buckets, tf.float64) + 0.5) / 2.0**53, tf.float32)


def random_choices(indices, config: DataConfig, training: bool, seed: int = 0, epoch: int = 0):
    """(offset (..., 2), flip (...), alpha (..., 3)) for the examples `indices` (any shape).

    Training: a random crop corner, a flip bit and the colour-noise coefficients (Sec.
    4.1) from `random_draws` (alpha through the inverse normal CDF). Evaluation: the
    central crop, no flip, no noise.
    """
    r, c = config.resize_size, config.pad_crop or config.crop_size
    shape = tf.shape(indices)
    if training:
        u = random_draws(indices, seed, epoch)
        offset = tf.minimum(tf.cast(u[..., 0:2] * (r - c + 1), tf.int32), r - c)
        flip = config.random_flip & (u[..., 2] < 0.5)
        # float32 can round a draw to 0 or 1 (ndtri: -inf, inf); clipped, |alpha| < 5.3 sd.
        alpha = tf.math.ndtri(tf.clip_by_value(u[..., 3:6], 2.0**-24, 1 - 2.0**-24)) * config.pca_noise_std
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
    c = config.pad_crop or config.crop_size
    offset, flip, alpha = choices
    if encoded:
        crop = decode_crop(image, offset, c, config.resize_size)
    else:
        crop = tf.slice(image, [offset[0], offset[1], 0], [c, c, 3])
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
    """Ten crops of one image (five patches, each twice: as cut and with its flip bit set
    for its reflection), stacked (10, ...)."""
    c = config.pad_crop or config.crop_size
    crops, offsets, flips = [], [], []
    for top, left in ten_crop_offsets(config.resize_size, c):
        crop = image[top : top + c, left : left + c, :]
        for flip in (False, True):
            crops.append(crop)
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


def _placeholder(label, config: DataConfig, crops: str) -> dict:
    """A weight-0 stand-in for an example whose file could not be decoded."""
    c = config.pad_crop or config.crop_size
    m = (config.resize_size - c) // 2
    rows = 10 if crops == "ten" else None
    shape = [rows] if rows else []
    return {
        "image": tf.zeros(shape + [c, c, 3], tf.uint8),
        "offset": tf.fill(shape + [2], tf.constant(m, tf.int32)),
        "flip": tf.zeros(shape, tf.bool),
        "alpha": tf.zeros(shape + [3], tf.float32),
        "label": tf.fill(shape, tf.cast(label, tf.int32)),
        "weight": tf.zeros(shape, tf.float32),
    }


def _placeholders(labels, config: DataConfig, crops: str) -> dict:
    """`_placeholder` for each of `labels` (a vector), stacked."""
    one = _placeholder(0, config, crops)
    m = tf.shape(labels)[0]
    out = {k: tf.repeat(v[None], m, axis=0) for k, v in one.items()}
    label = tf.cast(labels, tf.int32)
    out["label"] = tf.repeat(label[:, None], 10, axis=1) if crops == "ten" else label
    return out


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

    Files that cannot be decoded never stop the pipeline: they are recorded in
    `BAD_FILES` (see `bad_file_summary`) and become weight-0 rows of their batch (the
    training loss and metrics weigh rows by `weight`), so every batch keeps its shape
    and every example its place.
    """
    if crops not in ("center", "ten"):
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    if crops == "ten" and training:
        raise ValueError("ten crops are for evaluation")
    unread = None
    if source.encoded and split in source.files:
        # A list of files: training takes all of them in a random order drawn from (seed,
        # epoch) (a shuffle buffer would mix only neighbours of a list sorted by class),
        # and each file is read where it is decoded, so that a file that cannot be read
        # is skipped like one that cannot be decoded.
        n = source.sizes[split]
        order = np.random.default_rng([seed, epoch]).permutation(n) if training else np.arange(min(n, limit or n))
        unread = source.unread_examples(split, order)
    records = source.records.get(split) if source.encoded else None
    if unread is not None:
        ds = unread  # (index, (path, label, path))
    elif records is not None:
        # Record files: training reads the shards in an order drawn from (seed, epoch); the
        # records stay serialized until their batch is decoded, where one op parses them.
        ds = records([seed, epoch] if training else None).enumerate()  # (index, record)
        if limit:
            ds = ds.take(limit)
    else:
        # Sharded sources: training reads the shards in an order drawn from (seed, epoch),
        # then the shuffle buffer mixes neighbouring examples.
        shard_seed = [seed, epoch] if training else None
        ds = source.examples(split, shard_seed).enumerate()  # (index, (image, label, name))
        if limit:
            ds = ds.take(limit)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    pipeline = input_context.input_pipeline_id if input_context is not None else 0
    replicas = input_context.num_replicas_in_sync if input_context is not None else 1
    global_batch = batch_size * replicas
    width = global_batch // pipelines  # examples of one global batch this pipeline takes
    if pipelines > 1 and not training:
        ds = ds.shard(pipelines, pipeline)
    if training:
        if unread is None:
            ds = ds.shuffle(config.shuffle_buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
        # An example's position does not depend on decoding: resume by skipping before it.
        ds = ds.skip(skip_batches * global_batch)
    if training and pipelines > 1:
        # Every pipeline walks the same shuffled order and decodes only its slice of
        # each global batch: the global batch is the same for 1 or N workers.
        lo = pipeline * width
        ds = ds.batch(global_batch, drop_remainder=True)
        ds = ds.map(lambda i, ex: (i[lo : lo + width], tf.nest.map_structure(lambda t: t[lo : lo + width], ex)))
        ds = ds.unbatch()
    record = not config.service_address  # a service worker cannot reach this process's table

    def prepare(index, example, choices=None):
        """One example's batch row; `choices` are its `random_choices` when already drawn."""
        image, label, name = example
        if unread is not None:
            image = tf.io.read_file(image)
        if crops == "ten":
            return ten_crop_example(decode_and_resize(image, config.resize_size, source.encoded), label, config)
        if training and config.random_labels:
            label = random_label(name, seed, source.num_classes)
        if not source.encoded:
            image = resize_central(image, config.resize_size)
        if choices is None:
            choices = random_choices(index, config, training, seed, epoch)
        return crop_example(image, label, choices, config, encoded=source.encoded)

    def decode_batch(indices, examples):
        """A dataset of one element: the batch of the examples `indices`, decoded one
        after another by a small dataset with `ignore_errors` (random choices drawn for
        the batch at once). The files missing from its output are the unreadable ones:
        they are recorded and become weight-0 rows at the batch's end."""
        if records is not None:
            examples = source.parse(examples)
        n = tf.shape(indices)[0]
        choices = random_choices(indices, config, training, seed, epoch)
        ok = (
            tf.data.Dataset.from_tensor_slices((tf.range(n), indices, examples, choices))
            .map(lambda pos, i, ex, ch: (pos, prepare(i, ex, ch)))
            .ignore_errors()
            .batch(batch_size)
        )
        # A batch in which nothing decoded still gives one (empty) batch.
        empty = tf.nest.map_structure(lambda spec: tf.zeros([0, *spec.shape[1:]], spec.dtype), ok.element_spec)
        ok = ok.concatenate(tf.data.Dataset.from_tensors(empty)).take(1)

        def finish(positions, good):
            decoded = tf.reduce_any(tf.equal(tf.range(n)[:, None], positions[None, :]), axis=1)
            missing = tf.where(~decoded)[:, 0]

            def fill():
                labels = tf.gather(examples[1], missing)
                out = {k: tf.concat([good[k], v], 0) for k, v in _placeholders(labels, config, crops).items()}
                if record:
                    data, _, names = (tf.gather(t, missing) for t in examples)
                    why = _why_unreadable(data) if unread is None else _why_unreadable_files(data)
                    with tf.control_dependencies([BAD_FILES.table.insert(names, why)]):
                        out["weight"] = tf.identity(out["weight"])
                return out

            # Nearly every batch is whole: skip the stand-ins' ops for those.
            out = tf.cond(tf.size(missing) > 0, fill, lambda: good)
            if training:  # whole batches only (drop_remainder): say so to the compiled step
                for v in out.values():
                    v.set_shape([batch_size, *v.shape[1:]])
            return out

        return ok.map(finish)

    if training:
        steps = source.sizes[split] // global_batch - skip_batches  # global steps left
        batches = max(steps * (width // batch_size), 0)  # this pipeline's per-replica batches
    if source.encoded:
        # One small dataset per batch keeps its cost off the per-image path; the batches
        # are built in parallel, each in one interleave worker.
        ds = ds.batch(batch_size, drop_remainder=training)
        if training:
            ds = ds.take(batches)  # here rather than after decoding: a take there costs 7%
        ds = ds.interleave(decode_batch, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    else:
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
        ds = ds.batch(batch_size, drop_remainder=training)
        if training:
            ds = ds.take(batches)

    if training:
        if config.service_address:
            ds = ds.apply(
                tf.data.experimental.service.distribute(
                    processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
                    service=config.service_address,
                    job_name=f"alexnet_tf-{split}-seed{seed}-epoch{epoch}-skip{skip_batches}-pipeline"
                    f"{input_context.input_pipeline_id if input_context else 0}",
                )
            )
    else:
        ds = ds.map(lambda b: _pad_batch(b, batch_size))
        if crops == "ten":
            ds = ds.map(lambda b: {k: tf.reshape(v, [-1, *v.shape[2:]]) for k, v in b.items()})
    options = tf.data.Options()
    options.deterministic = config.deterministic
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


def decoded_examples(
    source: Source, split: str, size: int, deterministic: bool = True, order=None, skip: int = 0
) -> tf.data.Dataset:
    """(image uint8 (size, size, 3), label, name, reason) for every example, in order;
    reason is -1 for a decoded image, else an index into REASONS (the image is then zeros
    and the file is recorded in `BAD_FILES`). For a source of files, `order` (positions
    in the split) picks the files and their order. The first `skip` examples are left
    out before anything is decoded."""
    if not source.encoded:
        ds = source.examples(split).skip(skip)
        return ds.map(lambda x, y, n: (resize_central(x, size), y, n, -1), num_parallel_calls=AUTOTUNE)
    unread = source.unread_examples(split, order)  # files: read here, so that reading can fail too
    ds = (source.examples(split) if unread is None else unread.map(lambda i, ex: ex)).skip(skip)

    def decoded(data, label, name):
        if unread is not None:
            data = tf.io.read_file(data)
        return decode_and_resize(data, size, True), label, name, -1

    def unreadable(data, label, name):
        reason = _why_unreadable(data) if unread is None else _why_unreadable_files(data[None])[0]
        with tf.control_dependencies([BAD_FILES.record(name, reason)]):
            return tf.zeros((size, size, 3), tf.uint8), label, name, tf.identity(reason)

    def safe(data, label, name):
        ok = tf.data.Dataset.from_tensors((data, label, name)).map(decoded).ignore_errors()
        bad = tf.data.Dataset.from_tensors((data, label, name)).map(unreadable)
        return ok.concatenate(bad).take(1)

    return ds.interleave(safe, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def resized_images(source: Source, split: str, size: int, deterministic: bool = True) -> tf.data.Dataset:
    """Every readable image of a split as uint8 (size, size, 3) (Sec. 2); unreadable files
    are skipped and recorded in `BAD_FILES`."""

    def decoded(image, label, name, reason):
        return reason < 0

    def image_of(image, label, name, reason):
        return image

    return decoded_examples(source, split, size, deterministic).filter(decoded).map(image_of)


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


def dataset_stats(source: Source, config: DataConfig, split: str = "train", progress=None) -> Stats:
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
    return compute_stats(resized_images(source, split, config.resize_size), config.resize_size, progress)


def apply_flips(images: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Mirrors (left-right) the images (B, H, W, C) whose flip bit (B,) is set."""
    return tf.where(flips[:, None, None, None], tf.reverse(images, [2]), images)


def device_preprocess(batch: dict, stats: dict, config: DataConfig, dtype=tf.float32) -> tf.Tensor:
    """uint8 crops -> mean-subtracted, colour-noised, flipped float images (runs on the device).

    `stats` holds tensors: mean_image (R, R, 3), eigval (3,), eigvec (3, 3). The mean
    image's crop is subtracted before the flip, so each pixel loses its own mean.
    """
    image = tf.cast(batch["image"], tf.float32)  # (B, c, c, 3), c = pad_crop or crop_size
    pc = image.shape[1]
    if config.subtract_mean:
        ar = tf.range(pc)
        rows = batch["offset"][:, 0:1] + ar  # (B, pc)
        cols = batch["offset"][:, 1:2] + ar
        mean = tf.gather(stats["mean_image"], rows)  # (B, pc, R, 3)
        mean = tf.gather(mean, cols, axis=2, batch_dims=1)  # (B, pc, pc, 3)
        image = image - mean
    if config.pca_noise_std > 0:
        # Sec. 4.1: add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, in [0, 1] units, scaled to 0..255.
        shift = 255.0 * tf.linalg.matvec(stats["eigvec"], batch["alpha"] * stats["eigval"])  # (B, 3)
        image = image + shift[:, None, None, :]
    image = apply_flips(image, batch["flip"])
    if config.input_scale != 1.0:
        image = image * config.input_scale
    if config.pad_crop:
        extra = config.crop_size - pc
        image = tf.pad(image, [[0, 0], [extra // 2, extra - extra // 2], [extra // 2, extra - extra // 2], [0, 0]])
    return tf.cast(image, dtype)
