"""Benchmarks, one subcommand each; every result is one JSON line on stdout.

    python -m alexnet_tf.bench input [--data SPEC] [--out FILE] [--seconds N] [--rounds N] [--cores N]
    python -m alexnet_tf.bench train [RECIPE] [--batch N ...] [--precision fp32 bf16]
        [--synthetic | --data SPEC [--repeat K]] [--steps N] [--warmup N] [--steps-per-loop N ...]
        [--no-jit] [--set KEY=VALUE] [--peak-tflops T] [--out FILE]
    python -m alexnet_tf.bench jpegs OUT [--images N] [--classes N]
    python -m alexnet_tf.bench compare FILE [FILE ...] [--target 1.3] [--input-target 12000]
    python -m alexnet_tf.bench serve EXPORT_DIR [--clients 32] [--seconds 30] [--server FLAG ...]

`input`: images per second of the training input pipeline (Sec. 2 and 4.1: decode,
random 227 crop of the 256 image, flip, PCA colour noise, mean-image subtraction,
batches of 128) for two pipelines on the same files and the same number of cores:

- `alexnet_tf`: `data.make_dataset` as training uses it. Batches leave the host as
  uint8 crops with crop offset, flip bit and noise coefficients; the mean subtraction,
  colour noise and flip happen in the compiled step on the accelerator
  (`device_preprocess`).
- `alexnet_tf_host_float`: the same, with the device step's arithmetic (mean-image
  crop subtraction, colour noise, flip, float32 batches) also done on the host CPU, so
  that every step of the work is on the CPU as in the baseline.
- `pil_baseline`: PIL + NumPy doing all of it in a pool of worker processes that write
  float32 batches into shared memory, as a PyTorch DataLoader with torchvision
  transforms does.

Without --data it writes its own 256x256 JPEGs (as `python -m alexnet_tf.prepare`
makes them) to a temporary folder. The pipelines take turns, --rounds times, each
started afresh and timed for --seconds per turn, so that a slow spell of a shared
machine falls on all of them; `images_per_sec_per_core` (divided by --cores) is the
median over the rounds, `rounds` lists them, and `speedup_vs_pil_baseline` is the median
of the per-round ratios.

`train`: the training step of `python -m alexnet_tf.train` (`train.make_train_loop`:
XLA forward/backward per replica, the Sec. 5 update, `steps_per_loop` steps per host
call) on the recipe's model (default recipes/paper.py; `--set` as in train), one line
per --precision x --batch (x --steps-per-loop), e.g. on one GPU

    python -m alexnet_tf.bench train recipes/paper.py --batch 128 512 --precision bf16

and on any CPU: `python -m alexnet_tf.bench train recipes/quickstart.py --batch 8`.
`--synthetic` (the default) makes one random uint8 batch on each replica's device and
feeds it to every step, so only the step is timed (`--feed dataset` sends it through a
tf.data iterator from host memory instead); `--data SPEC` runs the real input pipeline
as training does. `--warmup` steps come first (the first in a host call of its own
that traces and compiles; its wall time, that step included, is `compile_seconds`),
then `--steps` timed steps, the loss read back after each host call. Fields: `batch`, `dtype` (bf16, tf32 = float32 with TF32 math on
a GPU, fp32), `img_per_s` and `step_ms` as in the PyTorch peer script; `mfu` =
`achieved_tflops` / peak, counting 2 x 3 x the conv and fc multiply-adds (724 M forward
per 227 image) per image and step, against --peak-tflops or the dense peak of an SXM
H100/H200 (else null); `peak_memory_bytes` is TensorFlow's allocator peak on the GPU
(null on CPUs, where `process_max_rss_bytes` is the whole process's high-water mark).
Two or more --steps-per-loop values reuse the compiled loop and add a
`train_host_overhead` line: from t(k) = c + o / k per step, o = `host_ms_per_call`.
Random data repeats: the printed `loss` falls, which says nothing about training.

`jpegs`: writes generated 256 px JPEGs (as `input` makes them) to OUT/train/<class>/,
for `--data folder:OUT` or `python -m alexnet_tf.prepare folder:OUT ...` on a machine
with no dataset; `train --repeat K` then plays that small set K times per epoch.

`compare`: reads `train --out` files and the PyTorch peer script's output
(`torch_peer_bench.py`, JSON lines or its torch_bench.json) and prints the README's
speed table in Markdown: per batch, dtype and `--set` variant, alexnet_tf's img/s at
each steps-per-loop, the MFU and peak memory of the fastest, the peer's eager and
compiled img/s on the same batch and dtype, and the ratio to the faster of the two
against --target; runs with --data against --input-target img/s.

`serve`: starts `python -m alexnet_tf.serve EXPORT_DIR` (with the --server flags) and has
--clients threads send it the largest requests its limits let through (`serve_payloads`)
for --seconds; prints the answers by kind and status, their latency, and the server's
resident memory when idle and at its peak (VmHWM). docs/serving.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

BATCH = 128  # Sec. 5
# forward_macs of the paper's net (two columns, 227 px): the one the PyTorch peer runs
PAPER_FORWARD_MACS = 724_406_816  # Sec. 3.5: "about 724 M"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _write_jpeg(job: tuple) -> None:
    from PIL import Image

    path, size, seed, i = job
    rng = np.random.default_rng([seed, i])
    low = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    image = np.asarray(low, np.float32) + rng.normal(0, 10, (size, size, 3))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(
    folder: str, count: int = 512, size: int = 256, classes: int = 8, seed: int = 0, processes: int = 1
) -> str:
    """Writes `count` photo-like size x size JPEGs (smooth shapes plus grain, quality 90,
    about the bytes of an ImageNet image at 256 px) in a train/<class>/ layout, image i
    in class i % classes."""
    digits = max(2, len(str(classes - 1)))
    jobs = []
    for i in range(count):
        d = os.path.join(folder, "train", f"class{i % classes:0{digits}d}")
        os.makedirs(d, exist_ok=True)
        jobs.append((os.path.join(d, f"{i:07d}.JPEG"), size, seed, i))
    if processes > 1:
        with mp.get_context("fork" if sys.platform == "linux" else "spawn").Pool(processes) as pool:
            pool.map(_write_jpeg, jobs, chunksize=64)
    else:
        for job in jobs:
            _write_jpeg(job)
    return folder


def bench_jpegs(args: argparse.Namespace) -> dict:
    """Writes the generated JPEGs to args.out (for `prepare`, or `--data folder:OUT`)."""
    start = time.perf_counter()
    make_jpegs(args.out, count=args.images, classes=args.classes, processes=_cores())
    result = {
        "bench": "jpegs",
        "out": args.out,
        "images": args.images,
        "classes": args.classes,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result), flush=True)
    return result


# ----------------------------------------------------------------------------- alexnet_tf
def _repeated(source, split: str, times: int):
    """The split played `times` over as one long epoch (no per-epoch restart in the timing)."""
    from alexnet_tf import data as data_lib

    def rep(fn):
        return lambda *seed: fn(*seed).repeat(times)

    return data_lib.Source(
        source.name,
        source.class_names,
        {split: rep(source.splits[split])},
        {split: source.sizes[split] * times},
        source.encoded,
        named={split: rep(source.named[split])} if split in source.named else {},
        files={split: tuple(np.tile(a, times) for a in source.files[split])} if split in source.files else {},
        records={split: rep(source.records[split])} if split in source.records else {},
        parse=source.parse,
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


# ----------------------------------------------------------------------------- train
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}  # --precision -> train.precision
# Dense tensor-core peaks in TFLOP/s from NVIDIA's data sheets for the SXM H100 (the H200
# has the same compute). "tf32": float32 with TF32 matmuls and convolutions, TensorFlow's
# GPU default; "fp32": without them. PCIe and NVL cards differ: pass --peak-tflops.
PEAK_TFLOPS = {
    "H100": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
}


def forward_macs(model) -> int:
    """Multiply-adds of one image's forward pass in the convolutions and fc layers
    (724 M for the paper's net at 227 px, Sec. 3.5; LRN, pooling and ReLU left out)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):  # kernel (kh, kw, cin / groups, cout)
            _, h, w, _ = layer.output.shape
            total += h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict:
    """A random training batch as `data.make_dataset` hands them out (uint8 crops, crop
    offsets, flips, colour-noise coefficients, labels, weights), made where it runs."""
    import tensorflow as tf

    d, b = config.data, batch_size
    c = d.pad_crop or d.crop_size
    seeds = [tf.constant([seed, i], tf.int32) for i in range(5)]
    image = tf.random.stateless_uniform((b, c, c, 3), seeds[0], 0, 256, dtype=tf.int32)
    return {
        "image": tf.cast(image, tf.uint8),  # (B, c, c, 3)
        "offset": tf.random.stateless_uniform((b, 2), seeds[1], 0, d.resize_size - c + 1, dtype=tf.int32),
        "flip": (tf.random.stateless_uniform((b,), seeds[2]) < 0.5) & d.random_flip,  # (B,) bool
        "alpha": tf.random.stateless_normal((b, 3), seeds[3], stddev=d.pca_noise_std),  # (B, 3)
        "label": tf.random.stateless_uniform((b,), seeds[4], 0, config.model.num_classes, dtype=tf.int32),
        "weight": tf.ones((b,), tf.float32),
    }


class DeviceBatches:
    """An endless iterator over one per-replica batch made on the replicas' devices:
    `next()` returns the same device tensors every step, so a host call copies nothing
    from the host and the timing holds only the training step."""

    def __init__(self, strategy, config, global_batch: int, seed: int = 0):
        import tensorflow as tf

        devices = strategy.extended.worker_devices
        per_replica = global_batch // strategy.num_replicas_in_sync

        def on_device(ctx):
            with tf.device(devices[ctx.replica_id_in_sync_group]):
                return synthetic_batch(config, per_replica, seed + ctx.replica_id_in_sync_group)

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
    import tensorflow as tf

    done, loss = 0, 0.0
    while done < steps:
        iterator, n = feed.take(min(per_call, steps - done))
        loss += float(train_loop(iterator, tf.constant(n))["loss"])
        done += n
    return loss / max(steps, 1)


def _make_feed(kind: str, strategy, config, source, global_batch: int) -> Feed:
    import tensorflow as tf

    from alexnet_tf import train as train_lib

    if kind == "pipeline":  # training's input: make_dataset per replica, one epoch at a time
        split = config.data.train_split
        steps_per_epoch = source.sizes[split] // global_batch
        if steps_per_epoch == 0:
            from alexnet_tf.config import ConfigError

            raise ConfigError(f"--batch {global_batch} exceeds the {source.sizes[split]} training examples")
        return Feed(
            make_iterator=lambda epoch: train_lib.distributed_dataset(
                strategy, source, config, split, global_batch, True, epoch=epoch
            ),
            steps_per_epoch=steps_per_epoch,
        )
    if kind == "dataset":  # the synthetic batch in host memory, through a tf.data iterator
        per_replica = global_batch // strategy.num_replicas_in_sync
        with tf.device("/cpu:0"):
            host = synthetic_batch(config, per_replica, config.train.seed)
        dataset = strategy.distribute_datasets_from_function(lambda ctx: tf.data.Dataset.from_tensors(host).repeat())
        return Feed(iterator=iter(dataset))
    return Feed(iterator=DeviceBatches(strategy, config, global_batch, config.train.seed))


def time_train_step(
    config, strategy, stats_tensors: dict, feed_kind: str, source, warmup: int, steps: int, steps_per_loop: list
) -> dict:
    """Builds the model, optimizer and `train.make_train_loop` as training does, runs
    `warmup` steps (the first, alone in a host call, traces and compiles: compile_seconds),
    then times `steps` steps for each value in `steps_per_loop` (same compiled loop)."""
    import tensorflow as tf

    from alexnet_tf import optim
    from alexnet_tf import steps as steps_lib
    from alexnet_tf import train as train_lib
    from alexnet_tf.model import build_model

    batch = config.train.batch_size
    train_lib.setup_runtime(config)
    _gpu_peak_memory(strategy, reset=True)
    with train_lib.dtype_policy(config.train.precision):
        with strategy.scope():
            model = build_model(config.model, seed=config.train.seed)
            optimizer = optim.build_optimizer(config.optim, batch)
            optimizer.build(model.trainable_variables)
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        train_loop = steps_lib.make_train_loop(model, optimizer, strategy, config, stats_tensors, step)
        feed = _make_feed(feed_kind, strategy, config, source, batch)
        start = time.perf_counter()
        run_steps(train_loop, feed, 1, 1)
        compile_seconds = time.perf_counter() - start
        run_steps(train_loop, feed, warmup - 1, max(steps_per_loop))
        runs = []
        for per_call in steps_per_loop:
            start = time.perf_counter()
            loss = run_steps(train_loop, feed, steps, per_call)
            runs.append({"steps_per_loop": per_call, "seconds": time.perf_counter() - start, "loss": loss})
    return {
        "runs": runs,
        "compile_seconds": compile_seconds,
        "steps_run": int(step.numpy()),
        "forward_macs_per_image": forward_macs(model),
        "peak_memory_bytes": _gpu_peak_memory(strategy),
    }


def _device_description(strategy) -> tuple:
    """(what the replicas run on, in words; the GPU's name, or "" on CPUs)."""
    import platform

    import tensorflow as tf

    devices = strategy.extended.worker_devices
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and any("GPU" in d.upper() for d in devices):
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", "GPU")
        cc = details.get("compute_capability")
        return f"{len(devices)} x {name}" + (f" (compute capability {cc[0]}.{cc[1]})" if cc else ""), name
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU: {cpu}, {_cores()} usable cores, {len(devices)} replica device(s)", ""


def peak_tflops(gpu_name: str, dtype: str) -> float | None:
    """The dense peak of one GPU from PEAK_TFLOPS, or None where the table has no entry."""
    upper = gpu_name.upper()
    if not upper or "PCIE" in upper or "NVL" in upper:
        return None
    return next((peaks[dtype] for key, peaks in PEAK_TFLOPS.items() if key in upper), None)


def _gpu_peak_memory(strategy, reset: bool = False) -> int | None:
    """Peak bytes TensorFlow allocated on the replicas' GPUs since the last reset (the
    largest over the replicas); None on CPUs."""
    import tensorflow as tf

    gpus = [d.split("device:")[-1] for d in strategy.extended.worker_devices if "GPU" in d.upper()]
    if not gpus:
        return None
    if reset:
        for g in gpus:
            tf.config.experimental.reset_memory_stats(g)
        return None
    return max(tf.config.experimental.get_memory_info(g)["peak"] for g in gpus)


def _max_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _emit(result: dict, out: str | None) -> None:
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def bench_train(args: argparse.Namespace) -> list:
    """Times the training step for each --precision x --batch (x --steps-per-loop);
    prints one JSON line per result as it comes and returns them."""
    import gc

    import keras
    import tensorflow as tf

    from alexnet_tf import cli
    from alexnet_tf import data as data_lib
    from alexnet_tf import train as train_lib
    from alexnet_tf.config import ConfigError, override
    from alexnet_tf.distribute import make_strategy
    from alexnet_tf.errors import TrainingError

    base = cli.resolve_config(args)
    if args.no_jit:
        base = override(base, {"train.jit_compile": False})
    if args.data and args.feed != "device":
        raise ConfigError("--feed is for synthetic batches; --data feeds the input pipeline")
    if args.repeat < 1 or (args.repeat > 1 and not args.data):
        raise ConfigError("--repeat N (N >= 1) goes with --data")
    if args.steps < 1 or args.warmup < 1:
        raise ConfigError("--steps and --warmup must be at least 1 (the first warm-up step compiles)")
    batches = args.batch or [base.train.batch_size]
    precisions = args.precision or [k for k, v in PRECISIONS.items() if v == base.train.precision]
    steps_per_loop = args.steps_per_loop or [base.train.steps_per_loop]
    if min(steps_per_loop) < 1:
        raise ConfigError("--steps-per-loop must be at least 1")
    strategy = make_strategy(base.distribute)
    replicas = strategy.num_replicas_in_sync
    for batch in batches:
        if batch % replicas:
            raise ConfigError(f"--batch {batch} is not divisible by {replicas} replicas")
    device, gpu_name = _device_description(strategy)
    source = None
    if args.data:
        source = data_lib.open_source(base.data.source, base.data)
        base = train_lib.resolve_data(base, source, evaluate=False)  # the benchmark only trains
        if args.repeat > 1:
            source = _repeated(source, base.data.train_split, args.repeat)
    stats = data_lib.Stats.imagenet(base.data.resize_size)  # its values do not change the work
    stats_tensors = {k: tf.constant(getattr(stats, k)) for k in ("mean_image", "eigval", "eigvec")}
    feed_kind = "pipeline" if args.data else args.feed

    results, failed = [], []
    for precision in precisions:
        for batch in batches:
            config = override(base, {"train.batch_size": batch, "train.precision": PRECISIONS[precision]})
            tf32 = bool(gpu_name) and tf.config.experimental.tensor_float_32_execution_enabled()
            dtype = precision if precision == "bf16" or not tf32 else "tf32"
            common = {
                "bench": "train",
                "recipe": args.recipe,
                "input": config.data.source if args.data else "synthetic",
                "feed": feed_kind,
                "batch": batch,
                "dtype": dtype,
                "precision": config.train.precision,
                "jit": config.train.jit_compile,
                "replicas": replicas,
                "device": device,
                "overrides": list(args.overrides),
            }
            try:
                timing = time_train_step(
                    config, strategy, stats_tensors, feed_kind, source, args.warmup, args.steps, steps_per_loop
                )
            except tf.errors.OpError as e:  # e.g. out of memory at a large batch: go on with the rest
                failed.append(f"batch {batch} {precision}")
                _emit({**common, "error": f"{type(e).__name__}: {str(e)[:300]}"}, args.out)
                continue
            finally:
                gc.collect()
            peak = args.peak_tflops or peak_tflops(gpu_name, dtype)
            peak = peak * replicas if peak else None
            flops = 2 * 3 * timing["forward_macs_per_image"]  # multiply-add = 2 FLOPs; backward = 2x forward
            rows = []
            for run in timing["runs"]:
                step_s = run["seconds"] / args.steps
                achieved = batch / step_s * flops / 1e12
                rows.append(
                    {
                        **common,
                        "steps_per_loop": run["steps_per_loop"],
                        "warmup_steps": args.warmup,
                        "steps": args.steps,
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
                        "process_max_rss_bytes": _max_rss_bytes(),
                        "tf_version": tf.__version__,
                        "keras_version": keras.__version__,
                    }
                )
                _emit(rows[-1], args.out)
            results += rows
            lo, hi = min(steps_per_loop), max(steps_per_loop)
            if lo != hi:
                # Per step t(k) = c + o / k with k steps per host call: o is what one host
                # call (dispatch, loop entry, reading the loss back) costs beyond its steps.
                # A value given more than once counts with its fastest run (least disturbed).
                t_lo, t_hi = (min(r["step_ms"] for r in rows if r["steps_per_loop"] == k) for k in (lo, hi))
                overhead = (t_lo - t_hi) / (1 / lo - 1 / hi)
                result = {
                    **{
                        k: common[k]
                        for k in ("recipe", "input", "feed", "batch", "dtype", "jit", "device", "overrides")
                    },
                    "bench": "train_host_overhead",
                    "steps_per_loop": [lo, hi],
                    "step_ms": [t_lo, t_hi],
                    "host_ms_per_call": round(overhead, 3),
                    "host_share_of_step_at_1": round(overhead / t_lo, 3) if lo == 1 else None,
                }
                results.append(result)
                _emit(result, args.out)
    if failed:
        raise TrainingError(f"{len(failed)} setting(s) failed: {', '.join(failed)} (see their JSON lines)")
    return results


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
        common = {
            "data": args.data or f"generated {args.images} 256x256 JPEGs",
            "batch": BATCH,
            "cores": cores,
            "seconds": args.seconds,
        }
        runs = {
            "alexnet_tf": lambda: bench_alexnet_tf(spec, args.split, args.seconds, cores, False),
            "alexnet_tf_host_float": lambda: bench_alexnet_tf(spec, args.split, args.seconds, cores, True),
        }
        if paths:
            runs["pil_baseline"] = lambda: bench_pil(paths, args.seconds, cores)
        rates = {name: [] for name in runs}
        for _ in range(max(1, args.rounds)):
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
    lines = [json.dumps(r) for r in results]
    for line in lines:
        print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return results


def _read_results(path: str) -> list:
    """The result dicts in a file of JSON lines (`--out`, or the peer script's stdout)
    or one JSON list (the peer script's torch_bench.json); other lines are skipped."""
    from alexnet_tf.config import ConfigError

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    try:
        whole = json.loads(text)
        return [r for r in (whole if isinstance(whole, list) else [whole]) if isinstance(r, dict)]
    except json.JSONDecodeError:
        pass
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else ""


def compare(paths: list, target: float = 1.3, input_target: float = 12_000) -> str:
    """A Markdown report of `train` lines beside the PyTorch peer's lines on the same
    batch and dtype (tf32 or fp32 against the peer's tf32): per setting alexnet_tf's
    img/s at each --steps-per-loop, MFU and peak memory of the fastest, the peer's eager
    and torch.compile img/s, and the ratio to the faster of the two against `target`;
    runs with --data against `input_target` img/s."""
    from alexnet_tf.config import ConfigError

    rows = [r for path in paths for r in _read_results(path)]
    ours = [r for r in rows if r.get("bench") == "train" and "img_per_s" in r]
    peer = [r for r in rows if "model" in r and "compile" in r and "img_per_s" in r]
    failed = [r for r in rows if "error" in r]
    if not ours:
        raise ConfigError(f"no `bench train` results in {', '.join(paths)}")

    def peer_rate(batch, dtype, compiled):
        dtype = "tf32" if dtype in ("fp32", "tf32") else dtype
        rates = [
            r["img_per_s"]
            for r in peer
            if r["batch"] == batch
            and r["dtype"] == dtype
            and bool(r["compile"]) == compiled
            and r["model"].startswith("paper")
        ]
        return max(rates) if rates else None

    settings = {}
    for r in ours:
        key = (r["input"], r["batch"], r["dtype"], tuple(r.get("overrides", ())), r.get("feed", "device"))
        settings.setdefault(key, []).append(r)

    lines = []
    synthetic = {k: v for k, v in settings.items() if k[0] == "synthetic"}
    if synthetic:
        lines += [
            "| batch, dtype | alexnet_tf img/s (steps per host call) | MFU | peak memory | PyTorch eager "
            "| torch.compile | x best PyTorch |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for (_, batch, dtype, overrides, feed), runs in synthetic.items():
            best = max(runs, key=lambda r: r["img_per_s"])
            per_call = ", ".join(f"{_rate(r['img_per_s'])} ({r['steps_per_loop']})" for r in runs)
            eager, compiled = peer_rate(batch, dtype, False), peer_rate(batch, dtype, True)
            peers = [x for x in (eager, compiled) if x]
            if best.get("train_flops_per_image") != 6 * PAPER_FORWARD_MACS:
                verdict, eager, compiled = f"not the paper's net ({best.get('recipe')})", None, None
            elif peers:
                ratio = best["img_per_s"] / max(peers)
                verdict = f"{ratio:.2f}x " + ("(meets" if ratio >= target else "(below") + f" {target}x)"
            else:
                verdict = "no peer line"
            label = f"{batch}, {dtype}" + ("" if feed == "device" else f", feed {feed}")
            label += "".join(f", {o}" for o in overrides)
            mfu = f"{best['mfu']:.1%}" if best.get("mfu") is not None else ""
            memory = f"{best['peak_memory_bytes'] / 2**30:.1f} GiB" if best.get("peak_memory_bytes") else ""
            lines.append(
                f"| {label} | {per_call} | {mfu} | {memory} | {_rate(eager)} | {_rate(compiled)} | {verdict} |"
            )
    real = {k: v for k, v in settings.items() if k[0] != "synthetic"}
    if real:
        if lines:
            lines.append("")
        lines += [
            "| input | batch, dtype | img/s (steps per host call) | target |",
            "| --- | --- | --- | --- |",
        ]
        for (source, batch, dtype, overrides, _), runs in real.items():
            best = max(runs, key=lambda r: r["img_per_s"])
            per_call = ", ".join(f"{_rate(r['img_per_s'])} ({r['steps_per_loop']})" for r in runs)
            verdict = f"{best['img_per_s'] / input_target:.2f}x of {_rate(input_target)}"
            label = f"{batch}, {dtype}" + "".join(f", {o}" for o in overrides)
            lines.append(f"| {source} | {label} | {per_call} | {verdict} |")
    devices = sorted({r["device"] for r in ours if r.get("device")})
    versions = sorted({f"TensorFlow {r['tf_version']}, Keras {r['keras_version']}" for r in ours if "tf_version" in r})
    lines += ["", f"Device: {'; '.join(devices) or 'not recorded'}. {'; '.join(versions)}."]
    for r in failed:
        what = r.get("model") or r.get("recipe", "")
        lines.append(f"Failed: {what} batch {r.get('batch')} {r.get('dtype')}: {r['error'][:120]}")
    return "\n".join(lines)


def bench_compare(args: argparse.Namespace) -> str:
    report = compare(args.files, args.target, args.input_target)
    print(report)
    return report


SERVE_PAYLOADS = ("images", "uint8", "objects")


def serve_payloads(max_body: int, max_pixels: int, max_request_pixels: int, max_batch: int) -> dict:
    """{kind: body}, each as large as the server's limits let through: `images`, JPEGs of
    --max-pixels up to --max-request-pixels in all (answered by the model); `uint8`, one
    serve_uint8 image of nested lists filling the body (answered by the model); `objects`,
    a body of one-key objects, the JSON that costs the most memory to parse of what the
    server parses (refused after parsing: too many instances)."""
    import base64
    import math

    import tensorflow as tf

    images, left = [], max_request_pixels
    while left > 0 and len(images) < max_batch:
        side = math.isqrt(min(left, max_pixels))
        # Progressive 4:4:4 JPEG: libjpeg holds every DCT coefficient, the costliest decode per pixel.
        pixels = np.zeros((side, side, 3), np.uint8)
        images.append(tf.io.encode_jpeg(pixels, quality=100, progressive=True, chroma_downsampling=False).numpy())
        left -= side * side
    jpegs = {"instances": [{"b64": base64.b64encode(jpeg).decode()} for jpeg in images]}
    side = math.isqrt(max_body // 8)
    while True:  # "[0,0,0]," per pixel, "[...]," per row
        row = "[" + ",".join(["[0,0,0]"] * side) + "]"
        uint8 = '{"signature_name":"serve_uint8","instances":[[' + ",".join([row] * side) + "]]}"
        if len(uint8) <= max_body:
            break
        side -= 8
    objects = '{"instances":[' + ",".join(['{"":0}'] * ((max_body - 20) // 7)) + "]}"
    return {"images": json.dumps(jpegs).encode(), "uint8": uint8.encode(), "objects": objects.encode()}


def _proc_status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _start_server(export_dir: str, server_args: list) -> tuple:
    """(process, port) of `python -m alexnet_tf.serve` running this copy of the package."""
    import re
    import subprocess

    import alexnet_tf

    root = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_tf.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "alexnet_tf.serve", export_dir, "--port", "0", "--quiet", *server_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    m = re.search(r"http://[^:]+:(\d+)/", proc.stdout.readline())
    if not m:
        proc.kill()
        raise RuntimeError(f"{' '.join(cmd)} did not start (exit code {proc.wait()})")
    return proc, int(m[1])


def _post(port: int, model: str, body: bytes) -> int | str:
    """The status of one predict request on a new connection, or the name of the error."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", f"/v1/models/{model}:predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as e:
        return type(e).__name__
    finally:
        conn.close()


def serve_load(export_dir: str, clients: int = 32, seconds: float = 30.0, server_args: list = ()) -> dict:
    """Starts the server on EXPORT_DIR and has `clients` threads send it the `serve_payloads`
    in turn, each as soon as its last answer came, for `seconds`; returns the answers by
    kind and status, their latency and the server's peak resident memory (VmHWM)."""
    import threading

    from alexnet_tf import serve

    parser = argparse.ArgumentParser()
    for flag, default in [
        ("--max-body-mb", serve.DEFAULT_MAX_BODY / 2**20),
        ("--max-pixels", serve.DEFAULT_MAX_PIXELS),
        ("--max-request-pixels", serve.DEFAULT_MAX_REQUEST_PIXELS),
        ("--max-batch", serve.DEFAULT_MAX_BATCH),
        ("--model-name", "alexnet"),
    ]:
        parser.add_argument(flag, type=type(default), default=default)
    limits, _ = parser.parse_known_args(list(server_args))
    payloads = serve_payloads(
        int(limits.max_body_mb * 2**20), limits.max_pixels, limits.max_request_pixels, limits.max_batch
    )
    proc, port = _start_server(export_dir, list(server_args))
    try:
        _post(port, limits.model_name, serve_payloads(2**16, 12, 12, 1)["images"])  # both signatures, once
        _post(
            port,
            limits.model_name,
            json.dumps({"signature_name": "serve_uint8", "instances": [[[[0, 0, 0]]]]}).encode(),
        )
        idle_rss = _proc_status_mb(proc.pid, "VmRSS")
        results, deadline = [], time.monotonic() + seconds

        def client(i: int) -> None:
            while time.monotonic() < deadline:
                kind = SERVE_PAYLOADS[i % len(SERVE_PAYLOADS)]
                start = time.monotonic()
                status = _post(port, limits.model_name, payloads[kind])
                results.append((kind, status, time.monotonic() - start))  # list.append is atomic
                i += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak_rss = _proc_status_mb(proc.pid, "VmHWM")
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    answers, latency = {}, {}
    for kind, status, elapsed in results:
        answers.setdefault(kind, {}).setdefault(str(status), 0)
        answers[kind][str(status)] += 1
        latency.setdefault(str(status), []).append(elapsed * 1000)
    return {
        "bench": "serve",
        "clients": clients,
        "seconds": seconds,
        "server_args": list(server_args),
        "payload_bytes": {k: len(v) for k, v in payloads.items()},
        "answers": answers,
        "latency_ms": {
            s: {"median": round(statistics.median(v)), "p99": round(np.percentile(v, 99)), "max": round(max(v))}
            for s, v in sorted(latency.items())
        },
        "server_alive": alive,
        "idle_rss_mb": round(idle_rss),
        "peak_rss_mb": round(peak_rss),
    }


def bench_serve(args: argparse.Namespace) -> dict:
    result = serve_load(args.export_dir, args.clients, args.seconds, args.server)
    _emit(result, args.out)
    return result


def main(argv=None) -> int:
    from alexnet_tf import cli

    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("input", help="input pipeline throughput vs a PIL + NumPy worker pool")
    p.add_argument("--data", help="data spec (default: generated 256 px JPEGs); the baseline needs folder:PATH")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per pipeline and round")
    p.add_argument("--rounds", type=int, default=3, help="turns each pipeline takes (median reported)")
    p.add_argument("--cores", type=int, default=0, help="worker processes / tf.data threads (default: all usable)")
    p.add_argument("--images", type=int, default=512, help="how many JPEGs to generate without --data")
    p.set_defaults(fn=bench_input)

    p = sub.add_parser("jpegs", help="write generated 256 px JPEGs (a train/<class>/ folder) for --data or prepare")
    p.add_argument("out", help="folder to write OUT/train/<class>/*.JPEG into")
    p.add_argument("--images", type=int, default=20_000, help="how many (default 20,000)")
    p.add_argument(
        "--classes", type=int, default=1000, help="number of class folders (default 1000, as the paper's net)"
    )
    p.set_defaults(fn=bench_jpegs)

    p = sub.add_parser("train", help="training step throughput, FLOP utilisation and memory")
    p.add_argument("recipe", nargs="?", default="recipes/paper.py", help="recipe file (default: recipes/paper.py)")
    cli.add_overrides(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--synthetic", action="store_true", help="random uint8 batches made once on the device (default)"
    )
    where.add_argument("--data", metavar="SPEC", help="the real input pipeline on this source (sets data.source)")
    p.add_argument(
        "--feed",
        choices=("device", "dataset"),
        default="device",
        help="synthetic batches: kept on the device (default), or fed from the host by tf.data",
    )
    p.add_argument("--batch", type=int, nargs="+", help="global batch size(s) (default: the recipe's)")
    p.add_argument("--precision", nargs="+", choices=tuple(PRECISIONS), help="fp32 and/or bf16 (default: the recipe's)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first; the first one compiles")
    p.add_argument(
        "--steps-per-loop",
        type=int,
        nargs="+",
        help="steps per host call (default: train.steps_per_loop); two or more values add a "
        "train_host_overhead line (repeat values to alternate runs: 1 50 1 50)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --data: the training split this many times over per epoch, so that a small "
        "generated set does not time an epoch restart every few steps",
    )
    p.add_argument("--no-jit", action="store_true", help="train.jit_compile=False")
    p.add_argument(
        "--peak-tflops", type=float, help="peak TFLOP/s of one device for the mfu (default: table, H100/H200)"
    )
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.set_defaults(fn=bench_train)

    p = sub.add_parser("compare", help="Markdown table: `train` lines beside the PyTorch peer's, with ratios")
    p.add_argument("files", nargs="+", help="JSON lines from `train --out` and the peer script (or torch_bench.json)")
    p.add_argument("--target", type=float, default=1.3, help="ratio to the faster PyTorch mode to meet (1.3)")
    p.add_argument("--input-target", type=float, default=12_000, help="img/s to meet with --data (12,000)")
    p.set_defaults(fn=bench_compare)

    p = sub.add_parser(
        "serve", help="peak memory of `python -m alexnet_tf.serve` under clients sending its largest requests"
    )
    p.add_argument("export_dir", help="what to serve (as for python -m alexnet_tf.serve)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long they send (30)")
    p.add_argument("--out", help="also append the JSON line to this file")
    p.add_argument(
        "--server",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="FLAG",
        help="the rest of the line: flags for the server, e.g. --server --max-inflight 4",
    )
    p.set_defaults(fn=bench_serve)
    args = parser.parse_args(argv)
    return cli.run(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
