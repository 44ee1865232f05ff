"""Runs: the checks before a run resumes in its folder, the config it resolves from its
data, and reading and writing a trained net (`nets.TrainedNet`) as a run folder (whose
layout `alexnet_tf.runfolder` owns).

`read_net` reads the net of any run folder or checkpoint in it (for
`applications.load_net`, which every command and the API use); `write_net` writes a net
made elsewhere (imported weights) as a run folder that every command takes.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import paths
from alexnet_tf.checkpoints import newest_readable, problem, saved
from alexnet_tf.config import Config, ConfigError, DataConfig, to_dict
from alexnet_tf.model import build_model, model_variables
from alexnet_tf.nets import TrainedNet
from alexnet_tf.report import Progress
from alexnet_tf.runfolder import RunFolder

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str, best: bool = False) -> tuple[str, str]:
    """(workdir, checkpoint prefix), both absolute, for a run folder (its newest readable
    checkpoint, or with `best` its best) or for a checkpoint prefix inside one; `path`
    relative to the working directory or absolute."""
    path = paths.resolve(path)
    if os.path.isdir(path):
        run = RunFolder(path)
        folder = run.best if best else run.checkpoints
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
        return RunFolder.of_checkpoint(path).path, path
    raise ConfigError(f"{path!r} is neither a run folder nor a checkpoint (expected {path}.index)")


def read_net(path: str, best: bool = False) -> TrainedNet:
    """The trained net of a run folder (its newest readable checkpoint, or its best) or of
    one checkpoint in it."""
    workdir, checkpoint = resolve_checkpoint(path, best)
    run = RunFolder(workdir)
    if not run.has_config():
        raise ConfigError(f"{workdir!r} has no config.json; is it a run folder of `python -m alexnet_tf.train`?")
    config = run.read_config()
    class_names, descriptions = run.read_classes(config.model.num_classes)
    stats = run.read_stats()
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
        run = RunFolder(tmp)
        run.write_config(net.config)
        run.write_classes(list(net.class_names), list(net.class_descriptions) or None)
        run.write_stats(net.stats)
        checkpoint = tf.train.Checkpoint(model=model_variables(net.model))
        manager = tf.train.CheckpointManager(checkpoint, run.checkpoints, max_to_keep=1)
        prefix = manager.save(checkpoint_number=step)
        if os.path.isdir(workdir):
            os.rmdir(workdir)  # empty (checked above)
        os.replace(tmp, workdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(workdir, os.path.relpath(prefix, tmp))  # the manager's list is relative


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


def holds_checkpoints(run: RunFolder) -> bool:
    """Whether `run` holds a checkpoint (readable or not; the newest few or the best): a
    run that saved at least one step."""
    return bool(saved(run.checkpoints) or saved(run.best))


def check_resume(config: Config, workdir: str) -> None:
    """Refuses a workdir whose run was started with other RESUME_KEYS settings and saved a
    checkpoint: it would be resumed with another net or at the wrong place in the data.
    A start that saved none binds nothing: its settings give way to `config`, said in one
    line, and statistics computed for other data are dropped (STATS_KEYS)."""
    run = RunFolder(workdir)
    if not run.has_config():
        return
    old_flat = _leaves(to_dict(run.read_config()))
    new_flat = _leaves(to_dict(config))

    def differ(keys):
        return [
            f"{k} {old_flat.get(k, '(unset)')!r} -> {v!r}"
            for k, v in sorted(new_flat.items())
            if any(k == key or k.startswith(key + ".") for key in keys) and old_flat.get(k) != v
        ]

    old_columns, new_columns = (flat.get("distribute.strategy") == "columns" for flat in (old_flat, new_flat))
    if old_columns != new_columns and holds_checkpoints(run):
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
    if holds_checkpoints(run):
        raise ConfigError(
            f"{workdir} holds a run with different settings ({'; '.join(changed)}); resuming it would mix "
            "them: use a new --workdir, or the run's own recipe and overrides"
        )
    log.info("%s: the start that wrote its config.json saved no step; starting with these settings", workdir)
    if differ(STATS_KEYS):
        run.drop_stats()  # computed for other data: computed again


def _leaves(tree: dict, prefix: str = "") -> dict:
    """{"section.key": value} of a nested dict."""
    out = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def run_stats(source: data_lib.Source, config: DataConfig, folder: RunFolder, chief: bool, say, wait) -> data_lib.Stats:
    """The mean image and RGB covariance of Sec. 2 and 4.1 a run uses, kept in the run
    folder's stats.npz (what evaluate and export read): those of `data.stats_path`, else
    computed by the chief over the training split on the run's first start. `say(line)`
    reports; `wait()` returns once every worker is there, after which the others read
    the chief's file."""
    if chief and (config.stats_path or not folder.has_stats()):
        progress = None
        if not config.stats_path:
            n = source.sizes[config.train_split]
            say(
                f"computing the mean image and RGB covariance (Sec. 2, 4.1) over the {n} training images, "
                f"once; to reuse them elsewhere: --set data.stats_path={folder.stats}"
            )
            progress = Progress(n, "statistics", stream=sys.stdout)
        stats = data_lib.dataset_stats(source, config, config.train_split, progress and progress.update)
        if progress:
            progress.update(progress.total, final=True)
        folder.write_stats(stats)
    wait()
    if not folder.has_stats():
        raise ConfigError(
            f"{folder.stats} was not written by the chief: the workers of one run need one shared --workdir"
        )
    return folder.read_stats()
