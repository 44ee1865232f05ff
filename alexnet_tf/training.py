"""Training as in Sec. 5: `train_and_evaluate(config, workdir)`, which the command
`python -m alexnet_tf.train` (alexnet_tf/train.py) calls.

A custom loop under a tf.distribute strategy: an XLA-compiled forward/backward per
replica with the paper's SGD rule (inside the compiled program on one device, after it
under MirroredStrategy), several steps per host call, checkpoints with automatic resume,
TensorBoard scalars and a console progress line, a final evaluation in results.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time

import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import finetune, lock, optim, runconfig
from alexnet_tf import steps as steps_lib
from alexnet_tf.checkpoints import Checkpoints, StopRequest, disk_full_stops_run, newest_readable, resume_point
from alexnet_tf.config import Config, ConfigError, to_dict
from alexnet_tf.distribute import Runtime, barrier, check_same_step, distributed_dataset, make_runtime
from alexnet_tf.drawing import conv1_grid
from alexnet_tf.errors import Preempted, TrainingError, WorkerLost, lost_workers
from alexnet_tf.metrics import TRAIN_METRICS, EpochSums, accumulate, errors
from alexnet_tf.model import model_variables
from alexnet_tf.report import ProfileWindow, Reporter, Window, format_duration
from alexnet_tf.runfolder import RunFolder
from alexnet_tf.runs import check_resume, run_stats

log = logging.getLogger(__name__)


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

    def __init__(
        self, config: Config, workdir: str, runtime: Runtime, source: data_lib.Source, resume_from: str | None = None
    ):
        """`resume_from`: the checkpoint to resume from (`checkpoints.resume_point`), None for a new run."""
        c = config
        self.config, self.workdir, self.runtime, self.source = config, workdir, runtime, source
        self.folder = RunFolder(workdir)
        self.global_batch = c.train.batch_size
        self.eval_batch = c.train.eval_batch_size or c.train.batch_size
        check_data(c, source, runtime.replicas)
        self.steps_per_epoch = source.sizes[c.data.train_split] // self.global_batch
        self.total_steps = c.train.epochs * self.steps_per_epoch
        if c.train.max_steps:
            self.total_steps = min(self.total_steps, c.train.max_steps)
        self.reporter = Reporter(workdir, self.total_steps, chief=runtime.chief)
        self.stats = run_stats(
            source, c.data, self.folder, runtime.chief, self.reporter.line, lambda: barrier(runtime.strategy)
        )
        frozen = c.finetune.freeze if c.finetune.init_from else ()
        self.model, self.optimizer, self.step = steps_lib.create_state(
            c.model, c.optim, c.train.seed, runtime, self.global_batch, frozen
        )
        with runtime.strategy.scope():
            self.schedule = optim.LearningRateSchedule(c.optim, self.global_batch, c.train.epochs)
            self.best_top1 = tf.Variable(float("inf"), trainable=False, name="best_top1_error")
            self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
            self.epoch_sums = EpochSums()
        self.checkpoints = Checkpoints(
            workdir,
            runtime.chief,
            runtime.task,
            c.train.keep_checkpoints,
            resume_from,
            model=model_variables(self.model),
            optimizer=self.optimizer,
            schedule=self.schedule,
            step=self.step,
            best=self.best_top1,
            epochs_done=self.epochs_done,
            epoch_sums=self.epoch_sums,
        )
        tensors = self.stats.tensors()
        with runtime.policy():
            self._train_loop = steps_lib.make_train_loop(
                self.model,
                self.optimizer,
                self.step,
                runtime,
                c.data,
                c.optim,
                tensors,
                finetune.lr_scales(self.model, c),
            )
            self._eval_step = steps_lib.make_eval_step(self.model, runtime, c.data, tensors)
        self.bad_files = data_lib.BadFiles()
        self.stop = StopRequest()
        self.profile = ProfileWindow(c.compute.profile_steps, self.folder.profile)
        self.history = []
        self.last_eval = None  # (step, metrics) of the latest evaluation
        self.started, self.seconds_before = time.perf_counter(), 0.0

    # ---------------------------------------------------------------- setup
    def _dataset(self, split: str, training: bool, epoch: int = 0, skip_batches: int = 0):
        c = self.config
        batch = self.global_batch if training else self.eval_batch
        # a tf.data service worker is another process: it cannot reach this table
        bad_files = None if c.data.service_address else self.bad_files
        return distributed_dataset(
            self.runtime, self.source, c.data, c.train.seed, split, batch, training, epoch, skip_batches, bad_files
        )

    def _restore(self) -> None:
        """Resumes from the chief's newest readable checkpoint and history (all workers
        from one step); a new run starts from `train.init_from`'s weights if it names any."""
        path = self.checkpoints.restore()
        if path:
            self.reporter.line(f"resumed from {path} at step {int(self.step.numpy())}")
        elif self.config.finetune.init_from:
            self.reporter.line(finetune.initialize(self.model, self.config))
        check_same_step(self.runtime.strategy, int(self.step.numpy()))
        done = int(self.epochs_done.numpy())
        self.history = [h for h in self.folder.read_history() if h["epoch"] <= done]

    def _save(self, best: bool = False) -> None:
        self.checkpoints.save(int(self.step.numpy()), best)

    # ---------------------------------------------------------------- the run
    def run(self) -> dict:
        """Trains to the end (resuming where the workdir stands), returns the results."""
        with self.stop.watch(), self._worker_loss():
            self._restore()
            self.reporter.settings(to_dict(self.config))
            self.started = time.perf_counter()
            self.seconds_before = self.history[-1]["seconds"] if self.history else 0.0
            self.reporter.line(
                f"training {self.total_steps} steps ({self.steps_per_epoch} per epoch, global batch "
                f"{self.global_batch}, {self.runtime.describe()}) in {self.workdir}"
            )
            if self.runtime.forms:
                self.reporter.line(self.runtime.forms.describe())
            self._check_eval_step()
            while True:
                if self._epoch_end_pending():
                    self._end_epoch()
                    self._save()
                if int(self.step.numpy()) >= self.total_steps:
                    break
                self._train_epoch()
            return self._finish()

    @contextlib.contextmanager
    def _worker_loss(self):
        """In a run of several workers, TensorFlow's error for a collective whose peer is
        gone becomes WorkerLost: which worker, at which step, what a restart resumes from."""
        try:
            yield
        except tf.errors.OpError as e:
            lost = lost_workers(str(e)) if self.runtime.task else None
            if lost is None:
                raise
            resume = newest_readable(self.checkpoints.directory) or "step 0 (no checkpoint yet)"
            raise WorkerLost(
                f"{lost} stopped without SIGTERM (killed, crashed or its host lost) during step "
                f"{int(self.step.numpy()) + 1}; start every worker again to resume from {resume}"
            ) from None

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
        epochs, within = divmod(int(self.step.numpy()), self.steps_per_epoch)
        return epochs > 0 and within == 0 and int(self.epochs_done.numpy()) < epochs

    def _train_epoch(self) -> None:
        """The steps of the current epoch from where the run stands, host call by host
        call, with the periodic work at the steps it falls on; stops at the end of the
        epoch or of the run."""
        t = self.config.train
        step = int(self.step.numpy())
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        lr = self.schedule.lr(epoch)
        self.optimizer.learning_rate.assign(lr)
        if in_epoch == 0:
            self.epoch_sums.reset()
            self._epoch_summaries(step, epoch)
        iterator = iter(self._dataset(self.config.data.train_split, True, epoch, skip_batches=in_epoch))
        end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
        window = Window(TRAIN_METRICS)
        while step < end:
            n = self._call_size(step, end)
            totals = self._train_call(iterator, step, n)
            step += n
            window.add(totals, n)
            self.epoch_sums.add(totals, n)
            if step % t.log_every == 0 or step == end:
                self._log_train(epoch, step, lr, window)
                window = Window(TRAIN_METRICS)
            if totals["stop"]:
                self._save()
                raise Preempted(
                    f"SIGTERM at step {step}: saved {self.checkpoints.describe_latest()}; "
                    "run the same command again to resume"
                )
            if step % t.checkpoint_every == 0 and step < end:
                self._save()
        if step % self.steps_per_epoch:  # the run ends inside an epoch (an epoch's end saves after its work)
            self._save()

    def _call_size(self, step: int, end: int) -> int:
        """Steps in the host call from `step`: `compute.steps_per_loop`, cut at the epoch's
        (or run's) end, at log and checkpoint steps and at the profiler window's ends."""
        t = self.config.train
        n = min(self.config.compute.steps_per_loop, end - step, t.log_every - step % t.log_every)
        return self.profile.limit(step, min(n, t.checkpoint_every - step % t.checkpoint_every))

    def _train_call(self, iterator, step: int, n: int) -> dict:
        """One host call of `n` steps from `step`; stops the run on a non-finite loss."""
        with self.profile.trace(step, n):
            stop = tf.constant(1.0 if self.stop.requested else 0.0)
            totals = {k: float(v) for k, v in self._train_loop(iterator, tf.constant(n), stop).items()}
        if not math.isfinite(totals["loss"]):
            where = f"step {step + 1}" if n == 1 else f"steps {step + 1}..{step + n}"
            raise TrainingError(
                f"non-finite loss at {where}; the last good checkpoint ({self.checkpoints.describe_latest()}) "
                "is left as it was"
            )
        return totals

    def _log_train(self, epoch: int, step: int, lr: float, window: Window) -> None:
        values = {**window.values(self.global_batch), "lr": lr}
        # wall time across restarts, Fig. 1's x-axis: in metrics.jsonl, not a curve
        self.reporter.scalars("train", step, values, extra={"elapsed_seconds": self._elapsed()})
        self.reporter.progress(epoch, self.config.train.epochs, step, values)

    def _end_epoch(self) -> None:
        """Sec. 5's end of an epoch: the validation error, the best checkpoint, the
        learning-rate schedule, the history entry."""
        step = int(self.step.numpy())
        epoch = step // self.steps_per_epoch - 1  # 0-based, the epoch that just ended
        metrics = self._evaluate_and_log(step, f"epoch {epoch + 1} eval")
        if metrics["top1_error"] < float(self.best_top1.numpy()):
            self.best_top1.assign(metrics["top1_error"])
            self._save(best=True)
        lr = self.schedule.lr(epoch)
        self.schedule.end_epoch(metrics["top1_error"])
        if self.schedule.status:
            self.reporter.line(f"lr schedule: {self.schedule.status}")
        train = self.epoch_sums.values()
        self.history.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "seconds": round(self._elapsed(), 2),
                "lr": lr,
                "train_loss": train["loss"],
                "train_top1_error": train["top1_error"],
                "train_top5_error": train["top5_error"],
                "eval_top1_error": metrics["top1_error"],
                "eval_top5_error": metrics["top5_error"],
            }
        )
        self.epochs_done.assign(epoch + 1)
        if self.runtime.chief:
            self.folder.write_history(self.history)

    def evaluate(self) -> dict:
        """Centre-crop loss, top-1/top-5 error and examples over the eval split."""
        iterator = iter(self._dataset(self.config.data.eval_split, training=False))

        def batches():
            # get_next_as_optional keeps workers in step when their shards end unevenly.
            while (batch := iterator.get_next_as_optional()).has_value():
                yield batch.get_value()

        totals = accumulate(batches(), self._eval_step)
        if not totals["count"]:
            raise data_lib.DataError(f"no image of the eval split {self.config.data.eval_split!r} could be read")
        return errors(totals)

    def _evaluate_and_log(self, step: int, label: str) -> dict:
        metrics = self.evaluate()
        self.last_eval = (step, metrics)
        self.reporter.scalars("eval", step, {k: metrics[k] for k in ("loss", "top1_error", "top5_error")})
        self.reporter.line(
            f"{label}: top-1 error {metrics['top1_error']:.4f}  top-5 error {metrics['top5_error']:.4f}  "
            f"({metrics['examples']} images)"
        )
        if self.bad_files.message():
            self.reporter.line(self.bad_files.message())
        return metrics

    def _finish(self) -> dict:
        """The final evaluation (results.json): that of the last epoch's end, if the run
        ended there."""
        step = int(self.step.numpy())
        if self.last_eval and self.last_eval[0] == step:
            metrics = dict(self.last_eval[1])
        else:
            metrics = self._evaluate_and_log(step, "final eval")
        seconds = self._elapsed()
        self.reporter.flush()
        self.reporter.line(
            f"done: top-1 error {metrics['top1_error']:.4f}  top-5 error {metrics['top5_error']:.4f}  "
            f"in {format_duration(seconds)}"
        )
        return {
            **metrics,
            "step": step,
            "crops": "center",
            "train_seconds": round(seconds, 1),
            "history": self.history,
            "bad_files": self.bad_files.summary(),
        }

    def _epoch_summaries(self, step: int, epoch: int) -> None:
        """At each epoch's start: weight histograms, the first images of the epoch's first
        batch as the net sees them (crop, flip and colour noise, with the mean image added
        back for display), the conv1 kernels (Fig. 3)."""
        if not self.runtime.chief:
            return
        c = self.config
        self.reporter.histograms("train", step, {v.path: v for v in self.model.trainable_variables})
        # An epoch's order does not depend on the batch size: these are the first rows of
        # the batch its first step trains on.
        first = data_lib.train_dataset(self.source, c.data, c.data.train_split, 4, c.train.seed, epoch)
        shown = dataclasses.replace(c.data, subtract_mean=False, input_scale=1.0, channel_order="rgb")
        images = data_lib.device_preprocess(next(iter(first)), self.stats.tensors(), shown)
        self.reporter.images("train", step, "inputs", tf.clip_by_value(images / 255.0, 0.0, 1.0), max_outputs=4)
        kernel = self.model.get_layer("conv1").kernel.numpy()  # (11, 11, 3, 96)
        grid = conv1_grid(kernel, 2 if c.model.two_columns else 1)
        self.reporter.images("train", step, "conv1_kernels", grid[None], max_outputs=1)


def check_data(config: Config, source: data_lib.Source, replicas: int) -> None:
    """Everything about the data and devices that would otherwise fail later."""
    c = config
    train_batch, eval_batch = c.train.batch_size, c.train.eval_batch_size or c.train.batch_size
    for key, batch in (("train.batch_size", train_batch), ("train.eval_batch_size", eval_batch)):
        if batch % replicas:
            raise ConfigError(f"{key}={batch} is not divisible by the {replicas} replicas")
    n_train, n_eval = source.sizes[c.data.train_split], source.sizes[c.data.eval_split]
    if n_train < train_batch:
        raise ConfigError(f"train.batch_size={train_batch} exceeds the {n_train} training examples")
    if n_eval == 0:
        raise ConfigError(f"the eval split {c.data.eval_split!r} of {c.data.source} has no examples")


def train_and_evaluate(
    config: Config | str | os.PathLike | None,
    workdir: str | os.PathLike | None,
    data: str | None = None,
    overrides: list[str] | dict = (),
) -> dict:
    """Trains `config` in `workdir` (resuming if it holds checkpoints) and evaluates;
    `workdir` and the paths in `config` relative to the working directory or absolute.

    `config`: a `Config`, a recipe (a file or a shipped recipe's name), or None for the
    `workdir` run's own config.json (a run to resume); `data` and `overrides` as the
    command's --data and --set. The run's config is resolved once (`runconfig.resolve`:
    paths, what it leaves to the data, a fine-tuning run's pretrained net) and validated
    once; how it is computed (the `compute` section) is resolved into the Runtime.
    The data, the batch sizes and the folder's checkpoints are checked before anything is
    written; the rest that can be checked is checked before the first step. The chief
    holds the folder's lock (`alexnet_tf.lock`: a second trainer there is refused) and
    writes workdir/config.json, classes.json, stats.npz, checkpoints/, tb/, history.json
    and results.json; returns the results.
    """
    resolved = runconfig.resolve(config, workdir=workdir, data=data, overrides=overrides)
    run = RunFolder(workdir)
    workdir = run.path
    config, source, pretrained = resolved.config, resolved.source, resolved.pretrained
    runtime = make_runtime(config)
    if runtime.chief and resolved.changed and not run.has_config():
        log.info("from %s: %s", config.finetune.init_from, "; ".join(resolved.changed))
    check_data(config, source, runtime.replicas)
    with lock.held(workdir, runtime.chief), disk_full_stops_run(workdir):
        check_resume(config, workdir)
        resume_from = resume_point(workdir, runtime.chief)
        os.makedirs(workdir, exist_ok=True)
        if runtime.chief:
            if pretrained and not run.has_stats():  # the pretrained net's statistics become the run's
                run.write_stats(pretrained.stats)
            run.write_config(config)
            run.write_classes(source.class_names)
        results = Trainer(config, workdir, runtime, source, resume_from).run()
        if runtime.chief:
            run.write_results(results)
    return results
