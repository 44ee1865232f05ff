"""The training loop under tf.distribute, restarts and preemption (CPU devices)."""

import collections
import dataclasses
import json
import os
import re
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_weights, model_weights, train_command, train_loop, workers
from helpers import tiny as tiny_config
from helpers import tiny_sets as tiny_overrides

from alexnet_tf.errors import TrainingError
from alexnet_tf.model import Dropout, build_model
from alexnet_tf.training import train_and_evaluate

# Runs that repeat exactly: op determinism and no dropout.
SAME = {"train.deterministic": True, "model.dropout": 0.0}


def tiny(**extra):
    return tiny_config(**{**SAME, **extra})


def tiny_sets():
    """TINY and SAME as --set pairs for the command line."""
    return tiny_overrides(**SAME)


def graph_ops(graph):
    """The ops of `graph` and of the branches of its conditionals (a convolution runs in
    one: `model.rows_or_none`), recursively."""
    for op in graph.get_operations():
        yield op
        if op.type in ("If", "StatelessIf"):
            for branch in ("then_branch", "else_branch"):
                yield from graph_ops(graph._functions[op.get_attr(branch).name].graph)


def assert_weights_moved(a, b):
    assert any(not np.allclose(a[k], b[k]) for k in a)


def train_losses(workdir):
    """The logged training loss of each step (train.log_every=1) of a run."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.slow
def test_two_replicas_match_one_device(tmp_path):
    """The README's promise: three steps with dropout, random crops, flips and colour
    noise on one device and on two replicas give the same losses, weights and evaluation
    (48 images in batches of 32: the last leaves a replica empty), float rounding apart."""
    sets = {"train.max_steps": 3, "model.dropout": 0.5, "data.eval_examples": 48}
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    r1 = train_and_evaluate(tiny(**sets, **{"distribute.strategy": "one_device"}), one)
    r2 = train_and_evaluate(tiny(**sets, **{"distribute.strategy": "mirrored", "distribute.devices": "cpu:2"}), two)
    assert r1["step"] == r2["step"] == 3
    assert r1["examples"] == r2["examples"] == 48
    np.testing.assert_allclose(train_losses(two), train_losses(one), rtol=1e-5)
    np.testing.assert_allclose([r2["loss"], r2["top1_error"]], [r1["loss"], r1["top1_error"]], rtol=1e-5)
    assert_same_weights(model_weights(one), model_weights(two), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_update_inside_xla_matches_update_outside(tmp_path):
    """With XLA on one device the SGD update runs in the compiled step; the weights after
    3 steps (with dropout) equal those of the update run outside it, on one device and on
    two replicas."""
    from alexnet_tf.distribute import make_runtime

    runs = {
        "inside": {"distribute.strategy": "one_device"},
        "outside": {"distribute.strategy": "one_device", "compute.fused_update": False},
        "mirrored": {"distribute.strategy": "mirrored", "distribute.devices": "cpu:2"},
    }
    weights = {}
    for name, extra in runs.items():
        config = tiny(
            **{"train.max_steps": 3, "compute.jit_compile": True, "train.deterministic": False, "model.dropout": 0.5}
            | extra
        )
        assert make_runtime(config).update_in_xla == (name == "inside")
        train_and_evaluate(config, str(tmp_path / name))
        weights[name] = model_weights(str(tmp_path / name))
    assert_same_weights(weights["inside"], weights["outside"], rtol=1e-4, atol=1e-6)
    assert_same_weights(weights["inside"], weights["mirrored"], rtol=1e-4, atol=1e-6)
    no_jit = tiny(**{"compute.jit_compile": False, "distribute.strategy": "one_device"})
    assert not make_runtime(no_jit).update_in_xla


@pytest.mark.slow
def test_restart_equals_straight_run(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train_and_evaluate(tiny(**{"train.max_steps": 4}), straight)
    train_and_evaluate(tiny(**{"train.max_steps": 2}), split)
    after_two = model_weights(split)
    train_and_evaluate(tiny(**{"train.max_steps": 4}), split)
    assert_weights_moved(after_two, model_weights(split))
    assert_same_weights(model_weights(straight), model_weights(split))


def test_dropout_masks_of_two_replicas_are_the_rows_of_one_devices_mask():
    """Each replica zeroes the units that one device zeroes in its rows of the global
    batch: replica 0 rows 0-3, replica 1 rows 4-7 (independent masks, not one mask twice)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = Dropout(0.5, seed=1)
        layer.build((8, 64))
    one = Dropout(0.5, seed=1)
    one.build((8, 64))
    x = tf.reshape(tf.range(8 * 64, dtype=tf.float32) + 1.0, (8, 64))
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))

    @tf.function
    def run(batch):
        return strategy.run(lambda b: layer(b, training=True), args=(batch,))

    for _ in range(2):  # the next step draws the next mask on both
        a, b = (t.numpy() for t in strategy.experimental_local_results(run(next(iter(dataset)))))
        expected = one(x, training=True).numpy()
        np.testing.assert_array_equal(np.concatenate([a, b]), expected)
        a, b = a == 0, b == 0
        assert 0.3 < a.mean() < 0.7 and 0.3 < b.mean() < 0.7
        assert (a != b).mean() > 0.3  # independent masks disagree on about half the units


def test_replica_r_gets_rows_r_of_the_global_batch():
    """What model.Dropout relies on: under MirroredStrategy replica 0 trains on rows 0-15
    of one device's global batch of 32 and replica 1 on rows 16-31, crops, flips and
    colour noise included."""
    from alexnet_tf import data as data_lib
    from alexnet_tf.distribute import distributed_dataset, make_runtime

    config = tiny()
    source = data_lib.open_source(config.data.source, config.data)
    # (after make_runtime: tf.data's shuffle of an in-memory split also reads TensorFlow's
    # global seed, which setup_runtime sets from train.seed in every process of a run)
    runtime = make_runtime(config, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    one = next(iter(data_lib.train_dataset(source, config.data, "train", 32, seed=5, epoch=1)))
    per_replica = next(iter(distributed_dataset(runtime, source, config.data, 5, "train", 32, True, epoch=1)))
    for k, v in one.items():
        parts = [t.numpy() for t in runtime.strategy.experimental_local_results(per_replica[k])]
        assert [len(p) for p in parts] == [16, 16]
        np.testing.assert_array_equal(np.concatenate(parts), v.numpy(), err_msg=k)


def test_two_replicas_train_like_one_device_with_dropout():
    """Two SGD steps with dropout, random crops, flips and colour noise: the losses and the
    weights on two replicas are those of one device (float rounding apart)."""
    from alexnet_tf import data as data_lib

    config = tiny_config(**{"compute.jit_compile": False, "model.dropout": 0.5})
    assert config.data.random_flip and config.data.pca_noise_std > 0
    steps = [data_lib.synthetic_batch(config, 8, seed=s) for s in (3, 4)]
    rows = {k: tf.concat([b[k] for b in steps], 0) for k in steps[0]}

    def train(strategy):
        model, loop = train_loop(config, strategy, 8)
        dataset = tf.data.Dataset.from_tensor_slices(rows).batch(8)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        losses = [float(loop(iterator, tf.constant(1))["loss"]) for _ in steps]
        return losses, [v.numpy() for v in model.trainable_variables]

    one_losses, one_weights = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two_losses, two_weights = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)
    start = build_model(config.model, seed=config.train.seed).trainable_variables
    assert max(np.abs(a - b.numpy()).max() for a, b in zip(one_weights, start)) > 1e-4
    for a, b in zip(one_weights, two_weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(**{"train.max_steps": 2}), workdir)
    good = model_weights(workdir)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 4"):
        # an infinite rate: step 3 makes the weights non-finite, so step 4's loss is
        train_and_evaluate(tiny(**{"train.max_steps": 4, "optim.lr": float("inf")}), workdir)
    assert_same_weights(good, model_weights(workdir))


@pytest.mark.slow
def test_sigterm_saves_and_restart_loses_nothing(tmp_path):
    straight, preempted = str(tmp_path / "straight"), str(tmp_path / "preempted")
    steps = {"train.max_steps": 12}
    proc = train_command(preempted, {**tiny_sets(), **steps}.items())
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "step 2/12" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    out = "".join(seen) + rest
    assert proc.returncode == 75, out
    assert "SIGTERM at step" in out
    ckpt = tf.train.latest_checkpoint(os.path.join(preempted, "checkpoints"))
    stopped_at = int(ckpt.rsplit("-", 1)[1])
    assert 2 <= stopped_at < 12
    proc = train_command(preempted, {**tiny_sets(), **steps}.items())
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"at step {stopped_at}" in out
    train_and_evaluate(tiny(**steps), straight)
    assert_same_weights(model_weights(straight), model_weights(preempted))


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path):
    """Two workers of one replica each, with dropout: the weights of one process."""
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    procs = workers(multi, {"train.max_steps": 2, "model.dropout": 0.5})
    deadline = time.time() + 400
    outs = [p.communicate(timeout=max(1, deadline - time.time()))[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    assert "2 replica(s)" in outs[0]
    train_and_evaluate(tiny(**{"train.max_steps": 2, "model.dropout": 0.5}), single)
    one, two = model_weights(single), model_weights(multi)
    assert one.keys() == two.keys() and len(one) > 10
    for k in one:  # float rounding, relative to each tensor's scale (fc7's biases are near 1e-5)
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-4 * np.abs(one[k]).max(), err_msg=k)


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_both_at_one_step(tmp_path):
    """SIGTERM reaches worker 1 only: both workers agree on the step, the chief saves,
    both exit 75 in bounded time; restarted, both resume from that step, and the run
    ends with the weights of a two-worker run that was never stopped."""
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    procs = workers(stopped, {"train.max_steps": 12})
    seen = []
    for line in procs[1].stdout:
        seen.append(line)
        if "step 3/12" in line:
            procs[1].send_signal(signal.SIGTERM)
            break
    start = time.time()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert time.time() - start < 120
    outs[1] = "".join(seen) + outs[1]
    assert [p.returncode for p in procs] == [75, 75], outs
    steps = {int(re.search(r"SIGTERM at step (\d+)", out).group(1)) for out in outs}
    assert len(steps) == 1
    (stop,) = steps
    assert 3 <= stop < 12
    assert tf.train.latest_checkpoint(os.path.join(stopped, "checkpoints")).endswith(f"ckpt-{stop}")
    assert not os.listdir(os.path.join(stopped, "_nonchief"))  # the other worker's saves are not kept

    procs = workers(stopped, {"train.max_steps": 12})
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(f"at step {stop}" in out for out in outs)
    procs = workers(straight, {"train.max_steps": 12})
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_same_weights(model_weights(straight), model_weights(stopped))


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({}, None, True),
        ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("chief", 0), True),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("worker", 0), False),
    ],
)
def test_exactly_one_chief(cluster, task, chief):
    """The process that writes the run's files: with a `chief` job in TF_CONFIG that is
    the chief alone, not also worker 0."""
    import types

    from alexnet_tf.distribute import is_chief

    task_type, task_id = task or (None, None)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    assert is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief


@pytest.mark.parametrize("lrn_scope", ["column", "layer"])
def test_columns_placement_computes_the_model_on_two_devices(lrn_scope):
    """Sec. 3.2's placement: the same logits as the model, with each column's ops on its
    own device (the LRN within each column or over the layer, as the model's)."""
    from alexnet_tf import columns

    config = tiny(**{"model.lrn_scope": lrn_scope})
    model = build_model(config.model)
    x = tf.random.stateless_normal([4, 67, 67, 3], seed=[1, 2]) * 50
    fn = tf.function(lambda x: columns.forward(model, x, ["/cpu:0", "/cpu:1"]))
    np.testing.assert_allclose(fn(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    graph = fn.get_concrete_function(x).graph
    convs = [op for op in graph_ops(graph) if op.type == "Conv2D"]
    assert len(convs) == 10  # five layers, half the kernels of each on each device
    assert sorted(op.device[-5:] for op in convs) == ["CPU:0"] * 5 + ["CPU:1"] * 5


def test_columns_strategy_keeps_each_columns_weights_on_its_device(tmp_path):
    """Under distribute.strategy=columns every conv and fc layer's kernel and bias are two
    variables, column A's half of the output maps or units on the first device and column
    B's on the second, each with its momentum beside it; one SGD step (with dropout) gives
    one device's loss and weights, and the checkpoint restores into the one-device model."""
    from alexnet_tf import data as data_lib
    from alexnet_tf.model import model_variables

    config = tiny(**{"model.dropout": 0.5, "train.deterministic": False})
    cols = dataclasses.replace(
        config, distribute=dataclasses.replace(config.distribute, strategy="columns", devices="cpu:2")
    )
    from alexnet_tf import steps as steps_lib
    from alexnet_tf.distribute import make_runtime

    c, runtime = cols, make_runtime(cols)
    model, optimizer, step = steps_lib.create_state(c.model, c.optim, c.train.seed, runtime, 8)
    stats = data_lib.Stats.imagenet(c.data.resize_size).tensors()
    loop = steps_lib.make_train_loop(model, optimizer, step, runtime, c.data, c.optim, stats)
    halves = {v.path: v for v in model.trainable_variables}
    slots = [v for v in optimizer.variables if len(v.shape)]  # the momentums
    assert [m.shape for m in slots] == [v.shape for v in halves.values()]
    for m, v in zip(slots, halves.values()):
        assert m.value.device == v.value.device
    assert len(halves) == 8 * 4  # conv1-5, fc6-8: kernel and bias, two halves each
    for path, v in halves.items():
        column = path.rsplit("_", 1)[1]
        assert v.value.device.endswith({"a": "CPU:0", "b": "CPU:1"}[column]), (path, v.value.device)
        whole = model.get_layer(path.split("/")[0]).kernel if "kernel" in path else None
        if whole is not None:
            assert v.shape[-1] * 2 == whole.shape[-1] and v.shape[:-1] == whole.shape[:-1]
    batch = data_lib.synthetic_batch(config, 8, seed=3)
    # the backward pass and the update's inputs of each column on its own device too (left
    # unplaced, TensorFlow puts them on the first)
    forward_backward = steps_lib._forward_backward(model, runtime, c.data, c.optim, stats, [1.0] * len(halves))
    traced = tf.function(forward_backward).get_concrete_function(batch, tf.constant(8.0))
    kinds = ("Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput", "MatMul")
    placed = collections.Counter((op.type, op.device[-5:]) for op in graph_ops(traced.graph) if op.type in kinds)
    assert {device for _, device in placed} == {"CPU:0", "CPU:1"}, placed
    for kind in kinds:
        assert placed[(kind, "CPU:0")] == placed[(kind, "CPU:1")] > 0, placed
    grads, _ = traced.structured_outputs
    for g, path in zip(grads, halves):
        g = g.op.inputs[0] if g.op.type == "Identity" else g  # the function's output wrapper
        assert g.device.endswith({"a": "CPU:0", "b": "CPU:1"}[path.rsplit("_", 1)[1]]), (path, g.device)
    one_model, one_loop = train_loop(config, tf.distribute.OneDeviceStrategy("/cpu:0"), 8)
    loss = float(loop(iter([batch]), tf.constant(1))["loss"])
    assert loss == pytest.approx(float(one_loop(iter([batch]), tf.constant(1))["loss"]), rel=1e-5)
    for layer in one_model.layers:
        for name in ("kernel", "bias"):
            if hasattr(layer, name) and getattr(layer, name) is not None:
                mine = getattr(model.get_layer(layer.name), name).numpy()
                np.testing.assert_allclose(mine, getattr(layer, name).numpy(), rtol=1e-4, atol=1e-6)
    path = tf.train.Checkpoint(model=model_variables(model)).save(str(tmp_path / "ckpt"))
    plain = build_model(config.model, seed=7)
    tf.train.Checkpoint(model=model_variables(plain)).restore(path).assert_existing_objects_matched()
    for a, b in zip(plain.trainable_variables, one_model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_columns_strategy_trains_like_one_device(tmp_path):
    one, cols = str(tmp_path / "one"), str(tmp_path / "columns")
    train_and_evaluate(tiny(**{"train.max_steps": 3, "distribute.strategy": "one_device"}), one)
    r = train_and_evaluate(
        tiny(**{"train.max_steps": 3, "distribute.strategy": "columns", "distribute.devices": "cpu:2"}), cols
    )
    assert r["step"] == 3 and r["examples"] == 64
    assert_same_weights(model_weights(one), model_weights(cols), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "changes, needle",
    [({"compute.jit_compile": True}, "jit_compile=False"), ({"model.two_columns": False}, "two_columns=True")],
)
def test_columns_strategy_errors(changes, needle):
    from alexnet_tf.config import ConfigError, validate

    with pytest.raises(ConfigError, match=needle):
        validate(tiny(**{"distribute.strategy": "columns", "distribute.devices": "cpu:2", **changes}))


def test_weight_zero_rows_do_not_train():
    """An unreadable file's row (weight 0) changes neither the update nor the metrics;
    the same row with weight 1 does."""
    from alexnet_tf import data as data_lib

    config = tiny(**{"compute.jit_compile": False})
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    base = data_lib.synthetic_batch(config, 8, seed=3)
    other = data_lib.synthetic_batch(config, 8, seed=4)
    zero_last = tf.constant([1.0] * 6 + [0.0] * 2)

    def one_step(batch):
        model, loop = train_loop(config, strategy, 8)
        totals = loop(iter([batch]), tf.constant(1))
        return [v.numpy() for v in model.trainable_variables], {k: float(v) for k, v in totals.items()}

    def mixed(weight):  # rows 6 and 7 from `other`
        out = {k: tf.concat([base[k][:6], other[k][6:]], 0) for k in base}
        out["weight"] = weight
        return out

    w_a, m_a = one_step({**base, "weight": zero_last})
    w_b, m_b = one_step(mixed(zero_last))
    w_c, m_c = one_step(mixed(tf.ones(8)))
    assert m_a["count"] == 6 and m_c["count"] == 8
    assert m_a == m_b
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, c) for a, c in zip(w_a, w_c))


def test_unreadable_rows_do_not_shrink_the_step():
    """Rows of unreadable files (weight 0) leave the step of the others as it is: a batch
    of 8 with 2 such rows moves the weights as the batch of its 6 readable rows does, on
    one device and with the 8 rows split over two replicas (the 2 on one replica), and
    the logged loss is the mean cross-entropy of the 6 (computed here by Keras)."""
    from alexnet_tf import data as data_lib
    from alexnet_tf.model import build_model

    config = tiny(**{"compute.jit_compile": False})
    stats_tensors = data_lib.Stats.imagenet(config.data.resize_size).tensors()
    batch = data_lib.synthetic_batch(config, 8, seed=3)
    with_bad = {**batch, "weight": tf.constant([1.0] * 6 + [0.0] * 2)}
    readable = {k: v[:6] for k, v in batch.items()}

    def one_step(strategy, batch):
        model, loop = train_loop(config, strategy, 8)  # the same lr for both batches
        before = model(data_lib.device_preprocess(batch, stats_tensors, config.data), training=False)
        n = int(batch["label"].shape[0])
        dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(batch).batch(n))
        totals = loop(iter(dataset), tf.constant(1))
        return [v.numpy() for v in model.trainable_variables], float(totals["loss"]), before

    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    w_bad, loss_bad, logits = one_step(one, with_bad)
    w_ok, loss_ok, _ = one_step(one, readable)
    w_two, loss_two, _ = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), with_bad)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(batch["label"][:6], logits[:6])
    np.testing.assert_allclose([loss_bad, loss_ok, loss_two], float(expected), rtol=1e-5)
    moved = [np.abs(a - b.numpy()).max() for a, b in zip(w_ok, build_model(config.model, seed=0).trainable_variables)]
    assert max(moved) > 1e-4
    for a, b, c in zip(w_bad, w_ok, w_two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(c, b, rtol=1e-4, atol=1e-6)


def _eval_with(runtime, model, config, source, examples, global_batch):
    """Trainer.evaluate's loop: the summed metrics of the first `examples` eval images."""
    from alexnet_tf import data as data_lib
    from alexnet_tf import steps as steps_lib
    from alexnet_tf.distribute import distributed_dataset
    from alexnet_tf.metrics import accumulate

    data = dataclasses.replace(config.data, eval_examples=examples)
    stats = data_lib.Stats.imagenet(data.resize_size).tensors()
    step = steps_lib.make_eval_step(model, runtime, data, stats)
    iterator = iter(distributed_dataset(runtime, source, data, 0, data.eval_split, global_batch, training=False))

    def batches():
        while (batch := iterator.get_next_as_optional()).has_value():
            yield batch.get_value()

    return accumulate(batches(), step), stats


@pytest.mark.parametrize("conv_form", ["grouped", "split"])
@pytest.mark.parametrize("lrn_impl", ["ops", "matmul", "tf_op"])
def test_two_replica_eval_counts_every_image_once(conv_form, lrn_impl):
    """40 images in global batches of 32 (16 a replica): the last batch leaves replica 1
    empty. Every form takes the empty batch, and the sums are those of NumPy over the net's
    logits for the 40 images in one batch on one device: each image counted once."""
    from alexnet_tf import data as data_lib
    from alexnet_tf import steps as steps_lib
    from alexnet_tf.distribute import make_runtime

    config = tiny(**{"compute.conv_form": conv_form, "compute.lrn_impl": lrn_impl})
    source = data_lib.open_source(config.data.source, config.data)
    c, runtime = config, make_runtime(config, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    model, _, _ = steps_lib.create_state(c.model, c.optim, c.train.seed, runtime, 32)
    assert (model.get_layer("lrn1").implementation, model.get_layer("conv2").__class__.__name__) == (
        lrn_impl,
        "SplitConv2D" if conv_form == "split" else "Conv2D",
    )
    totals, stats = _eval_with(runtime, model, c, source, 40, 32)

    whole = next(iter(data_lib.eval_dataset(source, c.data, c.data.eval_split, 40, limit=40)))
    logits = model(data_lib.device_preprocess(whole, stats, c.data)).numpy().astype(np.float64)
    labels = whole["label"].numpy()
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert totals["count"] == 40
    assert totals["top1_correct"] == (logits.argmax(1) == labels).sum()
    assert totals["top5_correct"] == (top5 == labels[:, None]).any(1).sum()
    np.testing.assert_allclose(totals["loss_sum"], -log_p[np.arange(40), labels].sum(), rtol=1e-4)
