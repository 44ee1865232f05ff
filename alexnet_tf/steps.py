"""The step functions: a run's state, one SGD step (Sec. 5), one evaluation step, and
their metrics.

`create_state`, `make_train_loop` and `make_eval_step` are what `train` and `bench` and
the tests run (their metrics: `alexnet_tf.metrics`). The steps take batches as `data.train_dataset` and `data.eval_dataset`
make them (`alexnet_tf.data.batch`) and run the net's preprocessing inside the compiled
function. What runs where (strategy, XLA, the update inside it or not, column placement,
dtype policy) comes decided in a `distribute.Runtime`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_tf import columns, inference, optim
from alexnet_tf import data as data_lib
from alexnet_tf.config import ConfigError, DataConfig, ModelConfig, OptimConfig
from alexnet_tf.distribute import Runtime
from alexnet_tf.metrics import TRAIN_METRICS, correct
from alexnet_tf.model import build_model


def create_state(
    model_config: ModelConfig,
    optim_config: OptimConfig,
    seed: int,
    runtime: Runtime,
    global_batch: int,
    frozen: tuple = (),
):
    """(model, optimizer, step) of a run, made under the strategy's scope and the dtype
    policy: the net with the run's seed (the layers named in `frozen` not trainable;
    with Sec. 3.2's placement its weights split over the two columns' devices,
    `columns.place`), Sec. 5's SGD for the global batch (built, so that its slots exist
    before a compiled step), and the step counter."""
    # the run's float32 (distribute.setup_runtime set it; a pretrained net loaded since,
    # nets.TrainedNet, set its own run's)
    tf.config.experimental.enable_tensor_float_32_execution(runtime.tf32)
    with runtime.strategy.scope(), runtime.policy():
        model = build_model(model_config, seed, conv_form=runtime.forms.conv_form, lrn_impl=runtime.forms.lrn_impl)
        names = [layer.name for layer in model.layers]
        for name in frozen:
            if name not in names:
                raise ConfigError(f"finetune.freeze names no layer {name!r}; the net's layers: {', '.join(names)}")
            model.get_layer(name).trainable = False
        if runtime.columns:  # Sec. 3.2: each column's weights on its own device
            columns.place(model, list(runtime.columns))
        optimizer = optim.build_optimizer(optim_config, global_batch, runtime.forms.update_op)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    return model, optimizer, step


def model_call(model: keras.Model, runtime: Runtime):
    """`model` itself, or with Sec. 3.2's placement its column-placed forward pass."""
    if not runtime.columns:
        return model
    return lambda images, training: columns.forward(model, images, list(runtime.columns), training)


def _forward_backward(model, runtime: Runtime, data: DataConfig, optim_config: OptimConfig, stats, lr_scales):
    """`fn(batch, weight_sum) -> (grads, metrics)`: one replica's forward and backward
    pass with the weight decay of Sec. 5 added to the gradients, each variable's then
    multiplied by its `lr_scales` factor (its learning rate relative to the others')."""
    variables = model.trainable_variables
    call = model_call(model, runtime)
    compute_dtype = runtime.compute_dtype

    def fn(batch, weight_sum):
        images = data_lib.device_preprocess(batch, stats, data, compute_dtype)
        labels, w = batch["label"], batch["weight"]  # weight 0: a file that could not be decoded
        with tf.GradientTape() as tape:
            logits = call(images, training=True)  # (B, classes) float32
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            # The replica's weighted sum / the global batch's weight: the all-reduce sum
            # of the gradients is the gradient of the mean over the examples that were
            # read, so rows of unreadable files do not shrink the step.
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_example * w), weight_sum)
        # Sec. 3.2's placement: tf.gradients puts each gradient op beside its forward op,
        # so each column's backward pass runs on its own device; the tape leaves them to
        # TensorFlow's placer, which puts every unplaced op on the first device.
        grads = tf.gradients(loss, variables) if runtime.columns else tape.gradient(loss, variables)
        # Each replica adds its share of the decay so that the sum adds it once.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        grads = optim.add_weight_decay(grads, variables, optim_config, scale=1.0 / replicas)
        grads = [_scaled(g, f) for g, f in zip(grads, lr_scales)]
        return grads, {"loss": loss, **correct(labels, logits, w), "count": tf.reduce_sum(w)}

    return fn


def _scaled(grad: tf.Tensor, factor: float) -> tf.Tensor:
    """`grad * factor`, on the device of `grad` (a column's gradient stays on its own)."""
    if factor == 1.0:
        return grad
    with tf.device(grad.device):
        return grad * tf.cast(factor, grad.dtype)


def _global_weight(batch: dict) -> tf.Tensor:
    """The sum of the weights of the whole global batch, over every replica and worker."""
    total = tf.reduce_sum(batch["weight"])
    ctx = tf.distribute.get_replica_context()
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, total) if ctx.num_replicas_in_sync > 1 else total


def make_train_loop(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    step: tf.Variable,
    runtime: Runtime,
    data: DataConfig,
    optim_config: OptimConfig,
    stats: dict,
    lr_scales: list | None = None,
):
    """`train_loop(iterator, steps, stop=0.0)`: `steps` SGD steps in one host call.

    Each step takes `next(iterator)` (a per-replica batch), runs the forward/backward per
    replica (XLA-compiled with `runtime.jit`), applies the update (in the same XLA
    program with `runtime.update_in_xla`, else after it: the form that works under
    MirroredStrategy) and adds 1 to `step`. The call returns the sums over its steps of
    `loss`, `top1_correct`, `top5_correct` and `count` (the examples' weights: 0 for files
    that could not be decoded), and `stop`: the sum over every replica of every worker of
    the `stop` each passed in, so that all workers see one decision. `stats` are the
    statistics' tensors (`Stats.tensors`); `lr_scales`, one factor per trainable
    variable, multiplies its learning rate (fine-tuning). Build the state with
    `create_state` first.
    """
    variables = model.trainable_variables
    lr_scales = lr_scales or [1.0] * len(variables)
    forward_backward = _forward_backward(model, runtime, data, optim_config, stats, lr_scales)
    strategy, sum_ = runtime.strategy, tf.distribute.ReduceOp.SUM

    if runtime.update_in_xla:
        # One device: forward, backward and the update in one XLA program, so the
        # update's elementwise ops fuse instead of running one kernel each.
        @tf.function(jit_compile=True)
        def replica_step(batch):
            grads, metrics = forward_backward(batch, _global_weight(batch))
            optimizer.apply_gradients(zip(grads, variables))
            return metrics

    else:
        compiled = tf.function(forward_backward, jit_compile=runtime.jit)

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


def _skip_empty(call, classes: int):
    """`call(images, training)` that gives no logits (0, classes) for a batch of no images
    without running the net. The last eval batch of a split that does not fill every
    replica leaves some empty (tf.distribute hands them 0 rows), and TensorFlow's oneDNN
    convolutions (CPU) return their input for an empty batch, which the next layer
    refuses ("Incompatible shapes: [0,67,67,3] vs. [0,15,15,24]")."""

    def call_unless_empty(images, training=False):
        def run():
            return tf.cast(call(images, training=training), tf.float32)

        return tf.cond(tf.shape(images)[0] > 0, run, lambda: tf.zeros([0, classes], tf.float32))

    return call_unless_empty


def make_eval_step(model: keras.Model, runtime: Runtime, data: DataConfig, stats: dict):
    """`eval_step(batch)`: summed `loss_sum`, `top1_correct`, `top5_correct` and `count`
    of one distributed eval batch (centre crops; weight-0 rows are padding or unreadable
    files and count for nothing; a replica's batch may be empty, see `_skip_empty`)."""
    call = _skip_empty(model_call(model, runtime), model.output.shape[-1])
    compute_dtype = runtime.compute_dtype

    @tf.function(jit_compile=runtime.jit)
    def forward(batch):
        logits = inference.predict(call, batch, stats, data, output="logits", dtype=compute_dtype)
        labels, w = batch["label"], batch["weight"]
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return {"loss_sum": tf.reduce_sum(per_example * w), **correct(labels, logits, w), "count": tf.reduce_sum(w)}

    @tf.function
    def eval_step(batch):
        # Through a Python function: a jit-compiled tf.function handed straight to
        # MirroredStrategy.run reads every replica's variables from the first device
        # ("Trying to access resource .../replica_1 located in device CPU:1 from CPU:0").
        per_replica = runtime.strategy.run(lambda b: forward(b), args=(batch,))
        return {k: runtime.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    return eval_step
