"""`bench export`: the exported SavedModel's bare throughput and latency, no server."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from alexnet_tf.bench.common import emit, usable_cores

SIGNATURE = "serve_uint8"


def fresh_export(recipe: str, out: str) -> tuple[str, int]:
    """Exports an untrained net of `recipe` as `python -m alexnet_tf.export` exports a run
    (same signatures and preprocessing; the weights do not change the time). Returns the
    folder and the images' side the recipe resizes to."""
    from alexnet_tf import data as data_lib
    from alexnet_tf.config import load_recipe
    from alexnet_tf.export import export
    from alexnet_tf.model import build_model, to_split_form
    from alexnet_tf.runs import TrainedRun

    config = load_recipe(recipe)
    model = to_split_form(build_model(config.model), config.model)
    stats = data_lib.Stats.imagenet(config.data.resize_size)
    names = [str(i) for i in range(config.model.num_classes)]
    export(TrainedRun("", "", config, names, stats, model), out, crops="center")
    return out, config.data.resize_size


def time_calls(fn, images, calls: int, warmup: int) -> list:
    """Milliseconds of each of `calls` calls of `fn(images)` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(images)
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        result = fn(images)
        _ = {k: v.numpy() for k, v in result.items()}  # wait for the answer
        out.append(1000 * (time.perf_counter() - start))
    return out


def percentile(values: list, q: float) -> float:
    """The value at rank round(q/100 * (n - 1)) of the sorted values, as the peer ranks them."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_export(args: argparse.Namespace) -> list:
    """Loads the SavedModel (or exports --recipe's net first) and times its `serve_uint8`
    signature on uint8 batches of each --batch; one JSON line per batch."""
    import tensorflow as tf

    from alexnet_tf.bench.train import _device_description, set_threads
    from alexnet_tf.config import ConfigError

    if bool(args.export_dir) == bool(args.recipe):
        raise ConfigError("give an EXPORT_DIR or --recipe RECIPE (an untrained net of that recipe), not both")
    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="alexnet_tf_bench_") as tmp:
        if args.recipe:
            path, size = fresh_export(args.recipe, os.path.join(tmp, "1"))
            net = os.path.splitext(os.path.basename(args.recipe))[0]
        else:
            path, size, net = args.export_dir, args.image_size, args.net
        if not os.path.isdir(path):
            raise ConfigError(f"{path!r} is not a SavedModel folder")
        serve = tf.saved_model.load(path).signatures[SIGNATURE]
        gpus = tf.config.list_logical_devices("GPU")
        device, _ = _device_description(tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0"))
        results = []
        for batch in args.batch:
            images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8))
            start = time.perf_counter()
            serve(images=images)
            first = time.perf_counter() - start
            calls = time_calls(lambda x: serve(images=x), images, args.calls, args.warmup)
            mean_ms = sum(calls) / len(calls)
            row = {
                "bench": "export",
                "net": net,
                "recipe": args.recipe or "",
                "export_dir": args.export_dir or "",
                "signature": SIGNATURE,
                "batch": batch,
                "dtype": "fp32",
                "image_size": size,
                "img_per_s": round(batch * 1000 / mean_ms, 1),
                "step_ms": round(mean_ms, 3),
                "p50_ms": round(percentile(calls, 50), 3),
                "p99_ms": round(percentile(calls, 99), 3),
                "calls": len(calls),
                "first_call_seconds": round(first, 2),
                "threads": args.threads or usable_cores(),
                "device": device,
                "tf_version": tf.__version__,
                "keras_version": __import__("keras").__version__,
            }
            emit(row, args.out)
            results.append(row)
    return results


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="the exported SavedModel's throughput and latency, without a server")
    p.add_argument("export_dir", nargs="?", help="SavedModel folder of `python -m alexnet_tf.export`")
    p.add_argument("--recipe", help="instead: export an untrained net of this recipe first and time that")
    p.add_argument("--image-size", type=int, default=256, help="with EXPORT_DIR: side of the uint8 images sent (256)")
    p.add_argument("--net", default="paper", help="with EXPORT_DIR: the net's name in the table (paper)")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 1], help="images per call (32 1)")
    p.add_argument("--calls", type=int, default=50, help="timed calls per batch (50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (5)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (default: all cores)")
    p.add_argument("--out", help="also append the JSON lines to OUT/export.jsonl (a folder; bench compare reads it)")
    p.set_defaults(fn=bench_export)
