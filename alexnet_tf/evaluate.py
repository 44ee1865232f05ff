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
import math
import os
import sys
import time

import keras
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.config import Config, ConfigError, load_json
from alexnet_tf.model import build_model, model_variables, to_split_form

# Table 2, ILSVRC-2012 validation set, error rates in %.
PAPER_TABLE2 = (
    ("paper: 1 CNN (ILSVRC-2012 val, 10 crops)", 40.7, 18.2),
    ("paper: 5 CNNs (ILSVRC-2012 val, 10 crops)", 38.1, 16.4),
)


@dataclasses.dataclass
class TrainedRun:
    """A trained model restored from a workdir, with what it needs to preprocess images."""

    workdir: str
    checkpoint: str
    config: Config
    class_names: list
    stats: data_lib.Stats
    model: keras.Model

    def stats_tensors(self) -> dict:
        return {
            "mean_image": tf.constant(self.stats.mean_image),
            "eigval": tf.constant(self.stats.eigval),
            "eigvec": tf.constant(self.stats.eigvec),
        }


def resolve_checkpoint(path: str) -> tuple[str, str]:
    """(workdir, checkpoint prefix) for a run folder or a checkpoint prefix inside one."""
    if os.path.isdir(path):
        checkpoint = tf.train.latest_checkpoint(os.path.join(path, "checkpoints"))
        if checkpoint is None:
            raise ConfigError(f"{path!r} has no checkpoints/; train it first with `python -m alexnet_tf.train`")
        return path, checkpoint
    if os.path.exists(path + ".index"):
        return os.path.dirname(os.path.dirname(os.path.abspath(path))), path
    raise ConfigError(f"{path!r} is neither a run folder nor a checkpoint (expected {path}.index)")


def load_run(path: str, split_form: bool = False) -> TrainedRun:
    """Restores the model of a run folder (its newest checkpoint) or of one checkpoint.

    `split_form=True` gives the grouped convolutions as two convs + concat, the form that
    runs without XLA (for export).
    """
    workdir, checkpoint = resolve_checkpoint(path)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{workdir!r} has no config.json; is it a run folder of `python -m alexnet_tf.train`?")
    config = load_json(config_path)
    classes_path = os.path.join(workdir, "classes.json")
    if os.path.isfile(classes_path):
        with open(classes_path) as f:
            class_names = [str(c) for c in json.load(f)]
    else:
        class_names = [str(i) for i in range(config.model.num_classes)]
    stats = data_lib.Stats.load(os.path.join(workdir, "stats.npz"))
    # Variables are float32 under every precision policy, so a float32 model restores them.
    model = build_model(config.model)
    tf.train.Checkpoint(model=model_variables(model)).restore(
        checkpoint
    ).expect_partial().assert_existing_objects_matched()
    if split_form:
        model = to_split_form(model, config.model)
    return TrainedRun(workdir, checkpoint, config, class_names, stats, model)


def _check_compatible(config: Config, run: TrainedRun, num_classes: int) -> None:
    d, m = config.data, run.config.data
    for key in ("resize_size", "crop_size", "pad_crop"):
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
    n = source.sizes[split]
    if config.data.eval_examples:
        n = min(n, config.data.eval_examples)
    batch = config.train.eval_batch_size or config.train.batch_size
    if crops == "ten":
        batch = max(1, batch // 10)  # ten rows per image keep a batch near the same size
    views = 10 if crops == "ten" else 1
    ds = data_lib.make_dataset(source, config.data, split, batch, training=False, crops=crops)

    forwards = []
    for run in runs:
        stats, model, data_config = run.stats_tensors(), run.model, run.config.data

        @tf.function(jit_compile=config.train.jit_compile)
        def forward(images, offset, flip, stats=stats, model=model, data_config=data_config):
            b = {"image": images, "offset": offset, "flip": flip, "alpha": tf.zeros([tf.shape(images)[0], 3])}
            x = data_lib.device_preprocess(b, stats, data_config, tf.float32)
            probs = tf.nn.softmax(model(x, training=False))  # (B * views, classes)
            return tf.reduce_mean(tf.reshape(probs, [-1, views, probs.shape[-1]]), axis=1)  # (B, classes)

        forwards.append(forward)

    batches = math.ceil(n / batch)
    top1 = top5 = seen = 0
    start = last_report = time.perf_counter()
    for i, b in enumerate(ds.take(batches)):
        probs = sum(f(b["image"], b["offset"], b["flip"]) for f in forwards) / len(forwards)
        labels = b["label"][::views]
        index = i * batch + tf.range(batch)
        keep = (b["weight"][::views] > 0) & (index < n)
        k = min(5, probs.shape[-1])
        hit1 = tf.math.in_top_k(labels, probs, 1) & keep
        hit5 = tf.math.in_top_k(labels, probs, k) & keep
        top1 += int(tf.reduce_sum(tf.cast(hit1, tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(hit5, tf.int32)))
        seen += int(tf.reduce_sum(tf.cast(keep, tf.int32)))
        now = time.perf_counter()
        if stream is not None and (now - last_report > 10 or i + 1 == batches):
            rate = seen / (now - start)
            eta = (n - seen) / rate if rate > 0 else float("nan")
            print(
                f"evaluated {seen}/{n} images  top-1 error {1 - top1 / seen:.4f}  {rate:.1f} img/s  ETA {eta:.0f}s",
                file=stream,
                flush=True,
            )
            last_report = now
    if seen == 0:
        raise data_lib.DataError(f"{config.data.source} split {split!r} gave no examples")
    return {
        "top1_error": 1.0 - top1 / seen,
        "top5_error": 1.0 - top5 / seen,
        "crops": crops,
        "models": [run.checkpoint for run in runs],
        "examples": seen,
        "data": config.data.source,
        "split": split,
    }


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
