"""The speed tables: `python -m alexnet_tf.bench train` / `bench export` lines beside the
PyTorch peer's (`python -m benchmarks.torch_peer`), in Markdown.

    python -m benchmarks.compare DIR_OR_FILE [...] [--target 1.3] [--input-target 12000]

(from the clone's root). It reads `--out` folders (every *.jsonl in them) or files of
JSON lines and prints, per net, batch, dtype and `--set` variant, alexnet_tf's img/s of
every run (and steps per host call), the forms it ran in, the MFU and peak memory of the
fastest, every run of the peer's eager and compiled modes on the same net, batch and
dtype, and the ratio of our fastest to the peer's fastest against --target; runs with
--data against --input-target img/s; `export` lines beside the peer's `infer` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from alexnet_tf import cli
from alexnet_tf.config import ConfigError

# forward_macs of the paper's net (two columns, 227 px): the one the PyTorch peer runs
PAPER_FORWARD_MACS = 724_406_816  # Sec. 3.5: "about 724 M"


def _read_results(path: str) -> list:
    """The result dicts in a file of JSON lines (the peer script's stdout, a `--out`
    folder's *.jsonl) or one JSON list, or in every *.jsonl of a folder (`--out DIR` of
    bench and of the peer); other lines are skipped."""
    if os.path.isdir(path):
        return [
            r
            for name in sorted(os.listdir(path))
            if name.endswith(".jsonl")
            for r in _read_results(os.path.join(path, name))
        ]
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    try:
        whole = json.loads(text)
        return [r for r in (whole if isinstance(whole, list) else [whole]) if isinstance(r, dict)]
    except json.JSONDecodeError:
        pass
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _rate(value: float | None) -> str:
    if not value:
        return ""
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _rates(runs: list, key: str = "img_per_s") -> str:
    """Every run's value, in the order run: `1,234, 1,301`."""
    return ", ".join(_rate(r[key]) if key == "img_per_s" else f"{r[key]:,.1f}" for r in runs)


def _net(row: dict) -> str:
    """The net a line times: the peer's `model`, or our recipe's file name (paper, quickstart)."""
    if row.get("net"):
        return row["net"]
    if "model" in row:
        return row["model"].split("_")[0]
    return os.path.splitext(os.path.basename(row.get("recipe", "")))[0]


def _flops(row: dict) -> int | None:
    """Training FLOPs per image of the line's net (old peer lines without it: the paper's net)."""
    if "train_flops_per_image" in row:
        return row["train_flops_per_image"]
    return 6 * PAPER_FORWARD_MACS if "model" in row and row["model"].startswith("paper") else None


def _same_dtype(ours: str, theirs: str) -> bool:
    """fp32 and tf32 stand for one setting: float32 variables and math as the device does it."""
    group = {"fp32": "fp32", "tf32": "fp32"}
    return group.get(ours, ours) == group.get(theirs, theirs)


def _peer_runs(peer: list, row: dict, compiled: bool) -> list:
    """The peer's lines for the same net (same FLOPs per image), batch and dtype."""
    return [
        r
        for r in peer
        if "img_per_s" in r
        and r["batch"] == row["batch"]
        and _same_dtype(row["dtype"], r["dtype"])
        and bool(r.get("compile", r.get("mode") == "compile")) == compiled
        and _flops(r) == _flops(row)
    ]


def _verdict(best: float, peers: list, target: float) -> str:
    if not peers:
        return "no peer line"
    return _judged(best / max(r["img_per_s"] for r in peers), target)


def _latency_verdict(ours_ms: float, fastest: dict | None, target: float) -> str:
    if fastest is None:
        return "no peer line"
    return _judged(fastest["p50_ms"] / ours_ms, target, " p50")


def _judged(ratio: float, target: float, measure: str = "") -> str:
    return f"{ratio:.2f}x{measure} " + ("(meets" if ratio >= target else "(below") + f" {target}x)"


def _per_round(runs: list, eager: list, compiled: list) -> str:
    """With alternating runs (as many of ours as of each peer mode): the i-th run of ours
    against the faster of the peer's i-th runs, the ratios of a shared machine's quiet and
    busy spells apart."""
    peers = [m for m in (eager, compiled) if m]
    if len(runs) < 2 or not peers or any(len(m) != len(runs) for m in peers):
        return ""
    ratios = [r["img_per_s"] / max(m[i]["img_per_s"] for m in peers) for i, r in enumerate(runs)]
    return "; per round " + ", ".join(f"{x:.2f}" for x in ratios)


def _forms(row: dict) -> str:
    f = row.get("forms")
    if not f:
        return ""
    jit = "XLA" if f.get("jit_compile") else "no XLA"
    return f"{f['conv_form']}, LRN {f['lrn_impl']}, update {f.get('update_op', 'keras')}, {jit}"


def _synthetic_row(key: tuple, runs: list, peer: list, target: float) -> str:
    _, net, batch, dtype, overrides, feed = key
    best = max(runs, key=lambda r: r["img_per_s"])
    per_call = ", ".join(f"{_rate(r['img_per_s'])} ({r['steps_per_loop']})" for r in runs)
    eager, compiled = _peer_runs(peer, best, False), _peer_runs(peer, best, True)
    label = f"{net}, {batch}, {dtype}" + ("" if feed == "device" else f", feed {feed}")
    label += "".join(f", {o}" for o in overrides)
    mfu = f"{best['mfu']:.1%}" if best.get("mfu") is not None else ""
    memory = f"{best['peak_memory_bytes'] / 2**30:.1f} GiB" if best.get("peak_memory_bytes") else ""
    verdict = _verdict(best["img_per_s"], eager + compiled, target)
    if len({r["steps_per_loop"] for r in runs}) == 1:
        verdict += _per_round(runs, eager, compiled)
    return (
        f"| {label} | {per_call} | {_forms(best)} | {mfu} | {memory} | {_rates(eager)} | {_rates(compiled)} "
        f"| {verdict} |"
    )


def _input_row(key: tuple, runs: list, input_target: float) -> str:
    source, _, batch, dtype, overrides, _ = key
    best = max(runs, key=lambda r: r["img_per_s"])
    per_call = ", ".join(f"{_rate(r['img_per_s'])} ({r['steps_per_loop']})" for r in runs)
    verdict = f"{best['img_per_s'] / input_target:.2f}x of {_rate(input_target)}"
    label = f"{batch}, {dtype}" + "".join(f", {o}" for o in overrides)
    return f"| {source} | {label} | {per_call} | {verdict} |"


def _train_tables(ours: list, peer: list, target: float, input_target: float) -> list:
    settings = {}
    for r in ours:
        key = (r["input"], _net(r), r["batch"], r["dtype"], tuple(r.get("overrides", ())), r.get("feed", "device"))
        settings.setdefault(key, []).append(r)
    lines = []
    synthetic = {k: v for k, v in settings.items() if k[0] == "synthetic"}
    if synthetic:
        lines += [
            "| net, batch, dtype | alexnet_tf img/s (steps per host call) | forms | MFU | peak memory "
            "| PyTorch eager | torch.compile | x best PyTorch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [_synthetic_row(k, v, peer, target) for k, v in synthetic.items()]
    real = {k: v for k, v in settings.items() if k[0] != "synthetic"}
    if real:
        lines += [""] if lines else []
        lines += ["| input | batch, dtype | img/s (steps per host call) | target |", "| --- | --- | --- | --- |"]
        lines += [_input_row(k, v, input_target) for k, v in real.items()]
    return lines


# `bench export --runtime`, as the table names it
RUNTIMES = {"session": "Session, as served", "eager": "tf.saved_model.load"}


def _export_tables(ours: list, peer: list) -> list:
    """Throughput and latency of the SavedModel (`bench export`) beside the peer's `infer` lines."""
    lines = [
        "| net, batch, dtype | runtime | SavedModel img/s | p50 / p99 ms (best run) | PyTorch eager img/s "
        "| torch.compile img/s | PyTorch p50 / p99 ms (best mode) | x best PyTorch (batch 1: its p50 over ours) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    settings = {}
    for r in ours:  # lines written before `bench export --runtime` timed tf.saved_model.load's signature
        settings.setdefault((_net(r), r["batch"], r["dtype"], r.get("runtime", "eager")), []).append(r)
    for (net, batch, dtype, runtime), runs in settings.items():
        best = max(runs, key=lambda r: r["img_per_s"])
        theirs = [r for r in peer if _net(r) == net and r["batch"] == batch and _same_dtype(dtype, r["dtype"])]
        eager = [r for r in theirs if r.get("mode") == "eager"]
        compiled = [r for r in theirs if r.get("mode") == "compile"]
        if batch == 1:  # one image: latency, the p50 of the lowest against the peer's lowest
            best = min(runs, key=lambda r: r["p50_ms"])
            fastest = min(theirs, key=lambda r: r["p50_ms"], default=None)
            verdict = _latency_verdict(best["p50_ms"], fastest, 1.0)
        else:
            fastest = max(theirs, key=lambda r: r["img_per_s"], default=None)
            verdict = _verdict(best["img_per_s"], theirs, 1.0)
        peer_latency = f"{fastest['p50_ms']:.1f} / {fastest['p99_ms']:.1f}" if fastest else ""
        lines.append(
            f"| {net}, {batch}, {dtype} | {RUNTIMES.get(runtime, runtime)} | {_rates(runs)} "
            f"| {best['p50_ms']:.1f} / {best['p99_ms']:.1f} "
            f"| {_rates(eager)} | {_rates(compiled)} | {peer_latency} | {verdict} |"
        )
    return lines


def compare(paths: list, target: float = 1.3, input_target: float = 12_000) -> str:
    """A Markdown report of `bench train` lines beside the PyTorch peer's on the same net
    (same training FLOPs per image), batch and dtype (fp32 and tf32 as one): per setting
    alexnet_tf's img/s of every run and steps per host call, its forms, MFU and peak memory
    of the fastest, every run of the peer's eager and torch.compile modes, and the ratio of
    our fastest to the peer's fastest against `target`; runs with --data against
    `input_target` img/s; `bench export` lines beside the peer's `infer` lines."""
    rows = [r for path in paths for r in _read_results(path)]
    ours = [r for r in rows if r.get("bench") == "train" and "img_per_s" in r]
    served = [r for r in rows if r.get("bench") == "export" and "img_per_s" in r]
    peer = [r for r in rows if "model" in r and ("compile" in r or "mode" in r) and "img_per_s" in r]
    if not ours and not served:
        raise ConfigError(f"no `bench train` or `bench export` results in {', '.join(paths)}")
    train_peer = [r for r in peer if r.get("bench", "torch_train") == "torch_train"]
    lines = _train_tables(ours, train_peer, target, input_target) if ours else []
    if served:
        lines += [""] if lines else []
        lines += _export_tables(served, [r for r in peer if r.get("bench") == "torch_infer"])
    mine = ours + served
    devices = sorted({r["device"] for r in mine if r.get("device")})
    versions = sorted({f"TensorFlow {r['tf_version']}, Keras {r['keras_version']}" for r in mine if "tf_version" in r})
    versions += sorted({f"PyTorch {r['torch_version']}" for r in peer if "torch_version" in r})
    lines += ["", f"Device: {'; '.join(devices) or 'not recorded'}. {'; '.join(versions)}."]
    for r in (r for r in rows if "error" in r):
        what = r.get("model") or r.get("recipe", "")
        lines.append(f"Failed: {what} batch {r.get('batch')} {r.get('dtype')}: {r['error'][:120]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.compare`: prints `compare` of the files given; exit code 2
    with one line for files that hold no results."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__, formatter_class=cli.HelpFormatter
    )
    p.add_argument("files", nargs="+", help="--out folders (or JSON-lines files) of bench train/export and the peer")
    p.add_argument("--target", type=float, default=1.3, help="ratio to the faster PyTorch mode to meet")
    p.add_argument("--input-target", type=float, default=12_000, help="img/s to meet with --data")
    args = p.parse_args(argv)
    try:
        print(compare(args.files, args.target, args.input_target))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
