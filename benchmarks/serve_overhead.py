"""The REST server's own CPU per answer, without the model: each checkout's server runs with
its model call replaced by a stand-in that returns the model's outputs for the request
after sleeping as long as the call would take (--call-ms + --image-ms per image; the
defaults fit the quickstart export's calls of 1 to 32 JPEGs on a 2-core Xeon), so that
requests queue and share calls as they do with the model, and the server process's CPU
time per answer is what the HTTP side, the JSON, base64, the image header reader, the
queue and the threads cost. Checkouts take turns, --rounds times, for each number of
clients (one photo-like 256 px JPEG per request, as `python -m alexnet_tf.bench serve`
sends them).

    python -m benchmarks.serve_overhead EXPORT_DIR --tree OLD_CHECKOUT --tree . [--clients 1 32]

CPU time is robust to other load on the machine; answers/s is not (the clients share it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

SERVER = r"""
import sys
import numpy as np
from alexnet_tf.serve import make_server

import time

srv = make_server(sys.argv[1], port=0, quiet=True)
one = srv.batcher.run("serving_default", {"images": [open(sys.argv[2], "rb").read()]})
call, image = float(sys.argv[3]) / 1000, float(sys.argv[4]) / 1000

def stand_in(signature, inputs):
    n = len(next(iter(inputs.values())))
    time.sleep(call + image * n)
    return {k: np.repeat(v, n, axis=0) for k, v in one.items()}

srv.batcher.run = stand_in
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Context switches of the live threads of process `pid` so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:
            pass
    return total


def load(pid: int, port: int, body: bytes, clients: int, seconds: float) -> dict:
    import http.client

    statuses, deadline = [], time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            conn.request("POST", "/v1/models/alexnet:predict", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()

    cpu, switches, start = cpu_seconds(pid), context_switches(pid), time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu, switches = time.monotonic() - start, cpu_seconds(pid) - cpu, context_switches(pid) - switches
    ok = statuses.count(200)
    return {
        "answers_per_s": round(ok / elapsed, 1),
        "server_cpu_ms_per_answer": round(cpu * 1000 / max(len(statuses), 1), 3),
        "context_switches_per_answer": round(switches / max(len(statuses), 1), 1),
        "not_200": len(statuses) - ok,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir")
    p.add_argument("--tree", action="append", required=True, help="a checkout whose server to measure")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--call-ms", type=float, default=2.25, help="the stand-in's time per call")
    p.add_argument("--image-ms", type=float, default=0.79, help="and per image of the call")
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.tree[-1]))
    import tempfile

    from alexnet_tf.bench.serve import photo_jpegs

    jpeg = photo_jpegs(1)[0]
    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(jpeg)
        f.flush()
        body = json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}]}).encode()
        servers = {}
        try:
            for tree in args.tree:
                env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
                proc = subprocess.Popen(
                    [sys.executable, "-c", SERVER, args.export_dir, f.name, str(args.call_ms), str(args.image_ms)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                    cwd=os.path.abspath(tree),
                )
                m = re.match(r"port (\d+)", proc.stdout.readline())
                if not m:
                    raise RuntimeError(f"the server of {tree} did not start")
                servers[tree] = proc, int(m[1])
                load(proc.pid, int(m[1]), body, max(args.clients), 1.0)  # warm
            for r in range(args.rounds):
                for n in args.clients:
                    for tree, (proc, port) in servers.items():
                        line = {"tree": tree, "round": r, "clients": n, **load(proc.pid, port, body, n, args.seconds)}
                        print(json.dumps(line), flush=True)
        finally:
            for proc, _ in servers.values():
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
