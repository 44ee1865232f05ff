"""Data specs (`--data SPEC`, `data.source`): the kinds of source, each one function and
one registration, and the splits a run uses.

A kind of source is a function `(ARG, DataConfig) -> Source` registered with
`@data_source("kind:ARG")`: `open_source("kind:...")` calls it with what follows
the first colon. The registry `SOURCES` makes the `--data` help (`cli.add_data`), the
one-line error for an unknown kind, and which arguments are paths resolved against the
working directory (`paths.resolve_spec`); docs/input.md's table of sources is checked
against it (tests/test_sources.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from alexnet_tf.config import DataConfig
from alexnet_tf.data import records
from alexnet_tf.data.sources import DEBIAN_FASHION_MNIST, DataError, Source, fashion_mnist_source, folder_source

EVAL_SPLITS = ("validation", "val", "test")  # a source's validation split, the first it has

Opener = Callable[[str, DataConfig], Source]


@dataclasses.dataclass(frozen=True)
class SourceKind:
    """One kind of data spec: its `form` as users write it (`folder:PATH`), the function
    that opens it, and whether its argument is a path."""

    form: str
    open: Opener
    path: bool

    @property
    def kind(self) -> str:
        return self.form.partition(":")[0]


SOURCES: dict[str, SourceKind] = {}  # kind (the spec's text before the first colon) -> SourceKind


def data_source(form: str, path: bool = False) -> Callable[[Opener], Opener]:
    """Registers the decorated `fn(arg, config) -> Source` as the kind of spec `form`
    ("kind:ARG"; `path`: ARG is a file or folder, made absolute where the spec is given)."""

    def register(fn: Opener) -> Opener:
        entry = SourceKind(form, fn, path)
        if not entry.kind or entry.kind in SOURCES:
            raise ValueError(f"data source kind {entry.kind!r} of {form!r} is empty or already registered")
        SOURCES[entry.kind] = entry
        return fn

    return register


def forms() -> list[str]:
    """The registered specs as users write them: `folder:PATH`, `tfds:NAME[:SPLIT]`, ..."""
    return [s.form for s in SOURCES.values()]


def open_source(spec: str, config: DataConfig | None = None) -> Source:
    """The Source of a data spec (one of `forms()`); `config` supplies what a kind reads
    beyond its argument (a folder's label file, TFDS's folders)."""
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise DataError(f"unknown data source {spec!r}; valid forms: {', '.join(forms())}")
    return SOURCES[kind].open(arg, config or DataConfig())


# --------------------------------------------------------------------------- the kinds
@data_source("folder:PATH", path=True)
def _folder(path: str, config: DataConfig) -> Source:
    return folder_source(path, config.label_file)


@data_source("tfds:NAME[:SPLIT]")
def _tfds(arg: str, config: DataConfig) -> Source:
    name, _, split = arg.partition(":")
    if not name:
        raise DataError("tfds source needs a dataset name, e.g. tfds:imagenet2012 or tfds:imagenette:train[:10%]")
    return records.tfds_source(name, split, config.tfds_data_dir, config.tfds_manual_dir)


@data_source("tfrecord:GLOB", path=True)
def _tfrecord(pattern: str, config: DataConfig) -> Source:
    return records.tfrecord_source(pattern)


@data_source("fashion_mnist:DIR", path=True)
def _fashion_mnist(folder: str, config: DataConfig) -> Source:
    return fashion_mnist_source(folder or DEBIAN_FASHION_MNIST)


@data_source("builtin:fashion_mnist")
def _builtin(name: str, config: DataConfig) -> Source:
    if name != "fashion_mnist":
        raise DataError(f"unknown data source 'builtin:{name}'; the one built in is builtin:fashion_mnist")
    return fashion_mnist_source("builtin")


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
