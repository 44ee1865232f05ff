"""Top-1 and top-5 error of trained models, measured as in the paper's Table 2.

`python -m alexnet_tf.evaluate RECIPE --workdir DIR [--workdir DIR2 ...] [--data SPEC]
[--crops center|ten] [--out FILE] [--set k=v ...]`

Top-1 and top-5 error on the recipe's eval split, from the centre crop or from the
softmax averaged over the ten crops of Sec. 4.1 (four corners, the centre, and their
reflections). Several `--workdir`s average their softmax outputs, like the paper's
"5 CNNs" and "7 CNNs" rows. A `--workdir` may also name one checkpoint
(`runs/x/checkpoints/ckpt-1000`) instead of a run's newest.

The recipe (with `--data` and `--set`) chooses the data, the split and the batch size;
each model keeps the network and the mean image it was trained with (its workdir's
config.json and stats.npz).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import steps as steps_lib
from alexnet_tf.config import Config, ConfigError
from alexnet_tf.report import Progress
from alexnet_tf.runs import TrainedRun, load_run

# Table 2, ILSVRC-2012 validation set, error rates in %.
PAPER_TABLE2 = (
    ("paper: 1 CNN (ILSVRC-2012 val, 10 crops)", 40.7, 18.2),
    ("paper: 5 CNNs (ILSVRC-2012 val, 10 crops)", 38.1, 16.4),
)


def _check_compatible(config: Config, run: TrainedRun, num_classes: int) -> None:
    d, m = config.data, run.config.data
    for key in ("resize_size", "resize", "crop_size", "pad_crop"):
        if getattr(d, key) != getattr(m, key):
            raise ConfigError(
                f"{run.workdir} was trained with data.{key}={getattr(m, key)} but the recipe has "
                f"{getattr(d, key)}; use the run's recipe or --set data.{key}={getattr(m, key)}"
            )
    if run.config.model.num_classes != num_classes:
        raise ConfigError(
            f"{run.workdir} predicts {run.config.model.num_classes} classes but {d.source} has {num_classes}"
        )


def evaluate(config: Config, paths: list[str], crops: str = "center", stream=sys.stderr) -> dict:
    """Top-1/top-5 error of one model or the softmax average of several.

    `paths` are run folders or checkpoint prefixes; `config` supplies the data (source,
    eval split, eval_examples) and the batch size.
    """
    if crops not in ("center", "ten"):
        raise ConfigError(f"crops must be 'center' or 'ten', got {crops!r}")
    if not paths:
        raise ConfigError("give at least one --workdir")
    source = data_lib.open_source(config.data.source, config.data)
    config = dataclasses.replace(config, data=data_lib.resolve_splits(source, config.data))
    runs = [load_run(p) for p in paths]
    for run in runs:
        _check_compatible(config, run, source.num_classes)
    split = config.data.eval_split
    n = min(source.sizes[split], config.data.eval_examples or source.sizes[split])
    batch = config.train.eval_batch_size or config.train.batch_size
    if crops == "ten":
        batch = max(1, batch // 10)  # ten rows per image keep a batch near the same size
    bad_files = data_lib.BadFiles()
    ds = data_lib.eval_dataset(source, config.data, split, batch, crops, n, bad_files=bad_files)
    progress = Progress(n, "evaluated", quiet=stream is None, stream=stream)
    totals = steps_lib.accumulate(ds, _ensemble_step(runs, 10 if crops == "ten" else 1, config), progress.update)
    progress.update(int(totals["count"]), final=True)
    if totals["count"] == 0:
        raise data_lib.DataError(f"{config.data.source} split {split!r} gave no examples")
    if bad_files.message() and stream is not None:
        print(bad_files.message(), file=stream)
    return {
        **steps_lib.errors(totals),
        "crops": crops,
        "models": [run.checkpoint for run in runs],
        "data": config.data.source,
        "split": split,
    }


def _ensemble_step(runs: list[TrainedRun], views: int, config: Config):
    """`step(batch)`: top-1/top-5 hits and count of one eval batch, from the softmax
    averaged over the `views` crops of each image (Sec. 4.1) and over the models."""

    def softmax_of(run):
        stats = steps_lib.stats_tensors(run.stats)  # each model with its own mean image

        @tf.function(jit_compile=config.train.jit_compile)
        def forward(batch):
            images = data_lib.device_preprocess(batch, stats, run.config.data, tf.float32)
            return steps_lib.average_views(tf.nn.softmax(run.model(images, training=False)), views)

        return forward

    forwards = [softmax_of(run) for run in runs]

    def step(batch):
        device = {k: batch[k] for k in ("image", "offset", "flip", "alpha")}
        probs = tf.add_n([f(device) for f in forwards]) / len(forwards)  # (B, classes)
        labels, weight = batch["label"][::views], batch["weight"][::views]
        return {**steps_lib.correct(labels, probs, weight), "count": tf.reduce_sum(weight)}

    return step


def format_table(results: dict) -> str:
    """Our numbers under the paper's Table 2 rows (error rates in %)."""
    name = f"this run: {len(results['models'])} CNN{'s' if len(results['models']) > 1 else ''} "
    name += f"({results['data']} {results['split']}, {results['examples']} images, {results['crops']} crop"
    name += "s)" if results["crops"] == "ten" else ")"
    rows = [*PAPER_TABLE2, (name, 100 * results["top1_error"], 100 * results["top5_error"])]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'model':<{width}}  top-1 err  top-5 err", "-" * (width + 22)]
    lines += [f"{r[0]:<{width}}  {r[1]:8.1f}%  {r[2]:8.1f}%" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    from alexnet_tf import cli

    # The shared recipe arguments, with --workdir repeatable ("resolve" replaces it).
    base = cli.recipe_parser("python -m alexnet_tf.evaluate", __doc__.splitlines()[0])
    parser = argparse.ArgumentParser(
        prog=base.prog, description=base.description, parents=[base], add_help=False, conflict_handler="resolve"
    )
    parser.add_argument(
        "--workdir", action="append", required=True, help="run folder or checkpoint prefix; repeat to average models"
    )
    parser.add_argument("--crops", choices=("center", "ten"), default="ten", help="centre crop or Sec. 4.1's 10 crops")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    return cli.run(lambda: _main(args))


def _main(args) -> None:
    from alexnet_tf import cli

    config = cli.resolve_config(args)
    results = evaluate(config, args.workdir, crops=args.crops)
    print(format_table(results))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
