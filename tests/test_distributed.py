"""The training loop under tf.distribute, restarts and preemption (CPU devices)."""

import os
import re
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY, assert_same_weights, model_weights, train_command, train_loop, workers
from helpers import tiny as tiny_config

from alexnet_tf.errors import TrainingError
from alexnet_tf.model import Dropout
from alexnet_tf.train import train_and_evaluate

# Runs that repeat exactly: op determinism and no dropout.
SAME = {"train.deterministic": True, "model.dropout": 0.0}


def tiny(**extra):
    return tiny_config(**{**SAME, **extra})


def tiny_sets():
    """TINY and SAME as --set pairs for the command line."""
    return {**TINY, **SAME}


def assert_weights_moved(a, b):
    assert any(not np.allclose(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_replicas_match_one_device(tmp_path):
    one = str(tmp_path / "one")
    two = str(tmp_path / "two")
    train_and_evaluate(tiny(**{"train.max_steps": 3, "distribute.strategy": "one_device"}), one)
    r = train_and_evaluate(
        tiny(**{"train.max_steps": 3, "distribute.strategy": "mirrored", "distribute.devices": "cpu:2"}), two
    )
    assert r["step"] == 3
    assert_same_weights(model_weights(one), model_weights(two), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_update_inside_xla_matches_update_outside(tmp_path):
    """With XLA on one device the SGD update runs in the compiled step; the weights after
    3 steps equal those of the update run outside it, on one device and on two replicas."""
    from alexnet_tf.distribute import make_runtime

    runs = {
        "inside": {"distribute.strategy": "one_device"},
        "outside": {"distribute.strategy": "one_device", "train.fused_update": False},
        "mirrored": {"distribute.strategy": "mirrored", "distribute.devices": "cpu:2"},
    }
    weights = {}
    for name, extra in runs.items():
        config = tiny(**{"train.max_steps": 3, "train.jit_compile": True, "train.deterministic": False, **extra})
        assert make_runtime(config)[1].update_in_xla == (name == "inside")
        train_and_evaluate(config, str(tmp_path / name))
        weights[name] = model_weights(str(tmp_path / name))
    assert_same_weights(weights["inside"], weights["outside"], rtol=1e-4, atol=1e-6)
    assert_same_weights(weights["inside"], weights["mirrored"], rtol=1e-4, atol=1e-6)
    no_jit = tiny(**{"train.jit_compile": False, "distribute.strategy": "one_device"})
    assert not make_runtime(no_jit)[1].update_in_xla


@pytest.mark.slow
def test_restart_equals_straight_run(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train_and_evaluate(tiny(**{"train.max_steps": 4}), straight)
    train_and_evaluate(tiny(**{"train.max_steps": 2}), split)
    after_two = model_weights(split)
    train_and_evaluate(tiny(**{"train.max_steps": 4}), split)
    assert_weights_moved(after_two, model_weights(split))
    assert_same_weights(model_weights(straight), model_weights(split))


def test_dropout_masks_differ_across_replicas():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = Dropout(0.5, seed=1)
        layer.build((4, 64))

    @tf.function
    def run():
        return strategy.run(lambda: layer(tf.ones((4, 64)), training=True))

    a, b = strategy.experimental_local_results(run())
    a, b = a.numpy() == 0, b.numpy() == 0
    assert 0.3 < a.mean() < 0.7 and 0.3 < b.mean() < 0.7
    assert (a != b).mean() > 0.3  # independent masks disagree on about half the units


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
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    procs = workers(multi, {"train.max_steps": 2})
    deadline = time.time() + 400
    outs = [p.communicate(timeout=max(1, deadline - time.time()))[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    assert "2 replica(s)" in outs[0]
    train_and_evaluate(tiny(**{"train.max_steps": 2}), single)
    assert_same_weights(model_weights(single), model_weights(multi), rtol=1e-4, atol=1e-6)


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


def test_columns_placement_computes_the_model_on_two_devices():
    """Sec. 3.2's placement: the same logits as the model, with each column's ops on its
    own device."""
    from alexnet_tf import columns
    from alexnet_tf.model import build_model

    config = tiny()
    model = build_model(config.model)
    x = tf.random.stateless_normal([4, 67, 67, 3], seed=[1, 2]) * 50
    fn = tf.function(lambda x: columns.forward(model, x, ["/cpu:0", "/cpu:1"]))
    np.testing.assert_allclose(fn(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    graph = fn.get_concrete_function(x).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert len(convs) == 10  # five layers, half the kernels of each on each device
    assert sorted(op.device[-5:] for op in convs) == ["CPU:0"] * 5 + ["CPU:1"] * 5


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
    [({"train.jit_compile": True}, "jit_compile=False"), ({"model.two_columns": False}, "two_columns=True")],
)
def test_columns_strategy_errors(changes, needle):
    from alexnet_tf.config import ConfigError

    with pytest.raises(ConfigError, match=needle):
        tiny(**{"distribute.strategy": "columns", "distribute.devices": "cpu:2", **changes})


def test_weight_zero_rows_do_not_train():
    """An unreadable file's row (weight 0) changes neither the update nor the metrics;
    the same row with weight 1 does."""
    from alexnet_tf import data as data_lib

    config = tiny(**{"train.jit_compile": False})
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

    config = tiny(**{"train.jit_compile": False})
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
