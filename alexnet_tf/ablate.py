"""The paper's ablations at small scale: `python -m alexnet_tf.ablate [RECIPE] [--data SPEC]
[--seeds N] [--budget-epochs E] [--out DIR] [--settings a,b] [--set k=v]`.

Trains the small variant of the paper's net (recipes/quickstart.py: the same builder and
layers at 67 px and a quarter of the width) once per setting and seed, each setting one
of the paper's switches flipped, and compares it with the unchanged net of the same seed:

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

import dataclasses
import json
import math
import os
import sys

import numpy as np

from alexnet_tf.config import recipe_folder
from alexnet_tf.report import Progress

DEFAULT_DATASET = "fashion_mnist:/usr/share/datasets/fashion-mnist"
DEFAULT_RECIPE = os.path.join(recipe_folder(), "quickstart.py")  # the shipped one, installed or in a checkout
BASELINE = "baseline"


@dataclasses.dataclass(frozen=True)
class Ablation:
    name: str
    overrides: dict
    section: str
    claim: str
    # The paper's change of top-1 error (points) from the baseline to this setting, where
    # it gives one; `sign` is the direction it reports (+1: the setting is worse).
    paper_diff: float | None
    sign: int
    colour_only: bool = False
    eval_only: bool = False


ABLATIONS = (
    Ablation("no_lrn", {"model.lrn": False}, "3.3", "LRN lowers top-1 error by 1.4 points", 1.4, +1),
    Ablation("no_overlap", {"model.overlap_pooling": False}, "3.4", "overlapping pooling lowers top-1 by 0.4", 0.4, +1),
    Ablation(
        "one_column",
        {"model.two_columns": False},
        "3.2",
        "two columns beat one with half the kernels by 1.7",
        1.7,
        +1,
    ),
    Ablation("tanh", {"model.activation": "tanh"}, "3.1, Fig. 1", "ReLU trains six times faster than tanh", None, +1),
    Ablation(
        "no_dropout",
        {"model.dropout": 0.0},
        "4.2",
        "without dropout: fewer iterations, much more overfitting",
        None,
        +1,
    ),
    Ablation(
        "no_pca",
        {"data.pca_noise_std": 0.0},
        "4.1",
        "colour noise lowers top-1 by over 1 point",
        1.0,
        +1,
        colour_only=True,
    ),
    Ablation("ten_crop", {}, "4.1", "averaging ten crops beats the centre crop", None, -1, eval_only=True),
)
NAMES = (BASELINE,) + tuple(a.name for a in ABLATIONS)


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
            "train.deterministic": base.train.jit_compile is not True,
            "data.stats_path": stats_path,
        }
    )
    return override(base, changes)


def curve(workdir: str, steps_per_epoch: int) -> list[dict]:
    """Training error over the run from its metrics.jsonl: epoch (fractional), seconds."""
    rows = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") == "train" and "top1_error" in r:
                rows[r["step"]] = r  # the last entry of a step wins (restarts)
    return [
        {
            "step": s,
            "epoch": s / steps_per_epoch,
            "seconds": rows[s].get("elapsed_seconds", float("nan")),
            "train_top1_error": rows[s]["top1_error"],
        }
        for s in sorted(rows)
    ]


def first_reaching(points: list[dict], target: float, key: str) -> float | None:
    return next((p[key] for p in points if p["train_top1_error"] <= target), None)


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else None


def summarize(runs: dict, names: list[str], skipped: list[str], target: float) -> dict:
    """Per setting: top-1 error mean/std over seeds and the paired difference from the
    baseline of the same seed (points), with the paper's number and direction."""
    base = {seed: r for (name, seed), r in runs.items() if name == BASELINE}
    rows = []
    for name in names:
        a = next((a for a in ABLATIONS if a.name == name), None)
        if name in skipped:
            rows.append({"setting": name, "skipped": "colour noise needs colour images; this dataset is grey"})
            continue
        if a is not None and a.eval_only:
            pairs = [(r["ten_crop_top1_error"], r["top1_error"]) for r in base.values() if "ten_crop_top1_error" in r]
        else:
            pairs = [
                (r["top1_error"], base[seed]["top1_error"])
                for (n, seed), r in runs.items()
                if n == name and seed in base
            ]
        if not pairs:
            continue
        errors = [100 * p[0] for p in pairs]
        diffs = [100 * (p[0] - p[1]) for p in pairs]
        row = {"setting": name, "seeds": len(pairs)}
        row["top1_error_mean"], row["top1_error_std"] = _mean_std(errors)
        if name != BASELINE:
            row["diff_mean"], row["diff_std"] = _mean_std(diffs)
            row["section"], row["claim"], row["paper_diff"] = a.section, a.claim, a.paper_diff
            row["paper_sign"] = a.sign
            row["direction_matches"] = bool(np.sign(row["diff_mean"]) == a.sign)
            # A difference within two standard errors of zero is not a finding either way.
            se = row["diff_std"] / math.sqrt(len(diffs)) if row["diff_std"] is not None else math.inf
            row["significant"] = bool(abs(row["diff_mean"]) > 2 * se)
        gaps = [
            100 * (r["top1_error"] - r["final_train_top1_error"])
            for (n, _), r in runs.items()
            if n == name and r.get("final_train_top1_error") is not None
        ]
        if gaps and (a is None or not a.eval_only):
            row["test_minus_train_mean"], row["test_minus_train_std"] = _mean_std(gaps)
        if name in (BASELINE, "tanh"):
            reach = [r["epochs_to_target"] for (n, _), r in runs.items() if n == name]
            row["epochs_to_target"] = reach
        rows.append(row)
    return {"target_train_error": target, "rows": rows}


def _fmt(mean, std) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        f"Small-scale ablations: {meta['dataset']}, {meta['seeds']} seed(s), {meta['budget_epochs']} epoch(s) "
        f"per run, recipe {os.path.basename(meta['recipe'])}. Top-1 error in %, mean ± std over seeds; "
        "difference = setting − baseline of the same seed, in points.",
        "",
        "| setting | paper section | top-1 error | difference | paper's difference | direction as in paper |"
        " test − train error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['setting']} | | skipped: {r['skipped']} | | | | |")
            continue
        gap = _fmt(r["test_minus_train_mean"], r["test_minus_train_std"]) if "test_minus_train_mean" in r else ""
        if r["setting"] == BASELINE:
            lines.append(
                f"| baseline (paper's net) | | {_fmt(r['top1_error_mean'], r['top1_error_std'])} | | | | {gap} |"
            )
            continue
        paper = "" if r["paper_diff"] is None else f"{r['paper_sign'] * r['paper_diff']:+.1f}"
        paper = paper or ("worse" if r["paper_sign"] > 0 else "better")
        verdict = "yes" if r["direction_matches"] else "no"
        if not r["significant"]:
            verdict += " (within noise)"
        lines.append(
            f"| {r['setting']} | {r['section']} | {_fmt(r['top1_error_mean'], r['top1_error_std'])} | "
            f"{_fmt(r['diff_mean'], r['diff_std'])} | {paper} | {verdict} | {gap} |"
        )
    target = summary["target_train_error"]
    for r in summary["rows"]:
        if "epochs_to_target" in r:
            reach = ", ".join("not reached" if e is None else f"{e:.2f}" for e in r["epochs_to_target"])
            lines.append("")
            lines.append(f"Epochs to {100 * target:.0f}% training error, {r['setting']}: {reach}")
    return "\n".join(lines) + "\n"


def fig1(runs: dict, target: float, path: str) -> None:
    """Training error against epochs and against seconds, ReLU (baseline) vs tanh."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    styles = {BASELINE: ("ReLU", "-", "C0"), "tanh": ("tanh", "--", "C3")}
    for (name, seed), r in sorted(runs.items(), key=lambda kv: kv[0][1]):
        if name not in styles or not r["curve"]:
            continue
        label, dash, color = styles[name]
        pts = r["curve"]
        for ax, key in zip(axes, ("epoch", "seconds")):
            ax.plot(
                [p[key] for p in pts],
                [100 * p["train_top1_error"] for p in pts],
                dash,
                color=color,
                alpha=0.8,
                label=label if seed == 0 else None,
            )
    for ax, xlabel in zip(axes, ("epochs", "seconds")):
        ax.axhline(100 * target, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training top-1 error (%)")
    axes[0].legend()
    fig.suptitle(f"Fig. 1 analogue: ReLU vs tanh (one line per seed; dotted: {100 * target:.0f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run_one(config, workdir: str) -> dict:
    import keras

    from alexnet_tf.train import train_and_evaluate

    keras.backend.clear_session()
    return train_and_evaluate(config, workdir)


def _ten_crop(config, workdir: str) -> float:
    import tensorflow as tf

    path = os.path.join(workdir, "ten_crop.json")
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f)["models"] != [latest]:
                os.remove(path)  # measured on an earlier checkpoint of a run that went on
    if not os.path.exists(path):
        from alexnet_tf.evaluate import evaluate
        from alexnet_tf.runs import load_net

        batch = config.train.eval_batch_size or config.train.batch_size
        result = evaluate([load_net(workdir)], config.data, crops="ten", batch_size=batch, stream=None)
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
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
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


def _write_report(out: str, runs: dict, summary: dict, meta: dict, target: float, say) -> dict:
    report = {"meta": meta, "summary": summary, "runs": list(runs.values())}
    with open(os.path.join(out, "ablations.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "ablations.md"), "w") as f:
        f.write(markdown(summary, meta))
    if any(name == "tanh" for name, _ in runs):
        try:
            fig1(runs, target, os.path.join(out, "fig1_relu_tanh.png"))
        except ImportError:
            say("matplotlib is not installed, so fig1_relu_tanh.png was not drawn: pip install 'alexnet_tf[plots]'")
    say(markdown(summary, meta))
    return report


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
    from alexnet_tf import data as data_lib
    from alexnet_tf.config import ConfigError, load_recipe, override

    names = _check_names(settings)
    if seeds < 1 or budget_epochs < 1:
        raise ConfigError("--seeds and --budget-epochs must be at least 1")
    from alexnet_tf.runs import resolve_data

    # the data's own classes and validation split, unless --set names them (as --data does)
    base = override(load_recipe(recipe), [f"data.source={dataset}", "data.eval_split=", "model.num_classes=0"])
    base = override(base, overrides or [])
    source = data_lib.open_source(base.data.source, base.data)
    base = resolve_data(base, source)
    os.makedirs(out, exist_ok=True)
    stats_path = os.path.join(out, "stats.npz")
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
        "steps_per_epoch": steps_per_epoch,
        "global_batch": base.train.batch_size,
    }
    return _write_report(out, runs, summarize(runs, names, skipped, target), meta, target, say)


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


if __name__ == "__main__":
    raise SystemExit(main())
