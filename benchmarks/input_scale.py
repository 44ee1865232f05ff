"""How many CPU cores the training input needs to feed one GPU, measured.

    python -m benchmarks.input_scale --out /tmp/input_scale [--images 3000] [--qualities 95 85 75]
        [--cores 1 2] [--rounds 3] [--seconds 8]

Writes `--images` photo-like JPEGs (`alexnet_tf/bench/common.py`, as `bench input` makes them), reads them as a folder (`--data folder:DIR`), stores them with `python -m
alexnet_tf.prepare` as 256 px TFRecord shards once per JPEG quality (95 is prepare's
default), then times the training input exactly as `train` builds it (`--data
tfrecord:DIR`: read, decode the random 227 window, the batch's random draws, batches of
128; the mean, colour noise and flip happen on the accelerator) with tf.data limited to
1 and to 2 threads. Beside them, `cached`: the decoded 256 px images held in memory
(random 227 crops and batches only), the bound that caching decoded pixels can reach.

The variants and thread counts take turns, `--rounds` times, each built afresh. Two
rates per turn: images per wall second, and images per CPU second of the process (all
its threads; `time.process_time`), which a busy machine changes much less, and which is
the rate one core gives. The projection divides a GPU's training rate by the median CPU
rate: the cores one GPU needs for its input, before any other work of the host.

Prints one JSON line per turn and, at the end, a Markdown table; with --out, also
OUT/input_scale.jsonl and OUT/input_scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

BATCH = 128  # Sec. 5
CROP = 227  # Sec. 4.1, the 224 of the text padded as the net's arithmetic needs (NOTES)
STORED = {
    "folder": "a folder of the original JPEGs (320 px, quality 90): decode whole, resize, crop",
    "cached": "decoded 256 px images held in memory (crops and batches only)",
}
GPU_RATES = (8_000, 15_000)  # training img/s of one GPU: the GPU table's PyTorch rows (docs/speed.md)


def _timed(ds, seconds: float, threads: int) -> tuple[float, float]:
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    it = iter(ds.with_options(options))
    for _ in range(3):
        next(it)
    wall0, cpu0, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - wall0 < seconds:
        next(it)
        n += BATCH
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n / wall, n / cpu


def training_input(spec: str):
    """The training input as `train --data SPEC` builds it, one long epoch."""
    from alexnet_tf import data as data_lib
    from alexnet_tf.bench.common import repeated
    from alexnet_tf.config import DataConfig

    config = DataConfig(source=spec, deterministic=False)
    source = data_lib.open_source(spec, config)
    source = repeated(source, "train", max(1, 200_000 // source.sizes["train"]))
    return data_lib.train_dataset(source, config, "train", BATCH)


def cached_input(records: str, limit: int):
    """Decoded 256 px images in memory: only the random 227 crops and the batching left."""
    import numpy as np
    import tensorflow as tf

    from alexnet_tf import data as data_lib
    from alexnet_tf.config import DataConfig

    spec = f"tfrecord:{records}"
    source = data_lib.open_source(spec, DataConfig(source=spec))
    images = list(data_lib.resized_images(source, "train", 256).take(limit).as_numpy_iterator())
    pixels = tf.constant(np.stack(images))
    n = len(images)

    def crop(i):
        offset = tf.random.uniform([2], 0, 256 - CROP + 1, tf.int32)
        return tf.slice(pixels[i % n], [offset[0], offset[1], 0], [CROP, CROP, 3])

    return tf.data.Dataset.range(10**9).map(crop, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder for input_scale.jsonl and input_scale.md")
    p.add_argument("--images", type=int, default=3000, help="photo-like JPEGs to generate")
    p.add_argument("--qualities", type=int, nargs="+", default=[95, 85, 75], help="JPEG qualities to store")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2], help="tf.data thread counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--no-folder", action="store_true", help="leave out the generated JPEGs read as a folder")
    p.add_argument("--no-cached", action="store_true", help="leave out the decoded-in-memory bound")
    args = p.parse_args(argv)

    from alexnet_tf import shards
    from alexnet_tf.bench.common import make_jpegs

    scratch = tempfile.mkdtemp(prefix="input_scale_")
    folder = make_jpegs(os.path.join(scratch, "jpegs"), count=args.images, size=320, classes=100, processes=2)
    variants, sizes = {}, {}
    for q in args.qualities:
        out = os.path.join(scratch, f"q{q}")
        shards.prepare(f"folder:{folder}", out, size=256, quality=q, quiet=True)
        records = [os.path.join(out, f) for f in os.listdir(out) if "train" in f and not f.endswith(".json")]
        sizes[f"q{q}"] = sum(os.path.getsize(f) for f in records) / args.images
        variants[f"q{q}"] = lambda out=out: training_input(f"tfrecord:{out}")
    if not args.no_folder:
        variants["folder"] = lambda: training_input(f"folder:{folder}")
    sizes["folder"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs) / args.images
    sizes["cached"] = 256 * 256 * 3
    if not args.no_cached:
        first = os.path.join(scratch, f"q{args.qualities[0]}")
        variants["cached"] = lambda: cached_input(first, min(args.images, 1024))

    turns = []
    for r in range(args.rounds):
        for name, build in variants.items():
            for cores in args.cores:
                wall, cpu = _timed(build(), args.seconds, cores)
                line = {
                    "variant": name,
                    "threads": cores,
                    "round": r,
                    "img_per_s": round(wall),
                    "img_per_cpu_s": round(cpu),
                }
                print(json.dumps(line), flush=True)
                turns.append(line)

    rows = [
        "| stored as | tf.data threads | img/s (wall) | img per CPU second | bytes per image | cores per GPU at "
        + " / ".join(f"{g:,}" for g in GPU_RATES)
        + " img/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in variants:
        for cores in args.cores:
            mine = [t for t in turns if t["variant"] == name and t["threads"] == cores]
            wall = statistics.median(t["img_per_s"] for t in mine)
            cpu = statistics.median(t["img_per_cpu_s"] for t in mine)
            stored = STORED.get(name) or f"`prepare` shards: 256 px JPEGs, quality {name[1:]}"
            size = f"{sizes[name]:,.0f}"
            need = " / ".join(f"{g / cpu:.1f}" for g in GPU_RATES)
            rows.append(f"| {stored} | {cores} | {wall:,.0f} | {cpu:,.0f} | {size} | {need} |")
    table = "\n".join(rows)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "input_scale.jsonl"), "a") as f:
            f.writelines(json.dumps(t) + "\n" for t in turns)
        with open(os.path.join(args.out, "input_scale.md"), "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
