"""`bench serve`: peak memory of the REST server under its largest requests."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from alexnet_tf.bench.common import emit

SERVE_PAYLOADS = ("images", "uint8", "objects")


def serve_payloads(max_body: int, max_pixels: int, max_request_pixels: int, max_batch: int) -> dict:
    """{kind: body}, each as large as the server's limits let through: `images`, JPEGs of
    --max-pixels up to --max-request-pixels in all (answered by the model); `uint8`, one
    serve_uint8 image of nested lists filling the body (answered by the model); `objects`,
    a body of one-key objects, the JSON that costs the most memory to parse of what the
    server parses (refused after parsing: too many instances)."""
    import base64
    import math

    import tensorflow as tf

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
    import re
    import subprocess

    import alexnet_tf

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
    import http.client

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
    import threading

    from alexnet_tf import serve

    limits, _ = serve.argument_parser().parse_known_args([export_dir, *server_args])
    payloads = serve_payloads(
        int(limits.max_body_mb * 2**20), limits.max_pixels, limits.max_request_pixels, limits.max_batch
    )
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


def bench_serve(args: argparse.Namespace) -> dict:
    result = serve_load(args.export_dir, args.clients, args.seconds, args.server)
    emit(result, args.out)
    return result
