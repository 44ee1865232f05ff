"""`bench input`: the training input pipeline against a PIL + NumPy worker pool."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing import shared_memory

import numpy as np
import tensorflow as tf
from PIL import Image

from alexnet_tf import data as data_lib
from alexnet_tf.bench.common import BATCH, emit, make_jpegs, repeated, usable_cores
from alexnet_tf.config import DataConfig
from alexnet_tf.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC


# ----------------------------------------------------------------------------- alexnet_tf
def _time_batches(iterator, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        next(iterator)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(iterator)
        n += BATCH
    return n / (time.perf_counter() - start)


def bench_alexnet_tf(spec: str, split: str, seconds: float, cores: int, host_float: bool) -> float:
    config = DataConfig(source=spec, deterministic=False)
    source = data_lib.open_source(spec, config)
    source = repeated(source, split, max(1, 200_000 // max(source.sizes[split], 1)))
    ds = data_lib.train_dataset(source, config, split, BATCH)
    if host_float:
        # The device step's arithmetic per example on the CPU (slices, not the batched gather).
        stats = data_lib.Stats.imagenet(config.resize_size)
        mean = tf.constant(stats.mean_image)
        shift_basis = tf.constant(255.0 * stats.eigvec * stats.eigval[None, :])  # columns p_i * lambda_i
        c = config.crop_size

        def to_float(ex):
            m = tf.slice(mean, [ex["offset"][0], ex["offset"][1], 0], [c, c, 3])
            x = tf.cast(ex["image"], tf.float32) - m + tf.linalg.matvec(shift_basis, ex["alpha"])
            return tf.cond(ex["flip"], lambda: tf.reverse(x, [1]), lambda: x)

        ds = ds.unbatch().map(to_float, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    ds = ds.with_options(options)
    return _time_batches(iter(ds), seconds)


# ----------------------------------------------------------------------------- baseline
_SHM = {}


def _baseline_init(mean_image: np.ndarray, shm_names: list):
    _SHM["mean"] = mean_image
    _SHM["slots"] = [shared_memory.SharedMemory(name=n) for n in shm_names]


def _baseline_batch(slot: int, paths: list, seed: int) -> int:
    """One batch as torchvision would make it, written into shared-memory slot `slot`."""
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


def bench_input(
    *,
    data: str | None = None,
    split: str = "train",
    out: str | None = None,
    seconds: float = 10.0,
    rounds: int = 3,
    cores: int = 0,
    images: int = 512,
) -> list[dict]:
    """Times the input pipelines on `data` (a data spec; None: `images` generated 256 px
    JPEGs) with `cores` worker processes / tf.data threads (0: all usable), `rounds` turns
    of `seconds` each; prints one JSON line per pipeline (and appends them to
    OUT/input.jsonl with `out`) and returns them."""
    cores = cores or usable_cores()
    tmp = None
    spec = data
    if not spec:
        tmp = tempfile.mkdtemp(prefix="alexnet_tf_bench_")
        make_jpegs(tmp, count=images)
        spec = "folder:" + tmp
    try:
        try:  # only possible before TensorFlow starts (not when called from a running process)
            tf.config.threading.set_inter_op_parallelism_threads(cores)
            tf.config.threading.set_intra_op_parallelism_threads(cores)
        except RuntimeError:
            pass
        source = data_lib.open_source(spec)
        paths = []
        if spec.startswith("folder:"):
            paths = [p.decode() for _, p, _, _ in source.examples(split, read=False).as_numpy_iterator()]
        common = {
            "data": data or f"generated {images} 256x256 JPEGs",
            "batch": BATCH,
            "cores": cores,
            "seconds": seconds,
        }
        runs = {
            "alexnet_tf": lambda: bench_alexnet_tf(spec, split, seconds, cores, False),
            "alexnet_tf_host_float": lambda: bench_alexnet_tf(spec, split, seconds, cores, True),
        }
        if paths:
            runs["pil_baseline"] = lambda: bench_pil(paths, seconds, cores)
        rates = {name: [] for name in runs}
        for _ in range(max(1, rounds)):
            for name, fn in runs.items():
                rates[name].append(fn() / cores)
        results = []
        for name, per_core in rates.items():
            median = statistics.median(per_core)
            result = {
                "pipeline": name,
                "images_per_sec": round(median * cores, 1),
                "images_per_sec_per_core": round(median, 1),
                "rounds": [round(r, 1) for r in per_core],
            }
            if name != "pil_baseline" and "pil_baseline" in rates:
                ratios = [a / b for a, b in zip(per_core, rates["pil_baseline"])]
                result["speedup_vs_pil_baseline"] = round(statistics.median(ratios), 2)
            results.append({**result, **common})
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    results = [{"bench": "input", **r} for r in results]
    for result in results:
        emit(result, out)
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `bench input`, named as bench_input's arguments."""
    p.add_argument("--data", help="data spec; without it, generated 256 px JPEGs (the baseline needs folder:PATH)")
    p.add_argument("--split", default="train", help="the split of --data to read")
    p.add_argument("--out", help="also append the JSON lines to OUT/input.jsonl (a folder)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per pipeline and round")
    p.add_argument("--rounds", type=int, default=3, help="turns each pipeline takes (median reported)")
    p.add_argument("--cores", type=int, default=0, help="worker processes / tf.data threads (0: all usable)")
    p.add_argument("--images", type=int, default=512, help="how many JPEGs to generate without --data")
    p.set_defaults(fn=bench_input)
