"""The one place that writes metrics: TensorBoard summaries and the console line."""

from __future__ import annotations

import json
import os
import sys
import time

import tensorflow as tf


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
    """A progress line for long passes over images (`label: done/total images, rate,
    ETA`), at most every 2 s, on one line of a terminal; `quiet` silences it."""

    def __init__(self, total: int, label: str, quiet: bool = False, stream=None):
        self.total, self.label, self.quiet = total, label, quiet
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if self.quiet or (not final and now - self.last < 2.0):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        end = "\n" if final or not self.stream.isatty() else "\r"
        text = f"{self.label}: {done}/{self.total} images, {rate:.0f} img/s, ETA {format_duration(eta)}"
        print(text, end=end, file=self.stream, flush=True)


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
        self._logdir = os.path.join(workdir, "tb")
        self._jsonl = os.path.join(workdir, "metrics.jsonl")
        self._start = time.perf_counter()
        self._start_step = None

    def writer(self, name: str) -> tf.summary.SummaryWriter:
        """The summary writer of `tb/NAME` ("" for `tb/` itself, where the settings go)."""
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self._logdir, name))
        return self._writers[name]

    def scalars(self, name: str, step: int, values: dict, extra: dict | None = None) -> None:
        """`values` as TensorBoard curves and in metrics.jsonl; `extra` in metrics.jsonl only."""
        if not self.chief:
            return
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with self.writer(name).as_default(step=step):
            for key, value in numbers.items():
                tf.summary.scalar(key, value)
        with open(self._jsonl, "a") as f:
            f.write(json.dumps({"split": name, "step": int(step), **numbers, **(extra or {})}) + "\n")

    def settings(self, config: dict, metrics=(("eval", "top1_error"), ("eval", "top5_error"))) -> None:
        """The run's resolved config: every leaf as a hyperparameter (HParams dashboard,
        with `metrics` as (run, scalar tag) beside them), and whole as JSON (Text
        dashboard). Runs under one --logdir are then compared by their settings."""
        if not self.chief:
            return
        from tensorboard.plugins.hparams import api as hp

        flat = dict(_leaves(config))
        with self.writer("").as_default(step=0):
            hp.hparams_config(
                hparams=[hp.HParam(k) for k in flat],
                metrics=[hp.Metric(tag, group=group, display_name=f"{group} {tag}") for group, tag in metrics],
            )
            hp.hparams(flat, trial_id=os.path.basename(os.path.dirname(self._logdir)))
            tf.summary.text("config", "```json\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```")

    def images(self, name: str, step: int, tag: str, images, max_outputs: int = 8) -> None:
        if not self.chief:
            return
        with self.writer(name).as_default(step=step):
            tf.summary.image(tag, images, max_outputs=max_outputs)

    def histograms(self, name: str, step: int, values: dict) -> None:
        if not self.chief:
            return
        with self.writer(name).as_default(step=step):
            for key, value in values.items():
                tf.summary.histogram(key, value)

    def eta(self, step: int) -> float:
        """Seconds left at the average pace since the first logged step."""
        now = time.perf_counter()
        if self._start_step is None:
            self._start_step, self._start = step, now
            return float("nan")
        done = step - self._start_step
        if done <= 0:
            return float("nan")
        return (now - self._start) / done * (self.total_steps - step)

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
        for w in self._writers.values():
            w.flush()
