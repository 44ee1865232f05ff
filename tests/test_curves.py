"""The training-curves figure: the numbers it draws are the run's history (errors in %,
the rate each epoch ran at, a mark after each epoch that ended with a cut), the PNG is a
real 800 x 600 image, and `figures --curves-only` writes it from a run folder given by a
relative path."""

import json
import math
import os

import numpy as np
import pytest

from alexnet_tf import curves
from alexnet_tf.figures import main

pytest.importorskip("matplotlib", reason="the training curves are drawn with matplotlib (alexnet_tf[plots])")

# Six epochs of 10 steps; the rate divided by 10 after epochs 3 and 5 (Sec. 5).
LR = [0.01, 0.01, 0.01, 0.001, 0.001, 0.0001]


def history(with_train_top5=True):
    rng = np.random.default_rng(0)
    out = []
    for e in range(1, 7):
        h = {
            "epoch": e,
            "step": 10 * e,
            "seconds": 3.0 * e,
            "lr": LR[e - 1],
            "train_loss": float(rng.uniform(0, 2)),
            "train_top1_error": float(rng.uniform(0.2, 0.9)),
            "eval_top1_error": float(rng.uniform(0.2, 0.9)),
            "eval_top5_error": float(rng.uniform(0.0, 0.2)),
        }
        if with_train_top5:
            h["train_top5_error"] = float(rng.uniform(0.0, 0.2))
        out.append(h)
    return out


def test_curves_are_the_history_in_percent():
    h = history()
    c = curves.curves(list(reversed(h)))  # in epoch order whatever the file's order
    assert c["epoch"] == [1, 2, 3, 4, 5, 6]
    for key in ("train_top1", "train_top5", "eval_top1", "eval_top5"):
        np.testing.assert_allclose(c[key], [100 * e[f"{key}_error"] for e in h])
    assert c["lr"] == LR
    assert c["cuts"] == [3, 5]
    with pytest.raises(ValueError):
        curves.curves([])


def test_train_top5_of_older_runs_from_the_logged_windows(tmp_path):
    """Histories written before they held the training top-5 error: the mean of the
    training windows logged within each epoch (metrics.jsonl), nan where none was."""
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"split": "train", "step": 5, "top5_error": 0.5},
        {"split": "train", "step": 10, "top5_error": 0.3},  # epoch 1 ends at step 10
        {"split": "eval", "step": 10, "top5_error": 0.9},  # not a training window
        {"split": "train", "step": 20, "top5_error": 0.2},
        {"split": "train", "step": 25, "top5_error": 0.1},
        {"split": "train", "step": 30, "top5_error": 0.05},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"split": "tra')  # a line cut by a crash
    c = curves.curves(history(with_train_top5=False), str(metrics))
    np.testing.assert_allclose(c["train_top5"][:3], [40.0, 20.0, 7.5])
    assert all(math.isnan(v) for v in c["train_top5"][3:])


def test_the_figure_draws_the_history():
    h = history()
    fig = curves.draw(curves.curves(h))
    errors, rate = fig.axes
    lines = {line.get_label(): line for line in errors.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"train top-1", "validation top-1", "train top-5", "validation top-5"}
    for label, key in (
        ("train top-1", "train_top1_error"),
        ("validation top-1", "eval_top1_error"),
        ("train top-5", "train_top5_error"),
        ("validation top-5", "eval_top5_error"),
    ):
        np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2, 3, 4, 5, 6])
        np.testing.assert_allclose(lines[label].get_ydata(), [100 * e[key] for e in h])
    lr_line = next(line for line in rate.get_lines() if line.get_label() == "learning rate")
    np.testing.assert_allclose(lr_line.get_ydata(), LR)
    assert rate.get_yscale() == "log"
    for ax in (errors, rate):  # a vertical mark between epochs 3|4 and 5|6
        marks = sorted(
            line.get_xdata()[0] for line in ax.get_lines() if list(line.get_xdata()) == [line.get_xdata()[0]] * 2
        )
        assert marks == [3.5, 5.5]


def test_command_writes_the_png_from_a_relative_run_folder(user_cwd, capsys):
    from PIL import Image

    os.makedirs("runs/demo")
    with open("runs/demo/history.json", "w") as f:
        json.dump(history(), f)
    assert main(["--workdir", "runs/demo", "--out", "figs", "--curves-only"]) == 0
    assert os.listdir("figs") == ["training_curves.png"]
    with Image.open("figs/training_curves.png") as image:
        assert image.format == "PNG" and image.size == (800, 600)
        image.verify()
    with Image.open("figs/training_curves.png") as image:
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # something was drawn

    assert main(["--workdir", "runs/none", "--out", "figs2", "--curves-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no training curves: ") and "history.json does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_curves_of_a_trained_run(image_folder, tmp_path):
    """A real two-epoch run: the figure's numbers are what training wrote, each epoch once,
    the training top-5 error among them."""
    from helpers import folder_config

    from alexnet_tf.training import train_and_evaluate

    workdir, out = str(tmp_path / "run"), str(tmp_path / "figs")
    config = folder_config(image_folder, **{"train.batch_size": 16, "train.epochs": 2, "compute.jit_compile": False})
    results = train_and_evaluate(config, workdir)
    assert main(["--workdir", workdir, "--out", out, "--curves-only"]) == 0
    h = results["history"]
    c = curves.curves(curves.read_history(workdir), os.path.join(workdir, "metrics.jsonl"))
    assert c["epoch"] == [1, 2] and [e["epoch"] for e in h] == [1, 2]
    np.testing.assert_allclose(c["eval_top1"], [100 * e["eval_top1_error"] for e in h])
    np.testing.assert_allclose(c["train_top5"], [100 * e["train_top5_error"] for e in h])
    assert os.path.getsize(os.path.join(out, "training_curves.png")) > 0
