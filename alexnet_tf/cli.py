"""Shared command-line plumbing: recipe arguments and one-line error messages."""

from __future__ import annotations

import argparse
import sys

from alexnet_tf.config import Config, ConfigError, load_recipe, override


def recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("recipe", help="recipe file with get_config(), e.g. recipes/paper.py")
    parser.add_argument("--workdir", help="run folder (default: runs/<recipe name>)")
    parser.add_argument(
        "--data",
        help="data source: folder:PATH | tfds:NAME[:SPLIT] | tfrecord:GLOB | "
        "fashion_mnist:DIR | builtin:fashion_mnist (replaces data.source; the model then has the "
        "source's classes and evaluation uses its own validation split, unless --set names them)",
    )
    add_overrides(parser)
    return parser


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable), read by `resolve_config`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=0.02 (repeatable)",
    )


def resolve_config(args: argparse.Namespace) -> Config:
    config = load_recipe(args.recipe)
    overrides = list(args.overrides)
    if args.data:
        # The recipe's eval split and class count belong to its own source: the new
        # one's are found when it is opened (train.resolve_data), unless --set names them.
        overrides[:0] = [f"data.source={args.data}", "data.eval_split=", "model.num_classes=0"]
    return override(config, overrides) if overrides else config


def run(fn) -> int:
    """Runs `fn`, turning the project's expected errors into one line and exit code 2."""
    from alexnet_tf.data import DataError
    from alexnet_tf.errors import Preempted, TrainingError

    try:
        fn()
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return Preempted.exit_code
    except (ConfigError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
