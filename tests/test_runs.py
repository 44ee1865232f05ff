"""Run folders and trained nets as values: resuming, evaluating and exporting a workdir
with no recipe; checkpoints that cannot be read; a net built in memory taken by every
consumer; fine-tuning from a trained net."""

import dataclasses
import glob
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUICKSTART, assert_same_weights, folder_config, model_weights, net_in_memory, tiny, tiny_sets

from alexnet_tf import cli
from alexnet_tf import data as data_lib
from alexnet_tf.applications import load_net
from alexnet_tf.config import ConfigError
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet
from alexnet_tf.train import main as train_main
from alexnet_tf.training import train_and_evaluate


def test_a_workdir_resumes_with_its_own_config(tmp_path, capsys):
    """`train --workdir W` with no recipe resumes W from its config.json (--set may
    extend it); a recipe with the same workdir keeps working."""
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(**{"train.max_steps": 2}), workdir)
    capsys.readouterr()
    assert train_main(["--workdir", workdir, "--set", "train.max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert f"config: {os.path.join(workdir, 'config.json')} with train.max_steps=3" in out
    assert "resumed from" in out and "at step 2" in out and "step 3/3" in out
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["max_steps"] == 3
    sets = [f"{k}={v}" for k, v in tiny_sets(**{"train.max_steps": 4}).items()]
    assert train_main([QUICKSTART, "--workdir", workdir, *sum((["--set", s] for s in sets), [])]) == 0
    assert "at step 3" in capsys.readouterr().out
    # no recipe and no run: one line that says what to give
    assert train_main(["--workdir", str(tmp_path / "none")]) == 2
    assert "holds no run (no config.json); give a recipe" in capsys.readouterr().err


def _break(path, how):
    data = glob.glob(path + ".data-*")[0]
    raw = open(data, "rb").read()
    if how == "truncated":  # a copy cut short
        raw = raw[: len(raw) // 2]
    else:  # a disk fault: bytes changed in place, the size as it was
        raw = raw[: len(raw) // 2] + bytes(64) + raw[len(raw) // 2 + 64 :]
    with open(data, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_evaluate_and_export_pass_over_an_unreadable_checkpoint(trained_workdir, tmp_path, how, caplog):
    """The newest checkpoint cut short or with changed bytes: load_net (evaluate, export,
    figures, serve) names it in one warning, leaves it where it is and loads the newest
    readable one; named explicitly, it is refused."""
    workdir = shutil.copytree(trained_workdir, str(tmp_path / "run"))
    _break(os.path.join(workdir, "checkpoints", "ckpt-3"), how)
    with caplog.at_level("WARNING", logger="alexnet_tf"):
        net = load_net(workdir)
    assert net.origin == os.path.join(workdir, "checkpoints", "ckpt-2")
    assert "ckpt-3 cannot be read" in caplog.text and "left where it is" in caplog.text
    assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-3.index"))  # nothing moved
    with pytest.raises(ConfigError, match="cannot be read"):
        load_net(os.path.join(workdir, "checkpoints", "ckpt-3"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_an_unreadable_checkpoint_is_set_aside(tmp_path, how, caplog):
    """The newest checkpoint cut short or with changed bytes: training names it in one
    line, moves it to checkpoints/unreadable/ (never deletes it) and resumes from the
    newest readable one, as a run resumed from that one does."""
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(**{"train.max_steps": 2, "train.checkpoint_every": 1}), workdir)
    good = model_weights(workdir)  # ckpt-2
    with caplog.at_level("WARNING", logger="alexnet_tf"):
        shutil.copytree(workdir, str(tmp_path / "copy"))
        _break(os.path.join(workdir, "checkpoints", "ckpt-2"), how)
        results = train_and_evaluate(tiny(**{"train.max_steps": 3, "train.checkpoint_every": 1}), workdir)
    assert results["step"] == 3
    assert "ckpt-2 cannot be read" in caplog.text and "moved to" in caplog.text
    aside = sorted(os.listdir(os.path.join(workdir, "checkpoints", "unreadable")))
    assert aside and all(name.startswith("ckpt-2.") for name in aside)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-3")
    # it resumed from step 1: the same weights as the whole copy resumed from its step 1
    copy = str(tmp_path / "copy")
    for f in glob.glob(os.path.join(copy, "checkpoints", "ckpt-2.*")):
        os.remove(f)
    tf.compat.v1.train.update_checkpoint_state(
        os.path.join(copy, "checkpoints"), os.path.join(copy, "checkpoints", "ckpt-1")
    )
    train_and_evaluate(tiny(**{"train.max_steps": 3, "train.checkpoint_every": 1}), copy)
    assert_same_weights(model_weights(workdir), model_weights(copy))
    assert any(not np.array_equal(good[k], model_weights(workdir)[k]) for k in good)


def test_a_net_in_memory_predicts_as_its_definition_says():
    """predict_images: Sec. 2's resize and centre crop, the mean subtracted, the net,
    the softmax; ten crops average the ten views' softmax (Sec. 4.1). Checked against
    the model called on crops cut here with NumPy."""
    net = net_in_memory()
    d = net.config.data
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 76, 76, 3), dtype=np.uint8)  # already 76 x 76: no resize
    c, m = d.crop_size, (d.resize_size - d.crop_size) // 2
    x = (images.astype(np.float32) - net.stats.mean_image) * d.input_scale
    expected = tf.nn.softmax(net.model(x[:, m : m + c, m : m + c], training=False)).numpy()
    np.testing.assert_allclose(net.predict_images(images), expected, rtol=1e-5, atol=1e-6)
    views = []
    for top, left in [(0, 0), (0, 9), (9, 0), (9, 9), (4, 4)]:
        patch = x[:, top : top + c, left : left + c]
        views += [patch, patch[:, :, ::-1]]
    probs = np.mean([tf.nn.softmax(net.model(v, training=False)).numpy() for v in views], axis=0)
    np.testing.assert_allclose(net.predict_images(images, crops="ten"), probs, rtol=1e-5, atol=1e-6)
    feats = net.predict_images(images, output="features")
    assert feats.shape == (3, net.model.get_layer("fc7").units) and (feats >= 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["paper", "inverted"])
def test_export_of_a_net_in_memory_equals_the_keras_model(tmp_path, form):
    """Either dropout form (Sec. 4.2's x0.5 at test, or none): the SavedModel answers as
    the Keras model does; no run folder is involved."""
    from alexnet_tf.exporting import export_saved_model

    net = net_in_memory(form)
    images = np.random.default_rng(1).integers(0, 256, (4, 50, 60, 3), dtype=np.uint8)
    probs = net.predict_images(images)
    loaded = tf.saved_model.load(export_saved_model(net, str(tmp_path / form)))
    out = loaded.signatures["serve_uint8"](images=tf.constant(images))
    top = np.argsort(-probs, axis=1)[:, :5]
    np.testing.assert_array_equal(out["classes"].numpy(), top)
    np.testing.assert_allclose(out["probabilities"].numpy(), np.take_along_axis(probs, top, 1), rtol=1e-4)
    # every weight stored once (keras-team/keras#23553 stores each twice when the model is tracked)
    reader = tf.train.load_checkpoint(os.path.join(str(tmp_path / form), "variables", "variables"))
    shapes = reader.get_variable_to_shape_map()
    stored = sum(int(np.prod(shape)) for key, shape in shapes.items() if key != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert stored == net.model.count_params()
    # the two forms give different test-time functions only through the 0.5 of Sec. 4.2
    other = net_in_memory("inverted" if form == "paper" else "paper")
    assert not np.allclose(other.predict_images(images), probs, atol=1e-6)


def test_evaluate_takes_anet_in_memory():
    from alexnet_tf.evaluation import evaluate_nets

    net = net_in_memory()
    data = dataclasses.replace(net.config.data, eval_examples=20)
    result = evaluate_nets([net], data, crops="center", batch_size=10, stream=None)
    source = data_lib.open_source(data.source)
    images, labels = zip(*[(x, y) for _, x, y, _ in source.examples("test").take(20).as_numpy_iterator()])
    top1 = np.argmax(net.predict_images(np.stack(images)), axis=1)
    assert result["examples"] == 20 and result["models"] == ["memory (paper)"]
    assert result["top1_error"] == pytest.approx(np.mean(top1 != np.asarray(labels)))


FINETUNE = os.path.join(os.path.dirname(QUICKSTART), "finetune.py")
CPU = ("compute.conv_form=split", "compute.jit_compile=False")  # what recipes/finetune.py's docstring says for a CPU


def test_finetuning_copies_freezes_and_scales(image_folder, trained_workdir, tmp_path, capsys):
    """recipes/finetune.py from the session's trained quickstart run to the 3 classes of a
    folder: the run takes the trained net's geometry and preparation (the recipe's own are
    the paper's 227 px), copies every layer but fc8 (drawn afresh for 3 classes); frozen
    layers keep the loaded weights; copied layers learn at lr_factor times the rate
    (lr_factor 0: unchanged)."""
    pretrained = load_net(trained_workdir)
    sets = {
        "finetune.init_from": trained_workdir,
        "finetune.freeze": ("conv1", "conv2"),
        "finetune.lr_factor": 0.0,
        "train.batch_size": 8,
        "train.max_steps": 2,
        "data.eval_examples": 8,
    }
    workdir = str(tmp_path / "tuned")
    recipe = cli.recipe_config(FINETUNE, f"folder:{image_folder}", [*CPU, *(f"{k}={v}" for k, v in sets.items())])
    assert (recipe.model.width, recipe.data.crop_size) == (1.0, 227)
    train_and_evaluate(recipe, workdir)
    assert "fine-tuning from" in capsys.readouterr().out
    tuned = load_net(workdir)
    assert tuned.num_classes == 3 and tuned.model.get_layer("fc8").kernel.shape[-1] == 3
    theirs = pretrained.config
    assert (tuned.config.model.width, tuned.config.model.input_size) == (theirs.model.width, theirs.model.input_size)
    assert (tuned.config.data.resize_size, tuned.config.data.crop_size) == (theirs.data.resize_size, 67)
    assert tuned.config.data.input_scale == theirs.data.input_scale != recipe.data.input_scale
    for name in ("conv1", "conv2", "conv3", "fc6", "fc7"):  # frozen, or copied at rate 0
        np.testing.assert_array_equal(
            tuned.model.get_layer(name).kernel.numpy(), pretrained.model.get_layer(name).kernel.numpy()
        )
    fresh = build_model(tuned.config.model, seed=tuned.config.train.seed).get_layer("fc8").kernel.numpy()
    assert not np.allclose(tuned.model.get_layer("fc8").kernel.numpy(), fresh)  # trained
    np.testing.assert_array_equal(tuned.stats.mean_image, pretrained.stats.mean_image)  # its statistics

    # one step at lr_factor f moves a copied layer by f times the step at factor 1 (a
    # large rate, so that the steps stand well above float32's rounding of the weights)
    moved = {}
    for f in (1.0, 0.1):
        w = str(tmp_path / f"f{f}")
        one = {**sets, "finetune.lr_factor": f, "train.max_steps": 1, "optim.lr": 10.0}
        train_and_evaluate(folder_config(image_folder, **one), w)
        moved[f] = load_net(w).model.get_layer("fc6").kernel.numpy() - pretrained.model.get_layer("fc6").kernel.numpy()
    assert np.abs(moved[1.0]).max() > 1e-3
    np.testing.assert_allclose(moved[0.1], 0.1 * moved[1.0], rtol=1e-3, atol=1e-7)


def test_finetuning_errors_name_what_to_change(image_folder, trained_workdir, tmp_path):
    """Before any step: layers the net does not have, a new layer frozen, weights that do
    not fit, a trained net that is not there (the recipe's default: Caffe's, not imported)."""
    sets = {"finetune.init_from": trained_workdir, "train.batch_size": 8, "train.max_steps": 1}
    cases = [
        (
            {"finetune.freeze": ("conv9",)},
            "finetune.freeze names no layer 'conv9'; the net's layers with weights: conv1",
        ),
        ({"finetune.new_layers": ("fc_8",)}, "finetune.new_layers names no layer 'fc_8'"),
        ({"finetune.freeze": ("fc7", "fc8")}, "finetune.freeze names fc8, which finetune.new_layers draws afresh"),
        ({"finetune.new_layers": ()}, "add it to finetune.new_layers"),
    ]
    for i, (extra, message) in enumerate(cases):
        with pytest.raises(ConfigError, match=re.escape(message)):
            train_and_evaluate(folder_config(image_folder, **sets, **extra), str(tmp_path / str(i)))
    missing = str(tmp_path / "bvlc_alexnet")
    config = cli.recipe_config(FINETUNE, f"folder:{image_folder}", [f"finetune.init_from={missing}", *CPU])
    with pytest.raises(ConfigError, match=re.escape(f"finetune.init_from={missing!r}: ")) as e:
        train_and_evaluate(config, str(tmp_path / "w"))
    assert f"python -m alexnet_tf.convert bvlc_alexnet.caffemodel --workdir {missing}" in str(e.value)
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_a_net_checks_its_class_names():
    net = net_in_memory()
    with pytest.raises(ValueError, match="10 outputs but 3 class names"):
        TrainedNet(net.config, net.model, net.stats, ["a", "b", "c"])
    assert isinstance(net.model, keras.Model) and net.num_classes == 10


def _files(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_a_run_whose_checkpoints_cannot_be_read_stops_and_changes_nothing(tmp_path, capsys):
    """Every checkpoint cut short: the run does not start again from step 0 over them. One
    line names each with its reason and says how to start over; nothing in the folder
    is moved, rewritten or deleted."""
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(**{"train.max_steps": 2, "train.checkpoint_every": 1}), workdir)
    for step in (1, 2):
        _break(os.path.join(workdir, "checkpoints", f"ckpt-{step}"), "truncated")
    before = _files(workdir)
    capsys.readouterr()
    assert train_main(["--workdir", workdir, "--set", "train.max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: no checkpoint in {workdir}/checkpoints can be read: ")
    assert re.search(r"ckpt-2 \(\w+Error: .*; ckpt-1 \(\w+Error: .*; nothing was moved or deleted", err)
    assert "To start over, give a new --workdir" in err
    assert _files(workdir) == before


def test_a_lost_checkpoint_list_or_a_missing_checkpoint_is_no_fresh_start(tmp_path, caplog, capsys):
    """The folder's checkpoint list lost: the run resumes from the newest checkpoint file.
    A listed checkpoint whose files are gone is passed over and said to be missing,
    nothing claimed moved."""
    workdir = str(tmp_path / "run")
    config = tiny(**{"train.max_steps": 2, "train.checkpoint_every": 1})
    train_and_evaluate(config, workdir)
    folder = os.path.join(workdir, "checkpoints")
    os.remove(os.path.join(folder, "checkpoint"))
    capsys.readouterr()
    assert train_and_evaluate(tiny(**{"train.max_steps": 3, "train.checkpoint_every": 1}), workdir)["step"] == 3
    assert "resumed from" in capsys.readouterr().out
    assert tf.train.get_checkpoint_state(folder).all_model_checkpoint_paths[-1] == os.path.join(folder, "ckpt-3")
    for f in glob.glob(os.path.join(folder, "ckpt-3.*")):
        os.remove(f)
    with caplog.at_level("WARNING", logger="alexnet_tf"):
        assert train_and_evaluate(tiny(**{"train.max_steps": 4, "train.checkpoint_every": 1}), workdir)["step"] == 4
    assert "ckpt-3 cannot be read" in caplog.text and "its files are missing" in caplog.text
    assert "at step 2" in capsys.readouterr().out and not os.path.exists(os.path.join(folder, "unreadable"))


def test_a_first_start_that_fails_before_its_first_step_leaves_the_folder_free(image_folder, tmp_path, capsys):
    """A batch larger than the data fails before anything is written; a start that wrote
    its config.json but saved no step binds nothing: the corrected command runs there,
    and statistics computed for other data are dropped."""
    workdir = tmp_path / "run"
    sets = ["--data", f"folder:{image_folder}", "--set", "train.max_steps=1", "--set", "data.eval_examples=8"]
    assert train_main([QUICKSTART, "--workdir", str(workdir), *sets, "--set", "train.batch_size=100"]) == 2
    assert "train.batch_size=100 exceeds the 48 training examples" in capsys.readouterr().err
    assert not workdir.exists()
    # a start stopped after writing its config.json and statistics, before its first checkpoint
    from alexnet_tf import training

    def stopped(self):
        raise KeyboardInterrupt

    first = folder_config(image_folder, **{"train.batch_size": 16, "train.max_steps": 1})
    original = training.Trainer.run
    training.Trainer.run = stopped
    try:
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(first, str(workdir))
    finally:
        training.Trainer.run = original
    assert (workdir / "config.json").exists() and (workdir / "stats.npz").exists()
    stale = (workdir / "stats.npz").stat().st_mtime_ns
    assert train_main([QUICKSTART, "--workdir", str(workdir), *sets, "--set", "train.batch_size=8"]) == 0
    assert "saved no step; starting with these settings" in capsys.readouterr().out
    assert (workdir / "stats.npz").stat().st_mtime_ns == stale  # the same data: its statistics kept
    with open(workdir / "config.json") as f:
        assert json.load(f)["train"]["batch_size"] == 8
    # once a step is saved, other settings are refused
    assert train_main([QUICKSTART, "--workdir", str(workdir), *sets, "--set", "train.batch_size=16"]) == 2
    assert "different settings (train.batch_size 8 -> 16)" in capsys.readouterr().err


def test_statistics_of_a_start_with_other_data_are_dropped(image_folder, tmp_path):
    from alexnet_tf.runfolder import write_json
    from alexnet_tf.runs import check_resume

    workdir = tmp_path / "run"
    workdir.mkdir()
    old = folder_config(image_folder, **{"train.batch_size": 8})
    write_json(str(workdir / "config.json"), cli_to_dict(old))
    (workdir / "stats.npz").write_bytes(b"computed for the old data")
    check_resume(folder_config(image_folder, **{"train.batch_size": 16}), str(workdir))
    assert (workdir / "stats.npz").exists()  # the same data
    other = shutil.copytree(image_folder, str(tmp_path / "other"))
    check_resume(folder_config(other, **{"train.batch_size": 8}), str(workdir))
    assert not (workdir / "stats.npz").exists()


@pytest.mark.parametrize("old,new", [("one_device", "columns"), ("columns", "one_device")])
def test_a_run_does_not_resume_across_the_columns_layout(old, new, tmp_path):
    """Under distribute.strategy=columns each column's momentum lives apart; a checkpoint
    of one layout cannot resume under the other (it raised deep in the restore)."""
    from alexnet_tf.runfolder import write_json
    from alexnet_tf.runs import check_resume

    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    write_json(str(workdir / "config.json"), cli_to_dict(tiny(**{"distribute.strategy": old})))
    check_resume(tiny(**{"distribute.strategy": new}), str(workdir))  # no step saved: nothing bound
    (workdir / "checkpoints" / "ckpt-5.index").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"resume it with distribute.strategy={old}"):
        check_resume(tiny(**{"distribute.strategy": new}), str(workdir))
    check_resume(tiny(**{"distribute.strategy": old}), str(workdir))  # the run's own layout resumes


def cli_to_dict(config):
    from alexnet_tf.config import to_dict

    return to_dict(config)
