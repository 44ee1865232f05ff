"""The one place that writes metrics: TensorBoard summaries and the console line."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import struct
import sys
import time

import tensorflow as tf

from alexnet_tf.checkpoints import is_disk_full
from alexnet_tf.metrics import TRAIN_METRICS, errors
from alexnet_tf.runfolder import RunFolder


def _leaves(tree: dict, prefix: str = ""):
    """("section.key", value) for every leaf of a nested dict; lists become strings."""
    for k, v in sorted(tree.items()):
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield prefix + k, str(v) if isinstance(v, (list, tuple)) else v


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """A progress line for long passes (`label: done/total unit, rate, ETA`), at most
    every 2 s, on one line of a terminal; `quiet` silences it. Also the ETA of the
    training line (`eta`)."""

    def __init__(self, total: int, label: str, quiet: bool = False, stream=None, unit: str = "images"):
        self.total, self.label, self.quiet, self.unit = total, label, quiet, unit
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last = 0.0

    def eta(self, done: int) -> float:
        """Seconds left at the average pace so far (nan before any progress)."""
        elapsed = time.perf_counter() - self.start
        return (self.total - done) * elapsed / done if done > 0 else float("nan")

    def update(self, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if self.quiet or (not final and now - self.last < 2.0):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = self.eta(done)
        parts = [f"{self.label}: {done}/{self.total} {self.unit}"]
        if rate >= 1:
            parts.append(f"{rate:.0f} {self.unit}/s")
        parts.append("ETA " + ("?" if eta != eta else format_duration(eta)))
        end = "\n" if final or not self.stream.isatty() else "\r"
        print(", ".join(parts), end=end, file=self.stream, flush=True)


class Window:
    """Sums of the train loop's metrics over some steps, and the wall time they took."""

    def __init__(self, keys=TRAIN_METRICS):
        self.start, self.steps, self.sums = time.perf_counter(), 0, dict.fromkeys(keys, 0.0)

    def add(self, totals: dict, steps: int) -> None:
        self.steps += steps
        for k in self.sums:
            self.sums[k] += totals[k]

    def values(self, global_batch: int) -> dict:
        """Mean loss, top-1/top-5 error, images/s and ms per step over the window."""
        seconds = time.perf_counter() - self.start
        rates = errors(self.sums)
        return {
            "loss": self.sums["loss"] / self.steps,
            "top1_error": rates["top1_error"],
            "top5_error": rates["top5_error"],
            "images_per_sec": self.steps * global_batch / seconds,
            "step_time_ms": 1000 * seconds / self.steps,
        }


class Reporter:
    """Writes scalars to `workdir/tb/{train,eval}` and `workdir/metrics.jsonl` (one JSON
    object per call: split, step and the values, for scripts), the run's settings to
    TensorBoard's HParams and Text dashboards, progress lines to stdout.

    Only the chief writes files; every worker may print.
    """

    def __init__(self, workdir: str, total_steps: int, chief: bool = True, stream=None):
        self.total_steps = total_steps
        self.chief = chief
        self.stream = stream or sys.stdout
        self._writers = {}
        run = RunFolder(workdir)
        self._logdir = run.tensorboard
        self._jsonl = run.metrics
        self._start_step, self._pace = 0, None

    def writer(self, name: str) -> tf.summary.SummaryWriter:
        """The summary writer of `tb/NAME` ("" for `tb/` itself, where the settings go)."""
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self._logdir, name))
        return self._writers[name]

    @contextlib.contextmanager
    def _summaries(self, name: str, step: int):
        """`tb/NAME`'s writer as the default at `step`. A full disk closes every writer,
        cuts their event files back to their last whole record (the writer stops mid-record
        when the disk fills, and TensorFlow's record readers then stop at that record) and
        raises ENOSPC naming the file."""
        try:
            with self.writer(name).as_default(step=step):  # whose exit flushes
                yield
        except tf.errors.OpError as e:
            if not is_disk_full(e):
                raise
            for writer in self._writers.values():
                with contextlib.suppress(tf.errors.OpError):
                    writer.close()
            self._writers = {}
            files = glob.glob(os.path.join(self._logdir, "**", "events.out.tfevents.*"), recursive=True)
            cut = [path for path in files if _cut_to_whole_records(path)]
            where = cut[0] if len(cut) == 1 else os.path.join(self._logdir, name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where) from None

    def scalars(self, name: str, step: int, values: dict, extra: dict | None = None) -> None:
        """`values` as TensorBoard curves and in metrics.jsonl; `extra` in metrics.jsonl only."""
        if not self.chief:
            return
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with self._summaries(name, step):
            for key, value in numbers.items():
                tf.summary.scalar(key, value)
        line = memoryview((json.dumps({"split": name, "step": int(step), **numbers, **(extra or {})}) + "\n").encode())
        with open(self._jsonl, "ab", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                while line:
                    line = line[f.write(line) :]
            except OSError:
                f.truncate(end)  # a full disk leaves no half line
                raise

    def settings(self, config: dict, metrics=(("eval", "top1_error"), ("eval", "top5_error"))) -> None:
        """The run's resolved config: every leaf as a hyperparameter (HParams dashboard,
        with `metrics` as (run, scalar tag) beside them), and whole as JSON (Text
        dashboard). Runs under one --logdir are then compared by their settings."""
        if not self.chief:
            return
        from tensorboard.plugins.hparams import api as hp

        flat = dict(_leaves(config))
        with self._summaries("", 0):
            hp.hparams_config(
                hparams=[hp.HParam(k) for k in flat],
                metrics=[hp.Metric(tag, group=group, display_name=f"{group} {tag}") for group, tag in metrics],
            )
            hp.hparams(flat, trial_id=os.path.basename(os.path.dirname(self._logdir)))
            tf.summary.text("config", "```json\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```")

    def images(self, name: str, step: int, tag: str, images, max_outputs: int = 8) -> None:
        if not self.chief:
            return
        with self._summaries(name, step):
            tf.summary.image(tag, images, max_outputs=max_outputs)

    def histograms(self, name: str, step: int, values: dict) -> None:
        if not self.chief:
            return
        with self._summaries(name, step):
            for key, value in values.items():
                tf.summary.histogram(key, value)

    def eta(self, step: int) -> float:
        """Seconds left at the average pace since the first logged step (which follows
        the compilation)."""
        if self._pace is None:
            self._start_step, self._pace = step, Progress(self.total_steps - step, "steps")
            return float("nan")
        return self._pace.eta(step - self._start_step)

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def progress(self, epoch: int, epochs: int, step: int, values: dict) -> None:
        eta = self.eta(step)
        parts = [f"epoch {epoch + 1}/{epochs}", f"step {step}/{self.total_steps}"]
        for key in ("loss", "top1_error", "lr"):
            if key in values:
                parts.append(f"{key} {values[key]:.4g}")
        if "images_per_sec" in values:
            parts.append(f"{values['images_per_sec']:.0f} img/s")
        parts.append("ETA " + ("?" if eta != eta else format_duration(eta)))
        self.line("  ".join(parts))

    def flush(self) -> None:
        for name in list(self._writers):
            with self._summaries(name, 0):
                pass


def _cut_to_whole_records(path: str) -> bool:
    """Cuts the TFRecord file `path` (an event file) after its last whole record: each is
    a little-endian uint64 length, its CRC (4 bytes), the data, the data's CRC (4 bytes).
    Whether anything was cut."""
    size, end = os.path.getsize(path), 0
    with open(path, "rb") as f:
        while len(header := f.read(12)) == 12:
            (length,) = struct.unpack("<Q", header[:8])
            if end + 12 + length + 4 > size:
                break
            end += 12 + length + 4
            f.seek(end)
    if end == size:
        return False
    os.truncate(path, end)
    return True


class ProfileWindow:
    """`compute.profile_steps` (first, last): the profiler traces steps first+1..last into
    tb/profile, one step per host call, each marked as TensorFlow documents for custom
    loops so that its overview shows step times."""

    def __init__(self, steps: tuple, logdir: str):
        self.first, self.last = steps or (0, 0)
        self.logdir, self.active = logdir, False

    def limit(self, step: int, n: int) -> int:
        """At most `n` steps from `step` in one host call: one inside the window, and no
        call across its start."""
        if self.first <= step < self.last:
            return 1
        return min(n, self.first - step) if step < self.first else n

    @contextlib.contextmanager
    def trace(self, step: int, n: int):
        if step == self.first < self.last:
            tf.profiler.experimental.start(self.logdir)
            self.active = True
        inside = self.first <= step < self.last
        with tf.profiler.experimental.Trace("train", step_num=step, _r=1) if inside else contextlib.nullcontext():
            yield
        if step + n == self.last and self.active:
            tf.profiler.experimental.stop()
            self.active = False
