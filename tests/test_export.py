"""Export tier: the SavedModel answers like the training-time model on the same images."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.export import main
from alexnet_tf.exporting import export_saved_model
from alexnet_tf.runs import load_net

N = 6


def reference(workdir, crops):
    """Softmax of the training-time (grouped-conv) model on the eval pipeline's batches."""
    run = load_net(workdir)
    source = data_lib.open_source(run.config.data.source)
    batch = next(iter(data_lib.eval_dataset(source, run.config.data, "test", N, crops=crops)))
    x = data_lib.device_preprocess(batch, run.stats.tensors(), run.config.data)
    probs = tf.nn.softmax(run.model(x, training=False)).numpy()
    probs = probs.reshape(N, -1, probs.shape[-1]).mean(1)  # (N, classes), 10 crops averaged
    raw = np.stack([img for _, img, _, _ in source.examples("test").take(N).as_numpy_iterator()])  # (N, 28, 28, 3)
    return run, probs, raw


def check_top5(out, probs, class_names):
    top = np.argsort(-probs, axis=1)[:, :5]
    np.testing.assert_array_equal(out["classes"].numpy(), top)
    np.testing.assert_allclose(out["probabilities"].numpy(), np.take_along_axis(probs, top, 1), rtol=1e-4, atol=1e-6)
    names = [[n.decode() for n in row] for row in out["class_names"].numpy()]
    assert names == [[class_names[i] for i in row] for row in top]


@pytest.mark.slow
def test_export_matches_training_model(trained_workdir, export_dir):
    run, probs, raw = reference(trained_workdir, "center")
    loaded = tf.saved_model.load(export_dir)
    pngs = tf.constant([tf.io.encode_png(img).numpy() for img in raw])
    check_top5(loaded.signatures["serving_default"](images=pngs), probs, run.class_names)
    check_top5(loaded.signatures["serve_uint8"](images=tf.constant(raw)), probs, run.class_names)
    # JPEG is lossy: same shapes, and the pixels are close enough to keep the top class.
    jpegs = tf.constant([tf.io.encode_jpeg(img, quality=100).numpy() for img in raw])
    out = loaded.signatures["serving_default"](images=jpegs)
    assert out["probabilities"].shape == (N, 5)
    np.testing.assert_allclose(out["probabilities"].numpy()[:, 0], probs.max(1), atol=0.02)
    # No XLA needed at serving time: no must-compile function in the graph.
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        assert b"_XlaMustCompile" not in f.read()


@pytest.mark.slow
def test_ten_crop_export(trained_workdir, tmp_path):
    run, probs, raw = reference(trained_workdir, "ten")
    out_dir = export_saved_model(load_net(trained_workdir), str(tmp_path / "ten"), crops="ten")
    loaded = tf.saved_model.load(out_dir)
    pngs = tf.constant([tf.io.encode_png(img).numpy() for img in raw])
    check_top5(loaded.signatures["serving_default"](images=pngs), probs, run.class_names)
    # Ten crops differ from the centre crop alone.
    _, center, _ = reference(trained_workdir, "center")
    assert not np.allclose(center, probs, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("saved_model_cli") is None, reason="saved_model_cli not installed")
def test_saved_model_cli_run(export_dir, tmp_path):
    """`saved_model_cli run` on JPEG/PNG bytes from a .npy file, as docs/serving.md says
    (its `saved_model_cli show` runs in docs/serving.md's export block, tests/test_docs.py)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    img = (np.random.RandomState(0).rand(40, 50, 3) * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", np.array([tf.io.encode_png(img).numpy()]))  # fixed-width bytes, no pickle
    expected = tf.saved_model.load(export_dir).signatures["serving_default"](
        images=tf.constant([tf.io.encode_png(img).numpy()])
    )
    run = subprocess.run(
        ["saved_model_cli", "run", "--dir", export_dir, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'images.npy'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Result for output key class_names" in run.stdout
    assert expected["class_names"].numpy()[0, 0].decode() in run.stdout


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "checkpoint" in err


@pytest.mark.slow
def test_cli_runs(trained_workdir, tmp_path, capsys):
    out = str(tmp_path / "cli" / "1")
    assert main(["--workdir", os.path.join(trained_workdir, "checkpoints", "ckpt-1"), "--out", out]) == 0
    assert "ckpt-1" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, "saved_model.pb"))
