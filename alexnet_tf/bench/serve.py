"""`bench serve`: the REST server under load. `--payload jpeg`: throughput and latency of
ordinary one-image requests at several numbers of clients; `--payload largest`: peak
memory under the largest requests its limits let through."""

from __future__ import annotations

import argparse
import base64
import glob
import http.client
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import tensorflow as tf

import alexnet_tf
from alexnet_tf.bench.common import emit, make_jpegs
from alexnet_tf.serve import ServeOptions

SERVE_PAYLOADS = ("images", "uint8", "objects")
Payload = Literal["jpeg", "largest"]  # bench serve --payload


def serve_payloads(max_body: int, max_pixels: int, max_request_pixels: int, max_batch: int) -> dict:
    """{kind: body}, each as large as the server's limits let through: `images`, JPEGs of
    --max-pixels up to --max-request-pixels in all (answered by the model); `uint8`, one
    serve_uint8 image of nested lists filling the body (answered by the model); `objects`,
    a body of one-key objects, the JSON that costs the most memory to parse of what the
    server parses (refused after parsing: too many instances)."""
    images, left = [], max_request_pixels
    while left > 0 and len(images) < max_batch:
        side = math.isqrt(min(left, max_pixels))
        # Progressive 4:4:4 JPEG: libjpeg holds every DCT coefficient, the costliest decode per pixel.
        pixels = np.zeros((side, side, 3), np.uint8)
        images.append(tf.io.encode_jpeg(pixels, quality=100, progressive=True, chroma_downsampling=False).numpy())
        left -= side * side
    jpegs = {"instances": [{"b64": base64.b64encode(jpeg).decode()} for jpeg in images]}
    side = math.isqrt(max_body // 8)
    while True:  # "[0,0,0]," per pixel, "[...]," per row
        row = "[" + ",".join(["[0,0,0]"] * side) + "]"
        uint8 = '{"signature_name":"serve_uint8","instances":[[' + ",".join([row] * side) + "]]}"
        if len(uint8) <= max_body:
            break
        side -= 8
    objects = '{"instances":[' + ",".join(['{"":0}'] * ((max_body - 20) // 7)) + "]}"
    return {"images": json.dumps(jpegs).encode(), "uint8": uint8.encode(), "objects": objects.encode()}


def _proc_status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _start_server(export_dir: str, server_args: list) -> tuple:
    """(process, port) of `python -m alexnet_tf.serve` running this copy of the package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_tf.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "alexnet_tf.serve", export_dir, "--port", "0", "--quiet", *server_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    m = re.search(r"http://[^:]+:(\d+)/", proc.stdout.readline())
    if not m:
        proc.kill()
        raise RuntimeError(f"{' '.join(cmd)} did not start (exit code {proc.wait()})")
    return proc, int(m[1])


def _post(port: int, model: str, body: bytes) -> int | str:
    """The status of one predict request on a new connection, or the name of the error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", f"/v1/models/{model}:predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as e:
        return type(e).__name__
    finally:
        conn.close()


def _tally(results: list) -> dict:
    """Answers by payload kind and status, and latency (ms) by status."""
    answers, latency = {}, {}
    for kind, status, elapsed in results:
        answers.setdefault(kind, {}).setdefault(str(status), 0)
        answers[kind][str(status)] += 1
        latency.setdefault(str(status), []).append(elapsed * 1000)
    return {
        "answers": answers,
        "latency_ms": {
            s: {"median": round(statistics.median(v)), "p99": round(np.percentile(v, 99)), "max": round(max(v))}
            for s, v in sorted(latency.items())
        },
    }


def serve_load(export_dir: str, clients: int = 32, seconds: float = 30.0, server_args: list = ()) -> dict:
    """Starts the server on EXPORT_DIR and has `clients` threads send it the `serve_payloads`
    in turn, each as soon as its last answer came, for `seconds`; returns the answers by
    kind and status, their latency and the server's peak resident memory (VmHWM)."""
    limits = ServeOptions.parse(list(server_args))
    payloads = serve_payloads(limits.max_body, limits.max_pixels, limits.max_request_pixels, limits.max_batch)
    proc, port = _start_server(export_dir, list(server_args))
    try:
        _post(port, limits.model_name, serve_payloads(2**16, 12, 12, 1)["images"])  # both signatures, once
        _post(
            port,
            limits.model_name,
            json.dumps({"signature_name": "serve_uint8", "instances": [[[[0, 0, 0]]]]}).encode(),
        )
        idle_rss = _proc_status_mb(proc.pid, "VmRSS")
        results, deadline = [], time.monotonic() + seconds

        def client(i: int) -> None:
            while time.monotonic() < deadline:
                kind = SERVE_PAYLOADS[i % len(SERVE_PAYLOADS)]
                start = time.monotonic()
                status = _post(port, limits.model_name, payloads[kind])
                results.append((kind, status, time.monotonic() - start))  # list.append is atomic
                i += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak_rss = _proc_status_mb(proc.pid, "VmHWM")
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    return {
        "bench": "serve",
        "clients": clients,
        "seconds": seconds,
        "server_args": list(server_args),
        "payload_bytes": {k: len(v) for k, v in payloads.items()},
        **_tally(results),
        "server_alive": alive,
        "idle_rss_mb": round(idle_rss),
        "peak_rss_mb": round(peak_rss),
    }


def photo_jpegs(count: int = 8, size: int = 256) -> list:
    """`count` photo-like size x size JPEGs as `bench input` generates them (about the bytes of
    an ImageNet image at 256 px): the images of ordinary requests."""
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(tmp, count=count, size=size)
        files = sorted(glob.glob(os.path.join(tmp, "train", "*", "*")))
        return [open(f, "rb").read() for f in files]


class _Client:
    """One client on one keep-alive connection: sends, waits for the answer, sends again;
    after a 503 it waits as long as Retry-After says."""

    def __init__(self, port: int, model: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.path = f"/v1/models/{model}:predict"

    def post(self, body: bytes) -> tuple:
        """(status or error name, Retry-After seconds)."""
        try:
            self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()  # http.client reconnects on the next request
            return response.status, float(response.getheader("Retry-After") or 0)
        except OSError as e:
            self.conn.close()
            return type(e).__name__, 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _jpeg_load(pid: int, port: int, model: str, bodies: list, clients: int, seconds: float) -> dict:
    """`clients` threads, each sending `bodies` in turn for `seconds`: answers by status,
    the 200s per second and their latency, and the server's CPU time per answer."""
    cpu, results, start = _cpu_seconds(pid), [], time.monotonic()
    deadline = start + seconds

    def client(i: int) -> None:
        c = _Client(port, model)
        while time.monotonic() < deadline:
            sent = time.monotonic()
            status, retry_after = c.post(bodies[i % len(bodies)])
            results.append((status, time.monotonic() - sent))  # list.append is atomic
            i += 1
            if retry_after:
                time.sleep(min(retry_after, max(deadline - time.monotonic(), 0)))
        c.conn.close()

    load = os.getloadavg()[0]
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.monotonic() - start, _cpu_seconds(pid) - cpu
    ok = [e * 1000 for status, e in results if status == 200]
    answers = {}
    for status, _ in results:
        answers[str(status)] = answers.get(str(status), 0) + 1
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(ok) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok else None,
        "answers": dict(sorted(answers.items())),
        "server_cpu_ms_per_answer": round(cpu * 1000 / max(len(results), 1), 2),
        "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],  # at the start, at the end
    }


def serve_throughput(
    export_dir: str, clients=(1, 8, 32, 128), seconds: float = 10.0, rounds: int = 2, server_args: list = (), out=None
) -> list:
    """Starts the server on EXPORT_DIR and, `rounds` times over, has each number of
    `clients` send it ordinary requests (one photo-like 256 px JPEG each) for `seconds`;
    emits a JSON line per round and number of clients, and returns them."""
    limits = ServeOptions.parse(list(server_args))
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(j).decode()}]}).encode() for j in photo_jpegs()]
    proc, port = _start_server(export_dir, list(server_args))
    lines = []
    try:
        _jpeg_load(
            proc.pid, port, limits.model_name, bodies, max(clients), min(seconds, 3.0)
        )  # warm: batches of each size
        for r in range(rounds):
            for n in clients:
                line = {
                    "bench": "serve",
                    "payload": "jpeg",
                    "round": r,
                    **_jpeg_load(proc.pid, port, limits.model_name, bodies, n, seconds),
                }
                line.update(server_args=list(server_args), export_dir=export_dir)
                emit(line, out)
                lines.append(line)
        peak = _proc_status_mb(proc.pid, "VmHWM")
    finally:
        proc.kill()
        proc.wait()
    _print_table(lines, peak)
    return lines


def _print_table(lines: list, peak_rss_mb: float) -> None:
    """The Markdown rows of docs/serving.md's table, on stderr: each round's figures."""
    by = {}
    for line in lines:
        by.setdefault(line["clients"], []).append(line)
    print("| clients | requests/s | p50 ms | p99 ms | 503s | other answers | server CPU ms/answer |", file=sys.stderr)
    print("| --- | --- | --- | --- | --- | --- | --- |", file=sys.stderr)
    for n, rows in by.items():
        cells = {
            k: ", ".join(str(r[k]) for r in rows)
            for k in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_answer")
        }
        shed = ", ".join(str(r["answers"].get("503", 0)) for r in rows)
        other = sum(v for r in rows for k, v in r["answers"].items() if k not in ("200", "503"))
        print(
            f"| {n} | {cells['requests_per_s']} | {cells['p50_ms']} | {cells['p99_ms']} | {shed} | {other} | {cells['server_cpu_ms_per_answer']} |",
            file=sys.stderr,
        )
    print(f"server peak RSS {peak_rss_mb:.0f} MB", file=sys.stderr)


def bench_serve(
    export_dir: str,
    *,
    payload: Payload = "jpeg",
    clients: Sequence[int] = (1, 8, 32, 128),
    seconds: float = 10.0,
    rounds: int = 2,
    out: str | None = None,
    server: Sequence[str] = (),
) -> dict | list:
    """`serve_throughput` (payload "jpeg") or `serve_load` with the largest of `clients`
    (payload "largest") of the server on `export_dir` started with the `server` flags."""
    if payload == "largest":
        result = serve_load(export_dir, max(clients), seconds, list(server))
        emit(result, out)
        return result
    return serve_throughput(export_dir, list(clients), seconds, rounds, list(server), out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `bench serve`, named as bench_serve's arguments."""
    p.add_argument("export_dir", help="what to serve (as for python -m alexnet_tf.serve)")
    p.add_argument(
        "--payload",
        choices=get_args(Payload),
        default="jpeg",
        help="jpeg: ordinary one-image requests, throughput and latency per number of clients; "
        "largest: the largest requests the limits let through, peak memory",
    )
    p.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1, 8, 32, 128],
        help="numbers of concurrent clients (largest: the largest of them)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="how long they send, per number of clients")
    p.add_argument("--rounds", type=int, default=2, help="jpeg: times over the numbers of clients, in turn")
    p.add_argument("--out", help="also append the JSON lines to OUT/serve.jsonl (a folder)")
    p.add_argument(
        "--server",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="FLAG",
        help="the rest of the line: flags for the server, e.g. --server --batch-threads 2",
    )
    p.set_defaults(fn=bench_serve)
