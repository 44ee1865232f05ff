"""The server's thread plan (alexnet_tf.serve.threads): model calls at once and TensorFlow's
threads per op, by the net's multiply-adds that the export records; set before TensorFlow
starts, from the command and from `make_server` in a fresh process."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import PAPER, QUICKSTART, python_in
from tensorflow.python.framework import ops as tf_ops

from alexnet_tf.config import load_recipe, override
from alexnet_tf.exporting import SETTINGS_FILE, export_saved_model
from alexnet_tf.model import build_model
from alexnet_tf.serve import make_server
from alexnet_tf.serve.threads import SMALL_NET, plan_threads
from alexnet_tf.serving_form import multiply_adds, serving_model


@pytest.mark.parametrize("recipe", [QUICKSTART, PAPER])
def test_multiply_adds_are_tensorflows_count_of_the_nets_flops(recipe):
    """Against TensorFlow's own flops of each Conv2D and MatMul in the traced net (two per
    multiply-add), in the training form that splits the columns and in the export's form."""
    config = load_recipe(recipe)
    model = build_model(config.model, conv_form="split", lrn_impl="ops")
    for net in (model, serving_model(model, config.data)):
        graph = (
            tf.function(lambda x, net=net: net(x, training=False))
            .get_concrete_function(tf.TensorSpec([1, *net.input_shape[1:]]))
            .graph
        )
        flops = sum(
            tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
            for op in graph.get_operations()
            if op.type in ("Conv2D", "MatMul")
        )
        assert flops > 0 and multiply_adds(net) * 2 == flops


def test_the_plan_by_the_nets_size():
    small, large = SMALL_NET - 1, SMALL_NET
    p = plan_threads(small, cores=2)
    assert (p.batch_threads, p.intra_op, p.inter_op) == (2, 1, -1) and "small net" in p.reason and p.inline
    p = plan_threads(small, cores=16)
    assert (p.batch_threads, p.intra_op) == (16, 1)
    for adds in (large, 724_406_816, None):  # a large net, or an export that does not say
        p = plan_threads(adds, cores=16)
        assert (p.batch_threads, p.intra_op, p.inter_op) == (1, 0, 0) and not p.inline
    assert "does not record" in plan_threads(None, cores=2).reason
    # what is given is kept, the rest follows the rule
    p = plan_threads(small, cores=2, batch_threads=1)
    assert (p.batch_threads, p.intra_op) == (1, 1) and "as given" in p.reason
    p = plan_threads(large, cores=2, intra_op=2, inter_op=1)
    assert (p.batch_threads, p.intra_op, p.inter_op) == (1, 2, 1) and not p.inline
    assert plan_threads(small, cores=2, inter_op=2).describe() == (
        "2 model calls at once, 1 TensorFlow thread per op (a small net, 100 M multiply-adds per image; "
        "the rest as given)"
    )
    assert (
        plan_threads(small, cores=2, batch_threads=3, intra_op=4, inter_op=2)
        .describe()
        .startswith("3 model calls at once, 4 TensorFlow threads per op (as given)")
    )
    p = plan_threads(large, cores=2, inter_op=-1)  # TF Serving's negative inter-op: the calling thread
    assert p.inline and p.describe().startswith("1 model call at once, all cores per op, each call on its own thread")


def _export(config, out, crops="center"):
    from alexnet_tf import data as data_lib
    from alexnet_tf.nets import TrainedNet

    net = TrainedNet(config, build_model(config.model), data_lib.Stats.imagenet(config.data.resize_size), list("abc"))
    return export_saved_model(net, out, crops=crops)


def test_the_export_records_its_multiply_adds_per_image(tmp_path, monkeypatch):
    config = override(load_recipe(QUICKSTART), {"model.num_classes": 3})
    expected = multiply_adds(serving_model(build_model(config.model), config.data))
    monkeypatch.chdir(tmp_path)
    for crops, views in (("center", 1), ("ten", 10)):
        _export(config, f"exports/{crops}/1", crops)
        with open(os.path.join(f"exports/{crops}/1", SETTINGS_FILE)) as f:
            assert json.load(f)["multiply_adds_per_image"] == expected * views


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    config = override(load_recipe(QUICKSTART), {"model.num_classes": 3})
    return _export(config, str(tmp_path_factory.mktemp("small") / "q" / "1"))


SERVE_AND_TELL = """
import sys
import threading
from alexnet_tf.serve import make_server
server = make_server(sys.argv[1], port=0, quiet=True, **{k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])})
import tensorflow as tf
print(server.threads)
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads(),
      sum(t.name.startswith("batch-") for t in threading.enumerate()))
server.server_close()
"""


def test_a_fresh_server_sets_tensorflows_threads_by_the_plan(small_export, tmp_path):
    """In a process of its own, from a user's working directory with a relative path: the
    quickstart net is small, so its calls run on one thread each, as many at once as there
    are cores; flags given are kept."""
    shutil.copytree(os.path.dirname(small_export), tmp_path / "exports" / "q")
    cores = len(os.sched_getaffinity(0))

    def tell(*flags):
        line, numbers = python_in(tmp_path, "-c", SERVE_AND_TELL, "exports/q", *flags).strip().splitlines()[-2:]
        return line, [int(n) for n in numbers.split()]

    line, numbers = tell()
    assert numbers == [1, 0, cores], line
    assert line.startswith(f"{cores} model call")
    assert "1 TensorFlow thread per op, each call on its own thread (a small net, 5 M multiply-adds" in line
    line, numbers = tell("intra_op_threads=2", "batch_threads=1", "inter_op_threads=3")
    assert numbers == [2, 3, 1], line


def test_a_server_in_a_process_where_tensorflow_runs_says_its_threads_stay(small_export):
    tf.constant(np.zeros(1)) + 1  # TensorFlow has started in this process
    before = tf.config.threading.get_intra_op_parallelism_threads()
    server = make_server(small_export, port=0, quiet=True)
    try:
        if before != 1:
            assert "already started in this process; its threads stay as they were" in server.threads
        assert tf.config.threading.get_intra_op_parallelism_threads() == before
    finally:
        server.server_close()


def test_the_command_prints_its_plan(small_export, tmp_path):
    shutil.copytree(os.path.dirname(small_export), tmp_path / "exports" / "q")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tf.serve", "exports/q", "--port", "0", "--batch-threads", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "/v1/models/alexnet; 1 model call at once, 1 TensorFlow thread per op, each call on its own thread" in line
    assert "the rest as given" in line
