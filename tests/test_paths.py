"""Paths as users give them: every command and `load_net` run from a working directory
with relative paths (run folders, checkpoints, data specs, exports, caffemodels) and
absolute ones alike, resolved in one place (`alexnet_tf.paths`)."""

import json
import os

import numpy as np
import pytest
from helpers import TINY, command, make_image_folder, sets

import alexnet_tf
from alexnet_tf import evaluate, export, figures, paths
from alexnet_tf.config import load_recipe, override
from alexnet_tf.serve.command import export_dir_of
from alexnet_tf.train import main as train_main

SMALL = {**TINY, "train.max_steps": 2, "train.checkpoint_every": 1}


def test_paths_resolve_against_the_working_directory(user_cwd):
    home = os.path.expanduser("~")
    assert paths.resolve("runs/q") == str(user_cwd / "runs" / "q")
    assert paths.resolve("~/x") == os.path.join(home, "x")
    assert paths.resolve("/data/x/../y") == "/data/y"
    assert paths.resolve("gs://bucket/x") == "gs://bucket/x" and paths.resolve("") == ""
    assert paths.resolve_spec("folder:images") == f"folder:{user_cwd / 'images'}"
    assert paths.resolve_spec("tfrecord:shards/*.tfrecord") == f"tfrecord:{user_cwd / 'shards'}/*.tfrecord"
    for spec in ("tfds:imagenet2012", "tfds:imagenette:train[:10%]", "builtin:fashion_mnist", "fashion_mnist"):
        assert paths.resolve_spec(spec) == spec
    config = override(
        load_recipe("quickstart"),
        {"data.source": "folder:d", "data.stats_path": "s.npz", "finetune.init_from": "runs/a", "data.label_file": ""},
    )
    resolved = paths.resolve_config(config)
    assert resolved.data.source == f"folder:{user_cwd / 'd'}" and resolved.data.stats_path == str(user_cwd / "s.npz")
    assert resolved.finetune.init_from == str(user_cwd / "runs" / "a") and resolved.data.label_file == ""


def test_a_relative_run_folder_trains_resumes_and_every_command_reads_it(user_cwd, capsys):
    """What the README pastes, in-process: train into runs/q, resume it (from its newest
    checkpoint, not from step 0), evaluate, export, figures, serve's run folder and
    load_net on `runs/q` and on one of its checkpoints."""
    assert train_main(["quickstart", "--workdir", "runs/q", *sets(SMALL)]) == 0
    assert train_main(["--workdir", "runs/q", "--set", "train.max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 2" in out and "step 3/3" in out
    checkpoints = user_cwd / "runs" / "q" / "checkpoints"
    assert sorted(f for f in os.listdir(checkpoints) if f.endswith(".index")) == [f"ckpt-{i}.index" for i in (1, 2, 3)]
    assert not (checkpoints / "unreadable").exists()
    with open(user_cwd / "runs" / "q" / "metrics.jsonl") as f:
        steps = [row["step"] for row in map(json.loads, f) if row["split"] == "train"]
    assert steps == sorted(set(steps))  # no step trained twice

    assert evaluate.main(["--workdir", "runs/q", "--crops", "center", "--out", "evals"]) == 0
    with open(user_cwd / "evals" / "evaluation.json") as f:
        assert json.load(f)["models"] == [str(checkpoints / "ckpt-3")]
    assert export.main(["--workdir", "runs/q", "--out", "exports/q/1"]) == 0
    assert (user_cwd / "exports" / "q" / "1" / "saved_model.pb").is_file()
    argv = ["--workdir", "runs/q/checkpoints/ckpt-2", "--out", "figs", "--queries", "1", "--neighbours", "1"]
    assert figures.main([*argv, "--train-examples", "8"]) == 0
    assert (user_cwd / "figs" / "fig4_neighbours.png").is_file()
    with export_dir_of("runs/q") as served:
        assert os.path.isfile(os.path.join(served, "1", "saved_model.pb"))

    assert alexnet_tf.load_net("runs/q").origin == str(checkpoints / "ckpt-3")
    assert alexnet_tf.load_net("runs/q/checkpoints/ckpt-2").origin == str(checkpoints / "ckpt-2")
    assert alexnet_tf.AlexNet(weights="runs/q").output.shape[-1] == 10


def test_a_relative_data_spec_is_the_same_data_wherever_the_run_resumes(user_cwd, tmp_path_factory, capsys):
    """`--data folder:images` is recorded as the folder it names: the run resumes from
    another working directory, and `folder:./images` is the same data, not other settings."""
    make_image_folder(user_cwd / "images")
    base = {**SMALL, "train.batch_size": 8, "data.stats_path": "", "train.max_steps": 1}
    assert train_main(["quickstart", "--data", "folder:images", "--workdir", "runs/f", *sets(base)]) == 0
    with open(user_cwd / "runs" / "f" / "config.json") as f:
        assert json.load(f)["data"]["source"] == f"folder:{user_cwd / 'images'}"
    more = {**base, "train.max_steps": 2}
    assert train_main(["quickstart", "--data", "folder:./images", "--workdir", "runs/f", *sets(more)]) == 0
    assert "at step 1" in capsys.readouterr().out
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert train_main(["--workdir", str(user_cwd / "runs" / "f"), "--set", "train.max_steps=3"]) == 0
    assert "at step 2" in capsys.readouterr().out


@pytest.mark.slow
def test_the_commands_in_subprocesses_from_a_working_directory(user_cwd, caffemodel):
    """Each command as a user runs it, from the folder the paths are relative to: train
    and resume, evaluate, export, figures, serve a run folder (asked over REST), convert
    a caffemodel and `load_net` in a Python process."""
    import shutil
    import subprocess
    import sys
    import urllib.request

    from helpers import free_ports

    def ok(*args):
        run = command(*args, cwd=user_cwd)
        assert run.returncode == 0, run.stdout[-3000:]
        return run.stdout

    ok("alexnet_tf.train", "quickstart", "--workdir", "runs/q", *sets(SMALL))
    out = ok("alexnet_tf.train", "--workdir", "runs/q", "--set", "train.max_steps=3")
    assert "at step 2" in out and "step 3/3" in out
    ok("alexnet_tf.evaluate", "--workdir", "runs/q", "--crops", "ten")
    ok("alexnet_tf.export", "--workdir", "runs/q", "--out", "exports/q/1")
    ok("alexnet_tf.figures", "--workdir", "runs/q", "--out", "figs", "--queries", "1", "--train-examples", "8")
    assert (user_cwd / "exports" / "q" / "1" / "saved_model.pb").is_file() and (user_cwd / "figs").is_dir()

    port = free_ports(1)[0]
    server = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tf.serve", "runs/q", "--port", str(port), "--quiet"],
        cwd=user_cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in server.stdout:
            if line.startswith("serving "):
                break
        status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/alexnet", timeout=60))
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        server.terminate()
        server.wait(timeout=60)

    shutil.copy(caffemodel, user_cwd / "bvlc_alexnet.caffemodel")
    shutil.copy(os.path.join(os.path.dirname(caffemodel), "imagenet_mean.binaryproto"), user_cwd)
    ok("alexnet_tf.convert", "bvlc_alexnet.caffemodel", "--workdir", "runs/bvlc", "--mean", "imagenet_mean.binaryproto")
    code = (
        "import alexnet_tf\n"
        "print(alexnet_tf.load_net('runs/q').origin)\n"
        "print(alexnet_tf.load_net('runs/bvlc').num_classes)\n"
        "print(alexnet_tf.load_net('bvlc_alexnet.caffemodel').num_classes)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=user_cwd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    origin, classes, direct = run.stdout.split("\n")[:3]
    assert origin == str(user_cwd / "runs" / "q" / "checkpoints" / "ckpt-3") and classes == direct == "1000"
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    assert alexnet_tf.load_net("runs/bvlc").predict_images(images).shape == (2, 1000)
