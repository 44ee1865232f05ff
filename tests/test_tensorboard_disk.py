"""TensorBoard's event files on a full disk (a real tmpfs, as tests/test_faults.py mounts
one): the run stops in one line naming the events file, and every event written before
reads back whole, with TensorFlow's own record reader; after space is freed a new writer
goes on beside them."""

import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import event_files
from test_faults import _train, fill, small_disk  # noqa: F401 (small_disk: the fixture)

from alexnet_tf.checkpoints import disk_full_stops_run
from alexnet_tf.errors import TrainingError
from alexnet_tf.report import Reporter


def events(workdir, name="train"):
    """(step, tag, value) of every scalar event in tb/NAME, read with TFRecordDataset,
    which raises DataLossError on a record cut short."""
    out = []
    for path in event_files(os.path.join(workdir, "tb", name)):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars":
                    out.append((event.step, v.tag, float(tf.make_ndarray(v.tensor))))
    return out


def test_full_disk_during_tensorboard_writes_loses_nothing(small_disk):  # noqa: F811
    disk = small_disk("1m")
    workdir = str(disk / "run")
    reporter = Reporter(workdir, 1000, stream=open(os.devnull, "w"))
    for step in range(1, 6):
        reporter.scalars("train", step, {"loss": float(step)})
    reporter.flush()
    before = events(workdir)
    assert before == [(s, "loss", float(s)) for s in range(1, 6)]
    fill(disk)
    histogram = {"conv1": np.random.default_rng(0).normal(size=20000).astype(np.float32)}
    with pytest.raises(TrainingError) as e:
        with disk_full_stops_run(workdir):
            for step in range(6, 1000):
                reporter.scalars("train", step, {"loss": float(step)})
                reporter.histograms("train", step, histogram)
    after = events(workdir)  # no DataLossError: the file ends with a whole record
    assert after[: len(before)] == before
    assert [s for s, _, _ in after] == list(range(1, len(after) + 1))  # what is there is in order, nothing half
    message = str(e.value)
    (written,) = glob.glob(os.path.join(workdir, "tb", "train", "events.out.tfevents.*"))
    assert "\n" not in message
    assert message.startswith(f"no space left on device writing {written} ")
    assert message.endswith("free space and run the same command again")

    os.remove(disk / "filler")
    again = Reporter(workdir, 1000, stream=open(os.devnull, "w"))
    again.scalars("train", 2000, {"loss": 2000.0})
    again.flush()
    assert events(workdir) == after + [(2000, "loss", 2000.0)]


@pytest.mark.slow
def test_a_run_whose_disk_fills_at_tensorboard_stops_in_one_line(small_disk):  # noqa: F811
    """The quickstart from its own folder (relative --workdir), the disk filled after step
    5: the next log's TensorBoard write ends the run with exit 2 and one line naming the
    event file, which reads back whole; metrics.jsonl too."""
    disk = small_disk("30m")
    sets = {"train.max_steps": 400, "train.log_every": 1, "compute.steps_per_loop": 1, "train.checkpoint_every": 1000}
    proc = _train(disk, "runs/a", sets)
    out = []
    for line in proc.stdout:
        out.append(line)
        if "step 5/400" in line:
            fill(disk)
            break
    rest, _ = proc.communicate(timeout=300)
    out = "".join(out) + rest
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    workdir = os.path.join(disk, "runs", "a")
    match = re.match(r"error: no space left on device writing (\S+) \(", line)
    assert match and match[1].startswith(os.path.join(workdir, "tb", "")), line
    assert "events.out.tfevents." in match[1]
    steps = [s for s, tag, _ in events(workdir) if tag == "loss"]
    assert steps[:5] == [1, 2, 3, 4, 5] and steps == list(range(1, len(steps) + 1))
    logged = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in logged if r["split"] == "train"][:5] == [1, 2, 3, 4, 5]
