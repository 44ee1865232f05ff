"""A run's config resolved in one place (alexnet_tf.runconfig) and the compute section:
validated once on the way to the first step, never rewritten by the runtime, old run
folders' config.json (written before the compute section) still read."""

import dataclasses
import json
import os
import shutil
import sys

import pytest
from helpers import QUICKSTART, TINY, tiny

from alexnet_tf import config as config_lib
from alexnet_tf import runconfig
from alexnet_tf.config import ComputeConfig, ConfigError, load_json, to_dict

OLD = os.path.join(os.path.dirname(__file__), "data", "config_before_compute.json")
# where the keys of the compute section stood before it (a quickstart run trained on a CPU)
OLD_PLACES = {
    "conv_form": "model",
    "lrn_impl": "model",
    "update_op": "optim",
    "jit_compile": "train",
    "fused_update": "train",
    "steps_per_loop": "train",
    "profile_steps": "train",
}


def test_an_old_run_config_loads_with_its_forms_in_the_compute_section():
    with open(OLD) as f:
        written = json.load(f)
    config = load_json(OLD)
    moved = {key: written[section][key] for key, section in OLD_PLACES.items()}
    assert moved["conv_form"] == "split" and moved["steps_per_loop"] == 20  # what that run wrote
    assert to_dict(config.compute) == moved
    assert config.compute == ComputeConfig(
        conv_form="split", lrn_impl="matmul", update_op="fused", jit_compile=False, steps_per_loop=20
    )
    # every other setting as written, none lost on the way
    rest = {s: {k: v for k, v in values.items() if OLD_PLACES.get(k) != s} for s, values in written.items()}
    assert {s: v for s, v in to_dict(config).items() if s != "compute"} == rest
    # and written again in the new form, it reads back the same
    assert config_lib.from_dict(config_lib.Config, json.loads(json.dumps(to_dict(config)))) == config


def test_an_old_run_folder_resumes_on_another_device_kind_without_its_recipe(tmp_path):
    """A run folder written before the compute section, with a checkpoint, resumes with its
    own config.json; compute settings given now are not resume keys, a model setting is."""
    import tensorflow as tf

    from alexnet_tf.runs import check_resume

    workdir = tmp_path / "old"
    workdir.mkdir()
    shutil.copy(OLD, workdir / "config.json")
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(workdir / "checkpoints" / "ckpt"))
    sets = ["compute.conv_form=grouped", "compute.jit_compile=True", "compute.update_op=keras"]
    resolved = runconfig.resolve(workdir=str(workdir), overrides=sets, open_data=False)
    assert (resolved.config.compute.conv_form, resolved.config.compute.jit_compile) == ("grouped", True)
    assert resolved.origin == f"{workdir / 'config.json'} with {', '.join(sets)}"
    check_resume(resolved.config, str(workdir))  # no complaint: how it is computed may change
    wider = runconfig.resolve(workdir=str(workdir), overrides=["model.width=0.5"], open_data=False)
    with pytest.raises(ConfigError, match="model.width 0.25 -> 0.5"):
        check_resume(wider.config, str(workdir))


def test_an_old_key_on_the_command_line_names_the_new_one(tmp_path, capsys, monkeypatch):
    from alexnet_tf import train

    monkeypatch.chdir(tmp_path)
    code = train.main(["quickstart", "--workdir", "runs/x", "--set", "model.conv_form=split"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: model.conv_form is now compute.conv_form") and "set compute.conv_form" in err
    assert not os.path.exists("runs/x")


def test_a_recipe_written_before_the_compute_section_is_refused_in_one_line(tmp_path):
    old = tmp_path / "old.py"
    old.write_text(
        "from alexnet_tf.config import Config, ModelConfig\n"
        "def get_config():\n"
        "    return Config(model=ModelConfig(conv_form='split'))\n"
    )
    with pytest.raises(ConfigError) as e:
        runconfig.resolve(str(old), open_data=False)
    assert "\n" not in str(e.value) and "model.conv_form is now compute.conv_form" in str(e.value)
    variant = tmp_path / "variant.py"
    variant.write_text(
        "from paper import get_config as paper\n"
        "from alexnet_tf.config import override\n"
        "def get_config():\n"
        "    return override(paper(), {'train.jit_compile': False})\n"
    )
    shutil.copy(os.path.join(os.path.dirname(QUICKSTART), "paper.py"), tmp_path / "paper.py")
    with pytest.raises(ConfigError, match=r"^recipe .*variant.py'?: train.jit_compile is now compute.jit_compile"):
        runconfig.resolve(str(variant), open_data=False)


def _count_validate(monkeypatch) -> list:
    """Every call of config.validate from now on, wherever the package imported it."""
    original, calls = config_lib.validate, []

    def counted(config):
        calls.append(config)
        return original(config)

    for name, module in list(sys.modules.items()):
        if name.startswith("alexnet_tf") and getattr(module, "validate", None) is original:
            monkeypatch.setattr(module, "validate", counted)
    return calls


def test_a_train_start_validates_its_config_once_and_the_runtime_leaves_it_as_asked(tmp_path, monkeypatch):
    """From the command line to the first step: the recipe, its own overrides, --data and
    --set are resolved by one function and validated once; the config the trainer gets and
    writes is that one, the compute section as asked ("auto"), the forms in the Runtime."""
    from alexnet_tf import train, training

    seen = {}

    def first_step(self):
        seen.update(config=self.config, runtime=self.runtime)
        return {}

    monkeypatch.setattr(training.Trainer, "run", first_step)
    calls = _count_validate(monkeypatch)
    monkeypatch.chdir(tmp_path)
    sets = [f"{k}={v}" for k, v in TINY.items() if k != "compute.jit_compile"]
    argv = [
        QUICKSTART,
        "--workdir",
        "runs/q",
        "--data",
        "builtin:fashion_mnist",
        *sum([["--set", s] for s in sets], []),
    ]
    assert train.main(argv) == 0
    assert len(calls) == 1
    config = seen["config"]
    assert config is calls[0] or config == calls[0]
    assert config.compute == ComputeConfig(steps_per_loop=20)  # "auto" stays "auto"
    assert seen["runtime"].forms.conv_form == "split" and seen["runtime"].jit is False  # chosen for the CPU
    assert config.model.num_classes == 10 and config.data.eval_split == "test"  # taken from the data
    assert load_json(os.path.join("runs", "q", "config.json")) == config


def test_a_fine_tuned_run_picks_its_own_compute():
    from alexnet_tf import finetune
    from alexnet_tf.model import build_model

    theirs = dataclasses.replace(
        tiny(), compute=ComputeConfig(conv_form="grouped", lrn_impl="tf_op", jit_compile=True, steps_per_loop=7)
    )

    class Net:  # what adopt reads of a TrainedNet
        config = theirs
        model = build_model(theirs.model)

    mine = tiny()
    adopted, changed = finetune.adopt(mine, Net())
    assert adopted.compute == mine.compute and not any("compute" in c for c in changed)
