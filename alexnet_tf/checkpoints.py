"""The run's state on disk: one tf.train.Checkpoint of the run, saved by every worker
(saving may run collectives) and kept from the chief alone, the newest few and the best;
the resume; and SIGTERM, which asks the loop to stop at its next host call."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading

import tensorflow as tf


class Checkpoints:
    """`objects` (name -> trackable) saved to WORKDIR/checkpoints (the newest `keep`) and
    WORKDIR/checkpoints/best (one), numbered by step. A worker other than the chief
    saves into a folder of its own that is removed after each save; every worker
    restores from the chief's."""

    def __init__(self, workdir: str, chief: bool, task: str, keep: int, **objects):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.directory = os.path.join(workdir, "checkpoints")
        self.chief = chief
        folder = self.directory if chief else os.path.join(workdir, "_nonchief", task)
        self.latest = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=keep)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(folder, "best"), max_to_keep=1, checkpoint_name="best"
        )

    def restore(self) -> str | None:
        """Restores the chief's newest checkpoint, if there is one; returns its path."""
        path = tf.train.latest_checkpoint(self.directory)
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
