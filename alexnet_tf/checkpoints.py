"""The run's state on disk: one tf.train.Checkpoint of the run, saved by every worker
(saving may run collectives) and kept from the chief alone, the newest few and the best;
the resume, which passes over checkpoints that cannot be read; and SIGTERM, which asks
the loop to stop at its next host call."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import threading

import tensorflow as tf

log = logging.getLogger(__name__)
UNREADABLE = "unreadable"  # the folder beside the checkpoints where unreadable ones are set aside


def problem(path: str) -> str:
    """Why the checkpoint `path` cannot be read ("" if it can): every tensor is read, so a
    cut file ("Read less bytes than requested") or changed bytes (its checksum) show."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as e:  # DataLossError, NotFoundError, IndexError, ...: all mean unreadable
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
    return ""


def newest_readable(directory: str, set_aside: bool = False) -> str | None:
    """The newest checkpoint of `directory` that can be read whole, or None. Each newer
    one that cannot is named in a warning and passed over; with `set_aside` its files
    are moved to DIRECTORY/unreadable/ (never deleted) and the folder's checkpoint list
    is rewritten without it, so that the run's own bookkeeping forgets it too."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return None
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    paths = [p if os.path.isabs(p) else os.path.join(directory, p) for p in paths]
    for i, path in enumerate(reversed(paths)):
        why = problem(path)
        if not why:
            return path
        if set_aside:
            aside = os.path.join(directory, UNREADABLE)
            os.makedirs(aside, exist_ok=True)
            for f in glob.glob(path + ".*"):
                os.replace(f, os.path.join(aside, os.path.basename(f)))
            keep = paths[: len(paths) - 1 - i]
            if keep:
                tf.compat.v1.train.update_checkpoint_state(directory, keep[-1], all_model_checkpoint_paths=keep)
            else:
                os.remove(os.path.join(directory, "checkpoint"))
            where = f"moved to {aside}"
        else:
            where = "left where it is"
        log.warning("checkpoint %s cannot be read (%s); %s, using the one before it", path, why, where)
    return None


class Checkpoints:
    """`objects` (name -> trackable) saved to WORKDIR/checkpoints (the newest `keep`) and
    WORKDIR/checkpoints/best (one), numbered by step. A worker other than the chief
    saves into a folder of its own that is removed after each save; every worker
    restores from the chief's."""

    def __init__(self, workdir: str, chief: bool, task: str, keep: int, **objects):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.directory = os.path.join(workdir, "checkpoints")
        self.chief = chief
        # Before the managers read the folder's list: the chief sets unreadable ones aside.
        self.resume_from = newest_readable(self.directory, set_aside=chief)
        if chief:
            newest_readable(os.path.join(self.directory, "best"), set_aside=True)
        folder = self.directory if chief else os.path.join(workdir, "_nonchief", task)
        self.latest = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=keep)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(folder, "best"), max_to_keep=1, checkpoint_name="best"
        )

    def restore(self) -> str | None:
        """Restores the chief's newest readable checkpoint, if there is one; returns its path."""
        path = self.resume_from
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step: int, best: bool = False) -> None:
        manager = self.best if best else self.latest
        manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(manager.directory, ignore_errors=True)

    def describe_latest(self) -> str:
        return self.latest.latest_checkpoint if self.chief else "the chief's checkpoint"


class StopRequest:
    """Set by SIGTERM (preemption) while `watch()` is active: the training loop reads it
    before each host call and passes it to the all-reduce that makes every worker stop
    at the same step."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def watch(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return

        def handler(signum, frame):
            self.requested = True

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
