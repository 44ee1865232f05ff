"""What the benchmarks share: the paper's batch, cores, JSON lines, photo-like JPEGs, a
split played several times over."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys

import numpy as np
from PIL import Image

from alexnet_tf import data as data_lib

BATCH = 128  # Sec. 5


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def repeated(source: data_lib.Source, split: str, times: int) -> data_lib.Source:
    """`source` with `split` played `times` over as one split (one long epoch, so that the
    timing holds no epoch restart); each play has its own example indices, hence its own
    random crops."""
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


def _write_jpeg(job: tuple) -> None:
    path, size, seed, i = job
    rng = np.random.default_rng([seed, i])
    low = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    image = np.asarray(low, np.float32) + rng.normal(0, 10, (size, size, 3))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(
    folder: str, count: int = 512, size: int = 256, classes: int = 8, seed: int = 0, processes: int = 1
) -> str:
    """Writes `count` photo-like size x size JPEGs (smooth shapes plus grain, quality 90,
    about the bytes of an ImageNet image at 256 px) in a train/<class>/ layout, image i
    in class i % classes: what `bench input` and `bench serve` time without a dataset."""
    digits = max(2, len(str(classes - 1)))
    jobs = []
    for i in range(count):
        d = os.path.join(folder, "train", f"class{i % classes:0{digits}d}")
        os.makedirs(d, exist_ok=True)
        jobs.append((os.path.join(d, f"{i:07d}.JPEG"), size, seed, i))
    if processes > 1:
        with mp.get_context("fork" if sys.platform == "linux" else "spawn").Pool(processes) as pool:
            pool.map(_write_jpeg, jobs, chunksize=64)
    else:
        for job in jobs:
            _write_jpeg(job)
    return folder


def max_rss_bytes() -> int:
    import resource  # optional: POSIX only

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def emit(result: dict, out: str | None, subcommand: str = "") -> None:
    """Prints `result` as a JSON line and, with `out` (a folder, `--out DIR`), appends it
    to OUT/<subcommand>.jsonl (train.jsonl, export.jsonl, ...; default: the result's
    "bench"), which `python -m benchmarks.compare` reads."""
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{subcommand or result.get('bench', 'bench')}.jsonl"), "a") as f:
            f.write(line + "\n")
