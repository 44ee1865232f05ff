"""A :predict request's JSON body -> the model's inputs, checked against the limits; its outputs -> JSON.

Requests follow TF Serving's REST API: "instances" (rows, answered as "predictions") or
"inputs" (columns, answered as "outputs"), binary values as {"b64": "..."}.
"""

from __future__ import annotations

import binascii
import dataclasses
import json

import numpy as np
import orjson
import pybase64

from alexnet_tf.serve.images import ImageTooLarge, image_pixels

BYTES_PER_CONTAINER = 6  # the densest JSON arrays and objects a body may hold; see parse_json
# Bodies up to this size are parsed by orjson (C, 1.5-3x faster than json here); larger ones
# by json, whose peak memory is lower: orjson builds a document of 16 bytes a value first
# (+126 MB, 60% more, for 16 MiB of serve_uint8 pixels), and the largest bodies set the memory plan.
ORJSON_MAX_BODY = 256 * 1024
MAX_ERROR_CHARS = 300  # error messages quote the request; a hostile one must not be echoed whole


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code (4xx, or 503 when busy)."""

    def __init__(self, status: int, message: str):
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(eq=False)  # compared by identity
class Job:
    """One request's inputs, ready for the model: {name: list of bytes or array}, each of
    `size` rows; `nbytes` of payload; `rows`: answer as "predictions" (else "outputs")."""

    signature: str
    inputs: dict
    size: int
    nbytes: int
    pixels: int
    rows: bool


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Per request: images (`max_batch`), pixels of one image and of all its images."""

    max_batch: int
    max_pixels: int
    max_request_pixels: int


def parse_json(body: bytes):
    """The parsed body; 400 for malformed or over-dense JSON."""
    # The parser makes a Python list or dict (56 to 200 bytes) of every '[' and '{': 16 MiB
    # of nested empty arrays would take 800 MB and seconds of the interpreter lock. The
    # densest valid body, serve_uint8 pixels, has one per 8 bytes ("[0,0,0],").
    # '[' (0x5b) and '{' (0x7b) differ only in bit 0x20: one vectorised pass counts both
    containers = int(np.count_nonzero((np.frombuffer(body, np.uint8) | 0x20) == 0x7B))
    if containers > len(body) // BYTES_PER_CONTAINER + 64:
        raise RequestError(400, f"malformed JSON: {containers} arrays and objects in {len(body)} bytes")
    if len(body) <= ORJSON_MAX_BODY:
        try:  # orjson: strict JSON (no NaN), UTF-8 only, at most 1,024 levels deep
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise RequestError(400, f"malformed JSON: {e}") from None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: also numbers of over 4300 digits
        raise RequestError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None


def make_job(request, signatures: dict, limits: InputLimits) -> Job:
    """The Job of a parsed request; `signatures`: {name: {input name: tf.TensorSpec}}."""
    if not isinstance(request, dict):
        raise RequestError(400, "the request body must be a JSON object with 'instances' or 'inputs'")
    name = request.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise RequestError(400, f"signature_name must be a string, got {type(name).__name__}")
    if name not in signatures:
        raise RequestError(400, f"unknown signature_name {name!r}; this model has {', '.join(sorted(signatures))}")
    specs = signatures[name]
    columns, rows = _columns(request, specs, limits)
    inputs, pixels, nbytes = {}, 0, 0
    for key, value in columns.items():
        try:
            inputs[key], n = _to_input(key, value, specs[key], limits)
        except RecursionError:
            raise RequestError(400, f"{key}: lists nested too deeply") from None
        pixels += n
        if pixels > limits.max_request_pixels:
            raise RequestError(413, request_pixels_message(pixels, limits))
        nbytes += sum(map(len, inputs[key])) if isinstance(inputs[key], list) else inputs[key].nbytes
    sizes = {len(v) for v in inputs.values()}
    if len(sizes) != 1:
        raise RequestError(400, f"the inputs have different batch sizes {sorted(sizes)}")
    return Job(name, inputs, sizes.pop(), nbytes, pixels, rows)


def answer(job: Job, outputs: dict) -> dict:
    """The JSON answer to `job` given its outputs {name: array of `job.size` rows}: strings
    as str, numbers as arrays (`dumps` writes them)."""
    outputs = {k: _to_json(v) for k, v in sorted(outputs.items())}
    if not job.rows:
        return {"outputs": outputs}
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(job.size)]}


def dumps(body: dict) -> bytes:
    """`body` as JSON; NumPy arrays as lists, float32 in its shortest round-trip form."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _columns(request: dict, specs: dict, limits: InputLimits) -> tuple[dict, bool]:
    """({input name: value}, whether the request came as rows)."""
    if ("instances" in request) == ("inputs" in request):
        raise RequestError(400, "the request must have exactly one of 'instances' (rows) or 'inputs' (columns)")
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list):
            raise RequestError(400, "'instances' must be a list")
        if len(rows) > limits.max_batch:
            raise RequestError(413, f"instances: batch of {len(rows)} exceeds the limit of {limits.max_batch}")
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


def _to_input(name: str, value, spec, limits: InputLimits) -> tuple[list | np.ndarray, int]:
    """(one input: a list of bytes for tf.string, else an array; its pixels)."""
    if not isinstance(value, list) or not value:
        raise RequestError(400, f"{name}: expected a non-empty list (a batch), got {type(value).__name__}")
    if len(value) > limits.max_batch:
        raise RequestError(413, f"{name}: batch of {len(value)} exceeds the limit of {limits.max_batch}")
    if spec.dtype.name == "string":
        return _image_bytes(name, value, limits)
    return _numbers(name, value, spec, limits)


def b64_bytes(value, path: str) -> bytes:
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
    try:  # pybase64: the standard alphabet with padding, as base64.b64decode(validate=True), SIMD-fast
        return pybase64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{path}: invalid base64 ({e})") from None


def image_size(data: bytes, path: str, limits: InputLimits) -> int:
    """The pixels of the image `data` (from its header), within `limits.max_pixels`: 413 beyond
    it, 400 for bytes that are no image whose size can be read."""
    try:
        pixels = image_pixels(data)
    except ImageTooLarge as e:
        raise RequestError(413, f"{path}: image exceeds the limit of {limits.max_pixels} pixels ({e})") from None
    except ValueError as e:
        raise RequestError(400, f"{path}: {e}") from None
    if pixels > limits.max_pixels:
        raise RequestError(413, f"{path}: image of {pixels} pixels exceeds the limit of {limits.max_pixels}")
    return pixels


def request_pixels_message(pixels: int, limits: InputLimits) -> str:
    return f"images of {pixels} pixels in all exceed the limit of {limits.max_request_pixels} per request"


def _image_bytes(name: str, value: list, limits: InputLimits) -> tuple[list, int]:
    items, total = [], 0
    for i, v in enumerate(value):
        path = f"{name}[{i}]"
        v = b64_bytes(v, path)
        total += image_size(v, path, limits)
        if total > limits.max_request_pixels:
            raise RequestError(413, request_pixels_message(total, limits))
        items.append(v)
    return items, total


def _numbers(name: str, value: list, spec, limits: InputLimits) -> tuple[np.ndarray, int]:
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
        if array.shape[1] * array.shape[2] > limits.max_pixels:
            image = array.shape[1] * array.shape[2]
            raise RequestError(413, f"{name}: images of {image} pixels exceed the limit of {limits.max_pixels}")
        pixels = array.size // array.shape[3]
    return array.astype(spec.dtype.as_numpy_dtype), pixels


def _to_json(array: np.ndarray):
    if array.dtype == object:  # tf.string
        return _text(array.tolist())
    return array if array.flags.c_contiguous and array.dtype.isnative else np.ascontiguousarray(array)


def _text(value):
    """Nested lists of bytes as nested lists of str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value and isinstance(value[0], bytes):  # the innermost lists, a call for each string spared
        return [v.decode("utf-8", "replace") for v in value]
    return [_text(v) for v in value]
