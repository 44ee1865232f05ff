"""Data specs (`--data SPEC`, `data.source`): from `folder:/data/imagenet` to a Source,
and the splits a run uses."""

from __future__ import annotations

import dataclasses

from alexnet_tf.config import DataConfig
from alexnet_tf.data import records
from alexnet_tf.data.sources import DEBIAN_FASHION_MNIST, DataError, Source, fashion_mnist_source, folder_source

SPECS = "folder:PATH, tfds:NAME[:SPLIT], tfrecord:GLOB, fashion_mnist:DIR, builtin:fashion_mnist"
EVAL_SPLITS = ("validation", "val", "test")  # a source's validation split, the first it has


def open_source(spec: str, config: DataConfig | None = None) -> Source:
    """Parses a data spec (see SPECS); `config` supplies the folder label file and the
    TFDS directories."""
    config = config or DataConfig()
    kind, _, arg = spec.partition(":")
    if kind == "builtin" and arg == "fashion_mnist":
        return fashion_mnist_source("builtin")
    if kind == "fashion_mnist":
        return fashion_mnist_source(arg or DEBIAN_FASHION_MNIST)
    if kind == "folder":
        return folder_source(arg, config.label_file)
    if kind == "tfrecord":
        return records.tfrecord_source(arg)
    if kind == "tfds":
        name, _, split = arg.partition(":")
        if not name:
            raise DataError("tfds source needs a dataset name, e.g. tfds:imagenet2012 or tfds:imagenette:train[:10%]")
        return records.tfds_source(name, split, config.tfds_data_dir, config.tfds_manual_dir)
    raise DataError(f"unknown data source {spec!r}; valid forms: {SPECS}")


def resolve_splits(source: Source, config: DataConfig, evaluate: bool = True) -> DataConfig:
    """`config` with `eval_split` "" replaced by the source's validation split; raises
    DataError, naming the source's splits, for a split it does not have (the eval split
    only if `evaluate`)."""
    own = [s for s in source.splits if s not in source.aliases]
    eval_split = config.eval_split or next((s for s in EVAL_SPLITS if s in own), "")
    if not eval_split and evaluate:
        raise DataError(
            f"{source.name} has no validation split ({', '.join(EVAL_SPLITS)}); it has {', '.join(source.splits)}: "
            "set data.eval_split=NAME"
        )
    for key, split in (("train_split", config.train_split), ("eval_split", eval_split)):
        if (split or evaluate) and split not in source.splits:
            raise DataError(f"data.{key}={split!r}: {source.name} has no such split; it has {', '.join(source.splits)}")
    return dataclasses.replace(config, eval_split=eval_split)
