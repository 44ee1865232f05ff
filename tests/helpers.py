"""What the tests share: small configs, generated image folders, runs' weights, the
command line in a subprocess, TensorBoard event files."""

import atexit
import functools
import glob
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.config import load_recipe, override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.py")
PAPER = os.path.join(ROOT, "recipes", "paper.py")


@functools.cache
def bundled_stats() -> str:
    """The bundled Fashion-MNIST subset's mean image and colour statistics (a .npz path),
    computed on first use and kept for the rest of the test session (each tiny run would
    otherwise compute them again); importing this module computes nothing."""
    from alexnet_tf import data as data_lib

    folder = tempfile.mkdtemp(prefix="alexnet_tf_tests_")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "stats.npz")
    config = load_recipe(QUICKSTART)
    data_lib.dataset_stats(data_lib.open_source(config.data.source), config.data).save(path)
    return path


# The quickstart recipe cut to a few steps on a CPU (tiny_sets adds the statistics).
TINY = {
    "train.max_steps": 3,
    "train.batch_size": 32,
    "train.log_every": 1,
    "compute.jit_compile": False,
    "data.eval_examples": 64,
}


def tiny_sets(**extra) -> dict:
    """TINY, the bundled statistics (`data.stats_path`) and `extra`, as overrides."""
    return {**TINY, "data.stats_path": bundled_stats(), **extra}


def tiny(**extra):
    """The quickstart recipe (Fashion-MNIST, 67 px crops) with tiny_sets(**extra)."""
    return override(load_recipe(QUICKSTART), tiny_sets(**extra))


def folder_config(folder, **sets):
    """The quickstart recipe with `--data folder:FOLDER --set k=v ...`, as the command line resolves it."""
    return cli.recipe_config(QUICKSTART, f"folder:{folder}", [f"{k}={v}" for k, v in sets.items()])


def train_loop(config, strategy, global_batch):
    """(model, loop) of `config` as training builds them, the statistics ImageNet's."""
    from alexnet_tf import data as data_lib
    from alexnet_tf import steps as steps_lib
    from alexnet_tf.distribute import make_runtime

    c, runtime = config, make_runtime(config, strategy)
    model, optimizer, step = steps_lib.create_state(c.model, c.optim, c.train.seed, runtime, global_batch)
    stats = data_lib.Stats.imagenet(c.data.resize_size).tensors()
    return model, steps_lib.make_train_loop(model, optimizer, step, runtime, c.data, c.optim, stats)


def make_image_folder(root, classes=("a", "b", "c"), train_per_class=16, val_per_class=4, size=(36, 44), seed=0):
    """A folder in the README's layout, ROOT/{train,val}/<class>/*.jpg, of random images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                x = (rng.random((*size, 3)) * 255).astype(np.uint8)
                Image.fromarray(x).save(os.path.join(root, split, c, f"{c}{i}.jpg"), quality=90)
    return str(root)


def model_weights(workdir, which=""):
    """The model's variables in the newest checkpoint of a run (or of checkpoints/WHICH)."""
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints", which))
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("model/")}


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def train_command(workdir, sets=(), env=None, recipe=QUICKSTART, data=None):
    """`python -m alexnet_tf.train` in a subprocess, stdout and stderr merged and piped."""
    args = [sys.executable, "-m", "alexnet_tf.train", recipe, "--workdir", workdir]
    args += ["--data", data] if data else []
    for k, v in dict(sets).items():
        args += ["--set", f"{k}={v}"]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def python_in(cwd, *args, timeout=300) -> str:
    """stdout of `python ARGS` run in `cwd` (a user's working directory), TensorFlow's
    start-up lines off; fails the test, with its stderr, unless it exits 0."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def workers(workdir, sets, n=2):
    """`n` MultiWorkerMirroredStrategy processes of one run on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(n)]}
    sets = tiny_sets(
        **{"train.deterministic": True, "model.dropout": 0.0, **sets, "distribute.strategy": "multi_worker"}
    )
    return [
        train_command(
            workdir,
            sets.items(),
            env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
        )
        for i in range(n)
    ]


def event_files(folder):
    """The event files of one TensorBoard run folder, in the order they were begun: their
    names end in seconds, host, process and a count of writers, in decimal, so they are
    sorted by those numbers ("....10.v2" after "....9.v2"), not as text."""

    def numbers_first(path):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in os.path.basename(path).split(".")]

    return sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")), key=numbers_first)


def summaries(folder):
    """{tag: [(step, value proto)]} of the event files in one TensorBoard run folder."""
    out = {}
    for path in event_files(folder):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value))
    return out


def sets(values):
    """`--set k=v` arguments of a dict."""
    return [arg for k, v in dict(values).items() for arg in ("--set", f"{k}={v}")]


def net_in_memory(form="paper"):
    """A quickstart-size net made in memory, with no run folder: random weights, the
    bundled Fashion-MNIST's classes, ImageNet's statistics."""
    from alexnet_tf import data as data_lib
    from alexnet_tf.model import build_model
    from alexnet_tf.nets import TrainedNet

    config = override(load_recipe(QUICKSTART), {"model.dropout_form": form})
    model = build_model(config.model, seed=3)
    stats = data_lib.Stats.imagenet(config.data.resize_size)
    names = [f"class {i}" for i in range(config.model.num_classes)]
    return TrainedNet(config, model, stats, names, origin=f"memory ({form})")


def benchmark(name: str):
    """benchmarks/NAME.py as `python -m benchmarks.NAME` imports it from the clone's root
    (benchmarks/ is a development tool, not installed with the package)."""
    sys.path.insert(0, ROOT)
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path.remove(ROOT)
