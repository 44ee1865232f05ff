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

Bad requests (malformed JSON, missing fields, bytes that are not an image, a body over
`--max-body-mb`, a batch over `--max-batch`) get a 4xx status and {"error": "..."}.
Built on the standard library's ThreadingHTTPServer: one thread per connection, the model
called by one request at a time (a lock), so memory stays bounded under load.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import http.server
import json
import os
import re
import struct
import sys
import threading

import numpy as np
import tensorflow as tf

DEFAULT_MAX_BODY = 16 * 1024 * 1024  # bytes of JSON per request
DEFAULT_MAX_BATCH = 64  # images per request
DEFAULT_MAX_PIXELS = 40_000_000  # per decoded image; guards against decompression bombs

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?/?$")


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code (4xx)."""

    def __init__(self, status: int, message: str):
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


def image_pixels(data: bytes) -> int | None:
    """Width * height from a PNG/GIF/BMP/JPEG header without decoding; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w * h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w * h
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w) * abs(h)
    if data[:2] == b"\xff\xd8":
        try:
            h, w, _ = tf.image.extract_jpeg_shape(data).numpy()
        except tf.errors.OpError:
            return None  # decode_image will report the broken JPEG
        return int(h) * int(w)
    return None


def _decode_b64(value, path: str = "input"):
    """Replaces {"b64": "..."} by bytes, recursively (TF Serving's binary encoding)."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            if not isinstance(value["b64"], str):
                raise RequestError(400, f"{path}: the value of 'b64' must be a string")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise RequestError(400, f"{path}: invalid base64 ({e})") from None
        raise RequestError(400, f'{path}: expected a value or {{"b64": ...}}, got an object with keys {sorted(value)}')
    if isinstance(value, list):
        return [_decode_b64(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


class ModelServer:
    """Loads one exported model and answers predict/status/metadata requests."""

    def __init__(
        self,
        export_dir: str,
        model_name: str = "alexnet",
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.model_name = model_name
        self.max_batch = max_batch
        self.max_pixels = max_pixels
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
        if name != self.model_name:
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        if version is not None and version != str(self.version):
            raise RequestError(404, f"Servable not found for request: Specific({name}, {version})")

    def status(self) -> dict:
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
        return {
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self._signature_defs}},
        }

    def predict(self, request) -> dict:
        if not isinstance(request, dict):
            raise RequestError(400, "the request body must be a JSON object with 'instances' or 'inputs'")
        name = request.get("signature_name", "serving_default")
        if name not in self.signatures:
            raise RequestError(
                400, f"unknown signature_name {name!r}; this model has {', '.join(sorted(self.signatures))}"
            )
        fn = self.signatures[name]
        specs = fn.structured_input_signature[1]  # {input name: TensorSpec}
        if ("instances" in request) == ("inputs" in request):
            raise RequestError(400, "the request must have exactly one of 'instances' (rows) or 'inputs' (columns)")
        row_format = "instances" in request
        if row_format:
            rows = request["instances"]
            if not isinstance(rows, list):
                raise RequestError(400, "'instances' must be a list")
            if rows and all(isinstance(r, dict) and "b64" not in r for r in rows):
                columns = {}
                for i, r in enumerate(rows):
                    if set(r) != set(specs):
                        raise RequestError(400, f"instances[{i}] must have the keys {sorted(specs)}, got {sorted(r)}")
                    for k in specs:
                        columns.setdefault(k, []).append(r[k])
            elif len(specs) == 1:
                columns = {next(iter(specs)): rows}
            else:
                raise RequestError(400, f"each instance must be an object with the keys {sorted(specs)}")
        else:
            inputs = request["inputs"]
            if isinstance(inputs, dict) and "b64" not in inputs:
                if set(inputs) != set(specs):
                    raise RequestError(400, f"'inputs' must have the keys {sorted(specs)}, got {sorted(inputs)}")
                columns = inputs
            elif len(specs) == 1:
                columns = {next(iter(specs)): inputs}
            else:
                raise RequestError(400, f"'inputs' must be an object with the keys {sorted(specs)}")
        tensors = {k: self._to_tensor(k, _decode_b64(v, k), specs[k]) for k, v in columns.items()}
        with self._lock:
            try:
                outputs = fn(**tensors)
            except tf.errors.InvalidArgumentError as e:
                raise RequestError(400, f"could not process the input: {_first_line(e.message)}") from None
            except tf.errors.ResourceExhaustedError as e:
                raise RequestError(413, f"input too large to process: {_first_line(e.message)}") from None
        outputs = {k: _to_json(v.numpy()) for k, v in sorted(outputs.items())}
        if not row_format:
            return {"outputs": outputs}
        n = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}

    def _to_tensor(self, name: str, value, spec: tf.TensorSpec) -> tf.Tensor:
        if not isinstance(value, list) or not value:
            raise RequestError(400, f"{name}: expected a non-empty list (a batch), got {type(value).__name__}")
        if len(value) > self.max_batch:
            raise RequestError(413, f"{name}: batch of {len(value)} exceeds the limit of {self.max_batch}")
        if spec.dtype == tf.string:
            items = []
            for i, v in enumerate(value):
                if isinstance(v, str):
                    v = v.encode()
                if not isinstance(v, bytes):
                    raise RequestError(400, f'{name}[{i}]: expected {{"b64": ...}} bytes, got {type(v).__name__}')
                pixels = image_pixels(v)
                if pixels is not None and pixels > self.max_pixels:
                    raise RequestError(
                        413, f"{name}[{i}]: image of {pixels} pixels exceeds the limit of {self.max_pixels}"
                    )
                items.append(v)
            return tf.constant(items, tf.string)
        try:
            array = np.asarray(value)
        except ValueError:
            raise RequestError(400, f"{name}: ragged nested lists") from None
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        ):
            raise RequestError(400, f"{name}: expected numbers of type {spec.dtype.name}")
        if not spec.shape.is_compatible_with(array.shape):
            raise RequestError(400, f"{name}: shape {list(array.shape)} does not match {spec.shape}")
        if spec.dtype.is_integer:
            info = np.iinfo(spec.dtype.as_numpy_dtype)
            if np.any(array != np.round(array)) or array.min() < info.min or array.max() > info.max:
                raise RequestError(400, f"{name}: values must be integers in [{info.min}, {info.max}]")
        return tf.constant(array.astype(spec.dtype.as_numpy_dtype))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "invalid input"


def _to_json(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP plumbing around ModelServer; every answer is JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "alexnet_tf-serve"
    timeout = 60  # seconds a connection may stay silent

    @property
    def app(self) -> ModelServer:
        return self.server.app

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        m = ROUTE.match(self.path.split("?", 1)[0])
        if not m:
            raise RequestError(404, f"no route {self.path}; use /v1/models/{self.app.model_name}[:predict|/metadata]")
        self.app.check_model(m["name"], m["version"])
        return m["rest"] or ""

    def _handle(self, fn) -> None:
        try:
            self._send(200, fn())
        except RequestError as e:
            self._send(e.status, {"error": str(e)})
        except Exception as e:  # a fault of the server, not of the request
            self.log_error("internal error: %s: %s", type(e).__name__, e)
            self._send(500, {"error": f"internal error: {type(e).__name__}"})

    def do_GET(self):
        def fn():
            rest = self._route()
            if rest == "":
                return self.app.status()
            if rest == "/metadata":
                return self.app.metadata()
            raise RequestError(405, f"{rest} needs POST")

        self._handle(fn)

    def do_POST(self):
        def fn():
            body = self._read_body()
            rest = self._route()
            if rest != ":predict":
                raise RequestError(
                    404 if rest.startswith(":") else 405, f"only :predict is served, not {rest or 'GET routes'}"
                )
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RequestError(400, f"malformed JSON: {e}") from None
            return self.app.predict(request)

        self._handle(fn)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(411, "Content-Length is required")
        length = int(length)
        if length > self.server.max_body:
            self.close_connection = True  # the unread body must not be taken for a next request
            raise RequestError(413, f"body of {length} bytes exceeds the limit of {self.server.max_body}")
        return self.rfile.read(length)

    def send_error(self, code, message=None, explain=None):
        """The base class's answer to a broken request line or header, as JSON and 4xx."""
        code = {501: 405, 505: 400}.get(code, code)  # unknown method, HTTP version: the client's fault
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # answer with a status line even before the version is parsed
        self._send(code, {"error": message or http.HTTPStatus(code).phrase})

    def _not_allowed(self):
        self.close_connection = True
        self._send(405, {"error": f"method {self.command} not allowed; use GET or POST"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, app: ModelServer, max_body: int = DEFAULT_MAX_BODY, quiet: bool = False):
        super().__init__(address, Handler)
        self.app, self.max_body, self.quiet = app, max_body, quiet


def make_server(
    export_dir: str,
    host: str = "127.0.0.1",
    port: int = 8501,
    model_name: str = "alexnet",
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    quiet: bool = False,
) -> Server:
    """A ready server (port 0 picks a free port); call `serve_forever()` on it."""
    app = ModelServer(export_dir, model_name=model_name, max_batch=max_batch)
    return Server((host, port), app, max_body=max_body, quiet=quiet)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", help="SavedModel from alexnet_tf.export, or a base path of version folders")
    parser.add_argument("--port", type=int, default=8501, help="TF Serving's REST port by default")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--model-name", default="alexnet", help="the NAME in /v1/models/NAME")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY / 2**20, help="largest request body")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most images per request")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    try:
        server = make_server(
            args.export_dir,
            args.host,
            args.port,
            args.model_name,
            int(args.max_body_mb * 2**20),
            args.max_batch,
            args.quiet,
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
