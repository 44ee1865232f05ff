"""Benchmarks, one subcommand each; every result is one JSON line on stdout.

    python -m alexnet_tf.bench input [--data SPEC] [--out DIR] [--seconds N] [--rounds N]
        [--cores N]
    python -m alexnet_tf.bench train [RECIPE] [--batch N ...] [--precision fp32 bf16]
        [--synthetic | --data SPEC [--repeat K]] [--steps N] [--warmup N]
        [--steps-per-loop N ...] [--no-jit] [--threads N] [--set KEY=VALUE]
        [--peak-tflops T] [--out DIR]
    python -m alexnet_tf.bench jpegs --out DIR [--images N]
        [--classes N | --from fashion_mnist[:DIR] | digits [--size 48]]
    python -m alexnet_tf.bench compare DIR [DIR ...] [--target 1.3] [--input-target 12000]
    python -m alexnet_tf.bench serve EXPORT_DIR [--payload jpeg|largest]
        [--clients 1 8 32 128] [--seconds 10] [--rounds 2] [--server FLAG ...]
    python -m alexnet_tf.bench export [EXPORT_DIR | --recipe RECIPE] [--batch 32 1]
        [--calls 50] [--threads N]

`bench NAME -h` shows NAME's paragraph below and its flags with their defaults.

`input`: images per second of the training input pipeline (Sec. 2 and 4.1: decode,
random 227 crop of the 256 image, flip, PCA colour noise, mean-image subtraction,
batches of 128) for two pipelines on the same files and the same number of cores:

- `alexnet_tf`: `data.train_dataset` as training uses it. Batches leave the host as
  uint8 crops with crop offset, flip bit and noise coefficients; the mean subtraction,
  colour noise and flip happen in the compiled step on the accelerator
  (`device_preprocess`).
- `alexnet_tf_host_float`: the same, with the device step's arithmetic (mean-image
  crop subtraction, colour noise, flip, float32 batches) also done on the host CPU, so
  that every step of the work is on the CPU as in the baseline.
- `pil_baseline`: PIL + NumPy doing all of it in a pool of worker processes that write
  float32 batches into shared memory, as a PyTorch DataLoader with torchvision
  transforms does.

Without --data it writes its own 256x256 JPEGs (as `python -m alexnet_tf.prepare`
makes them) to a temporary folder. The pipelines take turns, --rounds times, each
started afresh and timed for --seconds per turn, so that a slow spell of a shared
machine falls on all of them; `images_per_sec_per_core` (divided by --cores) is the
median over the rounds, `rounds` lists them, and `speedup_vs_pil_baseline` is the median
of the per-round ratios.

`train`: the training step of `python -m alexnet_tf.train` (`steps.make_train_loop`:
XLA forward/backward per replica, the Sec. 5 update, `steps_per_loop` steps per host
call) on the recipe's model (default recipes/paper.py; `--set` as in train), one line
per --precision x --batch (x --steps-per-loop), e.g. on one GPU

    python -m alexnet_tf.bench train recipes/paper.py --batch 128 512 --precision bf16

and on any CPU: `python -m alexnet_tf.bench train recipes/quickstart.py --batch 8`.
`--synthetic` (the default) makes one random uint8 batch on each replica's device and
feeds it to every step, so only the step is timed (`--feed dataset` sends it through a
tf.data iterator from host memory instead); `--data SPEC` runs the real input pipeline
as training does. `--warmup` steps come first (the first in a host call of its own
that traces and compiles; its wall time, that step included, is `compile_seconds`),
then `--steps` timed steps, the loss read back after each host call. Fields: `batch`,
`dtype` (bf16, tf32 = float32 with TF32 math on a GPU, fp32), `img_per_s` and `step_ms`
as in the PyTorch peer script; `mfu` = `achieved_tflops` / peak, counting 2 x 3 x the
conv and fc multiply-adds (724 M forward per 227 image) per image and step, against
--peak-tflops or the dense peak of an SXM H100/H200 (else null); `peak_memory_bytes`
is TensorFlow's allocator peak on the GPU (null on CPUs, where `process_max_rss_bytes`
is the whole process's high-water mark).
Two or more --steps-per-loop values reuse the compiled loop and add a
`train_host_overhead` line: from t(k) = c + o / k per step, o = `host_ms_per_call`.
Random data repeats: the printed `loss` falls, which says nothing about training.

`jpegs`: writes generated 256 px JPEGs (as `input` makes them) to OUT/train/<class>/,
for `--data folder:OUT` or `python -m alexnet_tf.prepare folder:OUT ...` on a machine
with no dataset; `train --repeat K` then plays that small set K times per epoch. With
`--from fashion_mnist`, Fashion-MNIST instead (Debian's `dataset-fashion-mnist`), each
image coloured in two random colours, at `--size` px, in OUT/train/ and OUT/val/ (a
quarter as many), none of them in the bundled subset; with `--from digits`, the digits
0-9 rendered as MNIST's (thin light strokes on black): the README's checks that the
quickstart recipe learns on folders it has not seen.

`compare`: reads `train --out` and `export --out` files and the PyTorch peer's output
(`benchmarks/torch_peer.py`, JSON lines) and prints the README's speed tables in
Markdown: per net, batch, dtype and `--set` variant, alexnet_tf's img/s of every run
(and steps per host call), the forms it ran in, the MFU and peak memory of the fastest,
every run of the peer's eager and compiled modes on the same net, batch and dtype, and
the ratio of our fastest to the peer's fastest against --target; runs with --data
against --input-target img/s; `export` lines beside the peer's `infer` lines.

`export`: the SavedModel of `python -m alexnet_tf.export` (or, with --recipe, an
untrained net of that recipe exported the same way) loaded with tf.saved_model.load,
its `serve_uint8` signature called on random uint8 batches (--batch 32 1): img/s from
the mean call time and the p50 / p99 latency per call, no server in between. The
peer's `infer` task times the same work in PyTorch on the same number of threads.

`serve`: starts `python -m alexnet_tf.serve EXPORT_DIR` (with the --server flags) and
loads it. `--payload jpeg`: each number of --clients in turn (--rounds times over) sends
ordinary requests, one photo-like 256 px JPEG each, on keep-alive connections, each
client as soon as its last answer came (after a 503, once Retry-After has passed), for
--seconds; a JSON line per round and number of clients (answers/s, p50/p99 latency of
the 200s, answers by status, load average) and a Markdown table on stderr. `--payload
largest`: --clients threads send the largest requests its limits let through
(`serve_payloads`); answers by kind and status, their latency, and the server's resident
memory when idle and at its peak (VmHWM). docs/serving.md has the figures.
"""

from __future__ import annotations

import argparse
import re
from typing import get_args

from alexnet_tf.bench import export as export_bench
from alexnet_tf.bench.common import BATCH, PAPER_FORWARD_MACS, repeated
from alexnet_tf.bench.compare import bench_compare, compare
from alexnet_tf.bench.input import bench_input
from alexnet_tf.bench.jpegs import bench_jpegs, make_jpegs
from alexnet_tf.bench.serve import Payload, bench_serve, serve_load, serve_payloads, serve_throughput
from alexnet_tf.bench.train import PRECISIONS, Feed, FeedKind, Precision, TrainBench, bench_train, forward_macs

bench_export = export_bench.bench_export

__all__ = [
    "BATCH",
    "PAPER_FORWARD_MACS",
    "PRECISIONS",
    "Feed",
    "TrainBench",
    "bench_compare",
    "bench_export",
    "bench_input",
    "bench_jpegs",
    "bench_serve",
    "bench_train",
    "compare",
    "forward_macs",
    "main",
    "make_jpegs",
    "parser",
    "repeated",
    "serve_load",
    "serve_payloads",
    "serve_throughput",
]


def _out(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", help=f"also append the JSON lines to OUT/{name}.jsonl (a folder; bench compare reads it)")


def _input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data spec; without it, generated 256 px JPEGs (the baseline needs folder:PATH)")
    p.add_argument("--split", default="train", help="the split of --data to read")
    _out(p, "input")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per pipeline and round")
    p.add_argument("--rounds", type=int, default=3, help="turns each pipeline takes (median reported)")
    p.add_argument("--cores", type=int, default=0, help="worker processes / tf.data threads (0: all usable)")
    p.add_argument("--images", type=int, default=512, help="how many JPEGs to generate without --data")
    p.set_defaults(fn=bench_input)


def _jpegs_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write OUT/train/<class>/*.JPEG into")
    p.add_argument("--images", type=int, default=20_000, help="how many training images")
    p.add_argument("--classes", type=int, default=1000, help="number of class folders (the paper's net has 1000)")
    p.add_argument(
        "--from",
        dest="source",
        metavar="fashion_mnist[:DIR] | digits",
        help="Fashion-MNIST (Debian's dataset-fashion-mnist, or DIR) as coloured JPEGs, none of them in the "
        "bundled subset; or digits rendered as MNIST's (Debian's fonts-dejavu-core); train/ and val/ "
        "(a quarter as many)",
    )
    p.add_argument("--size", type=int, default=48, help="with --from: the JPEGs' side in px (digits: use 28)")
    p.set_defaults(fn=bench_jpegs)


def _train_flags(p: argparse.ArgumentParser) -> None:
    from alexnet_tf import cli

    p.add_argument(
        "recipe",
        nargs="?",
        default="recipes/paper.py",
        help="recipe file with get_config(), or a shipped recipe's name",
    )
    cli.add_overrides(p)
    where = p.add_mutually_exclusive_group()
    # --synthetic names the default (no --data) and only excludes --data: it sets nothing of its own.
    where.add_argument(
        "--synthetic",
        dest="data",
        action="store_const",
        const=None,
        default=argparse.SUPPRESS,
        help="random uint8 batches made once on the device, as without --data",
    )
    where.add_argument("--data", metavar="SPEC", help="the real input pipeline on this source (sets data.source)")
    p.add_argument(
        "--feed",
        choices=get_args(FeedKind),
        default="device",
        help="synthetic batches: kept on the device, or fed from the host by tf.data",
    )
    p.add_argument("--batch", type=int, nargs="+", help="global batch size(s); none given: the recipe's")
    p.add_argument(
        "--precision", nargs="+", choices=get_args(Precision), help="fp32 and/or bf16; none given: the recipe's"
    )
    p.add_argument("--steps", type=int, default=50, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first; the first one compiles")
    p.add_argument(
        "--steps-per-loop",
        type=int,
        nargs="+",
        help="steps per host call; none given: the recipe's compute.steps_per_loop. Two or more values add a "
        "train_host_overhead line (repeat values to alternate runs: 1 50 1 50)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --data: the training split this many times over per epoch, so that a small "
        "generated set does not time an epoch restart every few steps",
    )
    p.add_argument("--no-jit", action="store_true", help="compute.jit_compile=False")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (0: all cores)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="peak TFLOP/s of one device for the mfu; none given: the data sheet's for an SXM H100/H200, else no mfu",
    )
    _out(p, "train")
    p.set_defaults(fn=lambda **flags: bench_train(TrainBench(**flags)))


def _compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        help="--out folders (or JSON-lines files) of bench train/export and benchmarks/torch_peer.py",
    )
    p.add_argument("--target", type=float, default=1.3, help="ratio to the faster PyTorch mode to meet")
    p.add_argument("--input-target", type=float, default=12_000, help="img/s to meet with --data")
    p.set_defaults(fn=bench_compare)


def _serve_flags(p: argparse.ArgumentParser) -> None:
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
    _out(p, "serve")
    p.add_argument(
        "--server",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="FLAG",
        help="the rest of the line: flags for the server, e.g. --server --batch-threads 2",
    )
    p.set_defaults(fn=bench_serve)


SUBCOMMANDS = {  # name: (one line for `bench -h`, the function that adds its flags)
    "input": ("input pipeline throughput vs a PIL + NumPy worker pool", _input_flags),
    "jpegs": (
        "write a JPEG folder for --data or prepare: generated 256 px images, coloured Fashion-MNIST or digits",
        _jpegs_flags,
    ),
    "train": ("training step throughput, FLOP utilisation and memory", _train_flags),
    "compare": ("Markdown tables: `train`, `export` lines beside the PyTorch peer's, with ratios", _compare_flags),
    "serve": ("`python -m alexnet_tf.serve` under load: throughput and latency, or peak memory", _serve_flags),
    "export": ("the exported SavedModel's throughput and latency, without a server", export_bench.add_arguments),
}


def _about(name: str) -> str | None:
    """The paragraphs of this module's docstring on subcommand `name`: its `-h` text."""
    found = re.search(rf"^`{name}`:.*?(?=^`\w+`:|\Z)", __doc__ or "", re.S | re.M)  # no docstring under -OO
    return found[0].rstrip() if found else None


def parser() -> argparse.ArgumentParser:
    """`python -m alexnet_tf.bench`'s parser: a subparser per benchmark, each setting `fn`
    (its function, which takes the other parsed flags as keyword arguments)."""
    from alexnet_tf import cli

    p = cli.parser("bench", __doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (summary, add_flags) in SUBCOMMANDS.items():
        add_flags(sub.add_parser(name, help=summary, description=_about(name), formatter_class=cli.HelpFormatter))
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m alexnet_tf.bench` with `argv` (default: the command line); returns
    the exit code."""
    from alexnet_tf import cli

    return cli.main(parser(), lambda fn, command, **flags: fn(**flags), argv)
