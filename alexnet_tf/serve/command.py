"""`python -m alexnet_tf.serve PATH`: its flags, `make_server` (the same in Python), and a run folder served as an export."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import warnings

from alexnet_tf.serve.batching import Batcher
from alexnet_tf.serve.inputs import InputLimits
from alexnet_tf.serve.model import Servable
from alexnet_tf.serve.server import Server

DEFAULT_MAX_BODY = 16 * 1024 * 1024  # bytes of JSON per request
DEFAULT_MAX_BATCH = 64  # images per request
DEFAULT_MAX_PIXELS = 40_000_000  # per image, read from its header; guards against decompression bombs
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000  # all images of one request together, and of one model call
DEFAULT_MAX_INFLIGHT = 2  # predict bodies being received at once (and parsed, one at a time)
DEFAULT_MAX_CONNECTIONS = 256  # open connections (a thread each)
DEFAULT_TIMEOUT = 30.0  # seconds a connection may stay silent, a body take to arrive, a request wait for its turn
DEFAULT_BATCH_SIZE = 64  # images per model call
DEFAULT_BATCH_WAIT = 0.0  # seconds a call waits for more requests: under load they queue while the model runs
DEFAULT_BATCH_THREADS = 1  # model calls at once
DEFAULT_QUEUE_IMAGES = 256  # images admitted and not yet answered
DEFAULT_QUEUE_BYTES = 16 * 2**20  # bytes of their inputs (ordinary JPEGs: ~30 KB each)


def make_server(
    export_dir: str,
    host: str = "127.0.0.1",
    port: int = 8501,
    model_name: str = "alexnet",
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    quiet: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout: float = DEFAULT_TIMEOUT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_wait: float = DEFAULT_BATCH_WAIT,
    batch_threads: int = DEFAULT_BATCH_THREADS,
    max_queue_images: int = DEFAULT_QUEUE_IMAGES,
    max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
) -> Server:
    """A ready server for the SavedModel(s) in `export_dir` (port 0 picks a free port); call
    `serve_forever()` on it, and `server_close()` after. `argument_parser`'s flags say what
    each limit does (`max_body` and `max_queue_bytes` in bytes, `batch_wait` in seconds)."""
    servable = Servable(export_dir, model_name)
    batcher = Batcher(
        servable.run,
        servable.batchable.__getitem__,
        batch_size=batch_size,
        max_pixels=max_request_pixels,
        max_call_bytes=max_body,
        wait=batch_wait,
        threads=batch_threads,
        max_images=max_queue_images,
        max_bytes=max_queue_bytes,
    )
    limits = InputLimits(max_batch=max_batch, max_pixels=max_pixels, max_request_pixels=max_request_pixels)
    try:
        return Server(
            (host, port),
            servable,
            batcher,
            limits,
            max_body=max_body,
            max_inflight=max_inflight,
            max_connections=max_connections,
            timeout=timeout,
            quiet=quiet,
        )
    except BaseException:
        batcher.close()
        raise


def is_run_folder(path: str) -> bool:
    """Whether `path` is a run folder of `python -m alexnet_tf.train` (or a checkpoint in one)."""
    has_run = os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))
    return has_run or os.path.isfile(path + ".index")


def export_run(workdir: str, out: str) -> str:
    """Writes the SavedModel of a run folder (its newest checkpoint) or checkpoint to `out`."""
    from alexnet_tf.export import export
    from alexnet_tf.runs import load_net

    return export(load_net(workdir), out)


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


def _positive(kind, zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not zero) or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero else 'positive'}, got {text}")
        return value

    return parse


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535 (0: any free one), got {text}")
    return int(text)


def argument_parser() -> argparse.ArgumentParser:
    """The command's arguments (bench serve reads the server's limits with it too)."""
    from alexnet_tf import cli, serve

    p = cli.parser("serve", serve.__doc__)
    p.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        help="SavedModel, a base path of version folders, or a run folder (exported first)",
    )
    cli.add_workdir(p, "a run folder to serve (exported to a temporary SavedModel first); or give PATH")
    p.add_argument("--port", type=_port, default=8501, help="TF Serving's REST port by default (8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    p.add_argument("--model-name", default="alexnet", help="the NAME in /v1/models/NAME (alexnet)")
    _add_limits(p.add_argument_group("limits"))
    _add_batching(
        p.add_argument_group("batching (TF Serving's max_batch_size, batch_timeout_micros, num_batch_threads)")
    )
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return p


def _add_limits(limits) -> None:
    number, size = _positive(int), _positive(float)
    limits.add_argument("--max-body-mb", type=size, default=DEFAULT_MAX_BODY / 2**20, help="largest request body (16)")
    limits.add_argument("--max-batch", type=number, default=DEFAULT_MAX_BATCH, help="most images per request (64)")
    limits.add_argument("--max-pixels", type=number, default=DEFAULT_MAX_PIXELS, help="most pixels per image (40 M)")
    limits.add_argument(
        "--max-request-pixels",
        type=number,
        default=DEFAULT_MAX_REQUEST_PIXELS,
        help="most pixels of the images of one request together, and of one model call (100 M)",
    )
    limits.add_argument(
        "--max-inflight",
        type=number,
        default=DEFAULT_MAX_INFLIGHT,
        help="request bodies received at once (parsed one at a time); more wait up to --timeout, then 503 (2)",
    )
    limits.add_argument(
        "--max-connections", type=number, default=DEFAULT_MAX_CONNECTIONS, help="open connections (256)"
    )
    limits.add_argument(
        "--timeout",
        type=size,
        default=DEFAULT_TIMEOUT,
        help="seconds a connection may stay silent, a body may take to arrive, a request may wait to be read (30)",
    )


def _add_batching(batching) -> None:
    number, size = _positive(int), _positive(float)
    batching.add_argument(
        "--batch-size", type=number, default=DEFAULT_BATCH_SIZE, help="most images per model call (64)"
    )
    batching.add_argument(
        "--batch-wait-ms",
        type=_positive(float, zero=True),
        default=DEFAULT_BATCH_WAIT * 1000,
        help="how long a model call may wait for more requests to join it (0: it takes what queued while the last ran)",
    )
    batching.add_argument("--batch-threads", type=number, default=DEFAULT_BATCH_THREADS, help="model calls at once (1)")
    batching.add_argument(
        "--max-queue-images",
        type=number,
        default=DEFAULT_QUEUE_IMAGES,
        help="images queued or in a model call; beyond it 503 with Retry-After (256)",
    )
    batching.add_argument(
        "--max-queue-mb",
        type=size,
        default=DEFAULT_QUEUE_BYTES / 2**20,
        help="bytes of their inputs (encoded images, uint8 pixels); beyond it 503 (16)",
    )


def main(argv=None) -> int:
    """`python -m alexnet_tf.serve`: parses the flags, then serves until interrupted."""
    from alexnet_tf import cli

    parser = argument_parser()
    args = argparse.Namespace(**cli.resolve_args(vars(parser.parse_args(argv))))
    if bool(args.path) == bool(args.workdir):
        parser.error("give PATH (a SavedModel or a base path of versions) or --workdir RUN, one of them")
    options = {
        "host": args.host,
        "port": args.port,
        "model_name": args.model_name,
        "max_body": int(args.max_body_mb * 2**20),
        "max_batch": args.max_batch,
        "quiet": args.quiet,
        "max_pixels": args.max_pixels,
        "max_request_pixels": args.max_request_pixels,
        "max_inflight": args.max_inflight,
        "max_connections": args.max_connections,
        "timeout": args.timeout,
        "batch_size": args.batch_size,
        "batch_wait": args.batch_wait_ms / 1000,
        "batch_threads": args.batch_threads,
        "max_queue_images": args.max_queue_images,
        "max_queue_bytes": int(args.max_queue_mb * 2**20),
    }
    _release_large_frees()
    _let_max_pixels_rule(args.max_pixels)
    # SIGTERM (a service manager, a container) ends the server as Ctrl-C does: a temporary export is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return cli.run(lambda: serve(args.path or args.workdir, **options))


def serve(path: str, **options) -> None:
    """Serves PATH (see `export_dir_of`) with `make_server(**options)` until interrupted."""
    with export_dir_of(path) as export_dir:
        try:
            server = make_server(export_dir, **options)
        except (FileNotFoundError, ValueError, OSError, OverflowError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        host, port = server.server_address[:2]
        servable = server.servable
        print(
            f"serving {servable.model_name} version {servable.version} from {servable.path} "
            f"at http://{host}:{port}/v1/models/{servable.model_name}",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
