"""Float32 is float32 in every command: a trained net, however it was loaded, and a
training run set TensorFlow's TF32 switch from their run's train.tf32."""

import dataclasses

import pytest
import tensorflow as tf
from helpers import tiny

from alexnet_tf.nets import TrainedNet

enabled = tf.config.experimental.tensor_float_32_execution_enabled


@pytest.fixture
def tf32_on():
    """TensorFlow's own default (TF32 on), restored to the session's setting afterwards."""
    before = enabled()
    tf.config.experimental.enable_tensor_float_32_execution(True)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


def with_tf32(config, value: bool):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, tf32=value))


def test_loading_a_run_turns_tf32_off(trained_workdir, tf32_on):
    """evaluate, export, serve (a run folder), figures and alexnet_tf.load_net all load
    the net with load_net: afterwards float32 is float32, as the run trained."""
    import alexnet_tf
    from alexnet_tf.applications import load_net

    net = load_net(trained_workdir)
    assert net.config.train.tf32 is False and not enabled()
    tf.config.experimental.enable_tensor_float_32_execution(True)
    alexnet_tf.load_net(trained_workdir)
    assert not enabled()


def test_a_trained_net_sets_its_runs_tf32(trained_workdir, tf32_on):
    from alexnet_tf.applications import load_net

    net = load_net(trained_workdir)
    TrainedNet(with_tf32(net.config, True), net.model, net.stats, net.class_names)
    assert enabled()
    TrainedNet(with_tf32(net.config, False), net.model, net.stats, net.class_names)
    assert not enabled()


def test_training_keeps_its_own_tf32_after_loading_a_pretrained_net(trained_workdir, tf32_on):
    """A fine-tuning run loads its pretrained net after setting up its runtime: the state
    it trains in is its own run's setting, not the pretrained run's."""
    from alexnet_tf import steps as steps_lib
    from alexnet_tf.applications import load_net
    from alexnet_tf.distribute import make_runtime

    config = tiny()
    runtime = make_runtime(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert not enabled()
    net = load_net(trained_workdir)
    TrainedNet(with_tf32(net.config, True), net.model, net.stats, net.class_names)  # the pretrained run's
    assert enabled()
    steps_lib.create_state(config.model, config.optim, 0, runtime, 32)
    assert not enabled()
