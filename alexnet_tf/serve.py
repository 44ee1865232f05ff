"""A small server for exported models that speaks TF Serving's REST API.

`python -m alexnet_tf.serve EXPORT_DIR [--port 8501] [--model-name alexnet] [--host 127.0.0.1]`

EXPORT_DIR is a SavedModel from `python -m alexnet_tf.export`, or a TF Serving base
path whose numbered subfolders are versions (the highest is served). Routes:

  GET  /v1/models/NAME[/versions/N]            version status
  GET  /v1/models/NAME[/versions/N]/metadata   signatures (as `saved_model_cli show`)
  POST /v1/models/NAME[/versions/N]:predict    {"instances": [...]} or {"inputs": ...}

Binary values travel as {"b64": "..."}, e.g.
  {"instances": [{"b64": "<base64 JPEG>"}]}                       -> {"predictions": [{...}]}
  {"inputs": {"images": [{"b64": "..."}, {"b64": "..."}]}}         -> {"outputs": {...}}
  {"signature_name": "serve_uint8", "instances": [<H x W x 3 ints>]}

Every client mistake gets a 4xx status and {"error": "..."}. Limits, all flags: the
body (`--max-body-mb`), images per request (`--max-batch`), pixels per image
(`--max-pixels`, read from the image's header before anything is decoded; bytes whose
size cannot be read so are refused) and per request (`--max-request-pixels`), the time
a body may take to arrive (`--timeout`, then 408), the predict requests in flight
(`--max-inflight`: reading, parsing and the model call; beyond it 503 with Retry-After),
the open connections (`--max-connections`) and the headers (64 KiB, then 431). The model
is called by one request at a time. docs/serving.md says what this bounds (peak memory,
measured) and what it does not.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ctypes
import http.client
import http.server
import json
import os
import re
import socket
import struct
import sys
import threading
import time

import numpy as np
import tensorflow as tf

DEFAULT_MAX_BODY = 16 * 1024 * 1024  # bytes of JSON per request
DEFAULT_MAX_BATCH = 64  # images per request
DEFAULT_MAX_PIXELS = 40_000_000  # per image, read from its header; guards against decompression bombs
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000  # all images of one request together
DEFAULT_MAX_INFLIGHT = 2  # predict requests being read, parsed or run at once
DEFAULT_MAX_CONNECTIONS = 64  # open connections (a thread each)
DEFAULT_TIMEOUT = 30.0  # seconds a connection may stay silent, and a body may take to arrive
MAX_HEADER_BYTES = 64 * 1024  # of all header lines of a request (the standard library allows 100 x 64 KiB)
BYTES_PER_CONTAINER = 6  # the densest JSON arrays and objects a body may hold; see _parse_json
RETRY_AFTER_SECONDS = 1
MAX_ERROR_CHARS = 300  # error messages quote the request; a hostile one must not be echoed whole

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?/?$")


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code (4xx)."""

    def __init__(self, status: int, message: str):
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        super().__init__(message)
        self.status = status


def find_versions(export_dir: str) -> dict:
    """{version: SavedModel folder}: EXPORT_DIR itself is version 1, or its numbered subfolders."""
    if os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        return {1: export_dir}
    versions = {}
    if os.path.isdir(export_dir):
        for name in os.listdir(export_dir):
            if name.isdigit() and os.path.isfile(os.path.join(export_dir, name, "saved_model.pb")):
                versions[int(name)] = os.path.join(export_dir, name)
    if not versions:
        raise FileNotFoundError(
            f"{export_dir!r} holds no SavedModel (saved_model.pb) nor numbered version folders; "
            "make one with `python -m alexnet_tf.export --workdir RUN --out EXPORT_DIR/1`"
        )
    return versions


# ---------------------------------------------------------------- image headers
def image_pixels(data: bytes) -> int:
    """Pixels that decoding `data` with tf.io.decode_image produces, read from its header.

    Knows the formats decode_image tells apart by their first bytes, by the same bytes:
    JPEG, PNG, GIF (every frame, on a canvas that holds them all), BMP and WebP (VP8,
    VP8L, VP8X). Raises ValueError for anything else (JPEG XL too) and for a header
    that cannot be read, so that no image is decoded whose size was not checked.
    """
    reader = _header_reader(data)
    if reader is None:
        raise ValueError("not a JPEG, PNG, GIF, BMP or WebP image")
    width, height, frames = reader(data)
    if width <= 0 or height <= 0 or frames <= 0:
        raise ValueError(f"the header declares {width} x {height} pixels and {frames} frames")
    return width * height * frames


def _header_reader(data: bytes):
    # The order and magic bytes of TensorFlow's ClassifyFileFormat (decode_image_op.cc).
    for magic, reader in (
        (b"\xff\xd8\xff", _jpeg_size),
        (b"\x89PNG\r\n\x1a\n", _png_size),
        (b"GIF8", _gif_size),
        (b"BM", _bmp_size),
    ):
        if data.startswith(magic):
            return reader
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) > 12:
        return _webp_size
    return None


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    # libjpeg's own header reader: the markers the decoder will read, not a second guess at them.
    try:
        height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
    except tf.errors.OpError:
        raise ValueError("a JPEG whose header cannot be read") from None
    return int(width), int(height), 1


def _png_size(data: bytes) -> tuple[int, int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":  # libpng too wants IHDR first
        raise ValueError("a PNG without its IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, 1


def _bmp_size(data: bytes) -> tuple[int, int, int]:
    # TensorFlow reads these two int32 for every BMP header version; a negative height is top-down.
    if len(data) < 26:
        raise ValueError("a truncated BMP header")
    width, height = struct.unpack("<ii", data[18:26])
    if width <= 0 or height == 0:
        raise ValueError(f"a BMP header declaring {width} x {height} pixels")
    return width, abs(height), 1


def _gif_size(data: bytes) -> tuple[int, int, int]:
    """(canvas width, canvas height, frames): giflib decodes every frame (each at its own
    size, which may exceed the logical screen), so the canvas is the largest extent of the
    screen and of every frame; the LZW data is skipped, not decoded."""
    if len(data) < 13:
        raise ValueError("a truncated GIF header")
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + _gif_color_table(flags)
    frames = 0
    while pos < len(data) and data[pos] != 0x3B:  # up to the trailer (or the end: often missing)
        if data[pos] == 0x21:  # extension: a label, then sub-blocks
            pos = _skip_gif_sub_blocks(data, pos + 2)
        elif data[pos] == 0x2C:  # image descriptor
            if pos + 10 > len(data):
                raise ValueError("a truncated GIF frame header")
            left, top, w, h, flags = struct.unpack("<HHHHB", data[pos + 1 : pos + 10])
            width, height, frames = max(width, left + w), max(height, top + h), frames + 1
            pos = _skip_gif_sub_blocks(data, pos + 10 + _gif_color_table(flags) + 1)  # +1: LZW code size
        else:
            raise ValueError(f"a GIF block of unknown type 0x{data[pos]:02x}")
    return width, height, frames


def _gif_color_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    raise ValueError("a truncated GIF")


def _webp_size(data: bytes) -> tuple[int, int, int]:
    # libwebp decodes a VP8X file only if its bitstream (or, animated, each frame) fits the
    # canvas, and decode_image(expand_animations=False) keeps only the first frame.
    chunk, payload = data[12:16], data[20:30]
    if len(payload) < 10:
        raise ValueError("a truncated WebP header")
    if chunk == b"VP8 " and payload[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", payload[6:10])
        return width & 0x3FFF, height & 0x3FFF, 1
    if chunk == b"VP8L" and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1, 1
    if chunk == b"VP8X":
        return int.from_bytes(payload[4:7], "little") + 1, int.from_bytes(payload[7:10], "little") + 1, 1
    raise ValueError("a WebP without a VP8, VP8L or VP8X header")


# ---------------------------------------------------------------- request bodies
def _b64_bytes(value, path: str) -> bytes:
    """The bytes of {"b64": "..."} (TF Serving's binary encoding) or of a plain string."""
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:
            raise RequestError(400, f"{path}: a string that is not valid Unicode") from None
    if not isinstance(value, dict) or set(value) != {"b64"}:
        kind = f"an object with keys {sorted(value)}" if isinstance(value, dict) else type(value).__name__
        raise RequestError(400, f'{path}: expected {{"b64": ...}} bytes, got {kind}')
    if not isinstance(value["b64"], str):
        raise RequestError(400, f"{path}: the value of 'b64' must be a string")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{path}: invalid base64 ({e})") from None


class ModelServer:
    """Loads one exported model and answers predict/status/metadata requests."""

    def __init__(
        self,
        export_dir: str,
        model_name: str = "alexnet",
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
    ):
        self.model_name = model_name
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        versions = find_versions(export_dir)
        self.version = max(versions)
        self.path = versions[self.version]
        self.model = tf.saved_model.load(self.path)
        self.signatures = dict(self.model.signatures)
        if "serving_default" not in self.signatures:
            raise ValueError(f"{self.path} has no serving_default signature")
        self._signature_defs = self._read_signature_defs()
        self._lock = threading.Lock()

    def _read_signature_defs(self) -> dict:
        from google.protobuf import json_format
        from tensorflow.core.protobuf import saved_model_pb2

        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(self.path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        defs = proto.meta_graphs[0].signature_def
        return {k: json_format.MessageToDict(v, preserving_proto_field_name=True) for k, v in defs.items()}

    # ------------------------------------------------------------ routes
    def check_model(self, name: str, version: str | None) -> None:
        """Raises 404 unless NAME (and VERSION, if given) is the model served."""
        if name != self.model_name:
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        if version is not None and version != str(self.version):
            raise RequestError(404, f"Servable not found for request: Specific({name}, {version})")

    def status(self) -> dict:
        """The answer to GET /v1/models/NAME."""
        return {
            "model_version_status": [
                {
                    "version": str(self.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self) -> dict:
        """The answer to GET /v1/models/NAME/metadata."""
        return {
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self._signature_defs}},
        }

    def predict(self, request) -> dict:
        """The answer to a :predict request (its parsed JSON body); RequestError if it is bad."""
        if not isinstance(request, dict):
            raise RequestError(400, "the request body must be a JSON object with 'instances' or 'inputs'")
        fn = self._signature(request.get("signature_name", "serving_default"))
        specs = fn.structured_input_signature[1]  # {input name: TensorSpec}
        columns, row_format = self._columns(request, specs)
        tensors = self._tensors(columns, specs)
        # The parsed JSON (for serve_uint8 ~13 times the body) is freed before the model
        # call, unless the caller keeps a reference to it (Handler does not).
        del request, columns
        outputs = self._call(fn, tensors)
        if not row_format:
            return {"outputs": outputs}
        n = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}

    def _signature(self, name):
        if not isinstance(name, str):
            raise RequestError(400, f"signature_name must be a string, got {type(name).__name__}")
        if name not in self.signatures:
            raise RequestError(
                400, f"unknown signature_name {name!r}; this model has {', '.join(sorted(self.signatures))}"
            )
        return self.signatures[name]

    def _columns(self, request: dict, specs: dict) -> tuple[dict, bool]:
        """({input name: value}, whether the request came as rows)."""
        if ("instances" in request) == ("inputs" in request):
            raise RequestError(400, "the request must have exactly one of 'instances' (rows) or 'inputs' (columns)")
        if "instances" in request:
            rows = request["instances"]
            if not isinstance(rows, list):
                raise RequestError(400, "'instances' must be a list")
            if len(rows) > self.max_batch:
                raise RequestError(413, f"instances: batch of {len(rows)} exceeds the limit of {self.max_batch}")
            if rows and all(isinstance(r, dict) and "b64" not in r for r in rows):
                columns = {}
                for i, r in enumerate(rows):
                    if set(r) != set(specs):
                        raise RequestError(400, f"instances[{i}] must have the keys {sorted(specs)}, got {sorted(r)}")
                    for k in specs:
                        columns.setdefault(k, []).append(r[k])
                return columns, True
            if len(specs) == 1:
                return {next(iter(specs)): rows}, True
            raise RequestError(400, f"each instance must be an object with the keys {sorted(specs)}")
        inputs = request["inputs"]
        if isinstance(inputs, dict) and "b64" not in inputs:
            if set(inputs) != set(specs):
                raise RequestError(400, f"'inputs' must have the keys {sorted(specs)}, got {sorted(inputs)}")
            return inputs, False
        if len(specs) == 1:
            return {next(iter(specs)): inputs}, False
        raise RequestError(400, f"'inputs' must be an object with the keys {sorted(specs)}")

    def _tensors(self, columns: dict, specs: dict) -> dict:
        tensors, pixels = {}, 0
        for name, value in columns.items():
            try:
                tensors[name], n = self._to_tensor(name, value, specs[name])
            except RecursionError:
                raise RequestError(400, f"{name}: lists nested too deeply") from None
            pixels += n
            if pixels > self.max_request_pixels:
                raise RequestError(413, self._request_pixels_message(pixels))
        return tensors

    def _request_pixels_message(self, pixels: int) -> str:
        return f"images of {pixels} pixels in all exceed the limit of {self.max_request_pixels} per request"

    def _to_tensor(self, name: str, value, spec: tf.TensorSpec) -> tuple[tf.Tensor, int]:
        """(the tensor for one input, its pixels)."""
        if not isinstance(value, list) or not value:
            raise RequestError(400, f"{name}: expected a non-empty list (a batch), got {type(value).__name__}")
        if len(value) > self.max_batch:
            raise RequestError(413, f"{name}: batch of {len(value)} exceeds the limit of {self.max_batch}")
        if spec.dtype == tf.string:
            return self._image_bytes(name, value)
        return self._numbers(name, value, spec)

    def _image_bytes(self, name: str, value: list) -> tuple[tf.Tensor, int]:
        items, total = [], 0
        for i, v in enumerate(value):
            v = _b64_bytes(v, f"{name}[{i}]")
            try:
                pixels = image_pixels(v)
            except ValueError as e:
                raise RequestError(400, f"{name}[{i}]: {e}") from None
            if pixels > self.max_pixels:
                raise RequestError(413, f"{name}[{i}]: image of {pixels} pixels exceeds the limit of {self.max_pixels}")
            total += pixels
            if total > self.max_request_pixels:
                raise RequestError(413, self._request_pixels_message(total))
            items.append(v)
        return tf.constant(items, tf.string), total

    def _numbers(self, name: str, value: list, spec: tf.TensorSpec) -> tuple[tf.Tensor, int]:
        try:
            array = np.asarray(value)
        except (ValueError, OverflowError):
            raise RequestError(400, f"{name}: ragged nested lists") from None
        if array.dtype.kind not in "iuf":
            raise RequestError(400, f"{name}: expected numbers of type {spec.dtype.name}")
        if not spec.shape.is_compatible_with(array.shape) or array.size == 0:
            raise RequestError(400, f"{name}: shape {list(array.shape)} does not match {spec.shape}")
        if spec.dtype.is_integer:
            info = np.iinfo(spec.dtype.as_numpy_dtype)
            if np.any(array != np.round(array)) or array.min() < info.min or array.max() > info.max:
                raise RequestError(400, f"{name}: values must be integers in [{info.min}, {info.max}]")
        elif not np.all(np.isfinite(array)):
            raise RequestError(400, f"{name}: values must be finite numbers")
        pixels = 0
        if array.ndim == 4:  # a batch of images (B, H, W, C)
            if array.shape[1] * array.shape[2] > self.max_pixels:
                raise RequestError(
                    413,
                    f"{name}: images of {array.shape[1] * array.shape[2]} pixels exceed the limit of {self.max_pixels}",
                )
            pixels = array.size // array.shape[3]
        return tf.constant(array.astype(spec.dtype.as_numpy_dtype)), pixels

    def _call(self, fn, tensors: dict) -> dict:
        with self._lock:
            try:
                outputs = fn(**tensors)
            except tf.errors.InvalidArgumentError as e:
                raise RequestError(400, f"could not process the input: {_first_line(e.message)}") from None
            except tf.errors.ResourceExhaustedError as e:
                raise RequestError(413, f"input too large to process: {_first_line(e.message)}") from None
        return {k: _to_json(v.numpy()) for k, v in sorted(outputs.items())}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "invalid input"


def _to_json(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def _parse_json(body: bytes):
    # json.loads makes a Python list or dict (72 to 200 bytes) of every '[' and '{': 16 MiB
    # of nested empty arrays would take 800 MB and seconds of the interpreter lock. The
    # densest valid body, serve_uint8 pixels, has one per 8 bytes ("[0,0,0],").
    containers = body.count(b"[") + body.count(b"{")
    if containers > len(body) // BYTES_PER_CONTAINER + 64:
        raise RequestError(400, f"malformed JSON: {containers} arrays and objects in {len(body)} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: also numbers of over 4300 digits
        raise RequestError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None


# ---------------------------------------------------------------- HTTP
class _HeaderBudget:
    """A connection's rfile whose readline refuses more than `budget` bytes in all while it
    is set (during the headers): http.client's own limits let one request hold 6.4 MB."""

    def __init__(self, rfile):
        self._rfile, self.budget = rfile, None

    def readline(self, limit: int = -1) -> bytes:
        if self.budget is None:
            return self._rfile.readline(limit)
        line = self._rfile.readline(self.budget + 1 if limit < 0 else min(limit, self.budget + 1))
        self.budget -= len(line)
        if self.budget < 0:
            raise http.client.LineTooLong(f"headers of more than {MAX_HEADER_BYTES} bytes")
        return line

    def __getattr__(self, name):
        return getattr(self._rfile, name)


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP plumbing around ModelServer; every answer is JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "alexnet_tf-serve"

    @property
    def app(self) -> ModelServer:
        return self.server.app

    def setup(self):
        self.timeout = self.server.request_timeout  # the socket's: a connection silent for longer is closed
        self._declared_body = self._body_read = self._expects_continue = False
        super().setup()
        self.rfile = _HeaderBudget(self.rfile)

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)

    def parse_request(self) -> bool:
        self._declared_body = self._body_read = self._expects_continue = False
        self.rfile.budget = MAX_HEADER_BYTES
        try:
            if not super().parse_request():  # 431 for headers over the budget
                return False
        finally:
            self.rfile.budget = None
        self._declared_body = "Transfer-Encoding" in self.headers or self.headers.get("Content-Length", "0") != "0"
        return True

    def handle_expect_100(self) -> bool:
        # "100 Continue" only once the body is wanted (_read_body): a refused client need not send it.
        self._expects_continue = True
        return True

    def _send(self, status: int, body: dict, headers: tuple = (), unread: bool = False) -> None:
        """Answers `body` as JSON; `unread`: the client may still be sending (not only a body)."""
        data = json.dumps(body).encode()
        body_left = unread or (self._declared_body and not self._body_read)
        if body_left:
            self.close_connection = True  # what is unread must not be taken for a next request
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers:
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if body_left:
            self._discard_body()

    def _discard_body(self) -> None:
        """Reads and drops what the client still sends after a refusal, at most --max-body-mb
        for --timeout seconds: closing a socket with unread bytes resets the connection, and
        a client that sends its whole request before it reads would lose the answer."""
        deadline, left = time.monotonic() + self.server.request_timeout, self.server.max_body
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while left > 0 and time.monotonic() < deadline:
                self.connection.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = self.connection.recv(min(left, 1 << 16))  # not rfile: it is spent after a timeout
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _answer(self, fn) -> tuple[int, dict]:
        try:
            return 200, fn()
        except RequestError as e:
            return e.status, {"error": str(e)}
        except Exception as e:  # a fault of the server, not of the request
            self.log_error("internal error: %s: %s", type(e).__name__, e)
            return 500, {"error": f"internal error: {type(e).__name__}"}

    def _route(self) -> str:
        m = ROUTE.match(self.path.split("?", 1)[0])
        if not m:
            raise RequestError(404, f"no route {self.path}; use /v1/models/{self.app.model_name}[:predict|/metadata]")
        self.app.check_model(m["name"], m["version"])
        return m["rest"] or ""

    def do_GET(self):
        def fn():
            rest = self._route()
            if rest == "":
                return self.app.status()
            if rest == "/metadata":
                return self.app.metadata()
            raise RequestError(405, f"{rest} needs POST")

        self._send(*self._answer(fn))

    def do_POST(self):
        slots = self.server.inflight
        if not slots.acquire(blocking=False):
            message = f"busy: {self.server.max_inflight} requests in flight; retry in {RETRY_AFTER_SECONDS} s"
            self._send(503, {"error": message}, (("Retry-After", str(RETRY_AFTER_SECONDS)),))
            return
        try:
            status, body = self._answer(self._predict)
        finally:
            slots.release()
        self._send(status, body)

    def _predict(self) -> dict:
        rest = self._route()
        if rest != ":predict":
            raise RequestError(
                404 if rest.startswith(":") else 405, f"only :predict is served, not {rest or 'GET routes'}"
            )
        # No names for the body and the parsed request: predict frees them before the model call.
        return self.app.predict(_parse_json(self._read_body()))

    def _read_body(self) -> bytearray:
        """The body, read within --timeout seconds (408 otherwise)."""
        length = self._content_length()
        if self._expects_continue:
            self.send_response_only(100)
            self.end_headers()
        body = bytearray(length)
        view, got = memoryview(body), 0
        deadline = time.monotonic() + self.server.request_timeout
        try:
            while got < length:
                # The socket timeout bounds each read; the deadline bounds them all (a trickle too).
                self.connection.settimeout(max(deadline - time.monotonic(), 0.001))
                n = self.rfile.readinto1(view[got:])
                if not n:
                    raise RequestError(400, f"the body ended after {got} of {length} bytes")
                got += n
        except TimeoutError:
            raise RequestError(
                408, f"the body did not arrive within {self.server.request_timeout:g} s ({got} of {length} bytes)"
            ) from None
        finally:
            view.release()
        self._body_read = True
        self.connection.settimeout(self.server.request_timeout)
        return body

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()):
            raise RequestError(411, "Content-Length is required")
        if len(length) > 15 or int(length) > self.server.max_body:
            raise RequestError(413, f"body of {length:.20} bytes exceeds the limit of {self.server.max_body}")
        return int(length)

    def send_error(self, code, message=None, explain=None):
        """The base class's answer to a broken request line or header, as JSON and 4xx."""
        code = {501: 405, 505: 400}.get(code, code)  # unknown method, HTTP version: the client's fault
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # answer with a status line even before the version is parsed
        self._send(code, {"error": message or http.HTTPStatus(code).phrase}, unread=code in (414, 431))

    def _not_allowed(self):
        self.close_connection = True
        self._send(405, {"error": f"method {self.command} not allowed; use GET or POST"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed


BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Retry-After: %d\r\nConnection: close\r\n\r\n%s"
)


class Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` connections (threads) open and
    `max_inflight` predict requests in flight; the Handler enforces the other limits."""

    daemon_threads = True

    def __init__(
        self,
        address,
        app: ModelServer,
        max_body: int = DEFAULT_MAX_BODY,
        quiet: bool = False,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        # Connections wait to be accepted while a JSON parse holds the interpreter lock; the
        # default backlog of 5 then drops them, and their clients see a reset.
        self.request_queue_size = max_connections
        super().__init__(address, Handler)
        self.app, self.max_body, self.quiet = app, max_body, quiet
        self.max_inflight, self.max_connections, self.request_timeout = max_inflight, max_connections, timeout
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self._connections = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def _refuse(self, request) -> None:
        # In the accepting thread, so without reading the request: a client that has
        # already sent one may see the connection reset rather than this answer.
        error = json.dumps({"error": f"busy: {self.max_connections} connections open; retry later"}).encode()
        try:
            request.sendall(BUSY % (len(error), RETRY_AFTER_SECONDS, error))
        except OSError:
            pass
        self.shutdown_request(request)


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
) -> Server:
    """A ready server (port 0 picks a free port); call `serve_forever()` on it."""
    app = ModelServer(
        export_dir,
        model_name=model_name,
        max_batch=max_batch,
        max_pixels=max_pixels,
        max_request_pixels=max_request_pixels,
    )
    return Server(
        (host, port),
        app,
        max_body=max_body,
        quiet=quiet,
        max_inflight=max_inflight,
        max_connections=max_connections,
        timeout=timeout,
    )


def _release_large_frees() -> None:
    """Has glibc's malloc serve every block of 1 MiB or more by mmap, so that a freed
    body or decoded image goes back to the system. By default glibc raises this threshold
    (up to 32 MiB) after each such free, and the freed blocks then stay in the heap: over
    60 s of the load of `bench serve` peak RSS grew to 1.86 GB instead of 1.40 GB."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def argument_parser() -> argparse.ArgumentParser:
    """The command's arguments (bench serve reads the server's limits with it too)."""
    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", help="SavedModel from alexnet_tf.export, or a base path of version folders")
    parser.add_argument("--port", type=int, default=8501, help="TF Serving's REST port by default")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--model-name", default="alexnet", help="the NAME in /v1/models/NAME")
    parser.add_argument(
        "--max-body-mb", type=_positive(float), default=DEFAULT_MAX_BODY / 2**20, help="largest request body (16)"
    )
    parser.add_argument("--max-batch", type=_positive(int), default=DEFAULT_MAX_BATCH, help="most images per request")
    parser.add_argument(
        "--max-pixels", type=_positive(int), default=DEFAULT_MAX_PIXELS, help="most pixels per image (40 M)"
    )
    parser.add_argument(
        "--max-request-pixels",
        type=_positive(int),
        default=DEFAULT_MAX_REQUEST_PIXELS,
        help="most pixels of all images of one request together (100 M)",
    )
    parser.add_argument(
        "--max-inflight",
        type=_positive(int),
        default=DEFAULT_MAX_INFLIGHT,
        help="predict requests read, parsed or run at once; more get 503 (2)",
    )
    parser.add_argument(
        "--max-connections", type=_positive(int), default=DEFAULT_MAX_CONNECTIONS, help="open connections (64)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=DEFAULT_TIMEOUT,
        help="seconds a connection may stay silent, and a body may take to arrive (30)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return parser


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    _release_large_frees()
    try:
        server = make_server(
            args.export_dir,
            args.host,
            args.port,
            args.model_name,
            int(args.max_body_mb * 2**20),
            args.max_batch,
            args.quiet,
            max_pixels=args.max_pixels,
            max_request_pixels=args.max_request_pixels,
            max_inflight=args.max_inflight,
            max_connections=args.max_connections,
            timeout=args.timeout,
        )
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    app = server.app
    print(
        f"serving {app.model_name} version {app.version} from {app.path} at http://{host}:{port}/v1/models/{app.model_name}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
