"""The errors of training that the commands turn into exit codes (`cli.run`): a run that
cannot go on (2), a preempted one and one that lost a worker (75: run it again). (A
config that cannot be used raises `config.ConfigError`, data that cannot be read
`data.DataError`: exit code 2.)
"""

from __future__ import annotations

import re


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); checkpoints stay as they were."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint at the current step was saved. Run again to resume."""

    exit_code = 75  # EX_TEMPFAIL: "try again", for schedulers that restart on it


class WorkerLost(RuntimeError):
    """A worker of a multi-worker run ended without SIGTERM (killed, crashed, its host
    lost): the others cannot go on. Start every worker again to resume from the newest
    checkpoint."""

    exit_code = 75  # the same "run me again" as Preempted


def lost_workers(message: str) -> str | None:
    """The workers that TensorFlow's error `message` (a collective aborted) names as gone
    ("worker 1", "worker 0 and worker 2"), "a worker" when it names none, None when the
    error is not about a peer lost."""
    if "stopped sending heartbeats" in message:
        tasks = sorted(set(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", message.split("heartbeats", 1)[1])))
        if tasks:
            return " and ".join(f"{job} {task}" for job, task in tasks)
    # a peer gone mid-call (the coordination service's own task among them): gRPC's reset
    peer = re.search(
        r"(?:Connection reset by peer|Socket closed|Connection refused)[\s\S]*?remote target /job:(\w+)/replica:\d+/task:(\d+)",
        message,
    )
    if peer:
        return f"{peer[1]} {peer[2]}"
    if "Collective ops is aborted" in message or "Restart your program to reset" in message:
        return "a worker"
    return None
