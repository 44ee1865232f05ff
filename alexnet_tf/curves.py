"""A run's training curves as a picture: top-1 and top-5 error on the training and the
validation images, and the learning rate, by epoch, with the epochs after which the rate
was divided by 10 marked (Sec. 5: "divide the learning rate by 10 when the validation
error rate stopped improving"). Read from the run's history.json (one entry per epoch);
drawn with matplotlib (`pip install 'alexnet_tf[plots]'`)."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from alexnet_tf.runfolder import RunFolder

FILENAME = "training_curves.png"
SIZE = (8.0, 6.0)  # inches
DPI = 100  # so the PNG is 800 x 600 px


def read_history(workdir: str) -> list[dict]:
    """The run's history.json: one dict per finished epoch. FileNotFoundError names the
    file when the run has finished no epoch (or `workdir` is no run folder)."""
    path = RunFolder(workdir).history
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the run has not finished an epoch, or is no run folder")
    with open(path) as f:
        return json.load(f)


def _train_top5_from_metrics(metrics_path: str, epoch_ends: list[int]) -> list[float]:
    """Older runs' history has no training top-5 error: the mean of the logged training
    windows (metrics.jsonl) that end within each epoch; nan for an epoch with none."""
    windows = []
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash
                    continue
                if record.get("split") == "train" and "top5_error" in record:
                    windows.append((record["step"], record["top5_error"]))
    out, start = [], 0
    for end in epoch_ends:
        values = [v for s, v in windows if start < s <= end]
        out.append(float(np.mean(values)) if values else math.nan)
        start = end
    return out


def curves(history: list[dict], metrics_path: str | None = None) -> dict:
    """What the figure draws, from a run's history entries: `epoch`; the errors in %
    (`train_top1`, `train_top5`, `eval_top1`, `eval_top5`); `lr`, the rate each epoch ran
    at; `cuts`, the epochs after which the rate was lower. `train_top5` comes from the
    history where it has it, else from the training windows of `metrics_path`
    (metrics.jsonl), else is nan."""
    history = sorted(history, key=lambda h: h["epoch"])
    if not history:
        raise ValueError("the history holds no epoch")
    train_top5 = [h.get("train_top5_error", math.nan) for h in history]
    if any(math.isnan(v) for v in train_top5) and metrics_path:
        logged = _train_top5_from_metrics(metrics_path, [h["step"] for h in history])
        train_top5 = [v if not math.isnan(v) else w for v, w in zip(train_top5, logged)]
    lr = [float(h["lr"]) for h in history]
    return {
        "epoch": [int(h["epoch"]) for h in history],
        "train_top1": [100 * h["train_top1_error"] for h in history],
        "train_top5": [100 * v for v in train_top5],
        "eval_top1": [100 * h["eval_top1_error"] for h in history],
        "eval_top5": [100 * h["eval_top5_error"] for h in history],
        "lr": lr,
        "cuts": [history[i]["epoch"] for i in range(len(history) - 1) if lr[i + 1] < lr[i]],
    }


def draw(c: dict, title: str = ""):
    """The figure (a matplotlib Figure) of `curves(...)`: errors above, the learning rate
    (log scale) below, a dotted line after each epoch that ended with a cut."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=SIZE, dpi=DPI)
    errors, rate = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key, label, style in (
        ("train_top1", "train top-1", ("C0", "--")),
        ("eval_top1", "validation top-1", ("C0", "-")),
        ("train_top5", "train top-5", ("C1", "--")),
        ("eval_top5", "validation top-5", ("C1", "-")),
    ):
        if not all(math.isnan(v) for v in c[key]):
            errors.plot(c["epoch"], c[key], color=style[0], ls=style[1], marker=".", label=label)
    errors.set_ylabel("error (%)")
    errors.set_ylim(bottom=0)
    errors.legend()
    rate.step(c["epoch"], c["lr"], where="mid", color="C2", label="learning rate")
    rate.set_yscale("log")
    rate.set_ylabel("learning rate")
    rate.set_xlabel("epoch")
    rate.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (errors, rate):
        ax.grid(alpha=0.3)
        for i, e in enumerate(c["cuts"]):
            ax.axvline(e + 0.5, color="grey", ls=":", lw=1, label="lr / 10 (Sec. 5)" if ax is rate and not i else None)
    if c["cuts"]:
        rate.legend()
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    return fig


def write_curves(workdir: str, path: str) -> dict:
    """Draws `workdir`'s training curves into the PNG `path`; returns `curves(...)`."""
    c = curves(read_history(workdir), RunFolder(workdir).metrics)
    fig = draw(c, f"{os.path.basename(os.path.normpath(workdir))}: training curves")
    fig.savefig(path, dpi=DPI)
    return c
