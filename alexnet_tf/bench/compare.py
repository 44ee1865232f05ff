"""`bench compare`: the README's speed table from `train --out` lines and the PyTorch peer's."""

from __future__ import annotations

import argparse
import json

from alexnet_tf.bench.common import PAPER_FORWARD_MACS


def _read_results(path: str) -> list:
    """The result dicts in a file of JSON lines (`--out`, or the peer script's stdout)
    or one JSON list (the peer script's torch_bench.json); other lines are skipped."""
    from alexnet_tf.config import ConfigError

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
    return f"{value:,.0f}" if value else ""


def _peer_rate(peer: list, batch: int, dtype: str, compiled: bool) -> float | None:
    """The peer's best img/s for the paper's net on this batch and dtype (fp32 = its tf32)."""
    dtype = "tf32" if dtype in ("fp32", "tf32") else dtype
    rates = [
        r["img_per_s"]
        for r in peer
        if r["batch"] == batch
        and r["dtype"] == dtype
        and bool(r["compile"]) == compiled
        and r["model"].startswith("paper")
    ]
    return max(rates) if rates else None


def _synthetic_row(key: tuple, runs: list, peer: list, target: float) -> str:
    _, batch, dtype, overrides, feed = key
    best = max(runs, key=lambda r: r["img_per_s"])
    per_call = ", ".join(f"{_rate(r['img_per_s'])} ({r['steps_per_loop']})" for r in runs)
    eager, compiled = _peer_rate(peer, batch, dtype, False), _peer_rate(peer, batch, dtype, True)
    peers = [x for x in (eager, compiled) if x]
    if best.get("train_flops_per_image") != 6 * PAPER_FORWARD_MACS:
        verdict, eager, compiled = f"not the paper's net ({best.get('recipe')})", None, None
    elif peers:
        ratio = best["img_per_s"] / max(peers)
        verdict = f"{ratio:.2f}x " + ("(meets" if ratio >= target else "(below") + f" {target}x)"
    else:
        verdict = "no peer line"
    label = f"{batch}, {dtype}" + ("" if feed == "device" else f", feed {feed}") + "".join(f", {o}" for o in overrides)
    mfu = f"{best['mfu']:.1%}" if best.get("mfu") is not None else ""
    memory = f"{best['peak_memory_bytes'] / 2**30:.1f} GiB" if best.get("peak_memory_bytes") else ""
    return f"| {label} | {per_call} | {mfu} | {memory} | {_rate(eager)} | {_rate(compiled)} | {verdict} |"


def _input_row(key: tuple, runs: list, input_target: float) -> str:
    source, batch, dtype, overrides, _ = key
    best = max(runs, key=lambda r: r["img_per_s"])
    per_call = ", ".join(f"{_rate(r['img_per_s'])} ({r['steps_per_loop']})" for r in runs)
    verdict = f"{best['img_per_s'] / input_target:.2f}x of {_rate(input_target)}"
    label = f"{batch}, {dtype}" + "".join(f", {o}" for o in overrides)
    return f"| {source} | {label} | {per_call} | {verdict} |"


def compare(paths: list, target: float = 1.3, input_target: float = 12_000) -> str:
    """A Markdown report of `train` lines beside the PyTorch peer's lines on the same
    batch and dtype (tf32 or fp32 against the peer's tf32): per setting alexnet_tf's
    img/s at each --steps-per-loop, MFU and peak memory of the fastest, the peer's eager
    and torch.compile img/s, and the ratio to the faster of the two against `target`;
    runs with --data against `input_target` img/s."""
    from alexnet_tf.config import ConfigError

    rows = [r for path in paths for r in _read_results(path)]
    ours = [r for r in rows if r.get("bench") == "train" and "img_per_s" in r]
    peer = [r for r in rows if "model" in r and "compile" in r and "img_per_s" in r]
    if not ours:
        raise ConfigError(f"no `bench train` results in {', '.join(paths)}")
    settings = {}
    for r in ours:
        key = (r["input"], r["batch"], r["dtype"], tuple(r.get("overrides", ())), r.get("feed", "device"))
        settings.setdefault(key, []).append(r)
    lines = []
    synthetic = {k: v for k, v in settings.items() if k[0] == "synthetic"}
    if synthetic:
        lines += [
            "| batch, dtype | alexnet_tf img/s (steps per host call) | MFU | peak memory | PyTorch eager "
            "| torch.compile | x best PyTorch |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [_synthetic_row(k, v, peer, target) for k, v in synthetic.items()]
    real = {k: v for k, v in settings.items() if k[0] != "synthetic"}
    if real:
        lines += [""] if lines else []
        lines += ["| input | batch, dtype | img/s (steps per host call) | target |", "| --- | --- | --- | --- |"]
        lines += [_input_row(k, v, input_target) for k, v in real.items()]
    devices = sorted({r["device"] for r in ours if r.get("device")})
    versions = sorted({f"TensorFlow {r['tf_version']}, Keras {r['keras_version']}" for r in ours if "tf_version" in r})
    lines += ["", f"Device: {'; '.join(devices) or 'not recorded'}. {'; '.join(versions)}."]
    for r in (r for r in rows if "error" in r):
        what = r.get("model") or r.get("recipe", "")
        lines.append(f"Failed: {what} batch {r.get('batch')} {r.get('dtype')}: {r['error'][:120]}")
    return "\n".join(lines)


def bench_compare(args: argparse.Namespace) -> str:
    report = compare(args.files, args.target, args.input_target)
    print(report)
    return report
