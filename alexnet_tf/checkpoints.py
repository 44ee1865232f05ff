"""The run's state on disk: one tf.train.Checkpoint of the run, saved by every worker
(saving may run collectives) and kept from the chief alone, the newest few and the best;
the resume, which passes over checkpoints that cannot be read; a full disk, which ends
the run in one line with the partial save removed; and SIGTERM, which asks the loop to
stop at its next host call."""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import math
import os
import shutil
import signal
import threading

import tensorflow as tf

from alexnet_tf.config import ConfigError
from alexnet_tf.errors import TrainingError
from alexnet_tf.runfolder import BEST, UNREADABLE, RunFolder

log = logging.getLogger(__name__)


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


def saved(directory: str) -> list[str]:
    """The checkpoints of `directory` (prefixes, oldest first by step): those its checkpoint
    list names, and any other `NAME-STEP.index` there (a list lost or cut short)."""
    directory = os.path.abspath(directory)
    state = tf.train.get_checkpoint_state(directory)
    # get_checkpoint_state has already joined relative entries onto `directory`
    listed = (list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]) if state else []
    found = [f[: -len(".index")] for f in glob.glob(os.path.join(glob.escape(directory), "*-*.index"))]
    paths = {os.path.abspath(p) for p in [*listed, *found]}

    def step(path: str) -> tuple:
        number = path.rpartition("-")[2]
        return (int(number), path) if number.isdigit() else (-1, path)

    return sorted(paths, key=step)


def newest_readable(directory: str, set_aside: bool = False, start_over: str = "") -> str | None:
    """The newest checkpoint of `directory` that can be read whole, or None if it holds
    none. Each newer one that cannot is named in a warning and passed over; with
    `set_aside` the files it has are moved to DIRECTORY/unreadable/ (never deleted) and the
    folder's checkpoint list is rewritten to the readable ones, so that the run's own
    bookkeeping forgets it too. When none can be read nothing is moved: a ConfigError
    names each with its reason, `start_over` saying how to begin afresh."""
    directory = os.path.abspath(directory)
    paths = saved(directory)
    if not paths:
        return None
    newest, bad = _newest(paths)
    if newest is None:
        named = "; ".join(f"{os.path.basename(p)} ({why})" for p, why in bad)
        raise ConfigError(
            f"no checkpoint in {directory} can be read: {named}; nothing was moved or deleted"
            + (f". {start_over}" if start_over else "")
        )
    _pass_over(directory, paths, bad, set_aside)
    return newest


def set_aside_unreadable(directory: str) -> None:
    """Every checkpoint of `directory` newer than its newest readable one (all of them if
    none can be read) set aside as `newest_readable` does: for the best checkpoint, which
    the run can go on without."""
    directory = os.path.abspath(directory)
    paths = saved(directory)
    _pass_over(directory, paths, _newest(paths)[1], set_aside=True)


def _newest(paths: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """(the newest readable of `paths`, or None; the newer ones with why each cannot be read)."""
    bad = []
    for path in reversed(paths):
        why = problem(path)
        if not why:
            return path, bad
        bad.append((path, why))
    return None, bad


def _pass_over(directory: str, paths: list[str], bad: list[tuple[str, str]], set_aside: bool) -> None:
    """Warns of each of `bad`; with `set_aside` moves the files it has (only those that
    exist: nothing unchecked is touched) and rewrites the folder's list to the rest."""
    for path, why in bad:
        files = glob.glob(glob.escape(path) + ".*")
        if not files:
            where = "its files are missing"
        elif set_aside:
            aside = os.path.join(directory, UNREADABLE)
            os.makedirs(aside, exist_ok=True)
            for f in files:
                os.replace(f, os.path.join(aside, os.path.basename(f)))
            where = f"moved to {aside}"
        else:
            where = "left where it is"
        log.warning("checkpoint %s cannot be read (%s); %s, passed over", path, why, where)
    if not set_aside:
        return
    keep = [os.path.basename(p) for p in paths[: len(paths) - len(bad)]]
    state = tf.train.get_checkpoint_state(directory)
    listed = [os.path.basename(p) for p in state.all_model_checkpoint_paths] if state else []
    if keep and listed != keep:
        # the names alone: the list stays valid wherever the run folder is moved
        tf.compat.v1.train.update_checkpoint_state(directory, keep[-1], all_model_checkpoint_paths=keep)
    elif not keep and state:
        os.remove(os.path.join(directory, "checkpoint"))


def resume_point(workdir: str, chief: bool) -> str | None:
    """The checkpoint a run in `workdir` resumes from: the newest readable one of
    WORKDIR/checkpoints, None for a new run. The chief sets unreadable ones aside (and
    those of checkpoints/best, which the run can go on without). A run never starts
    afresh over checkpoints: none of them readable, or a best checkpoint and no other,
    raise a ConfigError that says how to start over, with nothing changed."""
    run = RunFolder(workdir)
    directory, best = run.checkpoints, run.best
    start_over = f"To start over, give a new --workdir (or move {directory} out of the way)"
    resume_from = newest_readable(directory, set_aside=chief, start_over=start_over)
    if not resume_from and saved(best):
        # a fresh start would replace the run's best checkpoint with its own
        names = ", ".join(os.path.basename(p) for p in saved(best))
        raise ConfigError(f"{best} holds {names} but {directory} no checkpoint to resume. {start_over}")
    if chief:
        set_aside_unreadable(best)
    return resume_from


class Checkpoints:
    """`objects` (name -> trackable) saved to WORKDIR/checkpoints (the newest `keep`) and
    WORKDIR/checkpoints/best (one), numbered by step. A worker other than the chief
    saves into a folder of its own that is removed after each save; every worker
    restores from the chief's."""

    def __init__(self, workdir: str, chief: bool, task: str, keep: int, resume_from: str | None = None, **objects):
        """`resume_from`: what `resume_point(workdir, chief)` gave (the checkpoint to restore)."""
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.objects = objects
        run = RunFolder(workdir)
        self.directory = run.checkpoints
        self.chief = chief
        self.resume_from = resume_from
        folder = self.directory if chief else run.nonchief(task)
        self.latest = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=keep)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(folder, BEST), max_to_keep=1, checkpoint_name=BEST
        )

    def restore(self) -> str | None:
        """Restores the chief's newest readable checkpoint, if there is one; returns its path."""
        path = self.resume_from
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step: int, best: bool = False) -> None:
        """Saves at `step`; on a full disk removes what the save wrote and raises a
        TrainingError naming the folder, the space the checkpoint needs and the newest
        intact checkpoint (which the next start resumes from)."""
        manager = self.best if best else self.latest
        try:
            manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            if not is_disk_full(e):
                raise
            raise TrainingError(self._disk_full(manager, step)) from None
        if not self.chief:
            shutil.rmtree(manager.directory, ignore_errors=True)

    def _disk_full(self, manager: tf.train.CheckpointManager, step: int) -> str:
        """Removes the partial save of `step` (TensorFlow's NAME-STEP_temp/ and any file of
        NAME-STEP that the manager does not list as saved); says what happened."""
        prefix = os.path.join(manager.directory, f"{BEST if manager is self.best else 'ckpt'}-{step}")
        for path in glob.glob(glob.escape(prefix) + "_temp*"):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        if os.path.abspath(prefix) not in {os.path.abspath(p) for p in manager.checkpoints}:
            for path in glob.glob(glob.escape(prefix) + ".*"):
                os.remove(path)
        intact = newest_readable(self.directory)
        needed = sum(os.path.getsize(f) for f in glob.glob(glob.escape(intact) + ".*")) if intact else None
        needed = needed or _nbytes(self.objects)
        free = shutil.disk_usage(manager.directory).free
        return (
            f"no space left on device for the checkpoint at step {step} in {manager.directory}: it needs "
            f"{_size(needed)}, {_size(free)} are free; the partial save was removed. "
            + (
                f"The newest intact checkpoint is {intact}: free space and run the same command to resume from it"
                if intact
                else "No checkpoint was saved before: free space and run the same command to start the run"
            )
        )

    def describe_latest(self) -> str:
        return self.latest.latest_checkpoint if self.chief else "the chief's checkpoint"


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(e: Exception) -> bool:
    """Whether `e` says the filesystem is full (or the user's quota): an OSError, or the
    error a TensorFlow op raised for one (its message carries the OS's words)."""
    if isinstance(e, OSError):
        return e.errno in DISK_FULL
    return isinstance(e, tf.errors.OpError) and any(os.strerror(n) in str(e) for n in DISK_FULL)


@contextlib.contextmanager
def disk_full_stops_run(workdir: str):
    """A full disk while the run writes anything (history, metrics, statistics, TensorBoard)
    becomes a TrainingError in one line naming the file and the newest intact checkpoint.
    Every file a run rewrites is written beside and renamed, so what was there stays whole."""
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or workdir
        intact = newest_readable(RunFolder(workdir).checkpoints)
        raise TrainingError(
            f"no space left on device writing {where} ({os.strerror(e.errno) if isinstance(e, OSError) else 'disk full'}); "
            + (f"the newest intact checkpoint is {intact}: " if intact else "")
            + "free space and run the same command again"
        ) from None


def _nbytes(tree) -> int:
    """Bytes of the variables in `tree` (dicts of them, and objects with `.variables`)."""
    if isinstance(tree, dict):
        return sum(_nbytes(v) for v in tree.values())
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return math.prod(tree.shape) * tf.as_dtype(tree.dtype).size
    return sum(_nbytes(v) for v in getattr(tree, "variables", ()))


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


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
