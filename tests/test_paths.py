"""Paths as users give them: every command and `load_net` run from a working directory
with relative paths (run folders, checkpoints, data specs, exports, caffemodels) and
absolute ones alike, resolved in one place (`alexnet_tf.paths`). The slow tier runs the
README's and docs/'s commands as printed, relative paths and all, each in a subprocess
from a fresh working directory (tests/test_docs.py: train and resume, evaluate, export,
serve a run folder, figures, convert a caffemodel, load_net)."""

import json
import os

from helpers import make_image_folder, sets, tiny_sets

import alexnet_tf
from alexnet_tf import evaluate, export, figures, paths
from alexnet_tf.config import load_recipe, override
from alexnet_tf.serve.command import export_dir_of
from alexnet_tf.train import main as train_main


def small(**extra) -> dict:
    return tiny_sets(**{"train.max_steps": 2, "train.checkpoint_every": 1, **extra})


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
    assert train_main(["quickstart", "--workdir", "runs/q", *sets(small())]) == 0
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
    base = small(**{"train.batch_size": 8, "data.stats_path": "", "train.max_steps": 1})
    assert train_main(["quickstart", "--data", "folder:images", "--workdir", "runs/f", *sets(base)]) == 0
    with open(user_cwd / "runs" / "f" / "config.json") as f:
        assert json.load(f)["data"]["source"] == f"folder:{user_cwd / 'images'}"
    more = {**base, "train.max_steps": 2}
    assert train_main(["quickstart", "--data", "folder:./images", "--workdir", "runs/f", *sets(more)]) == 0
    assert "at step 1" in capsys.readouterr().out
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert train_main(["--workdir", str(user_cwd / "runs" / "f"), "--set", "train.max_steps=3"]) == 0
    assert "at step 2" in capsys.readouterr().out
