"""The faults a long run meets: two trainers on one run folder, a full disk, a lost worker."""

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from helpers import QUICKSTART, ROOT, tiny_sets, workers

from alexnet_tf.checkpoints import Checkpoints, disk_full_stops_run, resume_point
from alexnet_tf.config import ConfigError
from alexnet_tf.errors import TrainingError, lost_workers
from alexnet_tf.lock import RunLock
from alexnet_tf.report import Reporter
from alexnet_tf.runfolder import LOCK as LOCK_FILE
from alexnet_tf.runfolder import write_json

# A process that takes the lock on the folder argv[1], says so, and waits to be killed.
HOLDER = (
    "import sys, time; from alexnet_tf.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(600)"
)


def hold_in_other_process(workdir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, workdir], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_the_holders_line(tmp_path):
    workdir = str(tmp_path / "run")
    proc = hold_in_other_process(workdir)
    try:
        with pytest.raises(ConfigError) as e:
            RunLock(workdir).acquire()
        message = str(e.value)
        assert "\n" not in message
        assert f"PID {proc.pid}" in message and f"host {socket.gethostname()}" in message
        assert "since 20" in message and "another --workdir" in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    proc = hold_in_other_process(workdir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"PID {proc.pid}" in open(os.path.join(workdir, LOCK_FILE)).read()  # the dead holder's line is left
    lock = RunLock(workdir)
    with caplog.at_level("INFO", logger="alexnet_tf"):
        lock.acquire()
    try:
        assert f"PID {proc.pid}" in caplog.text and "taking over" in caplog.text
        assert f"PID {os.getpid()}" in lock.holder()
        with pytest.raises(ConfigError, match=f"PID {os.getpid()}"):
            RunLock(workdir).acquire()  # flock: a second open file conflicts within one process too
    finally:
        lock.release()
    assert lock.holder() == ""  # a clean end names no holder
    with RunLock(workdir):  # and leaves the lock free
        pass


def _train(cwd, workdir, sets):
    """`python -m alexnet_tf.train` from `cwd` with a relative --workdir, as users run it."""
    args = [sys.executable, "-m", "alexnet_tf.train", os.path.relpath(QUICKSTART, cwd), "--workdir", workdir]
    for k, v in tiny_sets(**sets).items():
        args += ["--set", f"{k}={v}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_ones_run_is_taken_over(tmp_path):
    """A train on runs/a; a second on the same relative folder exits 2 naming the first;
    the first SIGKILLed after a checkpoint, a new start takes the lock and resumes."""
    sets = {"train.max_steps": 400, "train.checkpoint_every": 2, "compute.steps_per_loop": 1}
    first = _train(tmp_path, "runs/a", sets)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if "step 4/400" in line:
            break
    assert first.poll() is None, "".join(seen)
    second = _train(tmp_path, "runs/a", sets)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 2, out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    assert f"PID {first.pid}" in line and f"host {socket.gethostname()}" in line and "in use" in line
    assert "Traceback" not in out
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = tf.train.latest_checkpoint(str(tmp_path / "runs/a/checkpoints"))
    step = int(saved.rsplit("-", 1)[1])
    assert step >= 4
    third = _train(tmp_path, "runs/a", {**sets, "train.max_steps": step + 2})
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out
    assert f"PID {first.pid}" in out and "taking over" in out
    assert f"resumed from {saved} at step {step}" in out
    assert os.path.getsize(tmp_path / "runs/a" / LOCK_FILE) == 0


def mount_small_disk(folder, size):
    """A real filesystem of `size` (tmpfs) at `folder`, or a skip saying why there is none."""
    os.makedirs(folder, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"a full disk needs a small filesystem: mount -t tmpfs failed ({r.stderr.strip()}; root needed)")


def resize_disk(folder, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A factory of small real filesystems under tmp_path, unmounted afterwards."""
    mounted = []

    def make(size, name="disk"):
        folder = tmp_path / name
        mount_small_disk(folder, size)
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)])


def fill(folder):
    """Fills the filesystem of `folder` to its last byte."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")


def test_full_disk_at_a_checkpoint_keeps_the_intact_one(small_disk):
    """4 MiB checkpoints on a 10 MiB disk: the third save fails with the OS's ENOSPC; one
    line names the folder, the space needed and the intact checkpoint; the partial save
    is gone; with space freed the next save works."""
    disk = small_disk("10m")
    weights = tf.Variable(tf.zeros([1024 * 1024]))
    checkpoints = Checkpoints(str(disk), True, "", 3, weights=weights)
    checkpoints.save(1)
    checkpoints.save(2)
    with pytest.raises(TrainingError) as e:
        checkpoints.save(3)
    message = str(e.value)
    folder = os.path.join(disk, "checkpoints")
    assert "\n" not in message
    assert f"in {folder}:" in message and "needs 4.0 MiB" in message
    assert f"newest intact checkpoint is {os.path.join(folder, 'ckpt-2')}:" in message
    assert sorted(os.listdir(folder)) == sorted(
        [
            "checkpoint",
            "ckpt-1.index",
            "ckpt-1.data-00000-of-00001",
            "ckpt-2.index",
            "ckpt-2.data-00000-of-00001",
        ]
    )
    assert resume_point(str(disk), True) == os.path.join(folder, "ckpt-2")
    resize_disk(disk, "20m")
    checkpoints.save(3)
    assert resume_point(str(disk), True) == os.path.join(folder, "ckpt-3")


def test_full_disk_leaves_json_and_metrics_as_they_were(small_disk):
    """history.json-style files (written beside and renamed) and metrics.jsonl (appended)
    on a full disk: the OS's error, and the old contents whole, nothing half-written beside."""
    disk = small_disk("1m")
    history = os.path.join(disk, "history.json")
    write_json(history, [{"epoch": 1}])
    reporter = Reporter(str(disk), 10)
    reporter.scalars("train", 1, {"loss": 1.0})
    metrics = os.path.join(disk, "metrics.jsonl")
    before = open(metrics).read()
    fill(disk)
    with pytest.raises(OSError) as e:
        write_json(history, [{"epoch": i, "note": "x" * 100} for i in range(100)])
    assert e.value.errno == errno.ENOSPC
    assert json.load(open(history)) == [{"epoch": 1}]
    assert not os.path.exists(history + ".tmp")
    with pytest.raises(OSError) as e:
        reporter.scalars("train", 2, {"loss": 2.0}, extra={"note": "x" * 20000})
    assert e.value.errno == errno.ENOSPC
    assert open(metrics).read() == before


def test_full_disk_elsewhere_in_a_run_is_one_line(tmp_path):
    """What the run turns any ENOSPC into (injected here: the file's own OSError)."""
    with pytest.raises(TrainingError) as e:
        with disk_full_stops_run(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "history.json.tmp"))
    assert str(e.value).startswith(f"no space left on device writing {tmp_path / 'history.json.tmp'}")
    with pytest.raises(OSError):  # other errors go on as they are
        with disk_full_stops_run(str(tmp_path)):
            raise OSError(errno.EACCES, "denied")


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_in_a_real_run(small_disk):
    """The quickstart on a 30 MiB disk from its own folder (relative --workdir): the save
    that does not fit ends the run with exit 2 and one line, the partial save removed;
    the disk grown, the same command resumes from the newest intact checkpoint."""
    disk = small_disk("30m")
    sets = {"train.max_steps": 40, "train.checkpoint_every": 2, "compute.steps_per_loop": 1}
    proc = _train(disk, "runs/a", sets)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    folder = os.path.join(disk, "runs", "a", "checkpoints")
    match = re.search(r"checkpoint at step (\d+) in (\S+): it needs ([\d.]+) MiB.* intact checkpoint is (\S+):", line)
    assert match, line
    step, where, needed, intact = int(match[1]), match[2], float(match[3]), match[4]
    assert where == folder and intact == os.path.join(folder, f"ckpt-{step - 2}")
    assert needed == pytest.approx(os.path.getsize(intact + ".data-00000-of-00001") / 2**20, abs=0.1)
    assert not [f for f in os.listdir(folder) if f"-{step}" in f]  # nothing of the failed save
    for record in open(os.path.join(disk, "runs", "a", "metrics.jsonl")):
        json.loads(record)
    resize_disk(disk, "100m")
    proc = _train(disk, "runs/a", {**sets, "train.max_steps": step + 2})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resumed from {intact} at step {step - 2}" in out


# The end of TensorFlow 2.21's error on the survivor when worker 1 of two was SIGKILLed.
HEARTBEATS = (
    "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy "
    "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task logs for "
    "an earlier error, or scheduler events (e.g. preemption, eviction) to debug further.\nThe error could be from a "
    "previous operation. Restart your program to reset.\n\t [[{{node while/CollectiveReduceV2}}]]"
)


def test_lost_workers_read_from_tensorflows_error():
    assert lost_workers(HEARTBEATS) == "worker 1"
    two = HEARTBEATS.replace("task:1\nThe", "task:2\n/job:worker/replica:0/task:0\nThe")
    assert lost_workers(two) == "worker 0 and worker 2"
    assert lost_workers("Collective ops is aborted by: Socket closed") == "a worker"
    # what worker 1 got when worker 0, the chief, was SIGKILLed
    reset = (
        "recvmsg:Connection reset by peer\nAdditional GRPC error information from remote target "
        "/job:worker/replica:0/task:0 while calling /tensorflow.WorkerService/CompleteInstance:\n"
        ':UNKNOWN:Error received from peer  {grpc_message:"recvmsg:Connection reset by peer", grpc_status:14}'
    )
    assert lost_workers(reset) == "worker 0"
    assert lost_workers("Incompatible shapes: [0,67,67,3] vs. [0,15,15,24]") is None


@pytest.mark.slow
@pytest.mark.parametrize("lost", [1, 0])
def test_survivor_of_a_killed_worker_says_who_and_exits_to_be_restarted(tmp_path, lost):
    """Worker `lost` of two (0: the chief, which holds the folder's lock) SIGKILLed
    mid-run: the other exits 75 in one line naming it, the step and the checkpoint a
    restart resumes from; restarted, both resume there."""
    workdir = str(tmp_path / "run")
    sets = {"train.max_steps": 400, "train.checkpoint_every": 4, "compute.steps_per_loop": 1}
    procs = workers(workdir, sets)
    for line in procs[lost].stdout:
        if "step 9/400" in line:
            procs[lost].send_signal(signal.SIGKILL)
            killed = time.time()
            break
    survivor = procs[1 - lost]
    out = survivor.communicate(timeout=300)[0]
    noticed = time.time() - killed
    procs[lost].wait()
    print(f"the survivor exited {noticed:.1f} s after the SIGKILL")
    assert survivor.returncode == 75, out
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("worker lost:")]
    match = re.fullmatch(rf"worker lost: worker {lost} stopped .* during step (\d+); .* resume from (\S+)", line)
    assert match, line
    step, resume = int(match[1]), match[2]
    assert resume == tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    saved = int(resume.rsplit("-", 1)[1])
    assert 8 <= saved < step and step >= 10
    procs = workers(workdir, {**sets, "train.max_steps": saved + 2})
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(f"resumed from {resume} at step {saved}" in out for out in outs)
    assert ("taking over" in outs[0]) == (lost == 0)  # the chief's lock, left by the killed chief
