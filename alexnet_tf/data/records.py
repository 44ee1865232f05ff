"""Sources of sharded record files: `python -m alexnet_tf.prepare` TFRecords, and TFDS.

Both read their shards in an order drawn from the training order's seed (a new order
each epoch); the pipeline's shuffle buffer then mixes neighbouring examples.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import tensorflow as tf

from alexnet_tf.data.sources import DataError, Source

METADATA_FILE = "metadata.json"
TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_TAR_SIZES = ("138 GiB", "6.3 GiB")
# TFDS's imagenet2012 preparation as measured on generated ImageNet-sized JPEGs in the official
# tars (docs/input.md, "ImageNet through TFDS"): it keeps each JPEG's bytes as they are, takes
# 5.4 s of CPU per GB of tars on a 2-core VM (0.56 ms per image), and reads every byte twice
# and writes it twice (tars, its shuffle's temporary files, shards), at that VM's disk 1.1 GB/s.
PREPARED_BYTES_PER_TAR_BYTE = 0.993
PREPARE_SECONDS_PER_GB = 5.4
PREPARE_DISK_PASSES = 4
MEASURED_DISK_BYTES_PER_SECOND = 1.1e9
SLOW_DISK_BYTES_PER_SECOND = 150e6  # a hard disk's: the estimate's second figure


# --------------------------------------------------------------------------- TFRecords
class TFRecordSource(Source):
    """Shards {split: [(path, count)]}; records stay serialized until `parse` reads a
    batch of them at once. A record without a file name is named by a hash of its bytes."""

    def __init__(self, name: str, class_names: list, shards: dict):
        super().__init__(name, class_names, {s: sum(c for _, c in v) for s, v in shards.items()}, encoded=True)
        self.shards = {s: sorted(v) for s, v in shards.items()}

    def _raw(self, split, order):
        paths = [p for p, _ in self.shards[split]]
        if order is not None:
            paths = [paths[i] for i in np.random.default_rng(order).permutation(len(paths))]
        reads = min(len(paths), 8) if len(paths) > 1 else None
        return tf.data.TFRecordDataset(paths, num_parallel_reads=reads).enumerate()

    def parse(self, raw):
        parse_fn = tf.io.parse_single_example if raw.shape.rank == 0 else tf.io.parse_example
        e = parse_fn(raw, TFRECORD_FEATURES)
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
    return TFRecordSource("tfrecord:" + pattern, meta["class_names"], shards)


# --------------------------------------------------------------------------- TFDS
class TFDSSource(Source):
    """A TFDS image-classification dataset, images left encoded (SkipDecoding) so that
    decoding and cropping fuse; an example is named by its file name or its tfds_id."""

    def __init__(self, name: str, builder, exprs: dict):
        import tensorflow_datasets as tfds

        self.tfds, self.builder = tfds, builder
        self.image_key, self.label_key = builder.info.supervised_keys
        label = builder.info.features[self.label_key]
        class_names = getattr(label, "names", None) or [str(i) for i in range(label.num_classes)]
        self.name_key = "file_name" if "file_name" in builder.info.features else "tfds_id"
        self.exprs = {}
        sizes = {}
        for split, expr in exprs.items():
            try:
                sizes[split] = self._size(expr)
            except Exception:  # a split this dataset does not have
                continue
            self.exprs[split] = expr
        super().__init__(f"tfds:{name}", class_names, sizes, encoded=True)

    def as_dataset(self, expr: str, order=None) -> tf.data.Dataset:
        """The split expression's examples; with `order`, its files read in an order drawn from it."""
        tfds = self.tfds
        seed = None if order is None else int(np.random.default_rng(order).integers(2**31))
        read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=self.name_key == "tfds_id")
        return self.builder.as_dataset(
            split=expr,
            shuffle_files=order is not None,
            read_config=read_config,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
        )

    def _size(self, expr: str) -> int:
        try:
            return int(self.builder.info.splits[expr].num_examples)
        except (KeyError, ValueError):  # no split metadata (e.g. mocked): count
            n = int(self.as_dataset(expr).cardinality())
            return n if n >= 0 else int(self.as_dataset(expr).reduce(0, lambda c, _: c + 1))

    def _raw(self, split, order):
        keys = self.image_key, self.label_key, self.name_key
        ds = self.as_dataset(self.exprs[split], order).enumerate()
        return ds.map(lambda i, e: (i, (e[keys[0]], tf.cast(e[keys[1]], tf.int32), e[keys[2]])))


def tfds_source(name: str, train_split: str = "", data_dir: str = "", manual_dir: str = "") -> Source:
    """Any TFDS image-classification dataset; `train_split` (e.g. `train[:10%]`) replaces
    the train split. A dataset TFDS has not prepared yet is prepared first, in `data_dir`
    (TFDS's default: ~/tensorflow_datasets); one from a manual download (ImageNet) from
    `tfds_manual_dir(builder, manual_dir)`, with an estimate of time and disk said first."""
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
    _ensure_prepared(tfds, builder, name, manual_dir)
    exprs = {s: s for s in list(builder.info.splits) or ["train", "validation", "test"]}
    if train_split:
        exprs["train"] = train_split
    return TFDSSource(name, builder, exprs)


def tfds_manual_dir(builder, manual_dir: str = "") -> str:
    """The folder TFDS reads `builder`'s manual download from: `manual_dir`, else TFDS's
    default, `DownloadConfig.manual_dir`'s `<download_dir>/manual` under
    `download_and_prepare`'s `<data_dir>/downloads` (`builder.data_dir_root`).

    TFDS 4.9 has no public accessor for that default (its download manager is made by a
    private method, and `DownloadManager.manual_dir` raises while the folder is missing),
    so `_ensure_prepared` passes this folder to TFDS as `DownloadConfig(manual_dir=...)`:
    the folder checked is the folder read.
    """
    return os.fspath(manual_dir or builder.data_dir_root / "downloads" / "manual")


def _ensure_prepared(tfds, builder, name: str, manual_dir: str) -> None:
    """Prepares the dataset if TFDS has not yet: a manual download's files are checked
    (named if missing), ImageNet's preparation is estimated and said first."""
    try:
        builder.as_dataset(split=list(builder.info.splits)[0] if builder.info.splits else "train")
        return
    except Exception:  # TFDS raises AssertionError when not generated
        pass
    manual = tfds_manual_dir(builder, manual_dir)
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        files = _manual_files(builder, name, manual)
        if files and _base_name(name) == "imagenet2012":
            print(_imagenet_estimate(builder, manual, sum(os.path.getsize(f) for f in files)), flush=True)
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    except ModuleNotFoundError as e:
        raise DataError(f"TFDS could not prepare {name!r}: it needs the module {e.name!r}: pip install {e.name}") from e
    except Exception as e:
        raise DataError(f"TFDS could not prepare {name!r}: {type(e).__name__}: {str(e)[:300]}") from e


def _base_name(name: str) -> str:
    return name.split("/")[0].split(":")[0]


def _manual_files(builder, name: str, manual: str) -> list:
    """The files of a manual download TFDS will read (ImageNet's two tars); DataError
    naming the folder and the files when one is missing."""
    if _base_name(name) != "imagenet2012":
        if not os.path.isdir(manual) or not os.listdir(manual):
            instructions = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
            raise DataError(
                f"TFDS prepares {name!r} from a manual download in {manual}, which is missing or empty: "
                f"{instructions} (or set data.tfds_manual_dir=DIR)"
            )
        return []
    missing = [t for t in IMAGENET_TARS if not os.path.isfile(os.path.join(manual, t))]
    if missing:
        raise DataError(
            f"imagenet2012 is not prepared in {builder.data_dir_root}, and TFDS prepares it from "
            f"{' and '.join(IMAGENET_TARS)} ({' and '.join(IMAGENET_TAR_SIZES)}) in {manual}, where "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; download them from "
            "https://image-net.org (login needed) into that folder, or set data.tfds_manual_dir=DIR to the "
            "folder that holds them"
        )
    return [os.path.join(manual, t) for t in IMAGENET_TARS]


def _imagenet_estimate(builder, manual: str, tar_bytes: int) -> str:
    """What preparing ImageNet will take, said before TFDS starts: time and disk from
    the tars' size and the measured rates; DataError if the disk is surely too small."""
    need = tar_bytes * PREPARED_BYTES_PER_TAR_BYTE
    root = os.fspath(builder.data_dir_root)
    free = _free_bytes(root)
    if free is not None and free < need:
        raise DataError(
            f"preparing imagenet2012 needs about {_bytes(need)} in {root} (TFDS keeps every JPEG of the "
            f"{_bytes(tar_bytes)} of tars) but {_bytes(free)} are free there; free some space, or set "
            "data.tfds_data_dir=DIR to a folder on a disk with room"
        )

    def seconds(disk_rate: float) -> float:
        return tar_bytes / 1e9 * PREPARE_SECONDS_PER_GB + PREPARE_DISK_PASSES * tar_bytes / disk_rate

    where = f" ({_bytes(free)} free there)" if free is not None else ""
    return (
        f"TFDS prepares imagenet2012 once, now: from the {_bytes(tar_bytes)} of tars in {manual} into "
        f"{builder.data_dir} (an interrupted preparation starts over).\n"
        f"Estimate: {_rough(seconds(MEASURED_DISK_BYTES_PER_SECOND))} and {_bytes(need)} of disk{where}; "
        f"with a {SLOW_DISK_BYTES_PER_SECOND / 1e6:.0f} MB/s disk {_rough(seconds(SLOW_DISK_BYTES_PER_SECOND))}. "
        f"As measured on ImageNet-sized JPEGs on a 2-core VM: {PREPARE_SECONDS_PER_GB:g} s of CPU per GB of "
        f"tars, every byte read twice and written twice, its disk {MEASURED_DISK_BYTES_PER_SECOND / 1e9:g} GB/s "
        "(docs/input.md)"
    )


def _free_bytes(path: str) -> int | None:
    """Free bytes on the disk of `path` (or of its nearest existing parent); None for a
    path that is not local (gs://...)."""
    if "://" in path:
        return None
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def _bytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _rough(seconds: float) -> str:
    """A duration as an estimate says it: minutes, or hours to a tenth."""
    if seconds < 60:
        return "under a minute"
    return f"about {round(seconds / 60)} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"


def imagenet_class_descriptions(class_names: list) -> list | None:
    """The readable names of ImageNet's classes ("n01440764" -> "tench, Tinca tinca"),
    one for each of `class_names`, from the lists TFDS ships (imagenet2012's synsets and
    the 1000 names in the same class order); None unless every class name is one of
    ImageNet's 1000 synsets (e.g. a folder source's class folders) or TFDS is missing."""
    if not class_names or not all(re.fullmatch(r"n\d{8}", str(c)) for c in class_names):
        return None
    try:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST
    except ImportError:
        return None
    with open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")) as f:
        synsets = f.read().split()
    if len(synsets) != len(IMAGENET_LABELS_LIST):
        return None
    described = dict(zip(synsets, IMAGENET_LABELS_LIST))
    if not all(c in described for c in class_names):
        return None
    return [described[c] for c in class_names]
