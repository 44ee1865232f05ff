"""Sources of sharded record files: `python -m alexnet_tf.prepare` TFRecords, and TFDS.

Both read their shards in an order drawn from the training order's seed (a new order
each epoch); the pipeline's shuffle buffer then mixes neighbouring examples.
"""

from __future__ import annotations

import json
import os

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
    the train split. ImageNet is prepared from its manual download (named if missing)."""
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


def _ensure_prepared(tfds, builder, name: str, manual_dir: str) -> None:
    """Prepares the dataset if TFDS has not yet; for ImageNet, names the missing tars."""
    try:
        builder.as_dataset(split=list(builder.info.splits)[0] if builder.info.splits else "train")
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
