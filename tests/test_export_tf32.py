"""An exported SavedModel carries its run's TF32 setting (train.tf32), and the server of
an export folder sets it before it loads the model: Table 2's float32 is float32 there
too, unless the run trained with TF32."""

import dataclasses
import json
import os

import pytest
import tensorflow as tf

from alexnet_tf.exporting import SETTINGS_FILE, export_saved_model
from alexnet_tf.nets import TrainedNet
from alexnet_tf.serve.command import make_server

enabled = tf.config.experimental.tensor_float_32_execution_enabled


@pytest.fixture
def restore_tf32():
    before = enabled()
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


def served_tf32(export_dir: str, start: bool) -> bool:
    """TF32 in the serving process after `make_server(export_dir)`, which found it `start`."""
    tf.config.experimental.enable_tensor_float_32_execution(start)
    server = make_server(export_dir, port=0)
    server.server_close()
    return enabled()


def test_serving_an_export_sets_its_runs_tf32(trained_workdir, tmp_path, restore_tf32, monkeypatch):
    from alexnet_tf.applications import load_net

    net = load_net(trained_workdir)
    assert net.config.train.tf32 is False
    tf32 = dataclasses.replace(net.config, train=dataclasses.replace(net.config.train, tf32=True))
    monkeypatch.chdir(tmp_path)  # relative paths, as users give them
    export_saved_model(TrainedNet(tf32, net.model, net.stats, net.class_names), "exports/tf32/1")
    export_saved_model(net, "exports/f32/1")
    for folder, tf32_on in (("exports/tf32", True), ("exports/f32", False)):
        with open(os.path.join(folder, "1", SETTINGS_FILE)) as f:
            assert json.load(f)["tf32"] is tf32_on
        assert served_tf32(folder, start=not tf32_on) is tf32_on

    # An export written before the file existed: float32, train.tf32's default.
    os.remove(os.path.join("exports/f32/1", SETTINGS_FILE))
    assert served_tf32("exports/f32", start=True) is False
