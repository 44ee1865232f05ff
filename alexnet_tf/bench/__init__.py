"""Benchmarks, one subcommand each; every result is one JSON line on stdout.

    python -m alexnet_tf.bench input [--data SPEC] [--out DIR] [--seconds N] [--rounds N]
        [--cores N]
    python -m alexnet_tf.bench train [RECIPE] [--batch N ...] [--precision fp32 bf16]
        [--synthetic | --data SPEC [--repeat K]] [--steps N] [--warmup N]
        [--steps-per-loop N ...] [--no-jit] [--threads N] [--set KEY=VALUE]
        [--peak-tflops T] [--out DIR]
    python -m alexnet_tf.bench serve EXPORT_DIR [--payload jpeg|largest]
        [--clients 1 8 32 128] [--seconds 10] [--rounds 2] [--server FLAG ...]
    python -m alexnet_tf.bench export [EXPORT_DIR | --recipe RECIPE] [--batch 32 1]
        [--calls 50] [--threads N] [--runtime session|eager]

`bench NAME -h` shows NAME's paragraph below and its flags with their defaults. What
compares these lines with the PyTorch peer's, and what writes JPEG folders to train on,
are development tools in the clone's benchmarks/ (`python -m benchmarks.compare`,
`python -m benchmarks.jpegs`), not part of the package.

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
`--data folder:DIR` with a small generated set (`python -m benchmarks.jpegs --out DIR`)
and `--repeat K` plays it K times per epoch.

`export`: the SavedModel of `python -m alexnet_tf.export` (or, with --recipe, an
untrained net of that recipe exported the same way) run as TF Serving and
`alexnet_tf.serve` run it (--runtime session: in a TensorFlow Session, with the threads
that the server plans for the net's size on --threads cores) or through
tf.saved_model.load (--runtime eager), its `serve_uint8` signature called on random
uint8 batches (--batch 32 1): img/s from the mean call time and the p50 / p99 latency
per call, no server in between. The peer's `infer` task times the same work in PyTorch
on the same number of cores.

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
import importlib
import re

from alexnet_tf import cli

# name: its line in `bench -h`. Each is the module alexnet_tf.bench.NAME, whose
# `add_arguments(parser)` adds its flags and sets `fn`, the function they go to. Those
# modules load TensorFlow, so `parser()` imports them, not this package: `python -m
# alexnet_tf.bench` imports the package before its __main__ quiets TensorFlow's start-up.
SUBCOMMANDS = {
    "train": "training step throughput, FLOP utilisation and memory",
    "input": "input pipeline throughput vs a PIL + NumPy worker pool",
    "export": "the exported SavedModel's throughput and latency, without a server",
    "serve": "`python -m alexnet_tf.serve` under load: throughput and latency, or peak memory",
}


def _about(name: str) -> str | None:
    """The paragraphs of this module's docstring on subcommand `name`: its `-h` text."""
    found = re.search(rf"^`{name}`:.*?(?=^`\w+`:|\Z)", __doc__ or "", re.S | re.M)  # no docstring under -OO
    return found[0].rstrip() if found else None


def parser() -> argparse.ArgumentParser:
    """`python -m alexnet_tf.bench`'s parser: a subparser per benchmark, each setting `fn`
    (its function, which takes the other parsed flags as keyword arguments)."""
    p = cli.parser("bench", __doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, summary in SUBCOMMANDS.items():
        module = importlib.import_module(f"alexnet_tf.bench.{name}")
        module.add_arguments(
            sub.add_parser(name, help=summary, description=_about(name), formatter_class=cli.HelpFormatter)
        )
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m alexnet_tf.bench` with `argv` (default: the command line); returns
    the exit code."""
    return cli.main(parser(), lambda fn, command, **flags: fn(**flags), argv)
