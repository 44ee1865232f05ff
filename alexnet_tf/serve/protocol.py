"""HTTP/1.1 as the server reads and writes it: a request's head, its body's length, an answer's bytes.

The head is read as `http.server` reads it (the request line, then `Name: value` lines, the
first of repeated names counting, ISO-8859-1), with its limits: a request line of at most
64 KiB (414), headers of at most 64 KiB and 100 lines (431). HTTP/1.1 connections stay open
unless `Connection: close`; HTTP/1.0 ones only with `Connection: keep-alive`.
"""

from __future__ import annotations

import dataclasses
import http

from alexnet_tf.serve.inputs import RequestError

MAX_REQUEST_LINE = 65536  # bytes, as http.server
MAX_HEADER_BYTES = 64 * 1024  # of all header lines of a request
MAX_HEADERS = 100  # lines, as http.client
RETRY_AFTER_SECONDS = 1
PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}


@dataclasses.dataclass
class Head:
    """A request's head: `close` (the connection ends after the answer), `declared_body`
    (it announces a body), `expects_continue` (it waits for "100 Continue" to send it)."""

    requestline: str
    method: str
    target: str
    headers: dict  # {lower-case name: value}
    close: bool
    declared_body: bool
    expects_continue: bool


def head_end(buf: bytearray, n: int) -> int:
    """Where the head in `buf[:n]` ends (after its blank line), -1 while it has not; 414 or 431
    once its request line or headers are longer than allowed."""
    crlf = buf.find(b"\n\r\n", 0, n)  # "\n\n" (bare-LF clients) only before it
    lf = buf.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else n)
    ends = [i + k for i, k in ((crlf, 3), (lf, 2)) if i >= 0]
    end = min(ends) if ends else n
    line = buf.find(b"\n", 0, end)
    if (line < 0 and end > MAX_REQUEST_LINE) or line > MAX_REQUEST_LINE:
        raise RequestError(414, f"request line of more than {MAX_REQUEST_LINE} bytes")
    if line >= 0 and end - line - 1 > MAX_HEADER_BYTES:
        raise RequestError(431, f"headers of more than {MAX_HEADER_BYTES} bytes")
    return end if ends else -1


def parse_head(data: bytes) -> Head:
    """The Head of `data` (up to and with its blank line); 400 or 431 for a malformed one."""
    lines = data.decode("latin-1").split("\n")
    requestline = lines[0].rstrip("\r")
    words = requestline.split()
    if len(words) != 3:
        raise RequestError(400, f"bad request syntax ({requestline[:100]!r})")
    method, target, version = words
    number = version[5:].split(".") if version.startswith("HTTP/") else []
    if len(number) != 2 or not all(p.isdigit() and len(p) <= 10 for p in number):
        raise RequestError(400, f"bad request version ({version[:20]!r})")
    version = int(number[0]), int(number[1])
    if version >= (2, 0):
        raise RequestError(400, f"HTTP version {version[0]}.{version[1]} is not supported; use HTTP/1.1")
    if len(lines) - 3 > MAX_HEADERS:
        raise RequestError(431, f"more than {MAX_HEADERS} headers")
    headers = {}
    for raw in lines[1:-2]:
        name, colon, value = raw.rstrip("\r").partition(":")
        if not colon or not name or name != name.strip():
            raise RequestError(400, f"malformed header line {raw[:100]!r}")
        headers.setdefault(name.lower(), value.strip())
    keep = headers.get("connection", "").lower()
    return Head(
        requestline,
        method,
        target,
        headers,
        close=keep == "close" or (keep != "keep-alive" and version < (1, 1)),
        declared_body="transfer-encoding" in headers or headers.get("content-length", "0") != "0",
        expects_continue=version >= (1, 1) and headers.get("expect", "").lower() == "100-continue",
    )


def content_length(headers: dict, max_body: int) -> int:
    """The body's length from Content-Length: 411 without one (or chunked), 413 beyond `max_body`."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise RequestError(411, "chunked bodies are not accepted; send Content-Length")
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()):
        raise RequestError(411, "Content-Length is required")
    if len(length) > 15 or int(length) > max_body:
        raise RequestError(413, f"body of {length:.20} bytes exceeds the limit of {max_body}")
    return int(length)


def answer(status: int, data: bytes, date: bytes, close: bool) -> bytes:
    """The bytes of a JSON answer (`Retry-After` with a 503), in one piece: one write."""
    head = b"HTTP/1.1 %d %s\r\nServer: alexnet_tf-serve\r\nDate: %s\r\nContent-Type: application/json\r\n" % (
        status,
        PHRASES[status],
        date,
    )
    head += b"Content-Length: %d\r\n" % len(data)
    if status == 503:
        head += b"Retry-After: %d\r\n" % RETRY_AFTER_SECONDS
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + data
