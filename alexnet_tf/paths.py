"""Paths as users give them: relative to the working directory or absolute, `~` for the
home folder. Every command and `load_net` resolve what they are given here, once, at the
door: a run folder, a checkpoint, a data spec, a file to read or a folder to write, and
the paths inside a config (data.source, data.stats_path, ..., finetune.init_from), so
that the rest of the library only sees absolute paths and a run's config.json names its
data wherever the run is resumed from."""

from __future__ import annotations

import dataclasses
import os

from alexnet_tf.config import Config

# Config fields that hold paths ("" = unset).
CONFIG_PATHS = {
    "data": ("stats_path", "label_file", "tfds_data_dir", "tfds_manual_dir"),
    "finetune": ("init_from",),
}


def resolve(path: str | os.PathLike) -> str:
    """`path` as an absolute path: relative to the working directory, `~` expanded. A URL
    (gs://bucket/x, anything with a scheme) and "" stay as they are."""
    path = os.fspath(path)
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def resolve_spec(spec: str) -> str:
    """A data spec with its path resolved: `folder:data/x` -> `folder:/abs/data/x`
    (`tfds:NAME`, `builtin:fashion_mnist` and a bare `fashion_mnist:` stay as they are):
    the kinds registered with `path=True` in alexnet_tf.data.specs."""
    from alexnet_tf.data.specs import SOURCES  # slow: alexnet_tf.data loads TensorFlow

    kind, sep, arg = spec.partition(":")
    if kind in SOURCES and SOURCES[kind].path and arg:
        return f"{kind}{sep}{resolve(arg)}"
    return spec


def resolve_config(config: Config) -> Config:
    """`config` with every path in it resolved (data.source and CONFIG_PATHS)."""
    sections = {}
    for section, keys in CONFIG_PATHS.items():
        values = getattr(config, section)
        changes = {k: resolve(getattr(values, k)) for k in keys}
        if section == "data":
            changes["source"] = resolve_spec(values.source)
        if any(getattr(values, k) != v for k, v in changes.items()):
            sections[section] = dataclasses.replace(values, **changes)
    return dataclasses.replace(config, **sections) if sections else config
