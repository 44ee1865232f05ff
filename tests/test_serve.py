"""Serving tier: a real HTTP client against a real server on 127.0.0.1 (ephemeral port)."""

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.serve import make_server

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def server(export_dir):
    srv = make_server(export_dir, port=0, model_name="alexnet", max_body=MAX_BODY, max_batch=8, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


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
        ("POST", "/v1/models/other:predict", {"instances": []}, 404),
        ("POST", "/v1/models/alexnet/versions/7:predict", {"instances": []}, 404),
        ("POST", "/v1/models/alexnet:classify", {"instances": []}, 404),
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


def test_huge_declared_image_is_refused(server):
    # A valid PNG header declaring 100k x 100k pixels: refused before decoding.
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    status, answer = request(
        server, "POST", "/v1/models/alexnet:predict", {"instances": [{"b64": base64.b64encode(header).decode()}]}
    )
    assert status == 413 and "pixels" in answer["error"]


@pytest.mark.parametrize("length, code", [(None, 411), (MAX_BODY + 1, 413), (10**12, 413)])
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


def test_concurrent_requests(server, export_dir, images):
    expected = direct(export_dir, images)
    bad = {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}

    def call(i):
        if i % 4 == 3:
            return i, request(server, "POST", "/v1/models/alexnet:predict", bad)
        return i, request(server, "POST", "/v1/models/alexnet:predict", {"instances": [b64png(images[i % 4])]})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(24)))
    for i, (status, body) in results:
        if i % 4 == 3:
            assert status == 400
        else:
            assert status == 200, body
            assert body["predictions"][0]["classes"] == expected["classes"].numpy()[i % 4].tolist()


def test_command_line(export_dir):
    # `python -m alexnet_tf.serve` on a TF Serving base path (numbered version folders).
    base = os.path.dirname(export_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "alexnet_tf.serve", base, "--port", "0", "--model-name", "net", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/v1/models/net", line)
        assert m, line
        conn = http.client.HTTPConnection("127.0.0.1", int(m[1]), timeout=60)
        conn.request("GET", "/v1/models/net/versions/1")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
