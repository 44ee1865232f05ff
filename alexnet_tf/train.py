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
import signal
import sys
import threading
import time

import keras
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import optim
from alexnet_tf.config import Config, ConfigError, save, to_dict, validate
from alexnet_tf.distribute import make_strategy, single_device
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
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)


def _check_workdir(config: Config, workdir: str) -> None:
    """A workdir holds one run: resuming with a different model would mix weights."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    new = to_dict(config)
    for section in ("model",):
        if old.get(section) != new[section]:
            changed = sorted(k for k in new[section] if old.get(section, {}).get(k) != new[section][k])
            raise ConfigError(
                f"{workdir} holds a run with a different {section} config ({', '.join(changed)}); "
                "use a new --workdir or the same recipe and overrides"
            )


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


def model_call(model: keras.Model, config: Config):
    """`model` itself, or with distribute.strategy=columns its column-placed forward pass."""
    if config.distribute.strategy != "columns":
        return model
    from alexnet_tf import columns
    from alexnet_tf.distribute import column_devices

    devices = column_devices(config.distribute)
    return lambda images, training: columns.forward(model, images, devices, training)


def update_in_xla(config: Config, strategy: tf.distribute.Strategy) -> bool:
    """Whether the SGD update runs inside the step's XLA program (`train.fused_update`):
    with XLA on one device. Under MirroredStrategy it cannot (a mirrored variable's
    update is a cross-replica merge_call, which XLA cannot hold: TensorFlow fails with
    "failed to lift variable creations"), and the update runs after the compiled function."""
    return config.train.jit_compile and config.train.fused_update and single_device(strategy)


def make_train_loop(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    config: Config,
    stats_tensors: dict,
    step: tf.Variable,
):
    """The training step, `train_loop(iterator, steps)`: `steps` SGD steps in one host call.

    Each step takes `next(iterator)` (a per-replica batch dict as `data.make_dataset`
    makes them), runs the XLA-compiled forward/backward per replica, applies the update
    (in the same XLA program on one device with `train.fused_update`, else outside it:
    the form that works under MirroredStrategy) and adds 1 to `step`; the call returns
    the sums of loss, top-1 and top-5 correct and `count` (the examples' weights: 0 for
    files that could not be decoded) over its steps. Build the model and the optimizer (`optimizer.build`) under `strategy.scope()`
    and the dtype policy first; `alexnet_tf.bench train` times this same function.
    """
    c = config
    compute_dtype = keras.config.dtype_policy().compute_dtype
    variables = model.trainable_variables
    call = model_call(model, c)

    def global_weight(batch):
        """The sum of the weights of the whole global batch, over every replica and worker."""
        total = tf.reduce_sum(batch["weight"])
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, total) if ctx.num_replicas_in_sync > 1 else total

    def forward_backward(batch, weight_sum):
        images = data_lib.device_preprocess(batch, stats_tensors, c.data, compute_dtype)
        labels, w = batch["label"], batch["weight"]  # weight 0: a file that could not be decoded
        with tf.GradientTape() as tape:
            logits = call(images, training=True)  # (B, classes) float32
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            # The replica's weighted sum / the global batch's weight: the all-reduce sum
            # of the gradients is the gradient of the mean over the examples that were
            # read, so rows of unreadable files do not shrink the step.
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_example * w), weight_sum)
        grads = tape.gradient(loss, variables)
        # Each replica adds its share of the decay so that the sum adds it once.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        grads = optim.add_weight_decay(grads, variables, c.optim, scale=1.0 / replicas)
        metrics = {
            "loss": loss,
            "top1_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32) * w),
            "top5_correct": tf.reduce_sum(
                tf.cast(tf.math.in_top_k(labels, logits, min(5, logits.shape[-1])), tf.float32) * w
            ),
            "count": tf.reduce_sum(w),
        }
        return grads, metrics

    if update_in_xla(c, strategy):
        # One device: forward, backward and the update in one XLA program, so the
        # update's elementwise ops fuse instead of running one kernel each.
        @tf.function(jit_compile=True)
        def replica_step(batch):
            grads, metrics = forward_backward(batch, global_weight(batch))
            optimizer.apply_gradients(zip(grads, variables))
            return metrics

    else:
        compiled = tf.function(forward_backward, jit_compile=c.train.jit_compile)

        def replica_step(batch):
            # the all-reduce outside the compiled function, as the update (see above)
            grads, metrics = compiled(batch, global_weight(batch))
            optimizer.apply_gradients(zip(grads, variables))
            return metrics

    @tf.function
    def train_loop(iterator, steps):
        keys = ("loss", "top1_correct", "top5_correct", "count")
        totals = tf.zeros([len(keys)])
        for _ in tf.range(steps):
            per_replica = strategy.run(replica_step, args=(next(iterator),))
            totals += tf.stack([strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None) for k in keys])
            step.assign_add(1)
        return dict(zip(keys, tf.unstack(totals)))

    return train_loop


class Trainer:
    """Holds the state of one run; `train_and_evaluate` drives it."""

    def __init__(self, config: Config, workdir: str):
        self.config = config
        self.workdir = workdir
        c = config
        self.strategy = make_strategy(c.distribute)
        self.source = data_lib.open_source(c.data.source, c.data)
        if self.source.num_classes != c.model.num_classes:
            raise ConfigError(
                f"{c.data.source} has {self.source.num_classes} classes but model.num_classes="
                f"{c.model.num_classes}; set model.num_classes={self.source.num_classes}"
            )
        self.global_batch = c.train.batch_size
        replicas = self.strategy.num_replicas_in_sync
        if self.global_batch % replicas:
            raise ConfigError(f"train.batch_size={self.global_batch} is not divisible by {replicas} replicas")
        self.eval_batch = c.train.eval_batch_size or c.train.batch_size
        n_train = self.source.sizes[c.data.train_split]
        self.steps_per_epoch = n_train // self.global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size={self.global_batch} exceeds the {n_train} training examples")
        self.total_steps = c.train.epochs * self.steps_per_epoch
        if c.train.max_steps:
            self.total_steps = min(self.total_steps, c.train.max_steps)

        self.reporter = Reporter(workdir, self.total_steps, chief=is_chief(self.strategy))
        self.stats = self._stats()
        with self.strategy.scope():
            self.model = build_model(c.model, seed=c.train.seed)
            self.optimizer = optim.build_optimizer(c.optim, self.global_batch)
            self.optimizer.build(self.model.trainable_variables)
            self.schedule = optim.LearningRateSchedule(c.optim, self.global_batch)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best_top1 = tf.Variable(float("inf"), trainable=False, name="best_top1_error")
        self.stats_tensors = {
            "mean_image": tf.constant(self.stats.mean_image),
            "eigval": tf.constant(self.stats.eigval),
            "eigvec": tf.constant(self.stats.eigvec),
        }
        self.checkpoint = tf.train.Checkpoint(
            model=model_variables(self.model),
            optimizer=self.optimizer,
            schedule=self.schedule,
            step=self.step,
            best=self.best_top1,
        )
        ckpt_dir = os.path.join(workdir, "checkpoints")
        if not is_chief(self.strategy):
            ckpt_dir = os.path.join(workdir, "_nonchief", f"worker{self.strategy.cluster_resolver.task_id}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir, max_to_keep=c.train.keep_checkpoints)
        # The checkpoint with the lowest validation error so far, kept apart.
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(ckpt_dir, "best"), max_to_keep=1, checkpoint_name="best"
        )
        self._preempted = False
        self._train_loop = self._make_train_loop()
        self._eval_step = self._make_eval_step()

    # ---------------------------------------------------------------- setup
    def _stats(self) -> data_lib.Stats:
        """The mean image and RGB covariance of Sec. 2 and 4.1: the stats file's, else
        computed over the training split on the first run and kept in the workdir."""
        d = self.config.data
        path = os.path.join(self.workdir, "stats.npz")
        if os.path.exists(path) and not d.stats_path:
            return data_lib.Stats.load(path)
        progress = None
        if not d.stats_path:
            n = self.source.sizes[d.train_split]
            self.reporter.line(
                f"computing the mean image and RGB covariance (Sec. 2, 4.1) over the {n} training images, "
                f"once; to reuse them elsewhere: --set data.stats_path={path}"
            )
            progress = Progress(n, "statistics", stream=sys.stdout)
        stats = data_lib.dataset_stats(self.source, d, d.train_split, progress and progress.update)
        if progress:
            progress.update(n, final=True)
        stats.save(path + ".tmp.npz")
        os.replace(path + ".tmp.npz", path)  # never a half-written file for a resume to read
        return stats

    def _dataset(self, split: str, training: bool, epoch: int = 0, skip_batches: int = 0):
        batch = self.global_batch if training else self.eval_batch
        return distributed_dataset(
            self.strategy, self.source, self.config, split, batch, training, epoch=epoch, skip_batches=skip_batches
        )

    # ---------------------------------------------------------------- steps
    def _make_train_loop(self):
        return make_train_loop(self.model, self.optimizer, self.strategy, self.config, self.stats_tensors, self.step)

    def _make_eval_step(self):
        c = self.config
        strategy = self.strategy
        call = model_call(self.model, c)
        compute_dtype = keras.config.dtype_policy().compute_dtype

        @tf.function(jit_compile=c.train.jit_compile)
        def forward(batch):
            images = data_lib.device_preprocess(batch, self.stats_tensors, c.data, compute_dtype)
            logits = call(images, training=False)
            labels, w = batch["label"], batch["weight"]
            k = min(5, logits.shape[-1])
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            return {
                "loss_sum": tf.reduce_sum(per_example * w),
                "top1_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32) * w),
                "top5_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32) * w),
                "count": tf.reduce_sum(w),
            }

        @tf.function
        def eval_step(batch):
            # Through a Python function: a jit-compiled tf.function handed straight to
            # MirroredStrategy.run reads every replica's variables from the first device
            # ("Trying to access resource .../replica_1 located in device CPU:1 from CPU:0").
            per_replica = strategy.run(lambda b: forward(b), args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        return eval_step

    # ---------------------------------------------------------------- phases
    def evaluate(self) -> dict:
        """Centre-crop top-1/top-5 error over the eval split."""
        c = self.config
        iterator = iter(self._dataset(c.data.eval_split, training=False))
        totals = None
        while True:
            # get_next_as_optional keeps workers in step when their shards end unevenly.
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            out = self._eval_step(batch.get_value())
            totals = out if totals is None else {k: totals[k] + out[k] for k in totals}
        count = float(totals["count"])
        return {
            "loss": float(totals["loss_sum"]) / count,
            "top1_error": 1.0 - float(totals["top1_correct"]) / count,
            "top5_error": 1.0 - float(totals["top5_correct"]) / count,
            "examples": int(count),
        }

    def restore(self) -> int:
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            self.reporter.line(f"resumed from {latest} at step {int(self.step.numpy())}")
        return int(self.step.numpy())

    def save(self) -> None:
        self.manager.save(checkpoint_number=int(self.step.numpy()))

    @contextlib.contextmanager
    def _sigterm_saves(self):
        """SIGTERM (preemption) -> finish the host call in flight, save, raise Preempted."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self._preempted = True

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _log_epoch_summaries(self, step: int, epoch: int) -> None:
        """Weight histograms, a few augmented inputs, the conv1 kernels (Fig. 3)."""
        if not self.reporter.chief:
            return
        self.reporter.histograms("train", step, {v.path: v for v in self.model.trainable_variables})
        c = self.config
        few = dataclasses.replace(c.data, shuffle_buffer=1)
        batch = next(iter(data_lib.make_dataset(self.source, few, c.data.train_split, 4, True, c.train.seed, epoch)))
        inputs = data_lib.apply_flips(batch["image"], batch["flip"])
        self.reporter.images("train", step, "augmented_inputs", inputs, max_outputs=4)
        kernel = self.model.get_layer("conv1").kernel.numpy()  # (11, 11, 3, 96)
        grid = conv1_grid(kernel, 2 if c.model.two_columns else 1)
        self.reporter.images("train", step, "conv1_kernels", grid[None], max_outputs=1)

    def run(self) -> dict:
        with self._sigterm_saves():
            return self._run()

    def _run(self) -> dict:
        c = self.config
        t = c.train
        step = self.restore()
        self.reporter.line(
            f"training {self.total_steps} steps ({self.steps_per_epoch} per epoch, global batch "
            f"{self.global_batch}, {self.strategy.num_replicas_in_sync} replica(s)) in {self.workdir}"
        )
        window_start, window_steps, window = time.perf_counter(), 0, None
        start = time.perf_counter()
        history_path = os.path.join(self.workdir, "history.json")
        history = []
        if os.path.exists(history_path):
            with open(history_path) as f:
                history = [h for h in json.load(f) if h["step"] <= step]
        elapsed_before = history[-1]["seconds"] if history else 0.0
        while step < self.total_steps:
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            lr = self.schedule.lr(epoch)
            self.optimizer.learning_rate.assign(lr)
            iterator = iter(self._dataset(c.data.train_split, training=True, epoch=epoch, skip_batches=in_epoch))
            if in_epoch == 0:
                self._log_epoch_summaries(step, epoch)
            epoch_end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
            epoch_totals, epoch_steps = None, 0
            while step < epoch_end:
                n = min(t.steps_per_loop, epoch_end - step)
                n = min(n, t.log_every - step % t.log_every, t.checkpoint_every - step % t.checkpoint_every)
                if t.profile_steps and step == t.profile_steps[0]:
                    tf.profiler.experimental.start(os.path.join(self.workdir, "tb", "profile"))
                totals = self._train_loop(iterator, tf.constant(n))
                if t.profile_steps and step < t.profile_steps[1] <= step + n:
                    tf.profiler.experimental.stop()
                totals = {k: float(v) for k, v in totals.items()}
                if not math.isfinite(totals["loss"]):
                    where = f"step {step + 1}" if n == 1 else f"steps {step + 1}..{step + n}"
                    raise TrainingError(
                        f"non-finite loss at {where}; the last good checkpoint "
                        f"({self.manager.latest_checkpoint}) is left as it was"
                    )
                step += n
                window_steps += n
                window = totals if window is None else {k: window[k] + totals[k] for k in window}
                epoch_steps += n
                epoch_totals = totals if epoch_totals is None else {k: epoch_totals[k] + totals[k] for k in totals}
                if step % t.log_every == 0 or step == epoch_end:
                    elapsed = time.perf_counter() - window_start
                    images = window_steps * self.global_batch
                    values = {
                        "loss": window["loss"] / window_steps,
                        "top1_error": 1 - window["top1_correct"] / max(window["count"], 1),
                        "top5_error": 1 - window["top5_correct"] / max(window["count"], 1),
                        "lr": lr,
                        "images_per_sec": images / elapsed,
                        "step_time_ms": 1000 * elapsed / window_steps,
                        # wall time of the run so far, across restarts (Fig. 1's x-axis)
                        "elapsed_seconds": elapsed_before + time.perf_counter() - start,
                    }
                    self.reporter.scalars("train", step, values)
                    self.reporter.progress(epoch, t.epochs, step, values)
                    window_start, window_steps, window = time.perf_counter(), 0, None
                if step % t.checkpoint_every == 0 and step < epoch_end:
                    self.save()
                if self._preempted:
                    self.save()
                    raise Preempted(
                        f"SIGTERM at step {step}: saved {self.manager.latest_checkpoint}; "
                        "run the same command again to resume"
                    )
            if step % self.steps_per_epoch == 0:
                # End of an epoch: validation error drives the Sec. 5 schedule.
                metrics = self.evaluate()
                self.reporter.scalars("eval", step, metrics)
                self.reporter.line(
                    f"epoch {epoch + 1} eval: top-1 error {metrics['top1_error']:.4f}  "
                    f"top-5 error {metrics['top5_error']:.4f}  ({metrics['examples']} images)"
                )
                if data_lib.BAD_FILES.message():
                    self.reporter.line(data_lib.BAD_FILES.message())
                if metrics["top1_error"] < float(self.best_top1.numpy()):
                    self.best_top1.assign(metrics["top1_error"])
                    self.best_manager.save(checkpoint_number=step)
                if self.schedule.end_epoch(metrics["top1_error"]):
                    self.reporter.line(f"validation error stopped improving: lr -> {self.schedule.lr(epoch + 1):.3g}")
                elif self.schedule.waiting() and not self.schedule.reductions.numpy():
                    self.reporter.line(
                        "validation error not yet below its first value by "
                        f"{c.optim.plateau_start_drop:g}: the plateau schedule waits (Sec. 5)"
                    )
                images = max(epoch_totals["count"], 1)
                history.append(
                    {
                        "epoch": epoch + 1,
                        "step": step,
                        "seconds": round(elapsed_before + time.perf_counter() - start, 2),
                        "lr": lr,
                        # over the steps of this epoch run since the last (re)start
                        "train_loss": epoch_totals["loss"] / epoch_steps,
                        "train_top1_error": 1 - epoch_totals["top1_correct"] / images,
                        "eval_top1_error": metrics["top1_error"],
                        "eval_top5_error": metrics["top5_error"],
                    }
                )
                if self.reporter.chief:
                    with open(history_path, "w") as f:
                        json.dump(history, f, indent=1)
            self.save()
        final = self.evaluate()
        final.update(
            step=int(self.step.numpy()),
            crops="center",
            train_seconds=round(time.perf_counter() - start, 1),
            history=history,
            bad_files=data_lib.bad_file_summary(),
        )
        self.reporter.scalars("eval", step, final)
        self.reporter.flush()
        self.reporter.line(
            f"done: top-1 error {final['top1_error']:.4f}  top-5 error {final['top5_error']:.4f}  "
            f"in {format_duration(final['train_seconds'])}"
        )
        return final


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

    Writes workdir/config.json, checkpoints/, tb/ and results.json; returns the results.
    """
    config = validate(config)
    os.makedirs(workdir, exist_ok=True)
    _check_workdir(config, workdir)
    save(config, os.path.join(workdir, "config.json"))
    setup_runtime(config)
    with dtype_policy(config.train.precision):
        trainer = Trainer(config, workdir)
        with open(os.path.join(workdir, "classes.json"), "w") as f:
            json.dump(trainer.source.class_names, f)
        results = trainer.run()
    if is_chief(trainer.strategy):
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
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
