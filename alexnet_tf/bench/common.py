"""What the benchmarks share: the paper's batch and forward cost, cores, JSON lines."""

from __future__ import annotations

import json
import os
import sys

BATCH = 128  # Sec. 5
# forward_macs of the paper's net (two columns, 227 px): the one the PyTorch peer runs
PAPER_FORWARD_MACS = 724_406_816  # Sec. 3.5: "about 724 M"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def repeated(source, split: str, times: int):
    """`source` with `split` played `times` over as one split (one long epoch, so that the
    timing holds no epoch restart); each play has its own example indices, hence its own
    random crops."""
    from alexnet_tf import data as data_lib

    n = source.sizes[split]

    class Repeated(data_lib.Source):
        shuffled = source.shuffled

        def _raw(self, split, order):
            plays = source.raw(split, order).repeat(times).enumerate()
            return plays.map(lambda j, ex: (ex[0] + (j // n) * n, ex[1]))

        def parse(self, raw):
            return source.parse(raw)

        def read(self, data):
            return source.read(data)

        def why_unreadable(self, data):
            return source.why_unreadable(data)

    return Repeated(source.name, source.class_names, {split: n * times}, source.encoded)


def max_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def emit(result: dict, out: str | None, subcommand: str = "") -> None:
    """Prints `result` as a JSON line and, with `out` (a folder, `--out DIR`), appends it
    to OUT/<subcommand>.jsonl (train.jsonl, export.jsonl, ...; default: the result's
    "bench"), which `bench compare` reads."""
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{subcommand or result.get('bench', 'bench')}.jsonl"), "a") as f:
            f.write(line + "\n")
