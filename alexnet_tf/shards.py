"""A dataset as JPEG TFRecord shards of the paper's 256x256 images (Sec. 2):
`prepare(spec, out)`, which `python -m alexnet_tf.prepare` calls.

Every image is rescaled so its shorter side is 256 and its central 256x256 patch kept,
then stored as a JPEG with its label and file name; OUT/metadata.json holds the class
names and each shard's split and example count, which `--data tfrecord:DIR` reads.
The files of a folder are written in a fixed random order (the same in every run), so
that every shard holds every class; other sources in their own order. Shards are
written one at a time to a temporary name and renamed when complete, so an interrupted
run started again skips the finished shards. Files that cannot be decoded are skipped
and listed (in metadata.json too).
"""

from __future__ import annotations

import itertools
import json
import os

import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.config import DataConfig
from alexnet_tf.report import Progress

PROGRESS_DIR = ".progress"  # per-shard records: a shard is finished when its record exists
ORDER_SEED = 0  # the order files of a folder are written in: fixed, so that a resumed run agrees


def example_record(jpeg: bytes, label: int, name: bytes) -> bytes:
    """One image as the serialized tf.train.Example that `data.records` reads."""
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def prepare(
    spec: str,
    out: str,
    size: int = 256,
    shard_size: int = 1024,
    quality: int = 95,
    quiet: bool = False,
    data: DataConfig | None = None,
) -> dict:
    """Writes `spec` as shards under `out`; returns a report of what was written and skipped."""
    if ":" not in spec or os.path.isdir(spec):
        spec = "folder:" + spec
    source = data_lib.open_source(spec, data)  # `data`: a folder's label file, TFDS's folders
    if not source.encoded:
        raise data_lib.DataError(
            f"{spec} holds in-memory arrays; prepare writes image files (folder: or tfds: sources)"
        )
    os.makedirs(os.path.join(out, PROGRESS_DIR), exist_ok=True)
    shards, skipped, written, resumed = [], [], {}, 0
    for split in [s for s in source.splits if s not in source.aliases]:
        n = source.sizes[split]
        count = max(1, -(-n // shard_size))
        progress = Progress(n, split, quiet)
        files = [f"{split}-{k:05d}-of-{count:05d}.tfrecord" for k in range(count)]
        records = [_finished(out, f) for f in files]
        # One pass from the first unfinished shard on; the finished ones before it are
        # skipped before anything is read.
        first = next((k for k, r in enumerate(records) if r is None), count)
        examples = None
        if first < count:
            # a folder in a fixed random order (see above); other sources in their own
            order = ORDER_SEED if source.shuffled else None
            ds = data_lib.decoded_examples(source, split, size, order=order, skip=first * shard_size)
            ds = ds.map(
                lambda image, label, name, reason: (tf.io.encode_jpeg(image, quality=quality), label, name, reason),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).prefetch(tf.data.AUTOTUNE)
            examples = ds.as_numpy_iterator()
        done = 0
        written[split] = 0
        for k, file in enumerate(files):
            record = records[k]
            if record is None:
                record = _write_shard(itertools.islice(examples, shard_size), os.path.join(out, file))
                record["file"], record["split"] = file, split
                with open(os.path.join(out, PROGRESS_DIR, file + ".json"), "w") as f:
                    json.dump(record, f)
            else:
                resumed += 1
                if k > first:  # finished after an unfinished one: pass over its examples
                    for _ in itertools.islice(examples, shard_size):
                        pass
            shards.append({"file": file, "split": split, "count": record["count"]})
            skipped.extend(record["skipped"])
            written[split] += record["count"]
            done += record["count"] + len(record["skipped"])
            progress.update(done, final=k == count - 1)
    meta = {
        "format": "alexnet_tf.prepare/1",
        "image_size": size,
        "class_names": source.class_names,
        "source": spec,
        "splits": written,
        "shards": shards,
        "skipped": skipped,
    }
    with open(os.path.join(out, data_lib.METADATA_FILE + ".tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(out, data_lib.METADATA_FILE + ".tmp"), os.path.join(out, data_lib.METADATA_FILE))
    return {"written": written, "skipped": len(skipped), "skipped_files": skipped, "resumed_shards": resumed}


def _finished(out: str, file: str) -> dict | None:
    """The record of a shard an earlier run finished, else None."""
    record_path = os.path.join(out, PROGRESS_DIR, file + ".json")
    if os.path.isfile(record_path) and os.path.isfile(os.path.join(out, file)):
        with open(record_path) as f:
            return json.load(f)
    return None


def _write_shard(examples, path) -> dict:
    """Writes (jpeg, label, name, reason) tuples to one shard; returns its record."""
    count, skipped = 0, []
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for jpeg, label, name, reason in examples:
            if reason >= 0:
                skipped.append({"file": name.decode(errors="replace"), "reason": data_lib.REASONS[reason]})
                continue
            writer.write(example_record(jpeg, label, name))
            count += 1
    os.replace(tmp, path)
    return {"count": count, "skipped": skipped}
