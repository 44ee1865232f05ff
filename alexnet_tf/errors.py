"""The errors of training that the commands turn into exit codes (`cli.run`): a run that
cannot go on, and a preempted one. (A config that cannot be used raises
`config.ConfigError`, data that cannot be read `data.DataError`: exit code 2.)

They live in a module that no command is: `python -m alexnet_tf.train` loads train.py a
second time as `__main__`, and a class defined there would not be the one `cli.run`
catches.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); checkpoints stay as they were."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint at the current step was saved. Run again to resume."""

    exit_code = 75  # EX_TEMPFAIL: "try again", for schedulers that restart on it
