"""The step functions: a run's state, one SGD step (Sec. 5), one evaluation step, and
their metrics.

`create_state`, `make_train_loop` and `make_eval_step` are what `train` and `bench` and
the tests run; `correct`, `average_views`, `accumulate` and `errors` are the metrics that
`train` and `evaluate` share. The steps take batches as `data.train_dataset` and
`data.eval_dataset` make them (uint8 crops with their offsets, flip bits, colour-noise
coefficients, labels and weights) and run `data.device_preprocess` inside the compiled
function.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import optim
from alexnet_tf.config import Config
from alexnet_tf.distribute import column_devices, single_device
from alexnet_tf.model import build_model

TRAIN_METRICS = ("loss", "top1_correct", "top5_correct", "count")


def create_state(config: Config, strategy: tf.distribute.Strategy, global_batch: int):
    """(model, optimizer, step) of a run, made under `strategy.scope()`: the net with the
    run's seed, Sec. 5's SGD for the global batch (built, so that its slots exist before
    a compiled step), and the step counter. Set the dtype policy first."""
    with strategy.scope():
        model = build_model(config.model, seed=config.train.seed)
        optimizer = optim.build_optimizer(config.optim, global_batch)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    return model, optimizer, step


def stats_tensors(stats: data_lib.Stats) -> dict:
    """The dataset statistics as the constants `data.device_preprocess` reads."""
    return {k: tf.constant(getattr(stats, k)) for k in ("mean_image", "eigval", "eigvec")}


def correct(labels: tf.Tensor, scores: tf.Tensor, weight: tf.Tensor) -> dict:
    """Weighted counts of top-1 and top-5 hits (top-k with k = min(5, classes))."""
    k = min(5, scores.shape[-1])
    return {
        "top1_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, 1), tf.float32) * weight),
        "top5_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, k), tf.float32) * weight),
    }


def average_views(probs: tf.Tensor, views: int) -> tf.Tensor:
    """Sec. 4.1's test: the softmax (B * views, classes) averaged over each image's views."""
    return tf.reduce_mean(tf.reshape(probs, [-1, views, probs.shape[-1]]), axis=1)  # (B, classes)


def accumulate(batches, eval_step, progress=None) -> dict:
    """The sums of `eval_step(batch)` over `batches`, as floats; `progress(count)` after
    each batch."""
    totals = {}
    for batch in batches:
        for k, v in eval_step(batch).items():
            totals[k] = totals.get(k, 0.0) + float(v)
        if progress:
            progress(int(totals["count"]))
    return totals or {"count": 0.0}


def errors(totals: dict) -> dict:
    """top1_error, top5_error (and loss, where summed) over `examples` from `accumulate`'s sums."""
    count = max(totals["count"], 1.0)
    out = {
        "top1_error": 1.0 - totals.get("top1_correct", 0.0) / count,
        "top5_error": 1.0 - totals.get("top5_correct", 0.0) / count,
        "examples": int(totals["count"]),
    }
    if "loss_sum" in totals:
        out["loss"] = totals["loss_sum"] / count
    return out


def model_call(model: keras.Model, config: Config):
    """`model` itself, or with distribute.strategy=columns its column-placed forward pass."""
    if config.distribute.strategy != "columns":
        return model
    from alexnet_tf import columns

    devices = column_devices(config.distribute)
    return lambda images, training: columns.forward(model, images, devices, training)


def update_in_xla(config: Config, strategy: tf.distribute.Strategy) -> bool:
    """Whether the SGD update runs inside the step's XLA program (`train.fused_update`):
    with XLA on one device. Under MirroredStrategy it cannot (a mirrored variable's
    update is a cross-replica merge_call, which XLA cannot hold: TensorFlow fails with
    "failed to lift variable creations"), and the update runs after the compiled function."""
    return config.train.jit_compile and config.train.fused_update and single_device(strategy)


def _forward_backward(model: keras.Model, config: Config, stats: dict):
    """`fn(batch, weight_sum) -> (grads, metrics)`: one replica's forward and backward
    pass with the weight decay of Sec. 5 added to the gradients."""
    compute_dtype = keras.config.dtype_policy().compute_dtype
    variables = model.trainable_variables
    call = model_call(model, config)

    def fn(batch, weight_sum):
        images = data_lib.device_preprocess(batch, stats, config.data, compute_dtype)
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
        grads = optim.add_weight_decay(grads, variables, config.optim, scale=1.0 / replicas)
        return grads, {"loss": loss, **correct(labels, logits, w), "count": tf.reduce_sum(w)}

    return fn


def _global_weight(batch: dict) -> tf.Tensor:
    """The sum of the weights of the whole global batch, over every replica and worker."""
    total = tf.reduce_sum(batch["weight"])
    ctx = tf.distribute.get_replica_context()
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, total) if ctx.num_replicas_in_sync > 1 else total


def make_train_loop(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    config: Config,
    stats: dict,
    step: tf.Variable,
):
    """`train_loop(iterator, steps, stop=0.0)`: `steps` SGD steps in one host call.

    Each step takes `next(iterator)` (a per-replica batch), runs the XLA-compiled
    forward/backward per replica, applies the update (in the same XLA program on one
    device with `train.fused_update`, else after it: the form that works under
    MirroredStrategy) and adds 1 to `step`. The call returns the sums over its steps of
    `loss`, `top1_correct`, `top5_correct` and `count` (the examples' weights: 0 for files
    that could not be decoded), and `stop`: the sum over every replica of every worker of
    the `stop` each passed in, so that all workers see one decision. Build the model and
    the optimizer (`create_state`) under the dtype policy first.
    """
    variables = model.trainable_variables
    forward_backward = _forward_backward(model, config, stats)
    sum_ = tf.distribute.ReduceOp.SUM

    if update_in_xla(config, strategy):
        # One device: forward, backward and the update in one XLA program, so the
        # update's elementwise ops fuse instead of running one kernel each.
        @tf.function(jit_compile=True)
        def replica_step(batch):
            grads, metrics = forward_backward(batch, _global_weight(batch))
            optimizer.apply_gradients(zip(grads, variables))
            return metrics

    else:
        compiled = tf.function(forward_backward, jit_compile=config.train.jit_compile)

        def replica_step(batch):
            # the all-reduce outside the compiled function, as the update (see above)
            grads, metrics = compiled(batch, _global_weight(batch))
            optimizer.apply_gradients(zip(grads, variables))
            return metrics

    @tf.function
    def train_loop(iterator, steps, stop=0.0):
        totals = tf.zeros([len(TRAIN_METRICS)])
        for _ in tf.range(steps):
            per_replica = strategy.run(replica_step, args=(next(iterator),))
            totals += tf.stack([strategy.reduce(sum_, per_replica[k], axis=None) for k in TRAIN_METRICS])
            step.assign_add(1)
        stops = strategy.reduce(sum_, strategy.run(lambda: tf.identity(tf.cast(stop, tf.float32))), axis=None)
        return {**dict(zip(TRAIN_METRICS, tf.unstack(totals))), "stop": stops}

    return train_loop


def make_eval_step(model: keras.Model, strategy: tf.distribute.Strategy, config: Config, stats: dict):
    """`eval_step(batch)`: summed `loss_sum`, `top1_correct`, `top5_correct` and `count`
    of one distributed eval batch (centre crops; weight-0 rows are padding or unreadable
    files and count for nothing)."""
    call = model_call(model, config)
    compute_dtype = keras.config.dtype_policy().compute_dtype

    @tf.function(jit_compile=config.train.jit_compile)
    def forward(batch):
        images = data_lib.device_preprocess(batch, stats, config.data, compute_dtype)
        logits = call(images, training=False)
        labels, w = batch["label"], batch["weight"]
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return {"loss_sum": tf.reduce_sum(per_example * w), **correct(labels, logits, w), "count": tf.reduce_sum(w)}

    @tf.function
    def eval_step(batch):
        # Through a Python function: a jit-compiled tf.function handed straight to
        # MirroredStrategy.run reads every replica's variables from the first device
        # ("Trying to access resource .../replica_1 located in device CPU:1 from CPU:0").
        per_replica = strategy.run(lambda b: forward(b), args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    return eval_step
