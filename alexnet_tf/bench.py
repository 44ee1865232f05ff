"""Benchmarks, one subcommand each; every result is one JSON line on stdout.

    python -m alexnet_tf.bench input [--data SPEC] [--out FILE] [--seconds N] [--cores N]

`input`: images per second of the training input pipeline (Sec. 2 and 4.1: decode,
random 227 crop of the 256 image, flip, PCA colour noise, mean-image subtraction,
batches of 128) for two pipelines on the same files and the same number of cores:

- `alexnet_tf`: `data.make_dataset` as training uses it. Batches leave the host as
  uint8 with crop offset, flip bit and noise coefficients; the colour noise and the mean
  subtraction happen in the compiled step on the accelerator (`device_preprocess`).
- `alexnet_tf_host_float`: the same, with the device step's arithmetic (mean-image
  crop subtraction, colour noise, float32 batches) also done on the host CPU, so that
  every step of the work is on the CPU as in the baseline.
- `pil_baseline`: PIL + NumPy doing all of it in a pool of worker processes that write
  float32 batches into shared memory, as a PyTorch DataLoader with torchvision
  transforms does.

Without --data it writes its own 256x256 JPEGs (as `python -m alexnet_tf.prepare`
makes them) to a temporary folder. `images_per_sec_per_core` divides by --cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np

BATCH = 128  # Sec. 5


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_jpegs(folder: str, count: int = 512, size: int = 256, classes: int = 8, seed: int = 0) -> str:
    """Writes `count` photo-like size x size JPEGs (smooth shapes plus grain, quality 90,
    about the bytes of an ImageNet image at 256 px) in a train/<class>/ layout."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        d = os.path.join(folder, "train", f"class{i % classes:02d}")
        os.makedirs(d, exist_ok=True)
        low = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        image = np.asarray(low, np.float32) + rng.normal(0, 10, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(d, f"{i:05d}.JPEG"), quality=90)
    return folder


# ----------------------------------------------------------------------------- alexnet_tf
def _repeated(source, split: str, times: int):
    """The split played `times` over as one long epoch (no per-epoch restart in the timing)."""
    from alexnet_tf import data as data_lib

    def rep(fn):
        return lambda: fn().repeat(times)

    return data_lib.Source(
        source.name,
        source.class_names,
        {split: rep(source.splits[split])},
        {split: source.sizes[split] * times},
        source.encoded,
        named={split: rep(source.named[split])} if split in source.named else {},
    )


def _time_batches(iterator, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        next(iterator)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(iterator)
        n += BATCH
    return n / (time.perf_counter() - start)


def bench_alexnet_tf(spec: str, split: str, seconds: float, cores: int, host_float: bool) -> float:
    import tensorflow as tf

    from alexnet_tf import data as data_lib
    from alexnet_tf.config import DataConfig

    config = DataConfig(source=spec, deterministic=False)
    source = data_lib.open_source(spec, config)
    source = _repeated(source, split, max(1, 200_000 // max(source.sizes[split], 1)))
    ds = data_lib.make_dataset(source, config, split, BATCH, training=True)
    if host_float:
        # The device step's arithmetic per example on the CPU (slices, not the batched gather).
        stats = data_lib.Stats.imagenet(config.resize_size)
        mean = tf.constant(stats.mean_image)
        shift_basis = tf.constant(255.0 * stats.eigvec * stats.eigval[None, :])  # columns p_i * lambda_i
        c = config.crop_size

        def to_float(ex):
            m = tf.slice(mean, [ex["offset"][0], ex["offset"][1], 0], [c, c, 3])
            m = tf.cond(ex["flip"], lambda: tf.reverse(m, [1]), lambda: m)
            return tf.cast(ex["image"], tf.float32) - m + tf.linalg.matvec(shift_basis, ex["alpha"])

        ds = ds.unbatch().map(to_float, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    ds = ds.with_options(options)
    return _time_batches(iter(ds), seconds)


# ----------------------------------------------------------------------------- baseline
_SHM = {}


def _baseline_init(mean_image: np.ndarray, shm_names: list):
    from multiprocessing import shared_memory

    _SHM["mean"] = mean_image
    _SHM["slots"] = [shared_memory.SharedMemory(name=n) for n in shm_names]


def _baseline_batch(slot: int, paths: list, seed: int) -> int:
    """One batch as torchvision would make it, written into shared-memory slot `slot`."""
    from PIL import Image

    from alexnet_tf.data import IMAGENET_EIGVAL, IMAGENET_EIGVEC

    rng = np.random.default_rng(seed)
    crop, size = 227, 256
    out = np.ndarray((len(paths), crop, crop, 3), np.float32, buffer=_SHM["slots"][slot].buf)
    eigval, eigvec = np.asarray(IMAGENET_EIGVAL, np.float32), np.asarray(IMAGENET_EIGVEC, np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (size, size):  # Sec. 2, for files not already 256x256
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
                left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
                im = im.crop((left, top, left + size, top + size))
            top, left = rng.integers(0, size - crop + 1, 2)
            im = im.crop((left, top, left + crop, top + crop))
            flip = rng.random() < 0.5
            if flip:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            x = np.asarray(im, np.float32)
        mean = _SHM["mean"][top : top + crop, left : left + crop]
        shift = 255.0 * eigvec @ (rng.normal(0, 0.1, 3).astype(np.float32) * eigval)
        out[i] = x - (mean[:, ::-1] if flip else mean) + shift
    return slot


def bench_pil(paths: list, seconds: float, cores: int) -> float:
    from multiprocessing import shared_memory

    nbytes = BATCH * 227 * 227 * 3 * 4
    slots = [shared_memory.SharedMemory(create=True, size=nbytes) for _ in range(2 * cores)]
    mean = np.broadcast_to(np.asarray((123.68, 116.78, 103.94), np.float32), (256, 256, 3)).copy()
    rng = np.random.default_rng(0)
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    try:
        with ctx.Pool(cores, initializer=_baseline_init, initargs=(mean, [s.name for s in slots])) as pool:
            pending, batch_no = [], 0

            def submit(slot):
                nonlocal batch_no
                idx = rng.choice(len(paths), BATCH, replace=len(paths) < BATCH)
                pending.append(pool.apply_async(_baseline_batch, (slot, [paths[i] for i in idx], batch_no)))
                batch_no += 1

            for s in range(len(slots)):
                submit(s)

            def consume():
                slot = pending.pop(0).get()
                batch = np.ndarray((BATCH, 227, 227, 3), np.float32, buffer=slots[slot].buf)
                _ = batch[0, 0, 0, 0]  # the consumer sees the batch without a copy
                submit(slot)

            for _ in range(len(slots)):  # warm up
                consume()
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                consume()
                n += BATCH
            rate = n / (time.perf_counter() - start)
            for r in pending:
                r.wait()
    finally:
        for s in slots:
            s.close()
            s.unlink()
    return rate


# ----------------------------------------------------------------------------- command
def bench_input(args: argparse.Namespace) -> list:
    """Runs the input benchmark; prints and returns one dict per pipeline."""
    cores = args.cores or _cores()
    tmp = None
    spec = args.data
    if not spec:
        tmp = tempfile.mkdtemp(prefix="alexnet_tf_bench_")
        make_jpegs(tmp, count=args.images)
        spec = "folder:" + tmp
    try:
        import tensorflow as tf

        try:  # only possible before TensorFlow starts (not when called from a running process)
            tf.config.threading.set_inter_op_parallelism_threads(cores)
            tf.config.threading.set_intra_op_parallelism_threads(cores)
        except RuntimeError:
            pass
        from alexnet_tf import data as data_lib

        source = data_lib.open_source(spec)
        paths = []
        if spec.startswith("folder:"):
            paths = [p.decode() for _, _, p in source.examples(args.split).as_numpy_iterator()]
        common = {"data": args.data or f"generated {args.images} 256x256 JPEGs", "batch": BATCH, "cores": cores,
                  "seconds": args.seconds}
        results = []
        runs = [("alexnet_tf", lambda: bench_alexnet_tf(spec, args.split, args.seconds, cores, False)),
                ("alexnet_tf_host_float", lambda: bench_alexnet_tf(spec, args.split, args.seconds, cores, True))]
        if paths:
            runs.append(("pil_baseline", lambda: bench_pil(paths, args.seconds, cores)))
        for name, fn in runs:
            rate = fn()
            results.append({"pipeline": name, "images_per_sec": round(rate, 1),
                            "images_per_sec_per_core": round(rate / cores, 1), **common})
        if len(results) == 3:
            base = results[2]["images_per_sec_per_core"]
            for r in results[:2]:
                r["speedup_vs_pil_baseline"] = round(r["images_per_sec_per_core"] / base, 2)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = [json.dumps(r) for r in results]
    for line in lines:
        print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return results


def main(argv=None) -> int:
    from alexnet_tf import cli

    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("input", help="input pipeline throughput vs a PIL + NumPy worker pool")
    p.add_argument("--data", help="data spec (default: generated 256 px JPEGs); the baseline needs folder:PATH")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per pipeline")
    p.add_argument("--cores", type=int, default=0, help="worker processes / tf.data threads (default: all usable)")
    p.add_argument("--images", type=int, default=512, help="how many JPEGs to generate without --data")
    p.set_defaults(fn=bench_input)
    args = parser.parse_args(argv)
    return cli.run(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
