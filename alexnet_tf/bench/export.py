"""`bench export`: the exported SavedModel's bare throughput and latency, no server."""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.bench.common import emit, usable_cores
from alexnet_tf.bench.device import device_description, set_threads
from alexnet_tf.config import ConfigError, load_recipe
from alexnet_tf.exporting import export_saved_model, read_export_settings
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet
from alexnet_tf.serve import threads as thread_plan
from alexnet_tf.serve.session import SessionModel

SIGNATURE = "serve_uint8"


def fresh_export(recipe: str, out: str) -> tuple[str, int]:
    """Exports an untrained net of `recipe` as `python -m alexnet_tf.export` exports a run
    (same signatures and preprocessing; the weights do not change the time). Returns the
    folder and the images' side the recipe resizes to."""
    config = load_recipe(recipe)
    stats = data_lib.Stats.imagenet(config.data.resize_size)
    names = [str(i) for i in range(config.model.num_classes)]
    export_saved_model(TrainedNet(config, build_model(config.model), stats, names, origin=recipe), out, crops="center")
    return out, config.data.resize_size


def time_calls(fn, images, calls: int, warmup: int) -> list:
    """Milliseconds of each of `calls` calls of `fn(images)` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(images)
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        result = fn(images)
        _ = {k: np.asarray(v) for k, v in result.items()}  # the answer, as NumPy arrays
        out.append(1000 * (time.perf_counter() - start))
    return out


def percentile(values: list, q: float) -> float:
    """The value at rank round(q/100 * (n - 1)) of the sorted values, as the peer ranks them."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _time_signature(serve, batch: int, size: int, calls: int, warmup: int, eager: bool) -> dict:
    """img/s from the mean of `calls` timed calls of `serve` on a random uint8 batch (a
    tf.Tensor for the `eager` runtime's signature, a NumPy array for a Session's), and
    their p50 / p99 latency; the first call's time on its own."""
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)
    images = tf.constant(images) if eager else images
    start = time.perf_counter()
    serve(images)
    first = time.perf_counter() - start
    times = time_calls(serve, images, calls, warmup)
    mean_ms = sum(times) / len(times)
    return {
        "img_per_s": round(batch * 1000 / mean_ms, 1),
        "step_ms": round(mean_ms, 3),
        "p50_ms": round(percentile(times, 50), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "calls": len(times),
        "first_call_seconds": round(first, 2),
    }


def bench_export(
    export_dir: str | None = None,
    *,
    recipe: str | None = None,
    image_size: int = 256,
    net: str = "paper",
    batch: Sequence[int] = (32, 1),
    calls: int = 50,
    warmup: int = 5,
    threads: int = 0,
    runtime: str = "session",
    out: str | None = None,
) -> list[dict]:
    """Loads the SavedModel in `export_dir` (or exports an untrained net of `recipe`
    first, in a process of its own) and times its `serve_uint8` signature on uint8 batches
    of each `batch` size (`image_size` px; with `recipe`, its resize size), `calls` timed
    calls after `warmup` untimed ones, on `threads` cores (0: all); one JSON line per
    batch (appended to OUT/export.jsonl with `out`), `net` naming the net in
    `python -m benchmarks.compare`. `runtime`: "session", in a TensorFlow Session with the
    threads that `alexnet_tf.serve` plans for the net on that many cores, as TF Serving and
    the server run it (`serve.session`, `serve.threads`); "eager", tf.saved_model.load's
    signature with TensorFlow's thread pools of `threads` threads each."""
    if bool(export_dir) == bool(recipe):
        raise ConfigError("give an EXPORT_DIR or --recipe RECIPE (an untrained net of that recipe), not both")
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    with tempfile.TemporaryDirectory(prefix="alexnet_tf_bench_") as tmp:
        if recipe:
            # in a child process: the thread pools are set by the export's size before
            # TensorFlow starts in this one
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                path, size = child.submit(fresh_export, recipe, os.path.join(tmp, "1")).result()
            net = os.path.splitext(os.path.basename(recipe))[0]
        else:
            path, size = export_dir, image_size
        if not os.path.isdir(path):
            raise ConfigError(f"{path!r} is not a SavedModel folder")
        how = _threads(path, threads, runtime)
        if runtime == "session":
            model = SessionModel(path, inline=how["inline"], parts=how["parts"])
            serve = lambda images: model(SIGNATURE, {"images": images})  # noqa: E731
        else:
            signature = tf.saved_model.load(path).signatures[SIGNATURE]
            serve = lambda images: signature(images=images)  # noqa: E731
        gpus = tf.config.list_logical_devices("GPU")
        device, _ = device_description(tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0"))
        results = []
        for n in batch:
            row = {
                "bench": "export",
                "net": net,
                "recipe": recipe or "",
                "export_dir": export_dir or "",
                "signature": SIGNATURE,
                "runtime": runtime,
                "batch": n,
                "dtype": "fp32",
                "image_size": size,
                **_time_signature(serve, n, size, calls, warmup, eager=runtime == "eager"),
                "threads": threads or usable_cores(),
                **how,
                "device": device,
                "tf_version": tf.__version__,
                "keras_version": keras.__version__,
            }
            emit(row, out)
            results.append(row)
    return results


RUNTIMES = ("session", "eager")


def _threads(path: str, threads: int, runtime: str) -> dict:
    """Sets TensorFlow's thread pools for `runtime` on `threads` cores (0: all; see
    bench_export) before it starts; returns them for the JSON line: intra- and inter-op
    threads (0: TensorFlow's default, all cores) and whether each call's ops run on the
    calling thread."""
    if runtime == "eager":
        set_threads(threads)
        return {"intra_op_threads": threads, "inter_op_threads": threads, "inline": False, "parts": 1}
    cores = threads or usable_cores()
    plan = thread_plan.plan_threads(read_export_settings(path)["multiply_adds_per_image"], cores)
    # on --threads cores: what the plan leaves to TensorFlow's default gets that many
    thread_plan.apply(dataclasses.replace(plan, intra_op=plan.intra_op or threads, inter_op=plan.inter_op or threads))
    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "inline": plan.inline,
        # one caller: a call's rows in as many parts at once as the server runs calls at once
        "parts": plan.batch_threads,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `bench export`, named as bench_export's arguments."""
    p.add_argument("export_dir", nargs="?", help="SavedModel folder of `python -m alexnet_tf.export`")
    p.add_argument("--recipe", help="instead: export an untrained net of this recipe first and time that")
    p.add_argument("--image-size", type=int, default=256, help="with EXPORT_DIR: side of the uint8 images sent")
    p.add_argument("--net", default="paper", help="with EXPORT_DIR: the net's name in the table")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 1], help="images per call")
    p.add_argument("--calls", type=int, default=50, help="timed calls per batch")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="cores to use (0: all): the session runtime's threads as the server plans them, the eager one's pools",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="session",
        help="a TensorFlow Session, as TF Serving and alexnet_tf.serve run the export; or tf.saved_model.load's signature",
    )
    p.add_argument(
        "--out", help="also append the JSON lines to OUT/export.jsonl (a folder; python -m benchmarks.compare reads it)"
    )
    p.set_defaults(fn=bench_export)
