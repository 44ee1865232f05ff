"""Evaluation tier: centre crop agrees with training's own eval; 10 crops and model
averaging agree with a plain NumPy computation of Sec. 4.1's test procedure."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.applications import load_net
from alexnet_tf.config import load_json, override
from alexnet_tf.evaluate import main
from alexnet_tf.evaluation import evaluate_nets


def numpy_ten_crop_probs(path, images):
    """Softmax averaged over the four corners, the centre and their flips (Sec. 4.1)."""
    run = load_net(path)
    d = run.config.data
    r, c = d.resize_size, d.crop_size
    mean = run.stats.mean_image  # (R, R, 3)
    m = r - c
    crops = []
    for img in images:
        img = (data_lib.decode_and_resize(img, r, encoded=False).numpy().astype(np.float32) - mean) * d.input_scale
        for top, left in [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]:
            patch = img[top : top + c, left : left + c]
            crops += [patch, patch[:, ::-1]]
    logits = run.model(np.stack(crops), training=False).numpy()
    return tf.nn.softmax(logits).numpy().reshape(len(images), 10, -1).mean(1)


def errors(probs, labels):
    order = np.argsort(-probs, axis=1)
    return float(np.mean(order[:, 0] != labels)), float(np.mean([y not in row[:5] for y, row in zip(labels, order)]))


def test_center_crop_matches_training_eval(trained_workdir, tmp_path, capsys):
    with open(os.path.join(trained_workdir, "results.json")) as f:
        trained = json.load(f)
    out = str(tmp_path / "eval")
    recipe = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "quickstart.py")
    argv = [recipe, "--workdir", trained_workdir, "--crops", "center", "--out", out]
    argv += ["--set", "data.eval_examples=64", "--set", "train.batch_size=32", "--set", "compute.jit_compile=False"]
    assert main(argv) == 0
    with open(os.path.join(out, "evaluation.json")) as f:
        results = json.load(f)
    assert results["examples"] == trained["examples"] == 64
    assert results["top1_error"] == pytest.approx(trained["top1_error"])
    assert results["top5_error"] == pytest.approx(trained["top5_error"])
    assert results["crops"] == "center" and results["models"][0].endswith("ckpt-3")
    table = capsys.readouterr().out
    assert "40.7" in table and "16.4" in table and f"{100 * trained['top1_error']:.1f}%" in table


@pytest.mark.slow
def test_ten_crops_and_model_averaging(trained_workdir):
    n = 10
    config = override(
        load_json(os.path.join(trained_workdir, "config.json")),
        # 4 images (40 rows) a batch: the last batch is padded, and padding must not count
        {"data.eval_examples": n, "train.eval_batch_size": 40},
    )
    ckpts = [os.path.join(trained_workdir, "checkpoints", f"ckpt-{i}") for i in (1, 3)]
    source = data_lib.open_source(config.data.source)
    images, labels = zip(*[(x, y) for _, x, y, _ in source.examples("test").take(n).as_numpy_iterator()])
    labels = np.asarray(labels)
    probs = [numpy_ten_crop_probs(p, images) for p in ckpts]
    assert not np.allclose(probs[0], probs[1], atol=1e-3)  # two distinct models

    nets = [load_net(p) for p in ckpts]
    single = evaluate_nets(nets[1:], config.data, crops="ten", batch_size=40, stream=None)
    assert single["examples"] == n and single["crops"] == "ten"
    assert (single["top1_error"], single["top5_error"]) == pytest.approx(errors(probs[1], labels))

    both = evaluate_nets(nets, config.data, crops="ten", batch_size=40, stream=None)
    assert (both["top1_error"], both["top5_error"]) == pytest.approx(errors((probs[0] + probs[1]) / 2, labels))
    assert both["models"] == ckpts


def test_errors_are_one_line(trained_workdir, tmp_path, capsys):
    recipe = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "quickstart.py")
    assert main([recipe, "--workdir", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # A model trained on 76 px images cannot be evaluated on 256 px ones.
    assert main([recipe, "--workdir", trained_workdir, "--set", "data.resize_size=80"]) == 2
    assert "data.resize_size=76" in capsys.readouterr().err
