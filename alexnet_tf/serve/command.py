"""`python -m alexnet_tf.serve PATH`: its flags (`ServeOptions`), `make_server` (the same in Python), and a run folder served as an export."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import warnings

from alexnet_tf.exporting import read_export_settings
from alexnet_tf.runfolder import RunFolder
from alexnet_tf.serve import threads
from alexnet_tf.serve.batching import Batcher
from alexnet_tf.serve.model import Servable, find_versions
from alexnet_tf.serve.options import ServeOptions
from alexnet_tf.serve.server import Server


def make_server(export_dir: str, options: ServeOptions | None = None, **changes) -> Server:
    """A ready server for the SavedModel(s) in `export_dir`, with `options` (default
    `ServeOptions()`) and `changes` to them (e.g. `port=0`: a free port); call
    `serve_forever()` on it, and `server_close()` after. `ServeOptions`' fields are the
    flags of `python -m alexnet_tf.serve` (`max_body` and `max_queue_bytes` in bytes,
    `batch_wait` in seconds)."""
    options = dataclasses.replace(options or ServeOptions(), **changes)
    versions = find_versions(export_dir)
    settings = read_export_settings(versions[max(versions)])
    plan = threads.plan_threads(
        settings["multiply_adds_per_image"],
        threads.usable_cores(),
        options.batch_threads,
        options.intra_op_threads,
        options.inter_op_threads,
    )
    kept = threads.apply(plan)  # before the model loads: TensorFlow fixes its pools when it starts
    servable = Servable(export_dir, options.model_name, inline=plan.inline)
    batcher = Batcher(
        servable.run,
        servable.batchable.__getitem__,
        batch_size=options.batch_size,
        max_pixels=options.max_request_pixels,
        max_call_bytes=options.max_body,
        wait=options.batch_wait,
        threads=plan.batch_threads,
        max_images=options.max_queue_images,
        max_bytes=options.max_queue_bytes,
    )
    try:
        server = Server(servable, batcher, options)
    except BaseException:
        batcher.close()
        raise
    server.threads = plan.describe() if kept is None else f"{plan.batch_threads} model calls at once; {kept}"
    return server


def is_run_folder(path: str) -> bool:
    """Whether `path` is a run folder of `python -m alexnet_tf.train` (or a checkpoint in one)."""
    return RunFolder(path).holds_run() or os.path.isfile(path + ".index")


def export_run(workdir: str, out: str) -> str:
    """Writes the SavedModel of a run folder (its newest checkpoint) or checkpoint to `out`,
    by `python -m alexnet_tf.export` in a process of its own: TensorFlow does not start in
    this one, whose thread pools the server sets before it loads the model. Its errors are
    its own lines on stderr, and its exit code ends the server's."""
    command = [sys.executable, "-m", "alexnet_tf.export", "--workdir", workdir, "--out", out]
    done = subprocess.run(command, stdout=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(done.returncode)
    return out


@contextlib.contextmanager
def export_dir_of(path: str):
    """`path` if it holds SavedModels; a run folder exported into a temporary folder first."""
    if not is_run_folder(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="alexnet_tf-serve-") as tmp:
        print(
            f"exporting the run {path} to a temporary SavedModel first "
            f"(`python -m alexnet_tf.export --workdir {path} --out DIR/1` keeps one)",
            file=sys.stderr,
            flush=True,
        )
        export_run(path, os.path.join(tmp, "1"))
        yield tmp


def _release_large_frees() -> None:
    """Has glibc's malloc serve every block of 1 MiB or more by mmap, so that a freed
    body or decoded image goes back to the system. By default glibc raises this threshold
    (up to 32 MiB) after each such free, and the freed blocks then stay in the heap
    (docs/serving.md has the peak memory with and without)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def _let_max_pixels_rule(max_pixels: int) -> None:
    """Pillow warns of images over PIL.Image.MAX_IMAGE_PIXELS and refuses twice that; here
    --max-pixels is the limit, checked before anything is decoded."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def argument_parser() -> argparse.ArgumentParser:
    """The command's arguments: PATH or --workdir, and `ServeOptions`' flags."""
    from alexnet_tf import cli, serve

    p = cli.parser("serve", serve.__doc__)
    p.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        help="SavedModel, a base path of version folders, or a run folder (exported first)",
    )
    cli.add_workdir(p, "a run folder to serve (exported to a temporary SavedModel first); or give PATH")
    ServeOptions.add_flags(p)
    return p


def main(argv=None) -> int:
    """`python -m alexnet_tf.serve`: parses the flags, then serves until interrupted."""
    from alexnet_tf import cli

    parser = argument_parser()
    args = argparse.Namespace(**cli.resolve_args(vars(parser.parse_args(argv))))
    if bool(args.path) == bool(args.workdir):
        parser.error("give PATH (a SavedModel or a base path of versions) or --workdir RUN, one of them")
    options = ServeOptions.from_args(args)
    _release_large_frees()
    _let_max_pixels_rule(options.max_pixels)
    # SIGTERM (a service manager, a container) ends the server as Ctrl-C does: a temporary export is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return cli.run(lambda: serve(args.path or args.workdir, options))


def serve(path: str, options: ServeOptions) -> None:
    """Serves PATH (see `export_dir_of`) with `make_server(PATH, options)` until interrupted."""
    with export_dir_of(path) as export_dir:
        try:
            server = make_server(export_dir, options)
        except (FileNotFoundError, ValueError, OSError, OverflowError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        host, port = server.server_address[:2]
        servable = server.servable
        print(
            f"serving {servable.model_name} version {servable.version} from {servable.path} "
            f"at http://{host}:{port}/v1/models/{servable.model_name}; {server.threads}",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
