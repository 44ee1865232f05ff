"""The ablations' report: training curves from each run's metrics.jsonl, the table of
top-1 errors and paired differences beside the paper's claims (Markdown and JSON), and
Fig. 1's plot (training error against epochs and seconds, ReLU vs tanh)."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from alexnet_tf.ablate.settings import ABLATIONS, BASELINE
from alexnet_tf.runfolder import RunFolder


def curve(workdir: str, steps_per_epoch: int) -> list[dict]:
    """Training error over the run from its metrics.jsonl: epoch (fractional), seconds."""
    rows = {}
    path = RunFolder(workdir).metrics
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


def baseline_name(meta: dict) -> str:
    """The baseline's row: the recipe whose net it is (not the paper's unless recipes/paper.py)."""
    return f"baseline ({os.path.basename(meta['recipe'])})"


def markdown(summary: dict, meta: dict) -> str:
    recipe = os.path.basename(meta["recipe"])
    changes = meta.get("baseline_differs_from_paper")
    if changes:
        what = f"the net of {recipe}, not the paper's net: it differs from recipes/paper.py in {', '.join(changes)}"
    else:
        what = f"the net of {recipe}" + (", the paper's" if changes == [] else "")
    lines = [
        f"Small-scale ablations: {meta['dataset']}, {meta['seeds']} seed(s), {meta['budget_epochs']} epoch(s) "
        f"per run, recipe {recipe}. Top-1 error in %, mean ± std over seeds; "
        "difference = setting − baseline of the same seed, in points.",
        "",
        f"Baseline: {what}. Each other row flips one of the paper's switches in it.",
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
                f"| {baseline_name(meta)} | | {_fmt(r['top1_error_mean'], r['top1_error_std'])} | | | | {gap} |"
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


def write_report(out: str, runs: dict, summary: dict, meta: dict, target: float, say) -> dict:
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
