"""`python -m alexnet_tf.predict IMAGE|DIR|GLOB ... --workdir NET`: per image its top
classes with readable names and probabilities (text, or JSON lines with --json), from a
working directory with relative paths as users paste them; files that are no image named
on standard error and skipped; one-line errors with exit code 2."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import alexnet_tf
from alexnet_tf import caffe, pretrained
from alexnet_tf import predict as predict_command

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def save(path, size, seed):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def pictures(user_cwd):
    """cat.jpg, photos/ (two images in a subfolder, a file that is no image, a text file)
    and shots/*.png, in the working directory."""
    save("cat.jpg", (90, 120), 0)
    save("photos/b/dog.png", (50, 70), 1)
    save("photos/a/bird.jpg", (64, 64), 2)
    (user_cwd / "photos" / "broken.jpg").write_text("not an image")
    (user_cwd / "photos" / "notes.txt").write_text("not an image either, and not named like one")
    save("shots/one.png", (40, 80), 3)
    return user_cwd


def predict(*args):
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.predict", *args], env=ENV, capture_output=True, text=True, timeout=600
    )


def test_predict_a_run_from_relative_paths(pictures, trained_workdir):
    shutil.copytree(trained_workdir, pictures / "runs" / "q")
    done = predict("cat.jpg", "photos", "shots/*.png", "missing.jpg", "--workdir", "runs/q", "--top", "3", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]  # nothing but the JSON lines
    order = ["cat.jpg", "photos/a/bird.jpg", "photos/b/dog.png", "shots/one.png"]  # as given, a folder sorted
    assert [row["image"] for row in rows] == order
    assert "skipped photos/broken.jpg: not a JPEG, PNG, GIF or BMP image" in done.stderr
    assert "skipped missing.jpg: no such file" in done.stderr and "notes.txt" not in done.stderr

    net = alexnet_tf.load_net("runs/q")
    probs = net.predict_images(order)  # the same images through the library, one batch
    for row, p in zip(rows, probs):
        best = np.argsort(-p)[:3]
        assert [c["class_name"] for c in row["top"]] == [net.class_names[i] for i in best]
        assert [c["description"] for c in row["top"]] == [net.class_names[i] for i in best]  # Fashion-MNIST's
        np.testing.assert_allclose([c["probability"] for c in row["top"]], p[best], atol=2e-6)

    # text, ten crops, two images per batch: the same classes, probabilities in percent
    done = predict("photos/b/dog.png", "cat.jpg", "--workdir", "runs/q", "--crops", "ten", "--batch-size", "1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    ten = net.predict_images(["photos/b/dog.png", "cat.jpg"], crops="ten")
    expected = []
    for path, p in zip(("photos/b/dog.png", "cat.jpg"), ten):
        expected += [path] + [f"  {100 * p[i]:6.2f}%  {net.class_names[i]}" for i in np.argsort(-p)[:5]]
    assert done.stdout.splitlines() == expected


def test_predict_imagenet_fetched_from_the_origin(pictures, caffemodel, monkeypatch, capsys):
    """--workdir imagenet: fetched once (a file:// origin here), ImageNet's synsets with
    their readable names; what the fetch prints goes to standard error, so that standard
    output holds the JSON lines alone."""
    with open(caffemodel, "rb") as f:
        monkeypatch.setattr(caffe, "BVLC_ALEXNET_SHA1", hashlib.sha1(f.read()).hexdigest())
    monkeypatch.setenv("KERAS_HOME", str(pictures / "keras"))
    monkeypatch.delenv(pretrained.FILE_ENV, raising=False)
    monkeypatch.setenv(pretrained.URL_ENV, f"file://{caffemodel}")
    assert predict_command.main(["cat.jpg", "shots", "--workdir", "imagenet", "--json", "--top", "1000"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["image"] for row in rows] == ["cat.jpg", "shots/one.png"] and "Downloading data from file://" in err
    top = rows[0]["top"]
    assert len(top) == 1000 and sorted(c["class_name"] for c in top)[0] == "n01440764"
    assert {c["description"] for c in top} >= {"tench, Tinca tinca", "tabby, tabby cat"}
    scores = [c["probability"] for c in top]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    assert (pictures / "keras" / "models" / "bvlc_alexnet.caffemodel").is_file()


@pytest.mark.slow
def test_predict_a_caffemodel_as_text(pictures, caffemodel):
    shutil.copy(caffemodel, pictures / "bvlc_alexnet.caffemodel")
    done = predict("cat.jpg", "--workdir", "bvlc_alexnet.caffemodel", "--top", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "cat.jpg" and len(lines) == 3
    assert all(line.endswith(")") and "%  " in line and "  (n" in line for line in lines[1:])
    assert done.stderr.startswith("warning: ") and "not bvlc_alexnet.caffemodel's" in done.stderr  # another sha1
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["nothing.jpg", "--workdir", "runs/q"], "error: no image files in nothing.jpg"),
        (["photos/broken.jpg", "--workdir", "{run}"], "error: none of the 1 files could be read as an image"),
        (["cat.jpg", "--workdir", "runs/none"], "error: '{cwd}/runs/none' is neither a run folder nor a checkpoint"),
        (["cat.jpg", "--workdir", "exports/q"], "error: exports/q is an export (a SavedModel, for serving)"),
    ],
)
def test_what_stops_it_is_one_line_and_exit_2(pictures, trained_workdir, args, message, capsys):
    (pictures / "exports" / "q" / "1").mkdir(parents=True)
    (pictures / "exports" / "q" / "1" / "saved_model.pb").write_bytes(b"")
    assert predict_command.main([a.format(run=trained_workdir) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(message.format(cwd=pictures)), err


def test_top_and_batch_size_must_be_positive(capsys):
    for flag in ("--top", "--batch-size"):
        with pytest.raises(SystemExit) as e:
            predict_command.main(["cat.jpg", "--workdir", "runs/q", flag, "0"])
        assert e.value.code == 2 and "must be a whole number, 1 or more, got '0'" in capsys.readouterr().err
