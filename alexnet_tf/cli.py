"""What the commands share: one set of flags (`--data`, `--workdir`, `--out`, `--set`,
`--version`), help that shows defaults, a config resolved from a recipe or from a run's
own config.json, and one-line errors with exit codes.

The conventions, the same in every command:
  RECIPE      a recipe file or the name of a shipped one (`paper`, `recipes/quickstart.py`)
  --data      a data spec: folder:PATH, tfds:NAME[:SPLIT], tfrecord:GLOB, ...
  --workdir   a run folder (what train writes; what evaluate, export, figures, serve read;
              these also take one checkpoint in it or a .caffemodel: `applications.load_net`)
  --out       a folder the command writes into (created if needed; a command that
              would replace what is there refuses unless given --overwrite)
  --set       KEY=VALUE overrides of the config, repeatable
Errors are one line on standard error: exit code 2 for what the user can fix, 75 for a
preempted run or one that lost a worker (run the same command again), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from alexnet_tf import console, paths, runconfig
from alexnet_tf.config import Config, ConfigError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as the description, as written, and every flag's default
    (where there is one to show: not None, False or an empty list)."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A command's parser: `python -m alexnet_tf.PROG`, its docstring as help, --version."""
    from alexnet_tf import __version__

    p = argparse.ArgumentParser(prog=f"python -m alexnet_tf.{prog}", description=doc, formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"alexnet_tf {__version__}")
    return p


def add_recipe(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "recipe",
        nargs=None if required else "?",
        default=None,
        help="recipe file with get_config(), or a shipped recipe's name (paper, quickstart, finetune)"
        + ("" if required else "; leave out to use the --workdir run's own config.json"),
    )


def add_workdir(p: argparse.ArgumentParser, help: str, required: bool = False, repeat: bool = False) -> None:
    p.add_argument("--workdir", required=required, action="append" if repeat else "store", help=help)


def add_data(p: argparse.ArgumentParser) -> None:
    """`--data SPEC`, its help listing the registered kinds of source (alexnet_tf.data.specs)."""
    from alexnet_tf.data.specs import forms  # slow: alexnet_tf.data loads TensorFlow (the commands with --data do)

    p.add_argument(
        "--data",
        help=f"data source: {' | '.join(forms())} (replaces data.source; the model then has the source's "
        "classes and evaluation uses its own validation split, unless --set names them)",
    )


def add_out(p: argparse.ArgumentParser, help: str, required: bool = True, overwrite: bool = False) -> None:
    p.add_argument("--out", required=required, help=help)
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")


def add_overrides(p: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable)."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=0.02 (repeatable)",
    )


def default_workdir(recipe: str | None) -> str | None:
    """`train`'s run folder when --workdir is not given: runs/<recipe name>."""
    return paths.resolve(os.path.join("runs", os.path.splitext(os.path.basename(recipe))[0])) if recipe else None


def recipe_config(recipe: str, data: str | None, overrides: list[str]) -> Config:
    """A recipe with --data and --set, its paths resolved (`runconfig.resolve`, the data
    not opened)."""
    return runconfig.resolve(recipe, data=data, overrides=overrides, open_data=False).config


def eval_config(recipe: str | None, first_net: Config, data: str | None, overrides: list[str]) -> Config:
    """The config that names the data to evaluate on: the recipe's, or without one the
    first net's (its own data and validation split), with --data and --set; its paths
    resolved (`runconfig.resolve`, the data not opened)."""
    config = recipe if recipe is not None else first_net
    return runconfig.resolve(config, data=data, overrides=overrides, open_data=False).config


# The arguments that name a file or folder, in every command, and the data spec.
PATH_ARGS = ("workdir", "out", "caffemodel", "mean", "path", "export_dir")


def resolve_args(args: dict) -> dict:
    """Parsed arguments with the paths users give (PATH_ARGS, repeated or not, and the
    path in --data) made absolute by `alexnet_tf.paths`: relative to the working
    directory or absolute alike."""
    out = dict(args)
    for key in PATH_ARGS:
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [paths.resolve(v) for v in value]
        elif isinstance(value, str):
            out[key] = paths.resolve(value)
    if isinstance(out.get("data"), str):
        out["data"] = paths.resolve_spec(out["data"])
    return out


def program(main: Callable[[], int]) -> NoReturn:
    """Runs a command as the program (`python -m alexnet_tf.CMD`, its `__main__` block):
    TensorFlow's start-up lines filtered first (`console.quiet`: so a command module
    imports TensorFlow only inside its `main`), then `main()`'s exit code. Callers of
    `main(argv)` in a program of their own (tests, notebooks) keep their standard error."""
    console.quiet()
    raise SystemExit(main())


def main(p: argparse.ArgumentParser, fn, argv=None) -> int:
    """Parses `argv` with `p` and runs `fn(**the arguments)`, paths resolved
    (`resolve_args`), under `run`."""
    args = resolve_args(vars(p.parse_args(argv)))
    return run(lambda: fn(**args))


def run(fn) -> int:
    """Runs `fn`, turning the project's expected errors into one line and an exit code;
    the library's log lines (checkpoints passed over, splits chosen) go to the console."""
    from alexnet_tf.data import DataError
    from alexnet_tf.errors import Preempted, TrainingError, WorkerLost

    info, warnings = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings.setLevel(logging.WARNING)
    logger = logging.getLogger("alexnet_tf")
    for handler in (info, warnings):
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        fn()
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return Preempted.exit_code
    except WorkerLost as e:
        print(f"worker lost: {e}", file=sys.stderr)
        return WorkerLost.exit_code
    except (ConfigError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for handler in (info, warnings):
            logger.removeHandler(handler)
    return 0
