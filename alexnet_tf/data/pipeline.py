"""tf.data pipelines: training batches, evaluation batches, and decoded images.

A batch is a dict: image uint8 (B, c, c, 3) (the crop as cut, before its flip), offset
int32 (B, 2), flip bool (B,), alpha float32 (B, 3), label int32 (B,), weight float32
(B,). A file that cannot be read or decoded never stops a pipeline: it becomes a
weight-0 row at the end of its batch (so every batch keeps its shape and every example
its place) and, given a `BadFiles`, is listed there with the reason. Evaluation pads a
short last batch with weight-0 rows.

Training batches are slices of the same global batches whatever the number of replicas
or workers, and every random choice is a function of (seed, epoch, example index), so
`skip_batches` resumes an epoch exactly. Replica r of R (counted over all workers) gets
rows r * b .. r * b + b - 1 of each global batch, b = its batch size: `model.Dropout`
draws its mask for the global batch and keeps those rows.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf.config import DataConfig
from alexnet_tf.data import batch as batch_lib
from alexnet_tf.data import ops
from alexnet_tf.data.sources import REASONS, Source


class BadFiles:
    """Files that could not be read or decoded, by name, with the reason: a hash table
    that the tf.data graphs of this process write to (each file once, however many
    epochs meet it). Pipelines run by a tf.data service cannot reach it."""

    def __init__(self):
        with tf.init_scope(), tf.device("/cpu:0"):
            self.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int32, default_value=-1)

    def record(self, names: tf.Tensor, reasons: tf.Tensor) -> tf.Operation:
        return self.table.insert(tf.reshape(names, [-1]), tf.reshape(reasons, [-1]))

    def summary(self, limit: int = 5) -> dict:
        """{"count": N, "examples": [{"file": ..., "reason": ...}, ...]} (first `limit` by name)."""
        keys, values = self.table.export()
        pairs = sorted(zip(keys.numpy().tolist(), values.numpy().tolist()))
        examples = [{"file": k.decode(errors="replace"), "reason": REASONS[v]} for k, v in pairs[:limit]]
        return {"count": len(pairs), "examples": examples}

    def message(self, limit: int = 5) -> str:
        """One log line: empty when every file decoded."""
        s = self.summary(limit)
        if not s["count"]:
            return ""
        shown = "; ".join(f"{e['file']} ({e['reason']})" for e in s["examples"])
        more = f"; and {s['count'] - len(s['examples'])} more" if s["count"] > len(s["examples"]) else ""
        return f"skipped {s['count']} unreadable image file(s): {shown}{more}"


def _context(input_context: tf.distribute.InputContext | None) -> tuple[int, int, int]:
    """(input pipelines, this pipeline's id, replicas)."""
    if input_context is None:
        return 1, 0, 1
    return input_context.num_input_pipelines, input_context.input_pipeline_id, input_context.num_replicas_in_sync


def train_dataset(
    source: Source,
    config: DataConfig,
    split: str,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    skip_batches: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    bad_files: BadFiles | None = None,
) -> tf.data.Dataset:
    """One epoch of training batches of `batch_size` (per replica) for one input
    pipeline: random crops, flips and colour noise (Sec. 4.1), whole batches only, the
    examples in an order drawn from (seed, epoch); `skip_batches` global batches left out
    before anything is read."""
    pipelines, pipeline, replicas = _context(input_context)
    global_batch = batch_size * replicas
    width = global_batch // pipelines  # examples of one global batch this pipeline takes
    ds = source.raw(split, order=[seed, epoch])  # (index, raw)
    if not source.shuffled:  # sharded sources: mix neighbouring examples
        ds = ds.shuffle(config.shuffle_buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.skip(skip_batches * global_batch)
    if pipelines > 1:
        # Every pipeline walks the same order and decodes only its slice of each global batch.
        lo = pipeline * width
        ds = ds.batch(global_batch, drop_remainder=True)
        ds = ds.map(lambda i, r: (i[lo : lo + width], tf.nest.map_structure(lambda t: t[lo : lo + width], r)))
        ds = ds.unbatch()
    steps = source.sizes[split] // global_batch - skip_batches  # global steps left
    ds = ds.batch(batch_size, drop_remainder=True).take(max(steps * (width // batch_size), 0))
    decode = _batch_decoder(source, config, batch_size, "center", True, seed, epoch, bad_files)
    ds = ds.interleave(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.deterministic)
    if config.service_address:
        ds = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
                service=config.service_address,
                job_name=f"alexnet_tf-{split}-seed{seed}-epoch{epoch}-skip{skip_batches}-pipeline{pipeline}",
            )
        )
    return _finish(ds, config)


def eval_dataset(
    source: Source,
    config: DataConfig,
    split: str,
    batch_size: int,
    crops: str = "center",
    limit: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    bad_files: BadFiles | None = None,
) -> tf.data.Dataset:
    """The first `limit` (0: all) examples of `split` in their fixed order, as batches of
    `batch_size` centre crops, or with `crops="ten"` of the ten Sec. 4.1 crops of each
    (consecutive rows: 10 * batch_size rows a batch); the last batch padded."""
    if crops not in ("center", "ten"):
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    pipelines, pipeline, _ = _context(input_context)
    ds = source.raw(split)
    if limit:
        ds = ds.take(limit)
    if pipelines > 1:
        ds = ds.shard(pipelines, pipeline)
    decode = _batch_decoder(source, config, batch_size, crops, False, 0, 0, bad_files)
    ds = ds.batch(batch_size).interleave(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.deterministic
    )
    ds = ds.map(lambda b: _pad_batch(b, batch_size))
    if crops == "ten":
        ds = ds.map(batch_lib.flatten_views)
    return _finish(ds, config)


def _finish(ds: tf.data.Dataset, config: DataConfig) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = config.deterministic
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _batch_decoder(source, config, batch_size, crops, training, seed, epoch, bad_files):
    """`decode(indices, raws)`: a dataset of one element, the batch of those examples,
    decoded one after another by a small dataset with `ignore_errors` (each batch is
    built in one interleave worker, the random choices drawn for the batch at once). The
    examples missing from its output are the unreadable ones: they are recorded and
    become weight-0 rows at the batch's end."""

    def row(index, data, label, name, choices):
        data = source.read(data)
        if crops == "ten":
            image = ops.decode_and_resize(data, config.resize_size, source.encoded, config.resize)
            return batch_lib.ten_crops(image, config, label)
        if training and config.random_labels:
            label = ops.random_label(name, seed, source.num_classes)
        if not source.encoded:
            data = ops.resize_square(data, config.resize_size, config.resize)
        return ops.crop_example(data, label, choices, config, encoded=source.encoded)

    views = 10 if crops == "ten" else 1

    def decode(indices, raws):
        data, labels, names = source.parse(raws)
        n = tf.shape(indices)[0]
        choices = ops.random_choices(indices, config, training, seed, epoch)
        ok = (
            tf.data.Dataset.from_tensor_slices((tf.range(n), indices, data, labels, names, choices))
            .map(lambda pos, i, x, y, name, ch: (pos, row(i, x, y, name, ch)))
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
                out = {
                    k: tf.concat([good[k], v], 0)
                    for k, v in batch_lib.placeholders(tf.gather(labels, missing), config, views).items()
                }
                if bad_files is not None and source.encoded:  # arrays in memory are never unreadable
                    why = source.why_unreadable(tf.gather(data, missing))
                    with tf.control_dependencies([bad_files.record(tf.gather(names, missing), why)]):
                        out["weight"] = tf.identity(out["weight"])
                return out

            # Nearly every batch is whole: skip the stand-ins' ops for those.
            out = tf.cond(tf.size(missing) > 0, fill, lambda: good)
            if training:  # whole batches only: say so to the compiled step
                for v in out.values():
                    v.set_shape([batch_size, *v.shape[1:]])
            return out

        return ok.map(finish)

    return decode


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a short final eval batch with weight-0 examples so XLA sees one shape."""
    pad = batch_size - tf.shape(batch["label"])[0]

    def pad_one(t):
        t = tf.pad(t, [[0, pad]] + [[0, 0]] * (len(t.shape) - 1))
        t.set_shape([batch_size] + t.shape[1:].as_list())
        return t

    return {k: pad_one(v) for k, v in batch.items()}


def decoded_examples(
    source: Source,
    split: str,
    size: int,
    order=None,
    skip: int = 0,
    bad_files: BadFiles | None = None,
    resize: str = "shorter_side",
) -> tf.data.Dataset:
    """(image uint8 (size, size, 3), label, name, reason) for every example of `split` in
    its order (`order`: see `Source.raw`), after Sec. 2's resize and central crop (or the
    warp that `resize` names, see `ops.resize_square`); reason
    is -1 for an image that decoded, else an index into REASONS (the image is then zeros,
    and the file is recorded in `bad_files`). The first `skip` examples are left out
    before anything is read."""
    ds = source.examples(split, order, read=False).skip(skip)  # read where a failure is caught
    if not source.encoded:
        return ds.map(
            lambda i, x, y, name: (ops.resize_square(x, size, resize), y, name, -1),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def decoded(data, label, name):
        return ops.decode_and_resize(source.read(data), size, True, resize), label, name, -1

    def unreadable(data, label, name):
        reason = source.why_unreadable(data[None])[0]
        if bad_files is not None:
            with tf.control_dependencies([bad_files.record(name, reason)]):
                reason = tf.identity(reason)
        return tf.zeros((size, size, 3), tf.uint8), label, name, reason

    def safe(index, data, label, name):
        ok = tf.data.Dataset.from_tensors((data, label, name)).map(decoded).ignore_errors()
        bad = tf.data.Dataset.from_tensors((data, label, name)).map(unreadable)
        return ok.concatenate(bad).take(1)

    return ds.interleave(safe, block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def resized_images(
    source: Source, split: str, size: int, bad_files: BadFiles | None = None, resize: str = "shorter_side"
) -> tf.data.Dataset:
    """Every readable image of a split as uint8 (size, size, 3) (Sec. 2, or `resize`)."""

    def readable(image, label, name, reason):
        return reason < 0

    def image_of(image, label, name, reason):
        return image

    return decoded_examples(source, split, size, bad_files=bad_files, resize=resize).filter(readable).map(image_of)


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict:
    """A random training batch as `train_dataset` hands them out (uint8 crops, crop
    offsets, flips, colour-noise coefficients, labels, weights), made where it runs."""
    d, b = config.data, batch_size
    c = batch_lib.cut_size(d)
    seeds = [tf.constant([seed, i], tf.int32) for i in range(5)]
    return batch_lib.make(
        tf.cast(tf.random.stateless_uniform((b, c, c, 3), seeds[0], 0, 256, dtype=tf.int32), tf.uint8),
        tf.random.stateless_uniform((b, 2), seeds[1], 0, d.resize_size - c + 1, dtype=tf.int32),
        (tf.random.stateless_uniform((b,), seeds[2]) < 0.5) & d.random_flip,
        tf.random.stateless_normal((b, 3), seeds[3], stddev=d.pca_noise_std),
        tf.random.stateless_uniform((b,), seeds[4], 0, config.model.num_classes, dtype=tf.int32),
    )
