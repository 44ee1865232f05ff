"""`bench train`: the training step's throughput, FLOP utilisation and memory."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Sequence
from typing import Literal, get_args

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import cli, distribute, forms, runconfig
from alexnet_tf import data as data_lib
from alexnet_tf import steps as steps_lib
from alexnet_tf.bench.common import emit, max_rss_bytes, repeated, usable_cores
from alexnet_tf.bench.device import device_description, gpu_peak_memory, peak_tflops, set_threads
from alexnet_tf.config import ConfigError, override
from alexnet_tf.distribute import make_strategy
from alexnet_tf.errors import TrainingError

# ----------------------------------------------------------------------------- train
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}  # --precision -> train.precision
Precision = Literal["fp32", "bf16"]  # --precision
FeedKind = Literal["device", "dataset"]  # --feed


def forward_macs(model) -> int:
    """Multiply-adds of one image's forward pass in the convolutions and fc layers
    (724 M for the paper's net at 227 px, Sec. 3.5; LRN, pooling and ReLU left out)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):  # kernel (kh, kw, cin / groups, cout)
            _, h, w, _ = layer.output.shape
            total += h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


class DeviceBatches:
    """An endless iterator over one per-replica batch made on the replicas' devices:
    `next()` returns the same device tensors every step, so a host call copies nothing
    from the host and the timing holds only the training step."""

    def __init__(self, strategy, config, global_batch: int, seed: int = 0):
        devices = strategy.extended.worker_devices
        per_replica = global_batch // strategy.num_replicas_in_sync

        def on_device(ctx):
            with tf.device(devices[ctx.replica_id_in_sync_group]):
                return data_lib.synthetic_batch(config, per_replica, seed + ctx.replica_id_in_sync_group)

        self.batch = strategy.experimental_distribute_values_from_function(on_device)

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


class Feed:
    """Gives the train loop an iterator and a step count. With `make_iterator(epoch)` it
    opens one iterator per epoch and stops a host call at an epoch's end, as `Trainer`
    does; with `iterator`, that one iterator throughout."""

    def __init__(self, iterator=None, make_iterator=None, steps_per_epoch: int = 0):
        self.iterator, self.make_iterator, self.steps_per_epoch = iterator, make_iterator, steps_per_epoch
        self.epoch, self.left = 0, 0

    def take(self, n: int):
        if self.make_iterator is None:
            return self.iterator, n
        if self.left == 0:
            self.iterator = iter(self.make_iterator(self.epoch))
            self.epoch, self.left = self.epoch + 1, self.steps_per_epoch
        n = min(n, self.left)
        self.left -= n
        return self.iterator, n


def run_steps(train_loop, feed: Feed, steps: int, per_call: int) -> float:
    """`steps` training steps in host calls of at most `per_call`; returns the mean loss.
    Reading the loss back after each call, as `Trainer` does, waits for its steps."""
    done, loss = 0, 0.0
    while done < steps:
        iterator, n = feed.take(min(per_call, steps - done))
        loss += float(train_loop(iterator, tf.constant(n))["loss"])
        done += n
    return loss / max(steps, 1)


def _make_feed(kind: str, runtime, config, source, global_batch: int) -> Feed:
    strategy = runtime.strategy

    if kind == "pipeline":  # training's input: train_dataset per replica, one epoch at a time
        split = config.data.train_split
        steps_per_epoch = source.sizes[split] // global_batch
        if steps_per_epoch == 0:
            raise ConfigError(f"--batch {global_batch} exceeds the {source.sizes[split]} training examples")
        return Feed(
            make_iterator=lambda epoch: distribute.distributed_dataset(
                runtime, source, config.data, config.train.seed, split, global_batch, True, epoch=epoch
            ),
            steps_per_epoch=steps_per_epoch,
        )
    if kind == "dataset":  # the synthetic batch in host memory, through a tf.data iterator
        per_replica = global_batch // strategy.num_replicas_in_sync
        with tf.device("/cpu:0"):
            host = data_lib.synthetic_batch(config, per_replica, config.train.seed)
        dataset = strategy.distribute_datasets_from_function(lambda ctx: tf.data.Dataset.from_tensors(host).repeat())
        return Feed(iterator=iter(dataset))
    return Feed(iterator=DeviceBatches(strategy, config, global_batch, config.train.seed))


def time_train_step(
    config, strategy, stats_tensors: dict, feed_kind: str, source, warmup: int, steps: int, steps_per_loop: list
) -> dict:
    """Builds the model, optimizer and `steps.make_train_loop` as training does, runs
    `warmup` steps (the first, alone in a host call, traces and compiles: compile_seconds),
    then times `steps` steps for each value in `steps_per_loop` (same compiled loop)."""
    batch = config.train.batch_size
    c, runtime = config, distribute.make_runtime(config, strategy)
    gpu_peak_memory(strategy, reset=True)
    with runtime.policy():
        model, optimizer, step = steps_lib.create_state(c.model, c.optim, c.train.seed, runtime, batch)
        train_loop = steps_lib.make_train_loop(model, optimizer, step, runtime, c.data, c.optim, stats_tensors)
        feed = _make_feed(feed_kind, runtime, config, source, batch)
        start = time.perf_counter()
        run_steps(train_loop, feed, 1, 1)
        compile_seconds = time.perf_counter() - start
        run_steps(train_loop, feed, warmup - 1, max(steps_per_loop))
        timed = []
        for per_call in steps_per_loop:
            start = time.perf_counter()
            loss = run_steps(train_loop, feed, steps, per_call)
            timed.append({"steps_per_loop": per_call, "seconds": time.perf_counter() - start, "loss": loss})
    return {
        "runs": timed,
        "compile_seconds": compile_seconds,
        "steps_run": int(step.numpy()),
        "forward_macs_per_image": forward_macs(model),
        "peak_memory_bytes": gpu_peak_memory(strategy),
    }


@dataclasses.dataclass(frozen=True)
class TrainBench:
    """What `bench train` times, one field per flag (the defaults are the flags'): the
    recipe's net with `overrides` (`--set`), on synthetic batches fed as `feed` says, or on
    the input pipeline of `data`; each of `precision` x `batch` (None: the recipe's)."""

    recipe: str = "recipes/paper.py"
    overrides: Sequence[str] = ()
    data: str | None = None  # a data spec: the real input pipeline; None: synthetic batches
    feed: FeedKind = "device"  # synthetic batches kept on the device, or sent by tf.data
    batch: Sequence[int] | None = None  # global batch sizes
    precision: Sequence[Precision] | None = None
    steps: int = 50  # timed steps per setting
    warmup: int = 10  # untimed steps first; the first compiles
    steps_per_loop: Sequence[int] | None = None  # None: compute.steps_per_loop; two or more add train_host_overhead
    repeat: int = 1  # with data: the training split this many times over per epoch
    no_jit: bool = False  # compute.jit_compile=False
    threads: int = 0  # TensorFlow's intra- and inter-op threads; 0: all cores
    peak_tflops: float | None = None  # one device's peak for the mfu; None: PEAK_TFLOPS
    out: str | None = None  # a folder: the lines also go to OUT/train.jsonl


def _resolve(settings: TrainBench):
    """(base config, batches, precisions, steps per loop) of the settings, checked."""
    base = cli.recipe_config(settings.recipe, settings.data, settings.overrides)
    if settings.no_jit:
        base = override(base, {"compute.jit_compile": False})
    if settings.data and settings.feed != "device":
        raise ConfigError("--feed is for synthetic batches; --data feeds the input pipeline")
    if settings.repeat < 1 or (settings.repeat > 1 and not settings.data):
        raise ConfigError("--repeat N (N >= 1) goes with --data")
    if settings.steps < 1 or settings.warmup < 1:
        raise ConfigError("--steps and --warmup must be at least 1 (the first warm-up step compiles)")
    batches = settings.batch or [base.train.batch_size]
    precisions = settings.precision or [k for k, v in PRECISIONS.items() if v == base.train.precision]
    steps_per_loop = settings.steps_per_loop or [base.compute.steps_per_loop]
    if min(steps_per_loop) < 1:
        raise ConfigError("--steps-per-loop must be at least 1")
    return base, batches, precisions, steps_per_loop


def _rows(common: dict, timing: dict, settings: TrainBench, batch: int, peak: float | None) -> list:
    """One result line per --steps-per-loop value of one setting's timing."""
    flops = 2 * 3 * timing["forward_macs_per_image"]  # multiply-add = 2 FLOPs; backward = 2x forward
    rows = []
    for run in timing["runs"]:
        step_s = run["seconds"] / settings.steps
        achieved = batch / step_s * flops / 1e12
        rows.append(
            {
                **common,
                "steps_per_loop": run["steps_per_loop"],
                "warmup_steps": settings.warmup,
                "steps": settings.steps,
                "steps_run": timing["steps_run"],
                "img_per_s": round(batch / step_s, 1),
                "step_ms": round(1000 * step_s, 3),
                "loss": round(run["loss"], 4),
                "compile_seconds": round(timing["compile_seconds"], 2),
                "train_flops_per_image": flops,
                "achieved_tflops": round(achieved, 4),
                "peak_tflops": peak,
                "mfu": round(achieved / peak, 4) if peak else None,
                "peak_memory_bytes": timing["peak_memory_bytes"],
                "process_max_rss_bytes": max_rss_bytes(),
                "tf_version": tf.__version__,
                "keras_version": keras.__version__,
            }
        )
    return rows


def _host_overhead(common: dict, rows: list) -> dict | None:
    """With two --steps-per-loop values lo < hi: per step t(k) = c + o / k with k steps per
    host call, so o is what one host call (dispatch, loop entry, reading the loss back)
    costs beyond its steps. A value given more than once counts with its fastest run."""
    ks = [r["steps_per_loop"] for r in rows]
    lo, hi = min(ks), max(ks)
    if lo == hi:
        return None
    t_lo, t_hi = (min(r["step_ms"] for r in rows if r["steps_per_loop"] == k) for k in (lo, hi))
    overhead = (t_lo - t_hi) / (1 / lo - 1 / hi)
    keys = ("recipe", "input", "feed", "batch", "dtype", "jit", "device", "overrides")
    return {
        **{k: common[k] for k in keys},
        "bench": "train_host_overhead",
        "steps_per_loop": [lo, hi],
        "step_ms": [t_lo, t_hi],
        "host_ms_per_call": round(overhead, 3),
        "host_share_of_step_at_1": round(overhead / t_lo, 3) if lo == 1 else None,
    }


def bench_train(settings: TrainBench) -> list[dict]:
    """Times the training step for each precision x batch (x steps per loop); prints one
    JSON line per result as it comes and returns them."""
    base, batches, precisions, steps_per_loop = _resolve(settings)
    set_threads(settings.threads)
    strategy = make_strategy(base.distribute)
    replicas = strategy.num_replicas_in_sync
    for batch in batches:
        if batch % replicas:
            raise ConfigError(f"--batch {batch} is not divisible by {replicas} replicas")
    device, gpu_name = device_description(strategy)
    source = None
    if settings.data:
        source = data_lib.open_source(base.data.source, base.data)
        base = runconfig.resolve_data(base, source, evaluate=False)  # the benchmark only trains
        if settings.repeat > 1:
            source = repeated(source, base.data.train_split, settings.repeat)
    stats = data_lib.Stats.imagenet(base.data.resize_size).tensors()  # values do not change the work
    feed_kind = "pipeline" if settings.data else settings.feed
    results, failed = [], []
    for precision in precisions:
        for batch in batches:
            config = override(base, {"train.batch_size": batch, "train.precision": PRECISIONS[precision]})
            chosen = forms.for_run(config, forms.device_kind(strategy))
            print(chosen.describe(), file=sys.stderr, flush=True)
            tf32 = bool(gpu_name) and config.train.tf32  # setup_runtime sets it from the config
            dtype = precision if precision == "bf16" or not tf32 else "tf32"
            common = {
                **{
                    "bench": "train",
                    "recipe": settings.recipe,
                    "input": config.data.source if settings.data else "synthetic",
                },
                **{"feed": feed_kind, "batch": batch, "dtype": dtype, "precision": config.train.precision},
                **{"jit": chosen.jit_compile, "replicas": replicas, "device": device},
                "threads": settings.threads or usable_cores(),
                "overrides": list(settings.overrides),
                "forms": chosen.as_dict(),
            }
            try:
                timing = time_train_step(
                    config, strategy, stats, feed_kind, source, settings.warmup, settings.steps, steps_per_loop
                )
            except tf.errors.OpError as e:  # e.g. out of memory at a large batch: go on with the rest
                failed.append(f"batch {batch} {precision}")
                emit({**common, "error": f"{type(e).__name__}: {str(e)[:300]}"}, settings.out, "train")
                continue
            finally:
                gc.collect()
            peak = settings.peak_tflops or peak_tflops(gpu_name, dtype)
            rows = _rows(common, timing, settings, batch, peak * replicas if peak else None)
            overhead = _host_overhead(common, rows)
            for row in rows + ([overhead] if overhead else []):
                emit(row, settings.out, "train")
                results.append(row)
    if failed:
        raise TrainingError(f"{len(failed)} setting(s) failed: {', '.join(failed)} (see their JSON lines)")
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `bench train`, named as TrainBench's fields."""
    p.add_argument(
        "recipe",
        nargs="?",
        default="recipes/paper.py",
        help="recipe file with get_config(), or a shipped recipe's name",
    )
    cli.add_overrides(p)
    where = p.add_mutually_exclusive_group()
    # --synthetic names the default (no --data) and only excludes --data: it sets nothing of its own.
    where.add_argument(
        "--synthetic",
        dest="data",
        action="store_const",
        const=None,
        default=argparse.SUPPRESS,
        help="random uint8 batches made once on the device, as without --data",
    )
    where.add_argument("--data", metavar="SPEC", help="the real input pipeline on this source (sets data.source)")
    p.add_argument(
        "--feed",
        choices=get_args(FeedKind),
        default="device",
        help="synthetic batches: kept on the device, or fed from the host by tf.data",
    )
    p.add_argument("--batch", type=int, nargs="+", help="global batch size(s); none given: the recipe's")
    p.add_argument(
        "--precision", nargs="+", choices=get_args(Precision), help="fp32 and/or bf16; none given: the recipe's"
    )
    p.add_argument("--steps", type=int, default=50, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first; the first one compiles")
    p.add_argument(
        "--steps-per-loop",
        type=int,
        nargs="+",
        help="steps per host call; none given: the recipe's compute.steps_per_loop. Two or more values add a "
        "train_host_overhead line (repeat values to alternate runs: 1 50 1 50)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --data: the training split this many times over per epoch, so that a small "
        "generated set does not time an epoch restart every few steps",
    )
    p.add_argument("--no-jit", action="store_true", help="compute.jit_compile=False")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (0: all cores)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="peak TFLOP/s of one device for the mfu; none given: the data sheet's for an SXM H100/H200, else no mfu",
    )
    p.add_argument(
        "--out", help="also append the JSON lines to OUT/train.jsonl (a folder; python -m benchmarks.compare reads it)"
    )
    p.set_defaults(fn=lambda **flags: bench_train(TrainBench(**flags)))
