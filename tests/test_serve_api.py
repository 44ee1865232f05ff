"""The server's parts without a server: the options and their flags, the route table, HTTP
heads, TF Serving's JSON examples as tf.train.Example, and the JPEG header reader against
Pillow's. tests/test_serve.py has the server over real HTTP."""

import base64
import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.example import example_pb2

from alexnet_tf.serve import ROUTES, RequestError, ServeOptions, argument_parser, examples, protocol, route, routes
from alexnet_tf.serve.images import _jpeg_size, _pillow_size
from alexnet_tf.serve.inputs import ORJSON_MAX_BODY, InputLimits, parse_json

LIMITS = InputLimits(max_batch=4, max_pixels=3_000, max_request_pixels=5_000)


# ---------------------------------------------------------------- options
def test_every_option_is_a_flag_and_the_flags_are_the_options():
    flags = [a for a in argument_parser()._actions if a.dest not in ("help", "version", "path", "workdir")]
    assert sorted(a.dest for a in flags) == sorted(f.name for f in dataclasses.fields(ServeOptions))
    assert ServeOptions.from_args(argument_parser().parse_args(["exports/x"])) == ServeOptions()
    assert ServeOptions.parse([]) == ServeOptions()
    # Flags in their own units: MiB and milliseconds; what is not a server flag is left alone.
    options = ServeOptions.parse(
        [
            "--max-body-mb",
            "2",
            "--batch-wait-ms",
            "5",
            "--max-queue-mb",
            "0.5",
            "--port",
            "0",
            "--quiet",
            "--clients",
            "3",
        ]
    )
    assert options == dataclasses.replace(
        ServeOptions(), max_body=2 * 2**20, batch_wait=0.005, max_queue_bytes=2**19, port=0, quiet=True
    )
    assert ServeOptions().max_body == 16 * 2**20 and ServeOptions().batch_wait == 0.0


@pytest.mark.parametrize("flag, value", [("--max-batch", "0"), ("--timeout", "nan"), ("--batch-wait-ms", "-1")])
def test_option_flags_refuse_what_cannot_be(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        argument_parser().parse_args(["exports/x", flag, value])
    assert e.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err


# ---------------------------------------------------------------- routes
class FakeServable:
    model_name, version = "m", 1
    check_model = routes.Servable.check_model
    inputs = {"serving_default": {"images": tf.TensorSpec([None], tf.string)}}
    outputs = {"serving_default": {"classes": tf.TensorSpec([None, 5], tf.int32)}}


def test_a_route_is_one_function_and_one_registration():
    @route("GET", "/hello", "a greeting")
    def hello(call):
        return {"hello": call.servable.model_name}

    try:
        found = routes.resolve("GET", "/v1/models/m/versions/1/hello?x=1", FakeServable())
        assert found.fn is hello and found.about == "a greeting"
        assert "GET /v1/models/m/hello" in routes.usage("m")
        with pytest.raises(ValueError, match="already a route"):
            route("GET", "/hello", "again")(hello)
    finally:
        del ROUTES[("GET", "/hello")]
    with pytest.raises(RequestError) as e:
        routes.resolve("GET", "/v1/models/m/hello", FakeServable())
    assert e.value.status == 404


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/v1/models/m", None),
        ("GET", "/v1/models/m/versions/1/metadata", None),
        ("GET", "/v1/models/m/classes/", None),
        ("POST", "/v1/models/m:predict", None),
        ("POST", "/v1/models/m/versions/1:classify", None),
        ("POST", "/v1/models/m:regress", None),
        ("POST", "/v1/models/m", 405),
        ("GET", "/v1/models/m:predict", 405),
        ("POST", "/v1/models/m:explode", 404),
        ("GET", "/v1/models/m/nothing", 404),
        ("GET", "/v1/models/other", 404),
        ("GET", "/v1/models/m/versions/2", 404),
        ("GET", "/v1/models/m/labels/stable", 404),  # TF Serving's version labels come from its config
        ("GET", "/v2/models/m", 404),
    ],
)
def test_routes_resolve_as_tf_serving_does(method, path, status):
    if status is None:
        tail = path.rstrip("/").split("/v1/models/m", 1)[1].replace("/versions/1", "")
        assert routes.resolve(method, path, FakeServable()) is ROUTES[(method, tail)]
    else:
        with pytest.raises(RequestError) as e:
            routes.resolve(method, path, FakeServable())
        assert e.value.status == status


# ---------------------------------------------------------------- HTTP heads
def head(text: bytes):
    buf = bytearray(text)
    end = protocol.head_end(buf, len(buf))
    return end, (protocol.parse_head(bytes(buf[:end])) if end > 0 else None)


def test_heads_are_read_as_http_server_reads_them():
    end, h = head(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2\r\n\r\n{}")
    assert end == len(
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    )
    assert (h.method, h.target, h.headers["x-a"], h.close, h.declared_body) == (
        "POST",
        "/v1/models/m:predict",
        "1",
        False,
        True,
    )
    assert protocol.content_length(h.headers, 100) == 12
    assert head(b"GET / HTTP/1.1\r\nHost: x\r\n")[0] == -1  # not all there yet
    assert head(b"GET / HTTP/1.0\n\n")[1].close  # bare LF; HTTP/1.0 closes...
    assert not head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[1].close  # ...unless asked not to
    assert head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")[1].close
    assert head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")[1].expects_continue
    assert not head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")[1].expects_continue
    assert not head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")[1].declared_body


@pytest.mark.parametrize(
    "text, status",
    [
        (b"BROKEN\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\n\r\n", 400),
        (b"GET / HTTP/1\r\n\r\n", 400),
        (b"GET / FTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n", 431),  # before the head has ended
        (b"GET /" + b"a" * 70_000, 414),
    ],
)
def test_malformed_or_oversized_heads_are_refused(text, status):
    with pytest.raises(RequestError) as e:
        head(text)
    assert e.value.status == status


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 411),
        ({"content-length": "\u00b2"}, 411),
        ({"transfer-encoding": "chunked"}, 411),
        ({"content-length": "101"}, 413),
        ({"content-length": "9" * 5000}, 413),
    ],
)
def test_body_lengths_are_checked_before_the_body(headers, status):
    with pytest.raises(RequestError) as e:
        protocol.content_length(headers, 100)
    assert e.value.status == status


def test_answers_are_one_piece_with_their_headers():
    data = protocol.answer(503, b'{"error":"busy"}', b"Mon, 01 Jan 2024 00:00:00 GMT", close=True)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable" and body == b'{"error":"busy"}'
    assert {b"Retry-After: 1", b"Connection: close", b"Content-Length: 16", b"Content-Type: application/json"} <= set(
        lines
    )


# ---------------------------------------------------------------- :classify's examples
class ClassifyingServable:
    inputs = {
        "serving_default": {"images": tf.TensorSpec([None], tf.string)},
        "classification": {"inputs": tf.TensorSpec([None], tf.string)},
    }
    outputs = {
        "serving_default": {"classes": tf.TensorSpec([None, 5], tf.int32)},
        "classification": {
            "classes": tf.TensorSpec([None, 5], tf.string),
            "scores": tf.TensorSpec([None, 5], tf.float32),
        },
    }


def png(h=30, w=40) -> bytes:
    return tf.io.encode_png(np.zeros((h, w, 3), np.uint8)).numpy()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_examples_become_tf_examples_as_tf_serving_makes_them():
    request = {
        "signature_name": "classification",
        "context": {"camera": 2, "scale": 0.5},
        "examples": [
            {"image/encoded": b64(png()), "ids": [3, -(2**63)], "ok": True, "w": [1.5, 2.0]},
            {"image/encoded": [b64(png(20, 20))], "empty": [], "camera": 3},
        ],
    }
    job = examples.make_job(request, ClassifyingServable(), LIMITS, "classify")
    assert job.signature == "classification" and job.size == 2 and job.pixels == 1200 + 400
    assert job.nbytes == sum(map(len, job.inputs["inputs"]))
    first, second = (example_pb2.Example.FromString(s).features.feature for s in job.inputs["inputs"])
    assert first["image/encoded"].bytes_list.value == [png()]
    assert first["ids"].int64_list.value == [3, -(2**63)] and first["ok"].int64_list.value == [1]
    assert list(first["w"].float_list.value) == [1.5, 2.0] and list(first["scale"].float_list.value) == [0.5]
    assert first["camera"].int64_list.value == [2]
    assert second["camera"].int64_list.value == [3]  # an example's own feature over the context's
    assert second["empty"].WhichOneof("kind") is None
    # TensorFlow reads them back as the export's classification signature does.
    parsed = tf.io.parse_example(job.inputs["inputs"], {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
    assert parsed["image/encoded"].numpy().tolist() == [png(), png(20, 20)]


@pytest.mark.parametrize(
    "request_, status, words",
    [
        ({"examples": [{"image/encoded": b64(png())}]}, 400, 'use "signature_name": "classification"'),
        ({"signature_name": "nope", "examples": [{}]}, 400, "unknown signature_name"),
        ({"signature_name": "classification"}, 400, "'examples'"),
        ({"signature_name": "classification", "examples": []}, 400, "'examples'"),
        ({"signature_name": "classification", "examples": [7]}, 400, "JSON object"),
        ({"signature_name": "classification", "examples": [{"x": None}]}, 400, "unexpected JSON type"),
        ({"signature_name": "classification", "examples": [{"x": [[1]]}]}, 400, "unexpected JSON type"),
        ({"signature_name": "classification", "examples": [{"x": [1, 2.5]}]}, 400, "one kind"),
        ({"signature_name": "classification", "examples": [{"x": 2**63}]}, 400, "int64"),
        ({"signature_name": "classification", "examples": [{"x": 1e39}]}, 400, "float32"),
        ({"signature_name": "classification", "examples": [{"x": {"b64": "not base64!"}}]}, 400, "base64"),
        # Every bytes value is measured as an image before the model may decode it: no text features.
        ({"signature_name": "classification", "examples": [{"x": "a caption"}]}, 400, "not a JPEG"),
        ({"signature_name": "classification", "examples": [{}] * 5}, 413, "limit of 4"),
        ({"signature_name": "classification", "examples": [{"x": b64(png(60, 60))}]}, 413, "limit of 3000"),
        ({"signature_name": "classification", "examples": [{"x": b64(png())}] * 5}, 413, "limit of 4"),
        (
            {"signature_name": "classification", "context": {"x": b64(png(40, 40))}, "examples": [{}] * 4},
            413,
            "per request",
        ),
    ],
)
def test_bad_examples_are_refused(request_, status, words):
    with pytest.raises(RequestError) as e:
        examples.make_job(request_, ClassifyingServable(), LIMITS, "classify")
    assert e.value.status == status and words in str(e.value), e.value


def test_regress_wants_a_regression_signature():
    with pytest.raises(RequestError) as e:
        examples.make_job({"examples": [{}]}, ClassifyingServable(), LIMITS, "regress")
    assert e.value.status == 400 and "none for :regress" in str(e.value)


def test_answers_of_classify_and_regress_are_tf_serving_s():
    outputs = {"classes": np.array([[b"cat", b"dog"]], dtype=object), "scores": np.array([[0.75, 0.25]], np.float32)}
    assert examples.classification_answer(outputs) == {"results": [[["cat", 0.75], ["dog", 0.25]]]}
    assert examples.classification_answer({"scores": outputs["scores"]})["results"][0][1] == ["", 0.25]
    assert examples.regression_answer({"outputs": np.array([[1.5], [2.5]], np.float32)})["results"].tolist() == [
        1.5,
        2.5,
    ]


# ---------------------------------------------------------------- the JPEG header reader
def jpeg_variants():
    rng = np.random.RandomState(0)
    options = [
        ("RGB", {}),
        ("RGB", {"progressive": True}),
        ("L", {}),
        ("CMYK", {}),
        ("RGB", {"subsampling": 0, "quality": 95}),
        ("RGB", {"exif": Image.Exif()}),
        ("RGB", {"icc_profile": b"x" * 5000}),
        ("RGB", {"restart_marker_blocks": 2}),
        ("RGB", {"comment": b"hello"}),
    ]
    for mode, kwargs in options:
        out = io.BytesIO()
        Image.fromarray((rng.rand(37, 53, 3) * 255).astype(np.uint8)).convert(mode).save(out, "JPEG", **kwargs)
        yield out.getvalue()


def outcome(read, data):
    try:
        return read(data)[:2]
    except ValueError:
        return "refused"


def test_dense_json_is_refused_before_it_is_parsed():
    # Bodies denser in arrays and objects than pixels ("[0,0,0],", one in 8 bytes) would
    # build a Python list or dict every few bytes: 400 before parsing, by orjson or json.
    for n in (1000, ORJSON_MAX_BODY // 5):
        with pytest.raises(RequestError, match="arrays and objects") as e:
            parse_json(b'{"instances": [' + b"[[]]," * n + b"[]]}")
        assert e.value.status == 400
    for n in (1000, ORJSON_MAX_BODY // 8):
        pixels = b'{"instances": [[' + b"[0,0,0]," * n + b"[0,0,0]]]}"
        assert len(parse_json(pixels)["instances"][0]) == n + 1


def test_jpeg_sizes_are_read_as_pillow_reads_them():
    # Every variant, cut at every 7th byte: the same size, or refused by both.
    compared = 0
    for jpeg in jpeg_variants():
        for cut in [*range(0, len(jpeg), 7), len(jpeg)]:
            data = jpeg[:cut]
            assert outcome(_jpeg_size, data) == outcome(lambda d: _pillow_size(d, "JPEG"), data), (cut, len(jpeg))
            compared += 1
    assert compared > 3000
    # Junk and fill bytes between segments, skipped by both.
    jpeg = next(jpeg_variants())
    app0 = 4 + int.from_bytes(jpeg[4:6], "big")  # SOI, then the APP0 segment
    padded = jpeg[:app0] + b"\x00junk\xff\xff" + jpeg[app0:]
    assert outcome(_jpeg_size, padded) == outcome(lambda d: _pillow_size(d, "JPEG"), padded) == (53, 37)
