"""Training: `python -m alexnet_tf.train RECIPE [--workdir DIR] [--data SPEC] [--set k=v ...]`.

`train_and_evaluate(config, workdir)` does the work; `main` only parses and calls it.
A custom loop under a tf.distribute strategy: an XLA-compiled forward/backward per
replica with the paper's SGD rule (inside the compiled program on one device, after it
under MirroredStrategy), several steps per host call, checkpoints with automatic resume,
TensorBoard scalars and a console progress line, a final evaluation in results.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time

import keras
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import optim
from alexnet_tf import steps as steps_lib
from alexnet_tf.config import Config, ConfigError, to_dict, validate
from alexnet_tf.distribute import make_strategy
from alexnet_tf.errors import Preempted, TrainingError
from alexnet_tf.figures import conv1_grid
from alexnet_tf.model import build_model, model_variables
from alexnet_tf.report import Progress, Reporter, format_duration


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets the Keras dtype policy for the duration of a run."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def checkpoint_path(workdir: str, best: bool = False) -> str:
    """The newest (or the best-validation) checkpoint of a run."""
    folder = os.path.join(workdir, "checkpoints", "best" if best else "")
    path = tf.train.latest_checkpoint(folder)
    if path is None:
        raise ConfigError(
            f"no checkpoint in {folder}; train first: python -m alexnet_tf.train RECIPE --workdir {workdir}"
        )
    return path


def restore_model(model: keras.Model, workdir: str, best: bool = False) -> str:
    """Loads a run's weights into `model` (built from the run's config); returns the path."""
    path = checkpoint_path(workdir, best)
    tf.train.Checkpoint(model=model_variables(model)).restore(path).expect_partial().assert_existing_objects_matched()
    return path


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The one process that writes the run's files: the `chief` task if TF_CONFIG has
    one, else worker 0 (or the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return True
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type in (None, "worker") and not resolver.task_id


# What a resumed run must share with the run that wrote the workdir: the net, and
# everything that fixes which examples make up which step (batch, seed, data, order).
RESUME_KEYS = (
    "model",
    "train.batch_size",
    "train.seed",
    "data.source",
    "data.train_split",
    "data.shuffle_buffer",
    "data.random_labels",
    "data.resize_size",
    "data.crop_size",
    "data.pad_crop",
    "data.stats_path",
)


def check_resume(config: Config, workdir: str) -> None:
    """Refuses a workdir whose run was started with other RESUME_KEYS settings: its
    checkpoint would be resumed with another net or at the wrong place in the data."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    new = to_dict(config)

    def leaves(tree, prefix):
        for k, v in tree.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    old_flat, new_flat = dict(leaves(old, "")), dict(leaves(new, ""))
    changed = [
        f"{k} {old_flat.get(k, '(unset)')!r} -> {v!r}"
        for k, v in sorted(new_flat.items())
        if any(k == key or k.startswith(key + ".") for key in RESUME_KEYS) and old_flat.get(k) != v
    ]
    if changed:
        raise ConfigError(
            f"{workdir} holds a run with different settings ({'; '.join(changed)}); resuming it would mix "
            "them: use a new --workdir, or the run's own recipe and overrides"
        )


def resolve_data(config: Config, source: data_lib.Source, evaluate: bool = True) -> Config:
    """`config` with what it leaves to the data (an empty data.eval_split, model.num_classes
    0) taken from `source`, said on the console; raises for splits it does not have (the
    eval split only if `evaluate`)."""
    data = data_lib.resolve_splits(source, config.data, evaluate)
    if data.eval_split and data.eval_split != config.data.eval_split:
        print(f"evaluating on {source.name}'s split {data.eval_split!r}", flush=True)
    model = config.model
    if not model.num_classes:
        model = dataclasses.replace(model, num_classes=source.num_classes)
        print(f"{source.name} has {source.num_classes} classes: model.num_classes={source.num_classes}", flush=True)
    if model.num_classes != source.num_classes:
        raise ConfigError(
            f"{config.data.source} has {source.num_classes} classes but model.num_classes="
            f"{model.num_classes}; set model.num_classes={source.num_classes}"
        )
    return validate(dataclasses.replace(config, data=data, model=model))


def write_json(path: str, value) -> None:
    """Writes JSON to a temporary name and renames it: readers see the old file or the
    new one, never half of one."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def distributed_dataset(
    strategy: tf.distribute.Strategy,
    source: data_lib.Source,
    config: Config,
    split: str,
    global_batch: int,
    training: bool,
    epoch: int = 0,
    skip_batches: int = 0,
) -> tf.distribute.DistributedDataset:
    """One epoch of `split` for every replica (eval: the first data.eval_examples)."""
    limit = 0 if training else config.data.eval_examples

    def fn(ctx: tf.distribute.InputContext):
        return data_lib.make_dataset(
            source,
            config.data,
            split,
            ctx.get_per_replica_batch_size(global_batch),
            training=training,
            seed=config.train.seed,
            epoch=epoch,
            skip_batches=skip_batches,
            input_context=ctx,
            limit=limit,
        )

    return strategy.distribute_datasets_from_function(fn)


class Window:
    """Sums of the train loop's metrics over some steps, and the wall time they took."""

    def __init__(self):
        self.start, self.steps, self.sums = time.perf_counter(), 0, dict.fromkeys(steps_lib.TRAIN_METRICS, 0.0)

    def add(self, totals: dict, steps: int) -> None:
        self.steps += steps
        for k in self.sums:
            self.sums[k] += totals[k]

    def values(self, global_batch: int) -> dict:
        seconds = time.perf_counter() - self.start
        count = max(self.sums["count"], 1)
        return {
            "loss": self.sums["loss"] / self.steps,
            "top1_error": 1 - self.sums["top1_correct"] / count,
            "top5_error": 1 - self.sums["top5_correct"] / count,
            "images_per_sec": self.steps * global_batch / seconds,
            "step_time_ms": 1000 * seconds / self.steps,
        }


class Trainer:
    """One run of Sec. 5's training: epochs of SGD steps, each epoch ending in the
    validation error that drives the learning-rate schedule. `train_and_evaluate`
    builds it and calls `run`.

    The checkpoint holds the weights, the optimizer, the schedule, the step, the best
    validation error, the number of epochs whose end (evaluation, schedule, history) is
    done, and the running sums of the epoch in progress: a run stopped anywhere, also
    between an epoch's last step and its end, resumes to the history, schedule and best
    checkpoint of a run that never stopped.
    """

    def __init__(self, config: Config, workdir: str, strategy: tf.distribute.Strategy, source: data_lib.Source):
        c = config
        self.config, self.workdir, self.strategy, self.source = config, workdir, strategy, source
        self.chief = is_chief(strategy)
        self.global_batch = c.train.batch_size
        self.eval_batch = c.train.eval_batch_size or c.train.batch_size
        self._check()
        self.steps_per_epoch = source.sizes[c.data.train_split] // self.global_batch
        self.total_steps = c.train.epochs * self.steps_per_epoch
        if c.train.max_steps:
            self.total_steps = min(self.total_steps, c.train.max_steps)
        self.reporter = Reporter(workdir, self.total_steps, chief=self.chief)
        self.stats = self._stats()
        with strategy.scope():
            self.model = build_model(c.model, seed=c.train.seed)
            self.optimizer = optim.build_optimizer(c.optim, self.global_batch)
            self.optimizer.build(self.model.trainable_variables)
            self.schedule = optim.LearningRateSchedule(c.optim, self.global_batch)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best_top1 = tf.Variable(float("inf"), trainable=False, name="best_top1_error")
            self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
            # loss, top-1 and top-5 correct, count and steps of the epoch in progress
            self.epoch_sums = tf.Variable(tf.zeros([5], tf.float64), trainable=False, name="epoch_sums")
        self.checkpoint = tf.train.Checkpoint(
            model=model_variables(self.model),
            optimizer=self.optimizer,
            schedule=self.schedule,
            step=self.step,
            best=self.best_top1,
            epochs_done=self.epochs_done,
            epoch_sums=self.epoch_sums,
        )
        self.ckpt_dir = os.path.join(workdir, "checkpoints")
        # Every worker saves (saving may run collectives); only the chief's files stay.
        save_dir = self.ckpt_dir
        if not self.chief:
            save_dir = os.path.join(
                workdir, "_nonchief", f"{strategy.cluster_resolver.task_type}{strategy.cluster_resolver.task_id}"
            )
        self.manager = tf.train.CheckpointManager(self.checkpoint, save_dir, max_to_keep=c.train.keep_checkpoints)
        # The checkpoint with the lowest validation error so far, kept apart.
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(save_dir, "best"), max_to_keep=1, checkpoint_name="best"
        )
        tensors = steps_lib.stats_tensors(self.stats)
        self._train_loop = steps_lib.make_train_loop(self.model, self.optimizer, strategy, c, tensors, self.step)
        self._eval_step = steps_lib.make_eval_step(self.model, strategy, c, tensors)
        self._stop_requested = False
        self._last_eval = None  # (step, metrics) of the latest evaluation
        self._profiling = False
        self.history = []

    # ---------------------------------------------------------------- setup
    def _check(self) -> None:
        """Everything about the data and devices that would otherwise fail later."""
        c, source = self.config, self.source
        replicas = self.strategy.num_replicas_in_sync
        for key, batch in (("train.batch_size", self.global_batch), ("train.eval_batch_size", self.eval_batch)):
            if batch % replicas:
                raise ConfigError(f"{key}={batch} is not divisible by the {replicas} replicas")
        n_train, n_eval = source.sizes[c.data.train_split], source.sizes[c.data.eval_split]
        if n_train < self.global_batch:
            raise ConfigError(f"train.batch_size={self.global_batch} exceeds the {n_train} training examples")
        if n_eval == 0:
            raise ConfigError(f"the eval split {c.data.eval_split!r} of {c.data.source} has no examples")

    def _barrier(self) -> None:
        """Waits until every worker has reached this point (a one-number all-reduce)."""
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        tf.function(lambda: self.strategy.reduce("SUM", self.strategy.run(lambda: tf.ones([])), axis=None))()

    def _stats(self) -> data_lib.Stats:
        """The mean image and RGB covariance of Sec. 2 and 4.1: the stats file's, else
        computed by the chief over the training split on the first run and kept in the
        workdir, where the other workers read them."""
        d = self.config.data
        path = os.path.join(self.workdir, "stats.npz")  # what evaluate and export read
        if self.chief and (d.stats_path or not os.path.exists(path)):
            if d.stats_path:
                stats = data_lib.dataset_stats(self.source, d, d.train_split)
            else:
                n = self.source.sizes[d.train_split]
                self.reporter.line(
                    f"computing the mean image and RGB covariance (Sec. 2, 4.1) over the {n} training images, "
                    f"once; to reuse them elsewhere: --set data.stats_path={path}"
                )
                progress = Progress(n, "statistics", stream=sys.stdout)
                stats = data_lib.dataset_stats(self.source, d, d.train_split, progress.update)
                progress.update(n, final=True)
            stats.save(path + ".tmp.npz")
            os.replace(path + ".tmp.npz", path)  # never a half-written file for a resume to read
        self._barrier()
        if not os.path.exists(path):
            raise ConfigError(f"{path} was not written by the chief: the workers of one run need one shared --workdir")
        return data_lib.Stats.load(path)

    def _dataset(self, split: str, training: bool, epoch: int = 0, skip_batches: int = 0):
        batch = self.global_batch if training else self.eval_batch
        return distributed_dataset(
            self.strategy, self.source, self.config, split, batch, training, epoch=epoch, skip_batches=skip_batches
        )

    # ---------------------------------------------------------------- checkpoints
    def _restore(self) -> int:
        """Resumes from the newest checkpoint in the workdir (every worker reads the
        chief's) and checks that all workers start from one step."""
        latest = tf.train.latest_checkpoint(self.ckpt_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            self.reporter.line(f"resumed from {latest} at step {int(self.step.numpy())}")
        step = int(self.step.numpy())
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            s = float(step)
            moments = tf.function(
                lambda: self.strategy.reduce(
                    "SUM", self.strategy.run(lambda: tf.constant([s, s * s, 1.0], tf.float64)), axis=None
                )
            )().numpy()
            n = moments[2]
            if moments[1] / n - (moments[0] / n) ** 2 > 0.5:
                raise ConfigError(
                    f"the workers resumed from different steps (this one from {step}); the workers of one run "
                    "need one shared --workdir"
                )
        path = os.path.join(self.workdir, "history.json")
        if os.path.exists(path):
            with open(path) as f:
                self.history = [h for h in json.load(f) if h["epoch"] <= int(self.epochs_done.numpy())]
        return step

    def _save(self, manager: tf.train.CheckpointManager | None = None) -> None:
        manager = manager or self.manager
        manager.save(checkpoint_number=int(self.step.numpy()))
        if not self.chief:
            shutil.rmtree(manager.directory, ignore_errors=True)

    @contextlib.contextmanager
    def _sigterm_requests_stop(self):
        """SIGTERM (preemption) asks the workers to stop; they agree on the step, save
        there and raise Preempted (see `_train_call`)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self._stop_requested = True

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    # ---------------------------------------------------------------- the run
    def run(self) -> dict:
        with self._sigterm_requests_stop():
            self._restore()
            self.reporter.settings(to_dict(self.config))
            self.started = time.perf_counter()
            self.seconds_before = self.history[-1]["seconds"] if self.history else 0.0
            self.reporter.line(
                f"training {self.total_steps} steps ({self.steps_per_epoch} per epoch, global batch "
                f"{self.global_batch}, {self.strategy.num_replicas_in_sync} replica(s)) in {self.workdir}"
            )
            self._check_eval_step()
            while True:
                if self._epoch_end_pending():
                    self._end_epoch()
                    self._save()
                if int(self.step.numpy()) >= self.total_steps:
                    break
                self._train_epoch()
            return self._finish()

    def _elapsed(self) -> float:
        """Wall time of the run so far, across restarts (Fig. 1's x-axis)."""
        return self.seconds_before + time.perf_counter() - self.started

    def _check_eval_step(self) -> None:
        """One eval batch through the eval step: the eval pipeline and the compiled
        function fail now, not at the end of the first epoch."""
        batch = iter(self._dataset(self.config.data.eval_split, training=False)).get_next_as_optional()
        if batch.has_value():
            self._eval_step(batch.get_value())

    def _epoch_end_pending(self) -> bool:
        """True when the last step of an epoch is done but not the epoch's end."""
        step = int(self.step.numpy())
        return (
            step > 0
            and step % self.steps_per_epoch == 0
            and int(self.epochs_done.numpy()) < step // self.steps_per_epoch
        )

    def _train_epoch(self) -> None:
        """The steps of the current epoch from where the run stands, host call by host
        call; stops at the end of the epoch or of the run."""
        c, t = self.config, self.config.train
        step = int(self.step.numpy())
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        lr = self.schedule.lr(epoch)
        self.optimizer.learning_rate.assign(lr)
        if in_epoch == 0:
            self.epoch_sums.assign(tf.zeros([5], tf.float64))
            self._epoch_summaries(step, epoch)
        iterator = iter(self._dataset(c.data.train_split, training=True, epoch=epoch, skip_batches=in_epoch))
        end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
        window = Window()
        while step < end:
            n = self._call_size(step, end)
            totals = self._train_call(iterator, step, n)
            step += n
            window.add(totals, n)
            self.epoch_sums.assign_add([totals[k] for k in steps_lib.TRAIN_METRICS] + [n])
            if step % t.log_every == 0 or step == end:
                values = {**window.values(self.global_batch), "lr": lr}
                # wall time across restarts, Fig. 1's x-axis: in metrics.jsonl, not a curve
                self.reporter.scalars("train", step, values, extra={"elapsed_seconds": self._elapsed()})
                self.reporter.progress(epoch, t.epochs, step, values)
                window = Window()
            if totals["stop"]:
                self._save()
                raise Preempted(
                    f"SIGTERM at step {step}: saved {self.manager.latest_checkpoint if self.chief else 'a checkpoint'}; "
                    "run the same command again to resume"
                )
            if step % t.checkpoint_every == 0 and step < end:
                self._save()
        if step % self.steps_per_epoch:  # the run ends inside an epoch (an epoch's end saves after its work)
            self._save()

    def _call_size(self, step: int, end: int) -> int:
        """Steps in the host call from `step`: `train.steps_per_loop`, cut at the epoch's
        (or run's) end, at log and checkpoint steps and at the profiler window's ends;
        inside the window one step per call, so that the profiler sees each step."""
        t = self.config.train
        first, last = t.profile_steps or (0, 0)
        if first <= step < last:
            return 1
        n = min(t.steps_per_loop, end - step, t.log_every - step % t.log_every)
        n = min(n, t.checkpoint_every - step % t.checkpoint_every)
        return min(n, first - step) if step < first else n

    def _train_call(self, iterator, step: int, n: int) -> dict:
        """One host call of `n` steps from `step`; inside `train.profile_steps` (first,
        last) traced by the profiler with each step marked, as TensorFlow documents for
        custom loops, so that its overview shows step times. Stops the run on a
        non-finite loss."""
        first, last = self.config.train.profile_steps or (0, 0)
        if step == first < last:
            tf.profiler.experimental.start(os.path.join(self.workdir, "tb", "profile"))
            self._profiling = True
        mark = tf.profiler.experimental.Trace("train", step_num=step, _r=1) if first <= step < last else None
        with mark or contextlib.nullcontext():
            stop = tf.constant(1.0 if self._stop_requested else 0.0)
            totals = {k: float(v) for k, v in self._train_loop(iterator, tf.constant(n), stop).items()}
        if step + n == last and self._profiling:
            tf.profiler.experimental.stop()
            self._profiling = False
        if not math.isfinite(totals["loss"]):
            where = f"step {step + 1}" if n == 1 else f"steps {step + 1}..{step + n}"
            raise TrainingError(
                f"non-finite loss at {where}; the last good checkpoint "
                f"({self.manager.latest_checkpoint}) is left as it was"
            )
        return totals

    def _end_epoch(self) -> None:
        """Sec. 5's end of an epoch: the validation error, the best checkpoint, the
        learning-rate schedule, the history entry."""
        c = self.config
        step = int(self.step.numpy())
        epoch = step // self.steps_per_epoch - 1  # 0-based, the epoch that just ended
        metrics = self.evaluate()
        self._last_eval = (step, metrics)
        self.reporter.scalars("eval", step, {k: metrics[k] for k in ("loss", "top1_error", "top5_error")})
        self.reporter.line(
            f"epoch {epoch + 1} eval: top-1 error {metrics['top1_error']:.4f}  "
            f"top-5 error {metrics['top5_error']:.4f}  ({metrics['examples']} images)"
        )
        if data_lib.BAD_FILES.message():
            self.reporter.line(data_lib.BAD_FILES.message())
        if metrics["top1_error"] < float(self.best_top1.numpy()):
            self.best_top1.assign(metrics["top1_error"])
            self._save(self.best_manager)
        lr = self.schedule.lr(epoch)
        if self.schedule.end_epoch(metrics["top1_error"]):
            self.reporter.line(f"validation error stopped improving: lr -> {self.schedule.lr(epoch + 1):.3g}")
        elif self.schedule.waiting() and not self.schedule.reductions.numpy():
            self.reporter.line(
                "validation error not yet below its first value by "
                f"{c.optim.plateau_start_drop:g}: the plateau schedule waits (Sec. 5)"
            )
        loss, top1, _, count, steps = self.epoch_sums.numpy().tolist()
        self.history.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "seconds": round(self._elapsed(), 2),
                "lr": lr,
                "train_loss": loss / max(steps, 1),
                "train_top1_error": 1 - top1 / max(count, 1),
                "eval_top1_error": metrics["top1_error"],
                "eval_top5_error": metrics["top5_error"],
            }
        )
        self.epochs_done.assign(epoch + 1)
        if self.chief:
            write_json(os.path.join(self.workdir, "history.json"), self.history)

    def evaluate(self) -> dict:
        """Centre-crop top-1/top-5 error over the eval split."""
        iterator = iter(self._dataset(self.config.data.eval_split, training=False))
        totals = None
        while True:
            # get_next_as_optional keeps workers in step when their shards end unevenly.
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            out = self._eval_step(batch.get_value())
            totals = out if totals is None else {k: totals[k] + out[k] for k in totals}
        count = float(totals["count"])
        if count == 0:
            raise data_lib.DataError(f"no image of the eval split {self.config.data.eval_split!r} could be read")
        return {
            "loss": float(totals["loss_sum"]) / count,
            "top1_error": 1.0 - float(totals["top1_correct"]) / count,
            "top5_error": 1.0 - float(totals["top5_correct"]) / count,
            "examples": int(count),
        }

    def _finish(self) -> dict:
        """The final evaluation (results.json)."""
        step = int(self.step.numpy())
        if self._last_eval and self._last_eval[0] == step:  # the epoch's end evaluated these weights
            metrics = dict(self._last_eval[1])
        else:
            metrics = self.evaluate()
            self.reporter.scalars("eval", step, {k: metrics[k] for k in ("loss", "top1_error", "top5_error")})
        seconds = self._elapsed()
        metrics.update(
            step=step,
            crops="center",
            train_seconds=round(seconds, 1),
            history=self.history,
            bad_files=data_lib.bad_file_summary(),
        )
        self.reporter.flush()
        if data_lib.BAD_FILES.message():
            self.reporter.line(data_lib.BAD_FILES.message())
        self.reporter.line(
            f"done: top-1 error {metrics['top1_error']:.4f}  top-5 error {metrics['top5_error']:.4f}  "
            f"in {format_duration(seconds)}"
        )
        return metrics

    def _epoch_summaries(self, step: int, epoch: int) -> None:
        """At each epoch's start: weight histograms, the first images of the epoch's first
        batch as the net sees them (crop, flip and colour noise, with the mean image added
        back for display), the conv1 kernels (Fig. 3)."""
        if not self.chief:
            return
        c = self.config
        self.reporter.histograms("train", step, {v.path: v for v in self.model.trainable_variables})
        # An epoch's order does not depend on the batch size: these are the first rows of
        # the batch its first step trains on.
        first = data_lib.make_dataset(self.source, c.data, c.data.train_split, 4, True, c.train.seed, epoch)
        shown = dataclasses.replace(c.data, subtract_mean=False, input_scale=1.0)
        images = data_lib.device_preprocess(next(iter(first)), steps_lib.stats_tensors(self.stats), shown)
        self.reporter.images("train", step, "inputs", tf.clip_by_value(images / 255.0, 0.0, 1.0), max_outputs=4)
        kernel = self.model.get_layer("conv1").kernel.numpy()  # (11, 11, 3, 96)
        grid = conv1_grid(kernel, 2 if c.model.two_columns else 1)
        self.reporter.images("train", step, "conv1_kernels", grid[None], max_outputs=1)


def setup_runtime(config: Config) -> None:
    """Determinism and seeds; call before building anything.

    Op determinism is process-wide in TensorFlow: switch it off again for a
    non-deterministic run that follows a deterministic one in the same process.
    """
    from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not public

    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    keras.utils.set_random_seed(config.train.seed)


def train_and_evaluate(config: Config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming if it holds checkpoints) and evaluates.

    Everything that can be checked is checked before the first step. The chief writes
    workdir/config.json, classes.json, stats.npz, checkpoints/, tb/, history.json and
    results.json; returns the results.
    """
    config = validate(config)
    setup_runtime(config)
    strategy = make_strategy(config.distribute)
    chief = is_chief(strategy)
    source = data_lib.open_source(config.data.source, config.data)
    config = resolve_data(config, source)
    os.makedirs(workdir, exist_ok=True)
    check_resume(config, workdir)
    if chief:
        write_json(os.path.join(workdir, "config.json"), to_dict(config))
        write_json(os.path.join(workdir, "classes.json"), source.class_names)
    with dtype_policy(config.train.precision):
        results = Trainer(config, workdir, strategy, source).run()
    if chief:
        write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> int:
    from alexnet_tf import cli

    parser = cli.recipe_parser("python -m alexnet_tf.train", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    return cli.run(lambda: _main(args))


def _main(args) -> None:
    from alexnet_tf import cli

    config = cli.resolve_config(args)
    workdir = args.workdir or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    print(json.dumps(to_dict(config), indent=1, sort_keys=True))
    train_and_evaluate(config, workdir)


if __name__ == "__main__":
    raise SystemExit(main())
