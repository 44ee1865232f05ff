"""The HTTP side: routes, the body and header limits, answers as JSON; `make_server` puts the parts together.

A predict request is read and parsed on its connection's thread (at most `max_inflight`
bodies at once, the others waiting up to `timeout` for their turn, and one JSON parse at a
time), then waits in the batcher's queue for its share of a model call.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import socket
import threading
import time

from alexnet_tf.serve.batching import Batcher, QueueFull
from alexnet_tf.serve.inputs import InputLimits, RequestError, answer, make_job, parse_json
from alexnet_tf.serve.model import Servable

MAX_HEADER_BYTES = 64 * 1024  # of all header lines of a request (the standard library allows 100 x 64 KiB)
RETRY_AFTER_SECONDS = 1

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?/?$")


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
    """One connection; every answer is JSON, every client mistake a 4xx."""

    protocol_version = "HTTP/1.1"
    server_version = "alexnet_tf-serve"
    # Headers and body leave in two writes: with Nagle's algorithm the second waits for the
    # client's delayed ACK of the first, 40 ms on Linux, on every keep-alive answer.
    disable_nagle_algorithm = True

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

    def _send(self, status: int, body: dict, unread: bool = False) -> None:
        """Answers `body` as JSON; `unread`: the client may still be sending (not only a body)."""
        data = json.dumps(body).encode()
        body_left = unread or (self._declared_body and not self._body_read)
        if body_left:
            self.close_connection = True  # what is unread must not be taken for a next request
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", str(RETRY_AFTER_SECONDS))
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
        servable = self.server.servable
        m = ROUTE.match(self.path.split("?", 1)[0])
        if not m:
            raise RequestError(404, f"no route {self.path}; use /v1/models/{servable.model_name}[:predict|/metadata]")
        servable.check_model(m["name"], m["version"])
        return m["rest"] or ""

    def do_GET(self):
        def fn():
            rest = self._route()
            if rest == "":
                return self.server.servable.status()
            if rest == "/metadata":
                return self.server.servable.metadata()
            raise RequestError(405, f"{rest} needs POST")

        self._send(*self._answer(fn))

    def do_POST(self):
        self._send(*self._answer(self._predict))

    def _predict(self) -> dict:
        server = self.server
        rest = self._route()
        if rest != ":predict":
            raise RequestError(
                404 if rest.startswith(":") else 405, f"only :predict is served, not {rest or 'GET routes'}"
            )
        length = self._content_length()
        if server.batcher.full():
            raise RequestError(503, f"busy: the queue is full; retry in {RETRY_AFTER_SECONDS} s")
        if not server.receiving.acquire(timeout=server.request_timeout):
            raise RequestError(
                503, f"busy: {server.max_inflight} requests being received for {server.request_timeout:g} s"
            )
        try:
            body = self._read_body(length)
            with server.parsing:  # one parse at a time: it holds the interpreter lock anyway, and memory
                request = parse_json(body)
                del body
                job = make_job(request, server.servable.inputs, server.input_limits)
                del request  # only the job's inputs stay while it waits
        finally:
            server.receiving.release()
        try:
            outputs = server.batcher.submit(job)
        except QueueFull as e:
            raise RequestError(503, f"{e}; retry in {RETRY_AFTER_SECONDS} s") from None
        return answer(job, outputs)

    def _read_body(self, length: int) -> bytearray:
        """The body, read within --timeout seconds (408 otherwise)."""
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
    `max_inflight` bodies being received at once; the Handler enforces the other limits."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple,
        servable: Servable,
        batcher: Batcher,
        input_limits: InputLimits,
        *,
        max_body: int,
        max_inflight: int,
        max_connections: int,
        timeout: float,
        quiet: bool = False,
    ):
        # Connections wait to be accepted while a JSON parse holds the interpreter lock; the
        # default backlog of 5 then drops them, and their clients see a reset.
        self.request_queue_size = max_connections
        self.servable, self.batcher, self.input_limits = servable, batcher, input_limits
        self.max_body, self.max_inflight, self.max_connections = max_body, max_inflight, max_connections
        self.request_timeout, self.quiet = timeout, quiet
        self.receiving = threading.BoundedSemaphore(max_inflight)
        self.parsing = threading.Lock()
        self._connections = threading.BoundedSemaphore(max_connections)
        super().__init__(address, Handler)  # binds: on failure, server_close() and the error

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

    def server_close(self):
        super().server_close()
        self.batcher.close()
