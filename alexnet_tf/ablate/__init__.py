"""The paper's ablations at small scale: `python -m alexnet_tf.ablate [RECIPE] [--data SPEC]
[--seeds N] [--budget-epochs E] [--out DIR] [--settings a,b] [--set k=v]`.

Trains the small variant of the paper's net (recipes/quickstart.py: the same builder and
layers at 67 px and a quarter of the width, started with fan-in weights, biases 0 and
inputs x1/64) once per setting and seed, each setting one of the paper's switches
flipped, and compares it with the unchanged net of the same seed, the baseline (the
report names it by its recipe and lists where it differs from the paper's net):

    setting      switch                       paper's claim
    no_lrn       model.lrn=False              Sec. 3.3: LRN lowers top-1 error by 1.4 points
    no_overlap   model.overlap_pooling=False  Sec. 3.4: overlapping pooling lowers it by 0.4
    one_column   model.two_columns=False      Sec. 3.2: two columns beat one column with
                                              half the kernels by 1.7
    tanh         model.activation=tanh        Sec. 3.1 / Fig. 1: ReLU reaches 25% training
                                              error six times faster
    no_dropout   model.dropout=0              Sec. 4.2: dropout trades iterations (about
                                              twice as many) for much less overfitting
    no_pca       data.pca_noise_std=0         Sec. 4.1: colour noise lowers top-1 by over 1
                                              (colour data only; skipped on grey images)
    ten_crop     (evaluation only)            Sec. 4.1: averaging the ten crops' softmax

Writes DIR/ablations.json (every run, and per setting the mean and standard deviation
over seeds of its top-1 error and of its paired difference from the baseline),
DIR/ablations.md (the table) and DIR/fig1_relu_tanh.png (training error against epochs
and against seconds, ReLU vs tanh, as in Fig. 1). Runs live in DIR/runs/<setting>-seed<k>;
finished runs are not redone and an interrupted one resumes from its checkpoint, so the
same command continues where it stopped; a larger --budget-epochs continues the
finished runs from their last epoch.

Data: Fashion-MNIST from Debian's `dataset-fashion-mnist` package by default (60,000
training and 10,000 test photos); any `--data` spec of the input pipeline works. RECIPE
(default: the shipped quickstart) is the net that is ablated.
"""

from __future__ import annotations

import json
import os
import sys

from alexnet_tf.ablate.report import curve, fig1, first_reaching, markdown, summarize, write_report
from alexnet_tf.ablate.settings import (
    ABLATIONS,
    BASELINE,
    DEFAULT_DATASET,
    DEFAULT_RECIPE,
    NAMES,
    Ablation,
    differences_from_paper,
)
from alexnet_tf.runfolder import RunFolder

__all__ = [
    "ABLATIONS",
    "BASELINE",
    "NAMES",
    "Ablation",
    "ablate",
    "curve",
    "differences_from_paper",
    "fig1",
    "first_reaching",
    "main",
    "markdown",
    "plan",
    "run_config",
    "summarize",
]


def _is_grey(source, config) -> bool:
    """True when the training images have R == G == B (checked on a few of them)."""
    import tensorflow as tf

    from alexnet_tf import data as data_lib

    def decoded(index, data, label, name):
        return data_lib.decode_and_resize(data, config.data.resize_size, source.encoded)

    for x in source.examples(config.data.train_split).take(32).map(decoded):
        x = tf.cast(x, tf.int32)
        if bool(tf.reduce_any(x[..., 0] != x[..., 1])) or bool(tf.reduce_any(x[..., 1] != x[..., 2])):
            return False
    return True


def plan(names: list[str], seeds: int, grey: bool) -> tuple[list[tuple[str, int]], list[str]]:
    """(setting, seed) training runs in seed-major order, and the settings skipped."""
    skipped = []
    trained = [BASELINE]
    for a in ABLATIONS:
        if a.name not in names:
            continue
        if a.colour_only and grey:
            skipped.append(a.name)
        elif not a.eval_only:
            trained.append(a.name)
    return [(name, seed) for seed in range(seeds) for name in trained], skipped


def run_config(base, setting: str, seed: int, epochs: int, stats_path: str):
    from alexnet_tf.config import override

    a = next((a for a in ABLATIONS if a.name == setting), None)
    changes = dict(a.overrides) if a else {}
    changes.update(
        {
            "train.seed": seed,
            "train.epochs": epochs,
            # Reproducible runs where TensorFlow allows it (not under XLA: see config.validate).
            "train.deterministic": base.compute.jit_compile is not True,
            "data.stats_path": stats_path,
        }
    )
    return override(base, changes)


def _run_one(config, workdir: str) -> dict:
    import keras

    from alexnet_tf.training import train_and_evaluate

    keras.backend.clear_session()
    return train_and_evaluate(config, workdir)


def _ten_crop(config, workdir: str) -> float:
    import tensorflow as tf

    path = os.path.join(workdir, "ten_crop.json")
    latest = tf.train.latest_checkpoint(RunFolder(workdir).checkpoints)
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f)["models"] != [latest]:
                os.remove(path)  # measured on an earlier checkpoint of a run that went on
    if not os.path.exists(path):
        from alexnet_tf.applications import load_net
        from alexnet_tf.evaluation import evaluate_nets

        batch = config.train.eval_batch_size or config.train.batch_size
        result = evaluate_nets([load_net(workdir)], config.data, crops="ten", batch_size=batch, stream=None)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return json.load(f)["top1_error"]


def _check_names(settings: list[str] | None) -> list[str]:
    from alexnet_tf.config import ConfigError

    names = list(settings or NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return names if BASELINE in names else [BASELINE, *names]


def _finished(workdir: str, config, planned_steps: int) -> dict | None:
    """A run's results.json if it trained its whole budget; None if it must (go on to) run."""
    result = RunFolder(workdir).read_results()
    if result is None:
        return None
    if config.train.max_steps:
        planned_steps = min(planned_steps, config.train.max_steps)
    return result if result["step"] >= planned_steps else None  # a larger budget: it goes on


def _entry(name: str, seed: int, workdir: str, result: dict, steps_per_epoch: int, target: float) -> dict:
    pts = curve(workdir, steps_per_epoch)
    history = result.get("history") or []
    return {
        "setting": name,
        "seed": seed,
        "workdir": workdir,
        "top1_error": result["top1_error"],
        "top5_error": result["top5_error"],
        "train_seconds": result.get("train_seconds"),
        "final_train_top1_error": history[-1]["train_top1_error"] if history else None,
        "curve": pts,
        "epochs_to_target": first_reaching(pts, target, "epoch"),
        "seconds_to_target": first_reaching(pts, target, "seconds"),
    }


def ablate(
    dataset: str = DEFAULT_DATASET,
    seeds: int = 3,
    budget_epochs: int = 1,
    out: str = "runs/ablate",
    settings: list[str] | None = None,
    recipe: str = DEFAULT_RECIPE,
    overrides: list[str] | None = None,
    target: float = 0.25,
    stream=None,
) -> dict:
    """Trains (or resumes) every (setting, seed) run under OUT/runs and writes the report."""
    # TensorFlow (data, report) here, not at the package's import: `python -m` filters its lines first
    from alexnet_tf import data as data_lib
    from alexnet_tf import runconfig
    from alexnet_tf.config import ConfigError
    from alexnet_tf.report import Progress

    names = _check_names(settings)
    if seeds < 1 or budget_epochs < 1:
        raise ConfigError("--seeds and --budget-epochs must be at least 1")
    # the data's own classes and validation split, unless --set names them (as --data does)
    resolved = runconfig.resolve(recipe, data=dataset, overrides=overrides or [])
    base, source = resolved.config, resolved.source
    os.makedirs(out, exist_ok=True)
    stats_path = RunFolder(out).stats  # one for every run, as a run folder keeps its own
    if not os.path.exists(stats_path):
        data_lib.dataset_stats(source, base.data, base.data.train_split).save(stats_path)
    todo, skipped = plan(names, seeds, _is_grey(source, base))
    steps_per_epoch = source.sizes[base.data.train_split] // base.train.batch_size

    def say(text):
        print(text, file=stream or sys.stdout, flush=True)

    if skipped:
        say(f"skipping {', '.join(skipped)}: {source.name} is grey, colour noise does nothing there")
    runs, progress = {}, Progress(len(todo), "ablation runs", stream=stream or sys.stdout, unit="runs")
    for i, (name, seed) in enumerate(todo):
        workdir = os.path.join(out, "runs", f"{name}-seed{seed}")
        config = run_config(base, name, seed, budget_epochs, stats_path)
        result = _finished(workdir, config, budget_epochs * steps_per_epoch)
        if result is None:
            say(f"[{i + 1}/{len(todo)}] {name} seed {seed}")
            result = _run_one(config, workdir)
            progress.update(i + 1, final=True)
        runs[(name, seed)] = entry = _entry(name, seed, workdir, result, steps_per_epoch, target)
        if name == BASELINE and "ten_crop" in names:
            say(f"ten-crop evaluation of {workdir}")
            entry["ten_crop_top1_error"] = _ten_crop(config, workdir)
        say(f"  {name} seed {seed}: top-1 error {100 * entry['top1_error']:.2f}%")
    meta = {
        "dataset": dataset,
        "seeds": seeds,
        "budget_epochs": budget_epochs,
        "recipe": recipe,
        "overrides": list(overrides or []),
        "baseline_differs_from_paper": differences_from_paper(base),
        "steps_per_epoch": steps_per_epoch,
        "global_batch": base.train.batch_size,
    }
    return write_report(out, runs, summarize(runs, names, skipped, target), meta, target, say)


def main(argv=None) -> int:
    from alexnet_tf import cli

    p = cli.parser("ablate", __doc__)
    cli.add_recipe(p)
    p.set_defaults(recipe=DEFAULT_RECIPE)
    cli.add_data(p)
    p.set_defaults(data=DEFAULT_DATASET)
    p.add_argument("--seeds", type=int, default=3, help="runs per setting")
    p.add_argument("--budget-epochs", type=int, default=1, help="epochs per run")
    cli.add_out(p, "folder for the runs, the table, ablations.json and the plot", required=False)
    p.set_defaults(out="runs/ablate")
    p.add_argument("--settings", help=f"comma-separated subset of {','.join(NAMES)} (default: all)")
    p.add_argument("--target-error", type=float, default=0.25, help="Fig. 1's training-error mark")
    cli.add_overrides(p)
    return cli.main(p, _main, argv)


def _main(
    recipe: str,
    data: str,
    seeds: int,
    budget_epochs: int,
    out: str,
    settings: str | None,
    target_error: float,
    overrides: list[str],
) -> None:
    names = settings.split(",") if settings else None
    ablate(data, seeds, budget_epochs, out, names, recipe, overrides, target_error)
