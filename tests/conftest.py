"""Test setup: two logical CPU devices, so MirroredStrategy tests run on a CPU-only host
(this must happen before anything starts the TensorFlow runtime), and one tiny trained
run (and its export) for the evaluate, export, serve and figures tests, trained once per
session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from alexnet_tf.distribute import configure_logical_cpus  # noqa: E402

configure_logical_cpus(2)
del tf

import pytest  # noqa: E402

from alexnet_tf.config import load_recipe, override  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**extra):
    """The quickstart recipe (Fashion-MNIST, 67 px crops) cut to a few steps."""
    base = {
        "train.max_steps": 3,
        "train.batch_size": 32,
        "train.checkpoint_every": 1,  # ckpt-1, ckpt-2, ckpt-3: distinct models to average
        "train.log_every": 3,
        "train.jit_compile": False,
        "data.eval_examples": 64,
    }
    base.update(extra)
    return override(load_recipe(os.path.join(ROOT, "recipes", "quickstart.py")), base)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    from alexnet_tf.train import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("run") / "quick")
    train_and_evaluate(tiny_config(), workdir)
    return workdir


@pytest.fixture(scope="session")
def export_dir(trained_workdir, tmp_path_factory):
    from alexnet_tf.evaluate import load_run
    from alexnet_tf.export import export

    out = str(tmp_path_factory.mktemp("export") / "alexnet" / "1")
    export(load_run(trained_workdir, split_form=True), out, crops="center")
    return out


def make_image_folder(root, classes=("a", "b", "c"), train_per_class=16, val_per_class=4, size=(36, 44), seed=0):
    """A folder in the README's layout, ROOT/{train,val}/<class>/*.jpg, of random images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                x = (rng.random((*size, 3)) * 255).astype(np.uint8)
                Image.fromarray(x).save(os.path.join(root, split, c, f"{c}{i}.jpg"), quality=90)
    return str(root)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))
