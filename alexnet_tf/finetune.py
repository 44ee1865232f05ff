"""Fine-tuning: a run that starts from a trained net (a run folder of ours, or weights
imported from Caffe's bvlc_alexnet) instead of Sec. 5's initialisation.

`finetune.init_from` names the net. The new run takes from it what its weights were
trained for: the net's architecture and conventions (`model.*` but the class count, the
dropout rate and the init of the new layers; never how it is computed, the `compute`
section) and how images were prepared for it (`data.resize_size`, `crop_size`,
`pad_crop`, `subtract_mean`, `input_scale`, `channel_order`, `resize`), and its training
set's statistics (mean image, colour covariance). Every layer is copied but `finetune.new_layers` (fc8 by default:
new classes), which start from the recipe's init; `finetune.freeze` keeps layers as
loaded; the copied layers learn at `finetune.lr_factor` times the rate of the new ones.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import keras

from alexnet_tf.config import Config, ConfigError
from alexnet_tf.nets import TrainedNet

# The recipe decides these model settings; the rest come from the pretrained net. How the
# net is computed (the `compute` section) is never taken from it: the run picks its own.
MODEL_OWN = ("num_classes", "dropout", "init", "init_std", "bias_one")
# How the pretrained net's inputs were prepared: taken from it.
DATA_ADOPTED = ("resize_size", "crop_size", "pad_crop", "subtract_mean", "input_scale", "channel_order", "resize")


@functools.lru_cache(maxsize=2)
def load_pretrained(path: str) -> TrainedNet:
    """The net `finetune.init_from` names: a run folder, a checkpoint or a .caffemodel
    (read once per process: the run's config and its first start both need it); a
    ConfigError that names the setting and what to give if it cannot be read."""
    from alexnet_tf.applications import load_net

    try:
        return load_net(path)
    except ConfigError as e:
        hint = ""
        if not os.path.exists(path) and not str(path).endswith(".caffemodel"):
            hint = (
                "; give a trained run (--set finetune.init_from=runs/NAME), or import Caffe's bvlc_alexnet there "
                f"first: python -m alexnet_tf.convert bvlc_alexnet.caffemodel --workdir {path}"
            )
        raise ConfigError(f"finetune.init_from={path!r}: {e}{hint}") from e


def check_layers(config: Config, net: TrainedNet) -> None:
    """`finetune.new_layers` and `finetune.freeze` name layers with weights of the net,
    and no layer is both new and frozen (it would stay as drawn); else a ConfigError."""
    f = config.finetune
    weighted = [layer.name for layer in net.model.layers if layer.weights]
    for key, names in (("new_layers", f.new_layers), ("freeze", f.freeze)):
        for name in names:
            if name not in weighted:
                raise ConfigError(
                    f"finetune.{key} names no layer {name!r}; the net's layers with weights: {', '.join(weighted)}"
                )
    both = [name for name in f.freeze if name in f.new_layers]
    if both:
        raise ConfigError(
            f"finetune.freeze names {', '.join(both)}, which finetune.new_layers draws afresh: frozen, it would "
            "never learn; take it out of one of them"
        )


def adopt(config: Config, net: TrainedNet) -> tuple[Config, list[str]]:
    """`config` with the pretrained net's architecture, conventions and input preparation
    (see the module docstring), and the settings that changed, as `key: old -> new`.
    Raises ConfigError for new or frozen layers the net does not have (`check_layers`)."""
    check_layers(config, net)
    changed = []

    def take(section: str, own, theirs, keys):
        values = {}
        for f in dataclasses.fields(own):
            if f.name in keys and hasattr(theirs, f.name) and getattr(own, f.name) != getattr(theirs, f.name):
                values[f.name] = getattr(theirs, f.name)
                changed.append(f"{section}.{f.name}: {getattr(own, f.name)!r} -> {values[f.name]!r}")
        return dataclasses.replace(own, **values)

    model_keys = [f.name for f in dataclasses.fields(config.model) if f.name not in MODEL_OWN]
    model = take("model", config.model, net.config.model, model_keys)
    data = take("data", config.data, net.config.data, DATA_ADOPTED)
    return dataclasses.replace(config, model=model, data=data), changed


def lr_scales(model: keras.Model, config: Config) -> list[float]:
    """Per trainable variable, the factor of its learning rate: `finetune.lr_factor` for
    copied layers, 1 for the new ones (all 1 without fine-tuning)."""
    f = config.finetune
    if not f.init_from:
        return [1.0] * len(model.trainable_variables)
    new = set(f.new_layers)
    owner = {id(v): layer.name for layer in model.layers for v in layer.trainable_variables}
    return [1.0 if owner[id(v)] in new else f.lr_factor for v in model.trainable_variables]


def initialize(model: keras.Model, config: Config) -> str:
    """Copies the pretrained net's weights into `model` but for `finetune.new_layers`;
    returns the line that says so."""
    f = config.finetune
    net = load_pretrained(f.init_from)
    theirs = {layer.name: layer for layer in net.model.layers}
    copied = []
    for layer in model.layers:
        if not hasattr(layer, "kernel") or layer.name in f.new_layers:  # conv and fc layers
            continue
        if layer.name not in theirs:
            raise ConfigError(f"{f.init_from} has no layer {layer.name!r} to copy; add it to finetune.new_layers")
        mine, source = (layer.kernel, layer.bias), (theirs[layer.name].kernel, theirs[layer.name].bias)
        if [tuple(v.shape) for v in mine] != [tuple(v.shape) for v in source]:
            raise ConfigError(
                f"{layer.name} of {f.init_from} has weights {[tuple(v.shape) for v in source]}, this net "
                f"{[tuple(v.shape) for v in mine]}; add it to finetune.new_layers to draw it afresh"
            )
        for v, w in zip(mine, source):
            v.assign(w.numpy())
        copied.append(layer.name)
    frozen = f" ({', '.join(f.freeze)} frozen)" if f.freeze else ""
    new = ", ".join(n for n in f.new_layers) or "none"
    return f"fine-tuning from {net.origin}: copied {', '.join(copied)}{frozen}; new: {new}"
