"""Serving tier: a real HTTP client against a real server on 127.0.0.1 (ephemeral port)."""

import base64
import http.client
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.serve import image_pixels, make_server

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
    """One predict request at a time, three connections, bodies within TIMEOUT seconds."""
    yield from serving(
        make_server(
            export_dir, port=0, max_body=MAX_BODY, max_inflight=1, max_connections=3, timeout=TIMEOUT, quiet=True
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


@pytest.mark.slow
def test_huge_declared_image_is_refused(server):
    # A valid PNG header declaring 100k x 100k pixels: refused before decoding.
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    status, answer = request(
        server, "POST", "/v1/models/alexnet:predict", {"instances": [{"b64": base64.b64encode(header).decode()}]}
    )
    assert status == 413 and "pixels" in answer["error"]


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def gif(screen, frames):
    """A GIF of the given logical screen (width, height) and frames (left, top, width, height)."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    for frame in frames:
        out += b"\x2c" + struct.pack("<HHHHB", *frame, 0) + b"\x02" + b"\x02\x44\x01" + b"\x00"
    return out + b"\x3b"


def bmp_header(width, height):
    return b"BM" + b"\0" * 16 + struct.pack("<ii", width, height) + b"\0" * 28


def test_image_pixels_reads_every_format_tensorflow_decodes(images):
    pytest.importorskip("PIL")
    img = images[0]  # 30 x 40
    assert image_pixels(tf.io.encode_png(img).numpy()) == 1200
    assert image_pixels(tf.io.encode_jpeg(img).numpy()) == 1200
    assert image_pixels(encoded(img, "BMP")) == 1200
    assert image_pixels(encoded(img, "GIF")) == 1200
    assert image_pixels(encoded([img, img[::-1], img // 2], "GIF")) == 3 * 1200  # giflib decodes every frame
    assert image_pixels(encoded(img, "WEBP", quality=80)) == 1200  # VP8
    assert image_pixels(encoded(img, "WEBP", lossless=True)) == 1200  # VP8L
    assert image_pixels(webp_vp8x(20_000, 20_000)) == 400_000_000
    assert image_pixels(webp_vp8l(16_384, 16_384)) == 16_384**2
    # Frames larger than the logical screen, each small: decoded on a 40000 x 40000 canvas.
    assert image_pixels(gif((1, 1), [(0, 0, 40_000, 1), (0, 0, 1, 40_000)])) == 2 * 40_000**2
    assert image_pixels(gif((1, 1), [(65_000, 65_000, 1, 1)])) == 65_001**2
    assert image_pixels(bmp_header(100, -200)) == 20_000  # top-down
    assert image_pixels(bmp_header(60_000, -(2**31))) == 60_000 * 2**31


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
        riff_webp(b"ALPH", b"\0" * 10),  # libwebp would read it as a raw bitstream
        riff_webp(b"VP8 ", b"\0" * 10),  # no start code
        riff_webp(b"VP8X", b"\0" * 4),
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
    for webp in (webp_vp8x(20_000, 20_000), webp_vp8l(16_384, 16_384)):
        status, answer = request(server, "POST", "/v1/models/alexnet:predict", {"instances": [b64(webp)]})
        assert status == 413 and "pixels" in answer["error"], answer
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
def test_overload_gets_503_and_service_resumes(strict_server, images):
    with stalled_post(strict_server) as holder:  # takes the one slot until TIMEOUT
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            # A body as large as allowed: refused before it is read, the answer still arrives.
            conn = http.client.HTTPConnection("127.0.0.1", strict_server.server_address[1], timeout=60)
            start = time.monotonic()
            conn.request("POST", "/v1/models/alexnet:predict", body=b" " * (MAX_BODY - 2) + b"{}")
            response = conn.getresponse()
            answer, elapsed = json.loads(response.read()), time.monotonic() - start
            conn.close()
            if response.status == 503:
                break
        assert response.status == 503, answer
        assert response.getheader("Retry-After") == "1" and answer["error"]
        assert elapsed < TIMEOUT  # answered while the slot was still held
        assert raw_answer(holder)[0] == 408
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


PEAK_RSS_MB = 1800  # docs/serving.md: the bound for the quickstart network under 32 clients


@pytest.mark.slow
def test_peak_memory_under_load(export_dir):
    # A short `python -m alexnet_tf.bench serve` (docs/serving.md): 8 clients, 5 s, the default limits.
    from alexnet_tf.bench import serve_load

    result = serve_load(export_dir, clients=8, seconds=5)
    assert result["server_alive"]
    answers = {status for by_status in result["answers"].values() for status in by_status}
    assert answers <= {"200", "413", "503"}, result  # no 500, no connection reset
    assert "200" in answers, result
    assert result["peak_rss_mb"] < PEAK_RSS_MB, result
