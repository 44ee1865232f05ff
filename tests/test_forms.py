"""alexnet_tf.forms: which forms "auto" picks per device and precision, and that explicit
values and the combinations that exclude XLA win over the table. (That the forms compute
the same numbers: tests/test_model.py, test_forms_agree_on_outputs_and_one_sgd_step.)"""

import dataclasses

import pytest
from helpers import PAPER, QUICKSTART

from alexnet_tf import forms
from alexnet_tf.config import ConfigError, load_recipe, override, validate


def test_auto_picks_oneDNN_forms_on_a_cpu_and_xla_forms_on_a_gpu():
    for precision in ("float32", "mixed_bfloat16"):
        config = override(load_recipe(PAPER), {"train.precision": precision})
        chosen = forms.for_run(config, "cpu")
        assert (chosen.conv_form, chosen.lrn_impl, chosen.update_op) == ("split", "matmul", "fused")
        assert chosen.jit_compile is False and chosen.fused_update is False
        chosen = forms.for_run(config, "gpu")
        assert (chosen.conv_form, chosen.lrn_impl, chosen.update_op) == ("grouped", "ops", "keras")
        assert chosen.jit_compile is True and chosen.fused_update is True
        assert set(chosen.chosen) == {"conv_form", "lrn_impl", "update_op", "jit_compile"}
        assert config.compute == load_recipe(PAPER).compute  # what was asked stays in the config


def test_explicit_values_stay_and_xla_stays_off_where_it_cannot_run():
    config = override(load_recipe(PAPER), {"compute.conv_form": "grouped", "compute.jit_compile": True})
    chosen = forms.for_run(config, "cpu")
    assert chosen.conv_form == "grouped" and chosen.jit_compile is True
    assert chosen.chosen == ("lrn_impl", "update_op") and chosen.fused_update is True
    assert "conv_form=grouped, lrn_impl=matmul (auto)" in chosen.describe()
    # no deterministic max-pooling gradient in XLA; the columns strategy spans two devices
    deterministic = override(load_recipe(PAPER), {"train.deterministic": True})
    assert forms.for_run(deterministic, "gpu").jit_compile is False
    columns = override(load_recipe(PAPER), {"distribute.strategy": "columns"})
    assert forms.for_run(columns, "gpu").jit_compile is False
    # ... and updates each column's weights with the fused kernel, on the weights' device
    assert forms.for_run(columns, "gpu").update_op == "fused"
    with pytest.raises(ConfigError, match="compute.update_op=fused or auto"):
        validate(override(columns, {"compute.update_op": "keras"}))
    # explicit CPU forms on a GPU resolve as they are; the quickstart leaves them to the table
    explicit = override(load_recipe(QUICKSTART), {"compute.conv_form": "split", "compute.jit_compile": False})
    quick = forms.for_run(explicit, "gpu")
    assert quick.conv_form == "split" and quick.jit_compile is False
    assert forms.for_run(load_recipe(QUICKSTART), "gpu").jit_compile is True


def test_jit_compile_takes_true_false_or_auto():
    config = load_recipe(PAPER)
    assert config.compute.jit_compile == "auto"
    assert override(config, ["compute.jit_compile=False"]).compute.jit_compile is False
    assert override(config, ["compute.jit_compile=auto"]).compute.jit_compile == "auto"
    with pytest.raises(ConfigError, match="compute.jit_compile='yes'; valid values: 'bool', 'auto'"):
        override(config, ["compute.jit_compile=yes"])
    with pytest.raises(ConfigError, match="compute.lrn_impl='fast'; valid values: auto, ops, matmul, tf_op"):
        override(config, ["compute.lrn_impl=fast"])
    # "auto" neither asks for XLA nor refuses the settings that exclude it
    validate(override(config, {"train.deterministic": True}))
    with pytest.raises(ConfigError, match="needs compute.jit_compile=False"):
        validate(override(config, {"train.deterministic": True, "compute.jit_compile": True}))


def test_compute_is_apart_from_what_the_net_is():
    """How the net is computed is one section of its own; the paper's sections hold none
    of it, and an old key names its new place in one line."""
    config = load_recipe(PAPER)
    compute = {f.name for f in dataclasses.fields(config.compute)}
    assert {"conv_form", "lrn_impl", "update_op", "jit_compile", "fused_update", "steps_per_loop"} <= compute
    for section in ("model", "optim", "train", "data"):
        assert not compute & {f.name for f in dataclasses.fields(getattr(config, section))}, section
    assert config.compute.steps_per_loop == 20  # recipes/paper.py
    for old, new in [
        ("model.conv_form", "compute.conv_form"),
        ("model.lrn_impl", "compute.lrn_impl"),
        ("optim.update_op", "compute.update_op"),
        ("train.jit_compile", "compute.jit_compile"),
        ("train.steps_per_loop", "compute.steps_per_loop"),
    ]:
        with pytest.raises(ConfigError) as e:
            override(config, [f"{old}=split"])
        assert str(e.value).startswith(f"{old} is now {new}") and "\n" not in str(e.value)


def test_device_kind_follows_the_columns_devices_and_takes_the_default_strategy():
    import tensorflow as tf

    default = tf.distribute.get_strategy()  # distribute.strategy=columns runs under it
    assert forms.device_kind(default) == ("gpu" if tf.config.list_logical_devices("GPU") else "cpu")
    assert forms.device_kind(default, ("/gpu:0", "/gpu:1")) == "gpu"
    assert forms.device_kind(default, ("/cpu:0", "/cpu:1")) == "cpu"
