"""Training: `python -m alexnet_tf.train [RECIPE] [--workdir DIR] [--data SPEC] [--set k=v ...]`.

`alexnet_tf.training.train_and_evaluate(config, workdir)` does the work; this command
only parses and calls it. A custom loop under a tf.distribute strategy: an XLA-compiled
forward/backward per replica with the paper's SGD rule (inside the compiled program on
one device, after it under MirroredStrategy), several steps per host call, checkpoints
with automatic resume, TensorBoard scalars and a console progress line, a final
evaluation in results.json.
A workdir that holds a run resumes with its own config.json: the recipe may be left out.
"""

from __future__ import annotations

import argparse

from alexnet_tf import cli


def parser() -> argparse.ArgumentParser:
    p = cli.parser("train", __doc__)
    cli.add_recipe(p)
    cli.add_workdir(p, "run folder: created, or resumed from its newest checkpoint (default: runs/<recipe name>)")
    cli.add_data(p)
    cli.add_overrides(p)
    return p


def main(argv=None) -> int:
    return cli.main(parser(), _main, argv)


def _main(recipe: str | None, workdir: str | None, data: str | None, overrides: list[str]) -> None:
    from alexnet_tf.training import train_and_evaluate  # TensorFlow: loaded once the arguments parse

    train_and_evaluate(recipe, workdir or cli.default_workdir(recipe), data=data, overrides=overrides)


if __name__ == "__main__":
    cli.program(main)
