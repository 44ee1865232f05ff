"""Config tier: recipes, overrides and their errors."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from alexnet_tf.config import Config, ConfigError, from_dict, load_recipe, override, to_dict, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(ROOT, "recipes", "paper.py")
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.py")


def test_paper_recipe_holds_the_papers_numbers():
    c = load_recipe(PAPER)
    assert (c.train.batch_size, c.optim.momentum, c.optim.weight_decay, c.optim.lr) == (128, 0.9, 5e-4, 0.01)
    assert (c.optim.schedule, c.optim.lr_factor, c.optim.max_reductions) == ("plateau", 0.1, 3)
    assert c.train.epochs == 90 and c.train.max_steps == 0
    assert (c.model.init_std, c.model.bias_one, c.model.dropout) == (0.01, True, 0.5)
    assert (c.model.lrn_size, c.model.lrn_alpha, c.model.lrn_beta, c.model.lrn_convention) == (5, 1e-4, 0.75, "paper")
    assert (c.data.crop_size, c.data.resize_size, c.data.pca_noise_std) == (227, 256, 0.1)
    assert c.model.two_columns and c.model.lrn and c.model.overlap_pooling and c.model.activation == "relu"
    for section in ("data", "model", "optim", "train", "distribute"):
        assert dataclasses.is_dataclass(getattr(c, section))


def test_quickstart_derives_from_paper():
    paper, quick = to_dict(load_recipe(PAPER)), to_dict(load_recipe(QUICKSTART))
    changed = {(s, k) for s in paper for k in paper[s] if paper[s][k] != quick[s][k]}
    # Only size, data and budget change; the paper's optimiser and regularisers stay.
    assert ("optim", "lr") not in changed and ("optim", "momentum") not in changed
    assert ("optim", "weight_decay") not in changed and ("model", "dropout") not in changed
    assert ("model", "input_size") in changed and ("model", "width") in changed
    # every deviation from the paper's start of training is a named switch
    assert {("model", "init"), ("model", "bias_one"), ("data", "input_scale")} <= changed
    assert changed <= {("data", k) for k in ("source", "eval_split", "resize_size", "crop_size", "input_scale")} | {
        ("model", k) for k in ("input_size", "num_classes", "width", "init", "bias_one")
    } | {("train", k) for k in ("epochs", "log_every", "checkpoint_every")} | {("optim", "max_reductions")}


def test_config_is_frozen():
    c = load_recipe(PAPER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.train.batch_size = 1


def test_override_parses_literals_and_strings():
    c = override(
        Config(),
        [
            "optim.lr=0.02",
            "train.epochs=3",
            "data.source=folder:/x y",
            "optim.step_epochs=[30, 60]",
            "model.lrn=False",
            "optim.momentum=1",
        ],
    )
    assert c.optim.lr == 0.02 and c.train.epochs == 3 and c.data.source == "folder:/x y"
    assert c.optim.step_epochs == (30, 60) and c.model.lrn is False
    assert c.optim.momentum == 1.0 and isinstance(c.optim.momentum, float)


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError) as e:
        override(Config(), ["optim.learning_rate=0.1"])
    msg = str(e.value)
    assert "optim.learning_rate" in msg and "momentum" in msg and "weight_decay" in msg
    with pytest.raises(ConfigError) as e:
        override(Config(), ["optimizer.lr=0.1"])
    assert "optimizer" in str(e.value) and "optim" in str(e.value) and "train" in str(e.value)


@pytest.mark.parametrize("item", ["train.batch_size=abc", "train.batch_size=1.5", "model.lrn=1", "optim.lr=fast"])
def test_wrong_type_is_an_error(item):
    with pytest.raises(ConfigError) as e:
        override(Config(), [item])
    assert item.split("=")[0] in str(e.value)


def test_bad_choice_lists_choices():
    with pytest.raises(ConfigError) as e:
        override(Config(), ["train.precision=fp8"])
    assert "mixed_bfloat16" in str(e.value)


def test_deterministic_xla_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="jit_compile=False"):
        validate(override(Config(), ["train.deterministic=True", "compute.jit_compile=True"]))
    assert override(Config(), ["train.deterministic=True", "compute.jit_compile=False"]).train.deterministic
    # jit_compile="auto" (the default) resolves to no XLA for a deterministic run (alexnet_tf.forms)
    assert override(Config(), ["train.deterministic=True"]).compute.jit_compile == "auto"


def test_determinism_does_not_leak_into_the_next_run():
    from tensorflow.python.framework import config as tf_config

    from alexnet_tf.distribute import setup_runtime

    quick = load_recipe(QUICKSTART)
    setup_runtime(override(quick, ["train.deterministic=True"]))
    assert tf_config.is_op_determinism_enabled()
    setup_runtime(quick)
    assert not tf_config.is_op_determinism_enabled()


def test_tf32_switch_reaches_tensorflow():
    """float32 is float32 unless train.tf32 asks for TF32 (TensorFlow's own default is on)."""
    from alexnet_tf.distribute import setup_runtime

    paper = load_recipe(PAPER)
    assert paper.train.tf32 is False and paper.train.precision == "float32"
    try:
        setup_runtime(override(paper, ["train.tf32=True"]))
        assert tf.config.experimental.tensor_float_32_execution_enabled()
        setup_runtime(paper)
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(False)


def test_bool_words_and_literal_choices():
    c = override(Config(), ["model.two_columns=false", "model.lrn=True", "train.tf32=true"])
    assert c.model.two_columns is False and c.model.lrn is True and c.train.tf32 is True
    with pytest.raises(ConfigError, match="valid values: paper, inverted"):
        override(Config(), ["model.dropout_form=scaled"])
    with pytest.raises(ConfigError, match="model.two_columns"):
        override(Config(), ["model.two_columns=nope"])


def test_json_round_trip():
    c = override(load_recipe(QUICKSTART), ["optim.step_epochs=(2, 4)"])
    assert from_dict(Config, json.loads(json.dumps(to_dict(c)))) == c


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="failed to load"):
        load_recipe(broken)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_recipe(empty)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,needle",
    [
        (["recipes/nope.py"], "not found"),
        (["recipes/quickstart.py", "--set", "optim.lrr=1"], "valid keys of optim"),
        (["recipes/quickstart.py", "--set", "train.epochs=many"], "train.epochs"),
        (["recipes/quickstart.py", "--data", "folder:/does/not/exist"], "not found"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.train", *args, "--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_recipe_path_or_a_shipped_recipe_by_name(tmp_path, monkeypatch):
    from alexnet_tf.config import find_recipe, recipe_folder

    monkeypatch.chdir(tmp_path)  # no recipes/ here: names resolve to the shipped files
    shipped = os.path.join(recipe_folder(), "quickstart.py")
    assert os.path.samefile(shipped, QUICKSTART)
    for name in ("recipes/quickstart.py", "quickstart.py", "quickstart"):
        assert find_recipe(name) == shipped
    assert load_recipe("quickstart") == load_recipe(QUICKSTART)
    assert load_recipe("paper") == load_recipe(PAPER)
    # a file that exists is used as it is, even under a shipped recipe's name
    mine = tmp_path / "recipes" / "paper.py"
    mine.parent.mkdir()
    mine.write_text(
        "from alexnet_tf.config import Config, TrainConfig\n\ndef get_config():\n    return Config(train=TrainConfig(epochs=7))\n"
    )
    assert load_recipe("recipes/paper.py").train.epochs == 7 and load_recipe(mine).train.epochs == 7
    assert load_recipe("paper").train.epochs == 90


@pytest.mark.parametrize("name", ["paperr", "recipes/nope.py", "elsewhere/paper.py"])
def test_an_unknown_recipe_names_the_shipped_ones(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found") as e:
        load_recipe(name)
    assert "paper, quickstart" in str(e.value)
