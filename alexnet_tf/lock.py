"""One writer per run folder: the process that trains in a run folder holds WORKDIR/train.lock.

The lock is `filelock.FileLock`, which on Linux and macOS is the kernel's flock(2) on that
file (with `fallback_to_soft=False`: never a lock that is only the file's existence).
An OS lock, not a marker file, because the kernel drops it however its holder ends
(SIGKILL and the OOM killer included): a lock left by a dead process is simply free, and
no guess from a PID, which means nothing on another host, decides whether to take it. On
NFS, Linux carries flock as a POSIX lock to the server (NLM for v3, the protocol's own
locks for v4), so trainers on other hosts see it, and a lost host's lock goes with its
lease; Lustre needs the `flock` mount option. On a filesystem without locks (some FUSE
mounts) the run warns and goes on unlocked.

While held, the file says who holds it (host, PID, since when, in UTC): what a second
start's refusal names. Only the chief of a multi-worker run takes it; its workers share
the folder.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import socket

import filelock

from alexnet_tf.config import ConfigError
from alexnet_tf.runfolder import RunFolder

log = logging.getLogger(__name__)


class RunLock:
    """The lock on one run folder; `acquire` refuses in one line if another process holds it."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = RunFolder(workdir).lock
        self._fd = None
        self._lock = filelock.FileLock(
            self.path, fallback_to_soft=False, preserve_lock_file=True, on_acquired=self._write_holder
        )

    def holder(self) -> str:
        """What the lock file says of its holder ("" if nothing)."""
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def _write_holder(self, fd: int) -> None:
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.write(fd, f"host {socket.gethostname()}, PID {os.getpid()}, since {since}\n".encode())
        self._fd = fd

    def acquire(self) -> None:
        """Takes the lock, or raises a ConfigError naming its holder. A lock file whose
        process ended without releasing it (killed) is taken over, said in one line."""
        os.makedirs(self.workdir, exist_ok=True)
        before = self.holder()
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise ConfigError(
                f"{self.workdir} is in use by another training run ({self.holder() or before or 'holder unknown'}); "
                "wait for it to end, or give another --workdir"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                raise
            log.warning(
                "%s: this filesystem has no file locks (%s); a second trainer here would not be stopped", self.path, e
            )
            return
        if before:
            log.info("%s: taking over the lock of a run that ended without releasing it (%s)", self.workdir, before)

    def release(self) -> None:
        """Empties the lock file (a clean end leaves no holder named) and releases it."""
        if not self._lock.is_locked:
            return
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            self._fd = None
        self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held(workdir: str, chief: bool = True) -> contextlib.AbstractContextManager:
    """The run folder's lock for the chief, held for the `with` block; nothing for the other workers."""
    return RunLock(workdir) if chief else contextlib.nullcontext()
