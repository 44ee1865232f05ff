"""alexnet_tf.forms: which forms "auto" picks per device and precision, and that explicit
values and the combinations that exclude XLA win over the table. (That the forms compute
the same numbers: tests/test_model.py, test_forms_agree_on_outputs_and_one_sgd_step.)"""

import pytest
from helpers import PAPER, QUICKSTART

from alexnet_tf import forms
from alexnet_tf.config import ConfigError, load_recipe, override


def test_auto_picks_oneDNN_forms_on_a_cpu_and_xla_forms_on_a_gpu():
    for precision in ("float32", "mixed_bfloat16"):
        config, chosen = forms.apply(load_recipe(PAPER), "cpu")
        config = override(config, {"train.precision": precision})
        assert (config.model.conv_form, config.model.lrn_impl, config.optim.update_op) == ("split", "matmul", "fused")
        assert config.train.jit_compile is False and chosen.fused_update is False
        config, chosen = forms.apply(override(load_recipe(PAPER), {"train.precision": precision}), "gpu")
        assert (config.model.conv_form, config.model.lrn_impl, config.optim.update_op) == ("grouped", "ops", "keras")
        assert config.train.jit_compile is True and chosen.fused_update is True
        assert set(chosen.chosen) == {"conv_form", "lrn_impl", "update_op", "jit_compile"}


def test_explicit_values_stay_and_xla_stays_off_where_it_cannot_run():
    config = override(load_recipe(PAPER), {"model.conv_form": "grouped", "train.jit_compile": True})
    resolved, chosen = forms.apply(config, "cpu")
    assert resolved.model.conv_form == "grouped" and resolved.train.jit_compile is True
    assert chosen.chosen == ("lrn_impl", "update_op") and chosen.fused_update is True
    assert "conv_form=grouped, lrn_impl=matmul (auto)" in chosen.describe()
    # no deterministic max-pooling gradient in XLA; the columns strategy spans two devices
    deterministic = override(load_recipe(PAPER), {"train.deterministic": True})
    assert forms.apply(deterministic, "gpu")[0].train.jit_compile is False
    columns = override(load_recipe(PAPER), {"distribute.strategy": "columns"})
    assert forms.apply(columns, "gpu")[0].train.jit_compile is False
    # ... and updates each column's weights with the fused kernel, on the weights' device
    assert forms.apply(columns, "gpu")[0].optim.update_op == "fused"
    with pytest.raises(ConfigError, match="optim.update_op=fused or auto"):
        override(columns, {"optim.update_op": "keras"})
    # explicit CPU forms on a GPU resolve as they are; the quickstart leaves them to the table
    explicit = override(load_recipe(QUICKSTART), {"model.conv_form": "split", "train.jit_compile": False})
    quick, _ = forms.apply(explicit, "gpu")
    assert quick.model.conv_form == "split" and quick.train.jit_compile is False
    assert forms.apply(load_recipe(QUICKSTART), "gpu")[0].train.jit_compile is True


def test_jit_compile_takes_true_false_or_auto():
    config = load_recipe(PAPER)
    assert config.train.jit_compile == "auto"
    assert override(config, ["train.jit_compile=False"]).train.jit_compile is False
    assert override(config, ["train.jit_compile=auto"]).train.jit_compile == "auto"
    with pytest.raises(ConfigError, match="train.jit_compile='yes'; valid values: 'bool', 'auto'"):
        override(config, ["train.jit_compile=yes"])
    with pytest.raises(ConfigError, match="model.lrn_impl='fast'; valid values: auto, ops, matmul, tf_op"):
        override(config, ["model.lrn_impl=fast"])
    # "auto" neither asks for XLA nor refuses the settings that exclude it
    override(config, {"train.deterministic": True})
    with pytest.raises(ConfigError, match="needs train.jit_compile=False"):
        override(config, {"train.deterministic": True, "train.jit_compile": True})


def test_device_kind_follows_the_columns_devices_and_takes_the_default_strategy():
    import tensorflow as tf

    default = tf.distribute.get_strategy()  # distribute.strategy=columns runs under it
    assert forms.device_kind(default) == ("gpu" if tf.config.list_logical_devices("GPU") else "cpu")
    assert forms.device_kind(default, ("/gpu:0", "/gpu:1")) == "gpu"
    assert forms.device_kind(default, ("/cpu:0", "/cpu:1")) == "cpu"
