"""A run's folder: the checks before a run resumes in it, the config it resolves from
its data, and reading and writing a trained net (`nets.TrainedNet`) as a run folder.

A run folder holds what `train` wrote: config.json, classes.json (`write_classes`),
stats.npz (the mean image and colour statistics) and checkpoints/ (the newest few, and best/ with the lowest
validation error). `load_net` reads the net of any run folder or checkpoint in it;
`write_net` writes a net made elsewhere (imported weights) as a run folder that every
command takes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys

import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import paths
from alexnet_tf.checkpoints import newest_readable, problem, saved
from alexnet_tf.config import Config, ConfigError, DataConfig, load_json, to_dict
from alexnet_tf.data.records import imagenet_class_descriptions
from alexnet_tf.model import build_model, model_variables
from alexnet_tf.nets import TrainedNet
from alexnet_tf.report import Progress

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str, best: bool = False) -> tuple[str, str]:
    """(workdir, checkpoint prefix), both absolute, for a run folder (its newest readable
    checkpoint, or with `best` its best) or for a checkpoint prefix inside one; `path`
    relative to the working directory or absolute."""
    path = paths.resolve(path)
    if os.path.isdir(path):
        folder = os.path.join(path, "checkpoints", "best" if best else "")
        checkpoint = newest_readable(folder)
        if checkpoint is None:
            raise ConfigError(
                f"no readable checkpoint in {folder}; train first: python -m alexnet_tf.train RECIPE --workdir {path}"
            )
        return path, checkpoint
    if os.path.exists(path + ".index"):
        why = problem(path)
        if why:
            raise ConfigError(
                f"checkpoint {path} cannot be read ({why}); give its run folder to use the newest readable one"
            )
        workdir = os.path.dirname(path)
        if os.path.basename(workdir) == "best":
            workdir = os.path.dirname(workdir)
        return os.path.dirname(workdir), path
    raise ConfigError(f"{path!r} is neither a run folder nor a checkpoint (expected {path}.index)")


def load_net(path: str, best: bool = False) -> TrainedNet:
    """The trained net of a run folder (its newest readable checkpoint, or its best) or of
    one checkpoint in it."""
    workdir, checkpoint = resolve_checkpoint(path, best)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{workdir!r} has no config.json; is it a run folder of `python -m alexnet_tf.train`?")
    config = paths.resolve_config(load_json(config_path))
    class_names, descriptions = read_classes(workdir, config.model.num_classes)
    stats = data_lib.Stats.load(os.path.join(workdir, "stats.npz"))
    # Variables are float32 under every precision policy, so a float32 model restores them.
    model = build_model(config.model)
    restored = tf.train.Checkpoint(model=model_variables(model)).restore(checkpoint)
    restored.expect_partial().assert_existing_objects_matched()
    return TrainedNet(config, model, stats, class_names, origin=checkpoint, class_descriptions=descriptions or ())


def check_new_workdir(workdir: str) -> None:
    """Raises unless `workdir` is new or empty: a net written as a run never overwrites one."""
    workdir = paths.resolve(workdir)
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise ConfigError(f"{workdir} exists and is not empty: give a new --workdir")


def write_net(net: TrainedNet, workdir: str, step: int = 0) -> str:
    """Writes `net` as a run folder (config.json, classes.json, stats.npz, a checkpoint
    at `step`) that evaluate, export, figures, serve and fine-tuning take; returns the
    checkpoint's path. `workdir` must be new or empty; the folder is written beside it and
    renamed, so a failure leaves no half folder."""
    workdir = paths.resolve(workdir)
    check_new_workdir(workdir)
    parent, name = os.path.split(workdir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.writing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write_json(os.path.join(tmp, "config.json"), to_dict(net.config))
        write_classes(tmp, list(net.class_names), list(net.class_descriptions) or None)
        net.stats.save(os.path.join(tmp, "stats.npz"))
        checkpoint = tf.train.Checkpoint(model=model_variables(net.model))
        manager = tf.train.CheckpointManager(checkpoint, os.path.join(tmp, "checkpoints"), max_to_keep=1)
        prefix = manager.save(checkpoint_number=step)
        if os.path.isdir(workdir):
            os.rmdir(workdir)  # empty (checked above)
        os.replace(tmp, workdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(workdir, os.path.relpath(prefix, tmp))  # the manager's list is relative


def write_classes(workdir: str, class_names: list, descriptions: list | None = None) -> None:
    """WORKDIR/classes.json: the class names in label order; ImageNet's synsets each with
    its readable name beside it (["n01440764", "tench, Tinca tinca"])."""
    descriptions = descriptions or imagenet_class_descriptions(class_names)
    write_json(
        os.path.join(workdir, "classes.json"), list(zip(class_names, descriptions)) if descriptions else class_names
    )


def read_classes(workdir: str, num_classes: int) -> tuple[list, list | None]:
    """(class names, readable names or None) of a run folder, from its classes.json
    (either form `write_classes` writes; ImageNet's synsets written without their names
    get them here); numbers for a run without one."""
    path = os.path.join(workdir, "classes.json")
    if not os.path.isfile(path):
        return [str(i) for i in range(num_classes)], None
    with open(path) as f:
        entries = json.load(f)
    if entries and all(isinstance(e, list) for e in entries):
        return [str(e[0]) for e in entries], [str(e[1]) for e in entries]
    names = [str(e) for e in entries]
    return names, imagenet_class_descriptions(names)


# What a resumed run must share with the run that wrote the workdir: the net, and
# everything that fixes which examples make up which step (batch, seed, data, order).
# How the net is computed (the `compute` section) is not among them: a run may resume on
# another kind of device, computed there as its compute section asks.
RESUME_KEYS = (
    "model",
    "train.batch_size",
    "train.seed",
    "data.source",
    "data.train_split",
    "data.shuffle_buffer",
    "data.random_labels",
    "data.resize_size",
    "data.resize",
    "data.channel_order",
    "data.crop_size",
    "data.pad_crop",
    "data.stats_path",
    "finetune",
)
# What WORKDIR/stats.npz (the training set's mean image and covariance) was computed from.
STATS_KEYS = (
    "data.source",
    "data.train_split",
    "data.resize_size",
    "data.resize",
    "data.stats_path",
    "finetune.init_from",
)


def holds_checkpoints(workdir: str) -> bool:
    """Whether the run folder `workdir` holds a checkpoint (readable or not; the newest
    few or the best): a run that saved at least one step."""
    folder = os.path.join(workdir, "checkpoints")
    return bool(saved(folder) or saved(os.path.join(folder, "best")))


def check_resume(config: Config, workdir: str) -> None:
    """Refuses a workdir whose run was started with other RESUME_KEYS settings and saved a
    checkpoint: it would be resumed with another net or at the wrong place in the data.
    A start that saved none binds nothing: its settings give way to `config`, said in one
    line, and statistics computed for other data are dropped (STATS_KEYS)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    old_flat = _leaves(to_dict(paths.resolve_config(load_json(path))))
    new_flat = _leaves(to_dict(config))

    def differ(keys):
        return [
            f"{k} {old_flat.get(k, '(unset)')!r} -> {v!r}"
            for k, v in sorted(new_flat.items())
            if any(k == key or k.startswith(key + ".") for key in keys) and old_flat.get(k) != v
        ]

    old_columns, new_columns = (flat.get("distribute.strategy") == "columns" for flat in (old_flat, new_flat))
    if old_columns != new_columns and holds_checkpoints(workdir):
        # distribute.strategy=columns keeps each column's half of a variable's momentum apart
        raise ConfigError(
            f"{workdir} holds a run trained {'with' if old_columns else 'without'} distribute.strategy=columns, "
            f"whose optimizer state is laid out {'per column' if old_columns else 'whole'}: resume it with "
            f"distribute.strategy={old_flat.get('distribute.strategy')} (evaluate, export and load_net read its "
            "weights under any strategy), or use a new --workdir"
        )
    changed = differ(RESUME_KEYS)
    if not changed:
        return
    if holds_checkpoints(workdir):
        raise ConfigError(
            f"{workdir} holds a run with different settings ({'; '.join(changed)}); resuming it would mix "
            "them: use a new --workdir, or the run's own recipe and overrides"
        )
    log.info("%s: the start that wrote its config.json saved no step; starting with these settings", workdir)
    stats = os.path.join(workdir, "stats.npz")
    if differ(STATS_KEYS) and os.path.exists(stats):
        os.remove(stats)  # computed for other data: computed again


def _leaves(tree: dict, prefix: str = "") -> dict:
    """{"section.key": value} of a nested dict."""
    out = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def write_json(path: str, value) -> None:
    """Writes JSON to a temporary name and renames it: readers see the old file or the
    new one, never half of one."""
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(value, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)
    except BaseException:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")  # e.g. a full disk: the old file stays, no half copy beside it
        raise


def run_stats(source: data_lib.Source, config: DataConfig, workdir: str, chief: bool, say, wait) -> data_lib.Stats:
    """The mean image and RGB covariance of Sec. 2 and 4.1 a run uses, kept in
    WORKDIR/stats.npz (what evaluate and export read): those of `data.stats_path`, else
    computed by the chief over the training split on the run's first start. `say(line)`
    reports; `wait()` returns once every worker is there, after which the others read
    the chief's file."""
    path = os.path.join(workdir, "stats.npz")
    if chief and (config.stats_path or not os.path.exists(path)):
        progress = None
        if not config.stats_path:
            n = source.sizes[config.train_split]
            say(
                f"computing the mean image and RGB covariance (Sec. 2, 4.1) over the {n} training images, "
                f"once; to reuse them elsewhere: --set data.stats_path={path}"
            )
            progress = Progress(n, "statistics", stream=sys.stdout)
        stats = data_lib.dataset_stats(source, config, config.train_split, progress and progress.update)
        if progress:
            progress.update(progress.total, final=True)
        try:
            stats.save(path + ".tmp.npz")
            os.replace(path + ".tmp.npz", path)  # never a half-written file for a resume to read
        except BaseException:
            if os.path.exists(path + ".tmp.npz"):
                os.remove(path + ".tmp.npz")
            raise
    wait()
    if not os.path.exists(path):
        raise ConfigError(f"{path} was not written by the chief: the workers of one run need one shared --workdir")
    return data_lib.Stats.load(path)
