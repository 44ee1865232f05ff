"""End-to-end tier: real steps of train_and_evaluate on the quickstart recipe, and resume."""

import json
import os

import pytest

from alexnet_tf.config import ConfigError, load_recipe, override
from alexnet_tf.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**extra):
    base = {"train.max_steps": 3, "train.batch_size": 32, "train.log_every": 1, "data.eval_examples": 64}
    base.update(extra)
    return override(load_recipe(os.path.join(ROOT, "recipes", "quickstart.py")), base)


def test_train_then_resume(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(tiny(), workdir)
    assert results["step"] == 3
    assert 0.0 <= results["top1_error"] <= 1.0 and 0.0 <= results["top5_error"] <= results["top1_error"]
    assert results["examples"] == 64
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["step"] == 3
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["max_steps"] == 3
    assert os.listdir(os.path.join(workdir, "tb", "train"))
    out = capsys.readouterr().out
    assert "img/s" in out and "ETA" in out

    results = train_and_evaluate(tiny(**{"train.max_steps": 5}), workdir)
    assert results["step"] == 5
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 3" in out
    assert "step 4/5" in out  # continued from the checkpoint, not from step 0


def test_resume_refuses_a_different_model(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(**{"train.max_steps": 1}), workdir)
    with pytest.raises(ConfigError, match="different model"):
        train_and_evaluate(tiny(**{"model.width": 0.5}), workdir)


def test_class_count_mismatch_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes=10"):
        train_and_evaluate(tiny(**{"model.num_classes": 1000}), str(tmp_path / "run"))


def test_restore_model_loads_trained_weights(tmp_path):
    import numpy as np
    import tensorflow as tf

    from alexnet_tf.model import build_model
    from alexnet_tf.train import restore_model

    workdir = str(tmp_path / "run")
    config = tiny(**{"train.max_steps": 2})
    train_and_evaluate(config, workdir)
    model = build_model(config.model)
    fresh = model.get_layer("fc8").kernel.numpy().copy()
    path = restore_model(model, workdir)
    saved = tf.train.load_checkpoint(path).get_tensor("model/fc8/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(model.get_layer("fc8").kernel.numpy(), saved)
    assert not np.array_equal(fresh, saved)
    with pytest.raises(ConfigError, match="no checkpoint"):
        restore_model(model, str(tmp_path / "empty"))


def test_mixed_bfloat16_xla_loop_with_profiler(tmp_path):
    """The GPU recipe's switches together: bf16 compute with float32 variables and LRN,
    the XLA-compiled step with grouped convolutions, two steps per host call, a profiler
    window."""
    import glob

    import numpy as np
    import tensorflow as tf

    workdir = str(tmp_path / "run")
    config = tiny(
        **{
            "train.precision": "mixed_bfloat16",
            "train.jit_compile": True,
            "model.conv_form": "grouped",
            "train.steps_per_loop": 2,
            "train.log_every": 2,
            "train.max_steps": 4,
            "train.profile_steps": (2, 4),
        }
    )
    results = train_and_evaluate(config, workdir)
    assert results["step"] == 4 and np.isfinite(results["loss"])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        train_rows = [json.loads(line) for line in f if '"train"' in line]
    assert [r["step"] for r in train_rows] == [2, 4]  # one host call per two steps
    assert all(np.isfinite(r["loss"]) for r in train_rows)
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    dtypes = reader.get_variable_to_dtype_map()
    assert dtypes["model/conv1/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == tf.float32
    assert glob.glob(os.path.join(workdir, "tb", "profile", "**", "*.xplane.pb"), recursive=True)


def test_encoded_source_gets_its_own_mean_image_once(tmp_path, capsys, monkeypatch):
    """Sec. 2 subtracts the training set's mean image: a run on image files without a
    stats file computes it (with a progress line) into the workdir, and a resume reads
    it back instead of computing it again."""
    import numpy as np
    from PIL import Image

    from alexnet_tf import data as data_lib

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    images = []
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(20):
                x = (rng.random((30, 40, 3)) * np.array([255, 120, 40])).astype(np.uint8)  # not ImageNet's means
                Image.fromarray(x).save(root / split / c / f"{i}.png")
                if split == "train":
                    images.append(x)
    config = tiny(
        **{
            "data.source": f"folder:{root}",
            "data.eval_split": "val",
            "model.num_classes": 2,
            "train.batch_size": 8,
            "train.max_steps": 1,
        }
    )
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir)
    assert "computing the mean image" in capsys.readouterr().out
    stats = data_lib.Stats.load(os.path.join(workdir, "stats.npz"))
    size = config.data.resize_size
    resized = [data_lib.resize_central(x, size).numpy().astype(np.float64) for x in images]
    np.testing.assert_allclose(stats.mean_image, np.mean(resized, 0), atol=1e-3)
    pixels = np.concatenate([r.reshape(-1, 3) for r in resized]) / 255.0
    eigval = np.sort(np.linalg.eigvalsh(np.cov(pixels.T, bias=True)))[::-1]
    np.testing.assert_allclose(stats.eigval, eigval, rtol=1e-3)

    def fail(*args, **kwargs):
        raise AssertionError("statistics computed again on resume")

    monkeypatch.setattr(data_lib, "compute_stats", fail)
    train_and_evaluate(override(config, {"train.max_steps": 2}), workdir)
    assert "computing the mean image" not in capsys.readouterr().out
