"""A run's config, resolved in one place and validated once: `resolve` takes a recipe (or
a `Config`, or a run folder's own config.json) with `--data` and `--set` overrides, makes
its paths absolute (`alexnet_tf.paths`), takes from the data source what the config
leaves to it (the eval split, the class count), takes a fine-tuning run's architecture
and input preparation from its pretrained net (`alexnet_tf.finetune.adopt`), and then
validates the whole once. Nothing rewrites the config after it: the `compute` section goes
through as asked, and the run's `Runtime` resolves its "auto" forms for the devices
(`alexnet_tf.distribute.make_runtime`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from alexnet_tf import paths
from alexnet_tf.config import Config, ConfigError, import_recipe, load_json, override, validate
from alexnet_tf.runfolder import RunFolder

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A run's resolved config and what resolving it opened.

    config: the run's config, validated
    origin: where it came from and what was set, for the log (`config: recipes/x.py with ...`)
    source: the opened data source (`alexnet_tf.data.Source`), or None when not opened
    pretrained: the net `finetune.init_from` names (`nets.TrainedNet`), or None
    changed: what the pretrained net changed in the recipe, as `key: old -> new`
    """

    config: Config
    origin: str = ""
    source: object = None
    pretrained: object = None
    changed: tuple = ()


def data_overrides(data: str | None) -> list[str]:
    """`--data SPEC` as overrides: the source, and the eval split and class count left to
    it (found when it is opened, `resolve_data`), unless --set names them."""
    return [f"data.source={data}", "data.eval_split=", "model.num_classes=0"] if data else []


def resolve(
    recipe: str | os.PathLike | Config | None = None,
    *,
    workdir: str | os.PathLike | None = None,
    data: str | None = None,
    overrides: list[str] | dict = (),
    open_data: bool = True,
    evaluate: bool = True,
) -> Resolved:
    """The run's config: `recipe` (a recipe file or shipped name, or a `Config`; None: the
    `workdir` run's own config.json, a run to resume) with `--data` and the `--set`
    `overrides`, its paths resolved; with `open_data`, the data source opened and what the
    config leaves to it filled in (the eval split only if `evaluate`), and a fine-tuning
    run's pretrained net loaded and adopted, and where the config came from said in one
    line; then validated, once."""
    if isinstance(recipe, Config):
        config, origin = recipe, "the given Config"
    elif recipe is not None:
        config, origin = import_recipe(recipe), os.fspath(recipe)
    else:
        if not workdir:
            raise ConfigError("give a recipe (e.g. recipes/paper.py), or --workdir of a run to resume")
        path = RunFolder(workdir).config
        if not os.path.isfile(path):
            raise ConfigError(f"{workdir} holds no run (no config.json); give a recipe to start one there")
        config, origin = load_json(path), path
    config = override(override(config, data_overrides(data)), overrides)  # --set after --data: it may name them
    given = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides)
    sets = [*data_overrides(data), *given]
    origin += f" with {', '.join(sets)}" if sets else ""
    config = paths.resolve_config(config)
    source = pretrained = None
    changed = ()
    if open_data:
        log.info("config: %s", origin)
        from alexnet_tf import data as data_lib
        from alexnet_tf import distribute, finetune

        # logical CPUs (distribute.devices=cpu:N) must be set before TensorFlow starts,
        # which loading a pretrained net does
        distribute.parse_devices(config.distribute.devices)
        source = data_lib.open_source(config.data.source, config.data)
        config = resolve_data(config, source, evaluate)
        if config.finetune.init_from:
            pretrained = finetune.load_pretrained(config.finetune.init_from)
            config, changed = finetune.adopt(config, pretrained)
    return Resolved(validate(config), origin, source, pretrained, tuple(changed))


def resolve_data(config: Config, source, evaluate: bool = True) -> Config:
    """`config` with what it leaves to the data (an empty data.eval_split, model.num_classes
    0) taken from `source`, said on the console; raises for splits it does not have (the
    eval split only if `evaluate`). Not validated: `resolve` validates the whole."""
    from alexnet_tf import data as data_lib

    data = data_lib.resolve_splits(source, config.data, evaluate)
    if data.eval_split and data.eval_split != config.data.eval_split:
        log.info("evaluating on %s's split %r", source.name, data.eval_split)
    model = config.model
    if not model.num_classes:
        model = dataclasses.replace(model, num_classes=source.num_classes)
        log.info("%s has %d classes: model.num_classes=%d", source.name, source.num_classes, source.num_classes)
    if model.num_classes != source.num_classes:
        raise ConfigError(
            f"{config.data.source} has {source.num_classes} classes but model.num_classes="
            f"{model.num_classes}; set model.num_classes={source.num_classes}"
        )
    return dataclasses.replace(config, data=data, model=model)
