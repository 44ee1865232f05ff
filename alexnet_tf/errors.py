"""The project's expected errors, in a module of their own.

Entry points run as `python -m alexnet_tf.<module>`, which loads that module a second
time as `__main__`. Classes defined there would differ from the ones `cli.run` catches,
so every error the command line turns into an exit code lives here.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); checkpoints stay as they were."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint at the current step was saved. Run again to resume."""

    exit_code = 75  # EX_TEMPFAIL: "try again", for schedulers that restart on it
