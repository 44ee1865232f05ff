"""The server's options: one frozen dataclass whose fields make `python -m alexnet_tf.serve`'s flags.

Each field carries its flag's help and group, and a unit where the flag counts in other
units than the field (`max_body` in bytes is `--max-body-mb` in MiB, `batch_wait` in seconds
is `--batch-wait-ms`). `ServeOptions.add_flags` adds the flags to a parser,
`ServeOptions.from_args` reads them back, `ServeOptions.parse` does both for a list of
flags (as `bench serve` reads the flags it passes to the server).
"""

from __future__ import annotations

import argparse
import dataclasses

GROUPS = {
    "limits": "limits",
    "batching": "batching (TF Serving's max_batch_size, batch_timeout_micros, num_batch_threads)",
    "threads": "TensorFlow's threads (TF Serving's --tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism)",
}


def _option(default, help: str, flag: str | None = None, unit: float = 1, group: str | None = "limits", **parse):
    """A field with its flag: `flag` (default --NAME), `unit` (the field is the flag's value
    times `unit`), `group` (of the help text), `parse` (argparse's type, or zero=True for
    numbers that may be 0)."""
    return dataclasses.field(
        default=default, metadata={"help": help, "flag": flag, "unit": unit, "group": group, **parse}
    )


def _positive(kind, zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not zero) or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero else 'positive'}, got {text}")
        return value

    return parse


def _inter_op(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (the calling thread), 0 (the plan) or more, got {text}")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535 (0: any free one), got {text}")
    return int(text)


MIB = 2**20


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """Where the server listens, its limits, and how it batches (docs/serving.md has a table of each)."""

    host: str = _option("127.0.0.1", "address to listen on (0.0.0.0 for all)", group=None)
    port: int = _option(8501, "TF Serving's REST port by default; 0: any free one", group=None, type=_port)
    model_name: str = _option("alexnet", "the NAME in /v1/models/NAME", group=None)
    quiet: bool = _option(False, "no per-request log lines", group=None)

    max_body: int = _option(16 * MIB, "largest request body", flag="--max-body-mb", unit=MIB)
    max_batch: int = _option(64, "most images (instances, examples) per request")
    # read from each image's header before anything is decoded: guards against decompression bombs
    max_pixels: int = _option(40_000_000, "most pixels per image")
    max_request_pixels: int = _option(
        100_000_000, "most pixels of the images of one request together, and of the model calls running at once"
    )
    max_inflight: int = _option(
        2, "request bodies received at once (and parsed, one at a time); more wait up to --timeout, then 503"
    )
    max_connections: int = _option(256, "open connections; beyond it 503")
    timeout: float = _option(
        30.0, "seconds a connection may stay silent, a body may take to arrive, a request may wait to be read"
    )

    batch_size: int = _option(64, "most images per model call", group="batching")
    batch_wait: float = _option(
        0.0,
        "how long a model call may wait for more requests to join it (0: it takes what queued while the last ran)",
        flag="--batch-wait-ms",
        unit=1e-3,
        group="batching",
        zero=True,
    )
    batch_threads: int = _option(
        0, "model calls at once (0: by the net's size, see alexnet_tf.serve.threads)", group="batching", zero=True
    )
    max_queue_images: int = _option(
        256, "images queued or in a model call; beyond it 503 with Retry-After", group="batching"
    )
    max_queue_bytes: int = _option(
        16 * MIB,
        "bytes of their inputs (encoded images, uint8 pixels); beyond it 503",
        flag="--max-queue-mb",
        unit=MIB,
        group="batching",
    )

    intra_op_threads: int = _option(
        0, "threads per op (0: 1 for a small net, else all cores)", group="threads", zero=True
    )
    inter_op_threads: int = _option(
        0,
        "threads running a call's independent ops (0: each call on its own thread for a small net, "
        "else TensorFlow's default, all cores; -1: each call on its own thread)",
        group="threads",
        type=_inter_op,
    )

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        """Adds a flag per field (the groups' flags under their headings)."""
        groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
        for f in dataclasses.fields(cls):
            m = f.metadata
            target = groups[m["group"]] if m["group"] else parser
            default = f.default / m["unit"] if m["unit"] != 1 else f.default
            if f.type == "bool":
                target.add_argument(_flag(f), action="store_true", dest=f.name, help=m["help"])
                continue
            number = int if f.type == "int" and m["unit"] == 1 else float
            kind = m.get("type") or (_positive(number, m.get("zero", False)) if f.type != "str" else str)
            flag = _flag(f)
            metavar = flag[2:].upper().replace("-", "_")
            target.add_argument(flag, type=kind, default=default, dest=f.name, metavar=metavar, help=m["help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        """The options of parsed flags (the fields' units applied)."""
        values = {}
        for f in dataclasses.fields(cls):
            value, unit = getattr(args, f.name), f.metadata["unit"]
            if unit != 1:
                value = int(value * unit) if f.type == "int" else value * unit
            values[f.name] = value
        return cls(**values)

    @classmethod
    def parse(cls, flags: list[str]) -> ServeOptions:
        """The options that `flags` (as given to `python -m alexnet_tf.serve`) set; others are ignored."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_flags(parser)
        return cls.from_args(parser.parse_known_args(flags)[0])


def _flag(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")
