"""Serving tier: a real HTTP client against a real server on 127.0.0.1 (ephemeral port);
the image header reader against images Pillow writes. tests/test_serve_batching.py has the queue."""

import base64
import contextlib
import http.client
import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.serve import ImageTooLarge, argument_parser, image_pixels, make_server
from alexnet_tf.serve.command import export_dir_of

MAX_BODY = 200_000
MAX_PIXELS = 3_000  # per image: the test images have 1,200 to 2,040
MAX_REQUEST_PIXELS = 5_000
TIMEOUT = 1.5  # seconds, of `strict_server`


def serving(srv):
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def server(export_dir):
    yield from serving(
        make_server(
            export_dir,
            port=0,
            model_name="alexnet",
            max_body=MAX_BODY,
            max_batch=8,
            max_pixels=MAX_PIXELS,
            max_request_pixels=MAX_REQUEST_PIXELS,
            max_inflight=8,
            quiet=True,
        )
    )


@pytest.fixture(scope="module")
def strict_server(export_dir):
    """One body received at a time, one image in the queue, three connections, bodies within TIMEOUT seconds."""
    yield from serving(
        make_server(
            export_dir,
            port=0,
            max_body=MAX_BODY,
            max_inflight=1,
            max_connections=3,
            timeout=TIMEOUT,
            max_queue_images=1,
            quiet=True,
        )
    )


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return [(rng.rand(30 + 7 * i, 40, 3) * 255).astype(np.uint8) for i in range(4)]


def request(server, method, path, body=None, headers=None):
    """(status, parsed JSON body); every answer must be JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=120)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        assert response.getheader("Content-Type") == "application/json", raw
        return response.status, json.loads(raw)
    finally:
        conn.close()


def b64png(img):
    return {"b64": base64.b64encode(tf.io.encode_png(img).numpy()).decode()}


def direct(export_dir, imgs):
    sig = tf.saved_model.load(export_dir).signatures["serving_default"]
    return sig(images=tf.constant([tf.io.encode_png(i).numpy() for i in imgs]))


@pytest.mark.slow
def test_status_and_metadata(server):
    status, body = request(server, "GET", "/v1/models/alexnet")
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][0]["version"] == "1"
    status, body = request(server, "GET", "/v1/models/alexnet/versions/1/metadata")
    assert status == 200 and body["model_spec"]["name"] == "alexnet"
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert sigs["serve_uint8"]["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert set(sigs["serving_default"]["outputs"]) == {"classes", "class_names", "probabilities"}


@pytest.mark.slow
def test_predict_row_and_column_formats(server, export_dir, images):
    expected = direct(export_dir, images[:2])
    status, body = request(server, "POST", "/v1/models/alexnet:predict", {"instances": [b64png(i) for i in images[:2]]})
    assert status == 200, body
    preds = body["predictions"]
    assert len(preds) == 2
    np.testing.assert_array_equal([p["classes"] for p in preds], expected["classes"].numpy())
    np.testing.assert_allclose([p["probabilities"] for p in preds], expected["probabilities"].numpy(), rtol=1e-5)
    assert [p["class_names"] for p in preds] == [[n.decode() for n in row] for row in expected["class_names"].numpy()]

    # Columnar, named, against an explicit version.
    cols = {"inputs": {"images": [b64png(i) for i in images[:2]]}}
    status, body = request(server, "POST", "/v1/models/alexnet/versions/1:predict", cols)
    assert status == 200, body
    np.testing.assert_array_equal(body["outputs"]["classes"], expected["classes"].numpy())

    # Rows as objects keyed by input name; the uint8 signature with nested lists.
    status, body = request(server, "POST", "/v1/models/alexnet:predict", {"instances": [{"images": b64png(images[0])}]})
    assert status == 200 and body["predictions"][0]["classes"] == expected["classes"].numpy()[0].tolist()
    uint8 = {"signature_name": "serve_uint8", "instances": [images[0].tolist()]}
    status, body = request(server, "POST", "/v1/models/alexnet:predict", uint8)
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"][0]["probabilities"], expected["probabilities"].numpy()[0], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, path, body, code",
    [
        ("POST", "/v1/models/alexnet:predict", b"{not json", 400),
        ("POST", "/v1/models/alexnet:predict", b"\xff\xfe", 400),
        ("POST", "/v1/models/alexnet:predict", {"images": []}, 400),  # neither instances nor inputs
        ("POST", "/v1/models/alexnet:predict", {"instances": [], "inputs": []}, 400),
        ("POST", "/v1/models/alexnet:predict", {"instances": []}, 400),
        ("POST", "/v1/models/alexnet:predict", [1, 2], 400),
        ("POST", "/v1/models/alexnet:predict", {"instances": [{"b64": "not base64!"}]}, 400),
        (
            "POST",
            "/v1/models/alexnet:predict",
            {"instances": [{"b64": base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()}]},
            400,
        ),
        ("POST", "/v1/models/alexnet:predict", {"instances": [{"b64": base64.b64encode(b"hello").decode()}]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"instances": [{"wrong": 1}]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"instances": [17]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "nope", "instances": [{"b64": ""}]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "serve_uint8", "instances": [[[[300, 0, 0]]]]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "serve_uint8", "instances": [[[1, 2]], [[1]]]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "serve_uint8", "instances": [[[[1, 2]]]]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"instances": [{"b64": ""}] * 9}, 413),  # max_batch=8
        ("POST", "/v1/models/alexnet:predict", {"signature_name": ["serve_uint8"], "instances": [[[[1, 2, 3]]]]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": {"a": 1}, "instances": [{"b64": ""}]}, 400),
        pytest.param("POST", "/v1/models/alexnet:predict", b"[" * 100_000, 400, id="an-array-per-byte"),
        # Deeper than the recursion limit (3,000 once TensorFlow is imported), sparse enough to be parsed.
        pytest.param("POST", "/v1/models/alexnet:predict", b"[0,0,0," * 5000, 400, id="json-too-deep"),
        pytest.param(
            "POST", "/v1/models/alexnet:predict", b'{"instances": [' + b"[[]]," * 1000 + b"[]]}", 400, id="dense-json"
        ),
        pytest.param(
            "POST", "/v1/models/alexnet:predict", b'{"instances": [' + b"7" * 5000 + b"]}", 400, id="int-of-5000-digits"
        ),
        ("POST", "/v1/models/alexnet:predict", {"instances": ["\ud800"]}, 400),  # a lone surrogate
        (
            "POST",
            "/v1/models/alexnet:predict",
            {"instances": [{"b64": base64.b64encode(b"\xff\x0a\xfa").decode()}]},
            400,
        ),
        ("POST", "/v1/models/alexnet:predict", {"instances": [[{"b64": ""}]]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"instances": "images"}, 400),
        ("POST", "/v1/models/alexnet:predict", {"inputs": None}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "serve_uint8", "inputs": [[1, 2, 3]]}, 400),
        (
            "POST",
            "/v1/models/alexnet:predict",
            {"signature_name": "serve_uint8", "instances": [[[[10**30, 0, 0]]]]},
            400,
        ),
        (
            "POST",
            "/v1/models/alexnet:predict",
            {"signature_name": "serve_uint8", "instances": [[[[-1, 2**63, 0]]]]},
            400,
        ),
        (
            "POST",
            "/v1/models/alexnet:predict",
            b'{"signature_name": "serve_uint8", "instances": [[[[NaN, 0, 0]]]]}',
            400,
        ),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "serve_uint8", "instances": [[[[1.5, 0, 0]]]]}, 400),
        ("POST", "/v1/models/alexnet:predict", {"signature_name": "serve_uint8", "instances": [[[["1", 0, 0]]]]}, 400),
        ("POST", "/v1/models/other:predict", {"instances": []}, 404),
        ("POST", "/v1/models/alexnet/versions/7:predict", {"instances": []}, 404),
        ("POST", "/v1/models/alexnet:explode", {"instances": []}, 404),
        ("POST", "/v1/models/alexnet:classify", {"instances": []}, 400),  # classify takes "examples"
        ("GET", "/v1/models/alexnet/labels/stable", None, 404),  # TF Serving's version labels: none set
        ("GET", "/v1/models/alexnet/nothing", None, 404),
        ("GET", "/v2/anything", None, 404),
        ("GET", "/v1/models/alexnet:predict", None, 405),
        ("DELETE", "/v1/models/alexnet", None, 405),
    ],
)
def test_bad_requests_get_4xx_json(server, method, path, body, code):
    status, answer = request(server, method, path, body)
    assert status == code, answer
    assert isinstance(answer["error"], str) and answer["error"]
    status, _ = request(server, "GET", "/v1/models/alexnet")  # still serving
    assert status == 200


@pytest.mark.slow
def test_huge_declared_image_is_refused(server):
    # A valid PNG header declaring 100k x 100k pixels, and one of 2k x 2k: refused before decoding.
    for side in (100_000, 2_000):
        status, answer = request(
            server, "POST", "/v1/models/alexnet:predict", {"instances": [b64(png_header(side, side))]}
        )
        assert status == 413 and "pixels" in answer["error"], answer


@pytest.mark.slow
@pytest.mark.parametrize(
    "length, code", [(None, 411), (MAX_BODY + 1, 413), (10**12, 413), ("9" * 5000, 413), ("\u00b2", 411)]
)
def test_body_length_limits(server, length, code):
    # Headers only: the server must answer from Content-Length without waiting for a body.
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    conn.putrequest("POST", "/v1/models/alexnet:predict")
    if length is not None:
        conn.putheader("Content-Length", str(length))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == code and "error" in json.loads(response.read())
    conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("line", [b"FOO /v1/models/alexnet HTTP/1.1", b"GET /v1/models/alexnet HTTP/9.9", b"BROKEN"])
def test_broken_request_lines(server, line):
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=60) as s:
        s.sendall(line + b"\r\nHost: x\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500 and "error" in json.loads(body)


@contextlib.contextmanager
def model_calls(srv, hold_until_waiting: int = 0):
    """The sizes (images) of the model calls `srv` makes meanwhile; with `hold_until_waiting`,
    the first call starts only once that many requests wait in the queue (or after 60 s)."""
    batcher, run, sizes = srv.batcher, srv.batcher.run, []

    def recorded(signature, inputs):
        deadline = time.monotonic() + 60
        while not sizes and batcher.waiting() < hold_until_waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        sizes.append(len(next(iter(inputs.values()))))
        return run(signature, inputs)

    batcher.run = recorded
    try:
        yield sizes
    finally:
        batcher.run = run


@pytest.mark.slow
def test_concurrent_requests_share_model_calls(server, export_dir, images):
    expected = direct(export_dir, images)
    bad = {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}

    def call(i):
        if i % 4 == 3:  # refused before it is queued
            return i, request(server, "POST", "/v1/models/alexnet:predict", bad)
        return i, request(server, "POST", "/v1/models/alexnet:predict", {"instances": [b64png(images[i % 4])]})

    with model_calls(server, hold_until_waiting=7) as sizes, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(24)))
    for i, (status, body) in results:
        if i % 4 == 3:
            assert status == 400
        else:
            assert status == 200, body
            assert body["predictions"][0]["classes"] == expected["classes"].numpy()[i % 4].tolist()
            np.testing.assert_allclose(
                body["predictions"][0]["probabilities"], expected["probabilities"].numpy()[i % 4], rtol=1e-5
            )
    # 8 clients: while the first call is held, the other 7 queue up and then share calls of at
    # most MAX_REQUEST_PIXELS (5,000) pixels: 2 or 3 of these images (1,200 to 2,040 pixels) each.
    assert sum(sizes) == 18 and max(sizes) >= 2, sizes


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_bad_port_is_one_line(port, capsys):
    with pytest.raises(SystemExit) as e:
        argument_parser().parse_args(["exports/x", "--port", port])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --port: must be a port number from 0 to 65535 (0: any free one), got {port}" in err


@pytest.mark.slow
def test_a_run_folder_is_served_as_its_export(trained_workdir, export_dir, images, capsys):
    with export_dir_of(trained_workdir) as path:
        assert "exporting the run" in capsys.readouterr().err
        srv = make_server(path, port=0, quiet=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            status, body = good_request(srv, images)
        finally:
            srv.shutdown()
            srv.server_close()
    assert not os.path.exists(path)  # the temporary export is gone
    assert status == 200, body
    assert body["predictions"][0]["classes"] == direct(export_dir, images[:1])["classes"].numpy()[0].tolist()
    with export_dir_of(export_dir) as path:  # an export is served as it is
        assert path == export_dir


# ---------------------------------------------------------------- TF Serving's other routes
def serialized_examples(imgs):
    from tensorflow.core.example import example_pb2, feature_pb2

    examples = []
    for img in imgs:
        feature = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[tf.io.encode_png(img).numpy()]))
        examples.append(example_pb2.Example(features=feature_pb2.Features(feature={"image/encoded": feature})))
    return [e.SerializeToString() for e in examples]


@pytest.mark.slow
def test_the_export_has_tf_serving_s_classification_signature(export_dir, trained_workdir, images):
    # TF Serving's :classify (its method-name check off, as by default for TF2 models) runs a
    # signature with one string input "inputs", serialized tf.Example, and outputs "classes"
    # (strings) and/or "scores" (floats), (B, N) each: checked on the SignatureDef as written.
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    from alexnet_tf.runs import load_net

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    sig = json_format.MessageToDict(proto.meta_graphs[0].signature_def["classification"])
    assert {
        k: (v["dtype"], [int(d.get("size", 0)) for d in v["tensorShape"]["dim"]]) for k, v in sig["inputs"].items()
    } == {"inputs": ("DT_STRING", [-1])}
    assert {
        k: (v["dtype"], [int(d.get("size", 0)) for d in v["tensorShape"]["dim"]]) for k, v in sig["outputs"].items()
    } == {
        "classes": ("DT_STRING", [-1, 5]),
        "scores": ("DT_FLOAT", [-1, 5]),
    }
    # It answers what serving_default answers for the same images.
    loaded = tf.saved_model.load(export_dir)
    got = loaded.signatures["classification"](inputs=tf.constant(serialized_examples(images)))
    expected = direct(export_dir, images)
    np.testing.assert_array_equal(got["classes"].numpy(), expected["class_names"].numpy())
    np.testing.assert_allclose(got["scores"].numpy(), expected["probabilities"].numpy(), rtol=1e-6)
    # The class names beside it, index by index, are the run's.
    with open(os.path.join(export_dir, "assets.extra", "classes.json"), encoding="utf-8") as f:
        assert json.load(f) == {"class_names": list(load_net(trained_workdir).class_names)}


@pytest.mark.slow
def test_classify_answers_as_tf_serving(server, export_dir, trained_workdir, images):
    from alexnet_tf.runs import load_net

    expected = direct(export_dir, images[:3])
    request_ = {
        "signature_name": "classification",
        "examples": [
            {"image/encoded": b64png(images[0])},
            {"image/encoded": [b64png(images[1])]},
            {"image/encoded": b64png(images[2])},
        ],
    }
    status, body = request(server, "POST", "/v1/models/alexnet/versions/1:classify", request_)
    assert status == 200 and set(body) == {"results"}, body
    for result, names, probs in zip(
        body["results"], expected["class_names"].numpy(), expected["probabilities"].numpy()
    ):
        assert [label for label, _ in result] == [n.decode() for n in names]
        np.testing.assert_allclose([score for _, score in result], probs, rtol=1e-5)
    # As in TF Serving, serving_default unless named: not a classification signature here.
    status, body = request(server, "POST", "/v1/models/alexnet:classify", {"examples": request_["examples"]})
    assert status == 400 and '"signature_name": "classification"' in body["error"], body
    status, body = request(server, "POST", "/v1/models/alexnet:regress", {"examples": request_["examples"]})
    assert status == 400 and "regress" in body["error"], body
    # The class names, and the signatures as TF Serving's metadata lists them.
    status, body = request(server, "GET", "/v1/models/alexnet/classes")
    assert status == 200 and body == {"class_names": list(load_net(trained_workdir).class_names)}
    status, body = request(server, "GET", "/v1/models/alexnet/metadata")
    assert set(body["metadata"]["signature_def"]["signature_def"]["classification"]["outputs"]) == {"classes", "scores"}


@pytest.mark.slow
def test_an_export_without_class_names_gets_404_for_them(export_dir, tmp_path, images):
    import shutil

    older = str(tmp_path / "older" / "1")
    shutil.copytree(export_dir, older)
    shutil.rmtree(os.path.join(older, "assets.extra"))
    for srv in serving(make_server(older, port=0, quiet=True)):
        status, body = request(srv, "GET", "/v1/models/alexnet/classes")
        assert status == 404 and "export it again" in body["error"]
        assert good_request(srv, images)[0] == 200


@pytest.mark.slow
def test_a_registered_route_is_served(server):
    from alexnet_tf.serve import ROUTES, route

    @route("POST", ":echo", "the request's signature name")
    async def echo(call, request):
        return {"model": call.servable.model_name, "signature_name": request.get("signature_name")}

    try:
        status, body = request(server, "POST", "/v1/models/alexnet:echo", {"signature_name": "x"})
        assert status == 200 and body == {"model": "alexnet", "signature_name": "x"}
        status, body = request(server, "GET", "/v1/models/alexnet:echo")
        assert status == 405, body
        status, body = request(server, "POST", "/v1/models/alexnet:echo", b"{nope")  # parsed by the server first
        assert status == 400, body
    finally:
        del ROUTES[("POST", ":echo")]


def read_answer(reader) -> tuple[int, dict]:
    """(status, JSON body) of the next answer on a connection's buffered reader."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, json.loads(reader.read(length))


@pytest.mark.slow
def test_pipelined_requests_and_expect_100_continue(server, images):
    body = json.dumps({"instances": [b64png(images[0])]}).encode()
    post = b"POST /v1/models/alexnet:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=60) as sock:
        reader = sock.makefile("rb")
        # Three requests in one write: three answers, in order, on the same connection.
        sock.sendall(b"GET /v1/models/alexnet HTTP/1.1\r\n\r\n" + post + b"\r\n" + body + b"GET /nope HTTP/1.1\r\n\r\n")
        answers = [read_answer(reader) for _ in range(3)]
        assert [status for status, _ in answers] == [200, 200, 404]
        assert "model_version_status" in answers[0][1] and "predictions" in answers[1][1]
        # The body only once "100 Continue" came.
        sock.sendall(post + b"Expect: 100-continue\r\n\r\n")
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n" and reader.readline() == b"\r\n"
        sock.sendall(body)
        status, answer = read_answer(reader)
        assert status == 200 and "predictions" in answer


@pytest.mark.slow
def test_asyncio_s_own_loop_serves_alike(export_dir, images, monkeypatch):
    import asyncio

    from alexnet_tf.serve import server as server_module

    monkeypatch.setattr(server_module, "new_event_loop", asyncio.new_event_loop)  # as without uvloop
    srv = make_server(export_dir, port=0, quiet=True, max_body=MAX_BODY)
    assert type(srv.loop).__module__.startswith("asyncio")
    for _ in serving(srv):
        assert good_request(srv, images)[0] == 200
        assert request(srv, "POST", "/v1/models/alexnet:predict", b"[" * 1000)[0] == 400
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
        conn.putrequest("POST", "/v1/models/alexnet:predict")
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and response.getheader("Connection") == "close"
        conn.close()


# ---------------------------------------------------------------- hostile input
def encoded(img, fmt, **options):
    from PIL import Image

    frames = [Image.fromarray(i) for i in (img if isinstance(img, list) else [img])]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=len(frames) > 1, append_images=frames[1:], **options)
    return out.getvalue()


def riff_webp(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8x(width, height):
    return riff_webp(b"VP8X", b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little"))


def webp_vp8l(width, height):
    return riff_webp(b"VP8L", b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little") + b"\0" * 8)


def webp_animated(width, height):
    """An animated WebP: a width x height canvas, one 1 x 1 frame (libwebp allocates the canvas)."""
    vp8l = encoded(np.zeros((1, 1, 3), np.uint8), "WEBP", lossless=True)[12:]  # its VP8L chunk
    canvas = b"\x02\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    frame = b"\0" * 12 + b"\x64\0\0\0" + vp8l  # at (0, 0), 1 x 1, 100 ms
    body = b"".join(c + struct.pack("<I", len(p)) + p for c, p in ((b"VP8X", canvas), (b"ANIM", b"\0" * 6)))
    body = b"WEBP" + body + b"ANMF" + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif(screen, frames):
    """A GIF of the given logical screen (width, height) and frames (left, top, width, height)."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    for frame in frames:
        out += b"\x2c" + struct.pack("<HHHHB", *frame, 0) + b"\x02" + b"\x02\x44\x01" + b"\x00"
    return out + b"\x3b"


def bmp_header(width, height, header_size=40):
    """A BMP's headers (file, then BITMAPINFOHEADER: width, height as int32, 1 plane, 24 bits)."""
    return b"BM" + b"\0" * 12 + struct.pack("<IiiHH", header_size, width, height, 1, 24) + b"\0" * 24


def png_header(width, height):
    """A PNG up to its first IDAT chunk, as Pillow and libpng read it (chunks with their CRC)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", b"")
    )


def test_image_pixels_reads_every_format_tensorflow_decodes(images):
    img = images[0]  # 30 x 40
    for data in (
        tf.io.encode_png(img).numpy(),
        tf.io.encode_jpeg(img).numpy(),
        tf.io.encode_jpeg(img, progressive=True).numpy(),
        encoded(img, "BMP"),
        encoded(img, "GIF"),
        encoded(img, "WEBP", quality=80),  # VP8
        encoded(img, "WEBP", lossless=True),  # VP8L
    ):
        assert image_pixels(data) == 1200 == np.prod(tf.io.decode_image(data, expand_animations=False).shape[:2])
    assert image_pixels(encoded([img, img[::-1], img // 2], "GIF")) == 3 * 1200  # giflib decodes every frame
    assert image_pixels(webp_animated(3000, 2000)) == 6_000_000  # the canvas, not the frame
    assert image_pixels(png_header(5000, 4000)) == 20_000_000
    # Frames larger than the logical screen, each small: decoded on a 40000 x 40000 canvas.
    assert image_pixels(gif((1, 1), [(0, 0, 40_000, 1), (0, 0, 1, 40_000)])) == 2 * 40_000**2
    assert image_pixels(gif((1, 1), [(65_000, 65_000, 1, 1)])) == 65_001**2
    assert image_pixels(bmp_header(100, -200)) == 20_000  # top-down
    # Beyond Pillow's own limit, 2 x PIL.Image.MAX_IMAGE_PIXELS: refused as too large.
    for data in (webp_vp8x(20_000, 20_000), webp_vp8l(16_384, 16_384), png_header(100_000, 100_000)):
        with pytest.raises(ImageTooLarge):
            image_pixels(data)
    with pytest.raises(ImageTooLarge):
        image_pixels(bmp_header(60_000, -(2**31)))


def test_a_jpeg_with_two_frame_headers_is_never_decoded(images):
    # Pillow reads the last frame header (SOF) before the scan; libjpeg refuses a second one
    # before it allocates anything, so a large first one cannot pass under a small last one.
    jpeg = tf.io.encode_jpeg(images[0]).numpy()
    i = jpeg.index(b"\xff\xc0")
    sof = jpeg[i : i + 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")]
    large = sof[:5] + (20_000).to_bytes(2, "big") * 2 + sof[9:]
    two = jpeg[:i] + large + jpeg[i:]
    assert image_pixels(two) == 1200
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(two)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"\xff\xd8\xff\xe0" + b"\0" * 50,  # a JPEG whose header cannot be read
        b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIDAT" + b"\0" * 20,  # no IHDR first
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x2c\x00\x00",  # truncated frame header
        gif((1, 1), [(0, 0, 1, 1)])[:-3],  # truncated image data
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x99",  # unknown block
        bmp_header(-5, 5),
        bmp_header(5, 0),
        bmp_header(7, 9, header_size=12),  # OS/2 1.x: 16-bit sizes where TensorFlow reads int32
        png_header(0, 5),
        png_header(5, 5)[:33],  # IHDR only, cut before its CRC
        riff_webp(b"ALPH", b"\0" * 10),  # libwebp would read it as a raw bitstream
        riff_webp(b"VP8 ", b"\0" * 10),  # no start code
        riff_webp(b"VP8X", b"\0" * 4),
        webp_vp8x(100, 100),  # a canvas without a frame: libwebp refuses it
        b"\xff\x0a" + b"\0" * 20,  # JPEG XL: decode_image reads it, its size is not read here
    ],
)
def test_image_pixels_refuses_what_it_cannot_measure(data):
    with pytest.raises(ValueError):
        image_pixels(data)


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


@pytest.mark.slow
def test_webp_is_measured_before_decoding(server, images):
    pytest.importorskip("PIL")
    for webp in (webp_vp8x(20_000, 20_000), webp_vp8l(16_384, 16_384), webp_animated(100, 100)):
        status, answer = request(server, "POST", "/v1/models/alexnet:predict", {"instances": [b64(webp)]})
        assert status == 413 and "pixels" in answer["error"], answer
    assert "10000 pixels" in answer["error"]  # the canvas, not its 1 x 1 frame
    status, answer = request(
        server, "POST", "/v1/models/alexnet:predict", {"instances": [b64(encoded(images[0], "WEBP", lossless=True))]}
    )
    assert status == 200, answer


@pytest.mark.slow
def test_request_pixels_are_capped_in_all(server, images):
    # Each image is under MAX_PIXELS (3,000); together they are over MAX_REQUEST_PIXELS (5,000).
    assert all(i.shape[0] * i.shape[1] <= MAX_PIXELS for i in images)
    pngs = [b64png(images[3])] * 3  # 3 x 2,040 pixels
    status, answer = request(server, "POST", "/v1/models/alexnet:predict", {"instances": pngs})
    assert status == 413 and "per request" in answer["error"], answer
    uint8 = {"signature_name": "serve_uint8", "instances": [images[3].tolist()] * 3}
    status, answer = request(server, "POST", "/v1/models/alexnet:predict", uint8)
    assert status == 413 and "per request" in answer["error"], answer
    status, answer = request(server, "POST", "/v1/models/alexnet:predict", {"instances": pngs[:2]})
    assert status == 200, answer


def raw_answer(sock) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of the one answer on `sock`, read to its end."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def stalled_post(srv, sent: bytes = b'{"instances": [', length: int = 1000) -> socket.socket:
    """A connection that sent the headers of a predict request and part of its body."""
    sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=60)
    sock.sendall(
        b"POST /v1/models/alexnet:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (length, sent)
    )
    return sock


def good_request(srv, images):
    return request(srv, "POST", "/v1/models/alexnet:predict", {"instances": [b64png(images[0])]})


@pytest.mark.slow
@pytest.mark.parametrize("trickle", [False, True])
def test_stalled_body_gets_408(strict_server, images, trickle):
    start = time.monotonic()
    with stalled_post(strict_server) as sock:
        if trickle:  # a byte now and then keeps each read alive, not the request
            sock.settimeout(0.3)
            for _ in range(40):
                try:
                    sock.sendall(b" ")
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except TimeoutError:
                    pass
            sock.settimeout(60)
        status, headers, answer = raw_answer(sock)
    assert status == 408 and headers.get("Connection") == "close" and answer["error"], (status, headers, answer)
    assert TIMEOUT <= time.monotonic() - start < TIMEOUT + 8
    assert good_request(strict_server, images)[0] == 200


@pytest.mark.slow
def test_a_request_sent_whole_then_half_closed_is_answered_in_its_turn(strict_server, images):
    # The one turn to send a body is held by a stalled body until its 408; meanwhile another
    # client sends a whole request and shuts its side: it waits for its turn, then gets its answer.
    body = json.dumps({"instances": [b64png(images[0])]}).encode()
    with stalled_post(strict_server) as stalled:
        with socket.create_connection(("127.0.0.1", strict_server.server_address[1]), timeout=60) as sock:
            sock.sendall(
                b"POST /v1/models/alexnet:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            sock.shutdown(socket.SHUT_WR)
            status, headers, answer = raw_answer(sock)
        assert status == 200 and headers.get("Connection") == "close" and "predictions" in answer, answer
        assert raw_answer(stalled)[0] == 408


@pytest.mark.slow
def test_beyond_the_queue_gets_503_and_service_resumes(strict_server, images):
    # The queue holds one image: while a request's model call is held, the next is refused.
    release, started = threading.Event(), threading.Event()
    batcher, run = strict_server.batcher, strict_server.batcher.run

    def held(signature, inputs):
        started.set()
        release.wait(60)
        return run(signature, inputs)

    batcher.run = held
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(good_request, strict_server, images)
            assert started.wait(60)
            # A body as large as allowed: refused before it is read, the answer still arrives.
            conn = http.client.HTTPConnection("127.0.0.1", strict_server.server_address[1], timeout=60)
            conn.request("POST", "/v1/models/alexnet:predict", body=b" " * (MAX_BODY - 2) + b"{}")
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            assert response.status == 503 and response.getheader("Retry-After") == "1" and answer["error"], answer
            assert not first.done()
            release.set()
            assert first.result()[0] == 200
    finally:
        batcher.run = run
        release.set()
    assert good_request(strict_server, images)[0] == 200


@pytest.mark.slow
def test_headers_are_capped(server):
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=60) as sock:
        sock.sendall(b"GET /v1/models/alexnet HTTP/1.1\r\n" + b"X-Pad: %s\r\n" % (b"a" * 8000) * 20 + b"\r\n")
        status, _, answer = raw_answer(sock)
    assert status == 431 and answer["error"]
    assert request(server, "GET", "/v1/models/alexnet")[0] == 200


@pytest.mark.slow
def test_connections_beyond_the_limit_get_503(strict_server, images):
    port = strict_server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(3)]  # max_connections=3
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as extra:
            status, headers, answer = raw_answer(extra)
        assert status == 503 and headers["Retry-After"] == "1" and answer["error"]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while (status := good_request(strict_server, images)[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.1)  # the closed connections' threads are ending
    assert status == 200


# docs/serving.md: what to plan for the quickstart net (1.70-1.95 GB measured under 32 clients for 30 s)
PEAK_RSS_MB = 2000


@pytest.mark.slow
def test_peak_memory_under_load(export_dir):
    # A short `python -m alexnet_tf.bench serve` (docs/serving.md): 8 clients, 5 s, the default limits.
    from alexnet_tf.bench.serve import serve_load

    result = serve_load(export_dir, clients=8, seconds=5)
    assert result["server_alive"]
    answers = {status for by_status in result["answers"].values() for status in by_status}
    assert answers <= {"200", "413", "503"}, result  # no 500, no connection reset
    assert "200" in answers, result
    assert result["peak_rss_mb"] < PEAK_RSS_MB, result
