"""The HTTP side: every connection on one event loop (asyncio, uvloop where installed), and admission control.

The loop's thread accepts connections, reads request heads and bodies, parses the JSON
and answers; the model calls run in the batcher's threads, which hand the outputs back
to the loop (`routes` has what each URL does). A POST request passes, in order:

- the connection limit: beyond `max_connections` open ones a new connection gets 503 at
  once, its request unread;
- the head: a request line of at most 64 KiB (414), headers of at most 64 KiB and 100
  lines (431); a connection silent for `timeout` between requests is closed;
- Content-Length: required (411, also for chunked bodies), at most `max_body` (413);
- the queue: 503 while it is at one of its bounds;
- its turn: at most `max_inflight` bodies are received and parsed at once, the others
  wait up to `timeout` (503), their bytes left in the kernel;
- the body: within `timeout` of its turn (408); parsed at once (one parse at a time, as
  the loop does one thing at a time), then its job queued for a model call.

Every answer is JSON. A refused request whose body was not read is answered with
`Connection: close`; what the client still sends is read and dropped (at most `max_body`
bytes for `timeout` seconds), so that a client that sends all before it reads gets the
answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import socket
import sys
import threading
import time
from collections import deque

from alexnet_tf.serve.batching import Batcher, QueueFull
from alexnet_tf.serve.inputs import InputLimits, RequestError, dumps, parse_json
from alexnet_tf.serve.model import Servable
from alexnet_tf.serve.options import ServeOptions
from alexnet_tf.serve.routes import Call, resolve

MAX_REQUEST_LINE = 65536  # bytes, as http.server
MAX_HEADER_BYTES = 64 * 1024  # of all header lines of a request
MAX_HEADERS = 100  # lines, as http.client
RETRY_AFTER_SECONDS = 1
HEAD_CHUNK = 65536  # bytes read at a time before a request's body (an ordinary request in one read)
HEAD, WAITING, BODY, BUSY, DISCARD, CLOSED = range(6)  # what a connection is doing
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Retry-After: %d\r\nConnection: close\r\n\r\n%s"
)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop (libuv: fewer system calls and Python frames per read and write) where it
    is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Server:
    """`servable` served over HTTP with the bounds of `options`; model calls go through `batcher`.
    Bound at once (port 0: a free one, `server_address`); `serve_forever()` in one thread,
    `shutdown()` from another, then `server_close()`."""

    def __init__(self, servable: Servable, batcher: Batcher, options: ServeOptions):
        self.servable, self.batcher, self.options = servable, batcher, options
        self.input_limits = InputLimits(options.max_batch, options.max_pixels, options.max_request_pixels)
        self.socket = socket.create_server((options.host, options.port), backlog=options.max_connections)
        self.server_address = self.socket.getsockname()
        self.loop = new_event_loop()
        self.connections: set[Connection] = set()
        self.scratch = memoryview(bytearray(1 << 16))  # where dropped bytes are read to
        self._free_turns, self._waiting = options.max_inflight, deque()
        self._listener, self._stopped, self._date = None, threading.Event(), (0, b"")
        self._sweep_every = min(1.0, options.timeout / 4)  # how late a timeout may be noticed

    def serve_forever(self) -> None:
        """Serves until `shutdown()` (or Ctrl-C, in the main thread)."""
        self._stopped.clear()
        try:
            if self._listener is None:
                self._listener = self.loop.run_until_complete(
                    self.loop.create_server(
                        lambda: Connection(self), sock=self.socket, backlog=self.options.max_connections
                    )
                )
                self.loop.call_later(self._sweep_every, self._sweep)
            self.loop.run_forever()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stops `serve_forever` (from another thread) and waits for it to return."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.wait()

    def server_close(self) -> None:
        """Closes the connections, the socket, the loop and the batcher."""
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if not self.loop.is_closed():
            self.loop.run_until_complete(asyncio.sleep(0))  # their connection_lost
            self.loop.close()
        self.socket.close()
        self.batcher.close()

    def _sweep(self) -> None:
        """Ends what has waited for `timeout`: one timer for all connections, not one per request."""
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.deadline = float("inf")
            conn.expire()
        self.loop.call_later(self._sweep_every, self._sweep)

    # ---- what connections share: turns to receive a body, the Date header
    def take_turn(self, conn: Connection) -> bool:
        """True if `conn` may receive its body now; else it waits in line (`turn_came`)."""
        if self._free_turns:
            self._free_turns -= 1
            return True
        self._waiting.append(conn)
        return False

    def give_turn(self) -> None:
        while self._waiting:
            conn = self._waiting.popleft()
            if conn.state == WAITING:
                self.loop.call_soon(conn.turn_came)
                return
        self._free_turns += 1

    def leave_line(self, conn: Connection) -> None:
        try:
            self._waiting.remove(conn)
        except ValueError:
            pass

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date[0]:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode())
        return self._date[1]


class Connection(asyncio.BufferedProtocol):
    """One client connection: its requests one at a time, in the order they came."""

    def __init__(self, server: Server):
        self.server, self.loop = server, server.loop
        self.transport, self.state, self.write_timer = None, HEAD, None
        self.deadline, self.expire = float("inf"), None  # loop time when `expire()` is due (Server._sweep)
        self.buf, self.filled, self.rest = bytearray(HEAD_CHUNK), 0, 0  # head bytes; rest: where the head ended
        self.turn = self.close = self.paused = self.paused_writing = self.next_waiting = False
        self.coro = None  # the route's coroutine, while its model call runs
        self.requestline, self.declared_body, self.body_read, self.expects_continue = "", False, False, False

    # ---- asyncio's side
    def connection_made(self, transport) -> None:
        self.transport, srv = transport, self.server
        if len(srv.connections) >= srv.options.max_connections:
            error = dumps({"error": f"busy: {srv.options.max_connections} connections open; retry later"})
            transport.write(BUSY_ANSWER % (len(error), RETRY_AFTER_SECONDS, error))
            self.state = CLOSED
            transport.close()
            return
        srv.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per answer anyway
        self._await_head()

    def get_buffer(self, sizehint: int):
        if self.state == BODY:
            return self.view[self.got :]
        if self.state == DISCARD:
            return self.server.scratch
        if self.filled == len(self.buf):  # a new, larger buffer: the old one may still be exported
            grown = bytearray(2 * len(self.buf))
            grown[: self.filled] = self.buf
            self.buf = grown
        return memoryview(self.buf)[self.filled :]

    def buffer_updated(self, n: int) -> None:
        if self.state == BODY:
            self.got += n
            if self.got == self.length:
                self._body_done()
        elif self.state == DISCARD:
            self.dropped += n
            if self.dropped >= self.server.options.max_body:
                self.transport.close()
        elif self.state == HEAD:
            self.filled += n
            self.deadline = self.loop.time() + self.server.options.timeout  # silent for that long: closed
            self._read_head()
        else:  # the next request, or the body before its turn: kept, and no more read until then
            self.filled += n
            self._pause()

    def eof_received(self) -> bool:
        if self.state == BODY:
            self.close = True
            self._refuse(400, f"the body ended after {self.got} of {self.length} bytes")
        elif self.state == BUSY:  # the client only stopped sending: answer, then close
            self.close = True
            return True
        return False  # asyncio closes the transport once the answer is written

    def connection_lost(self, exc) -> None:
        if self.state == WAITING:
            self.server.leave_line(self)
        self.state = CLOSED
        self._release_turn()
        if self.write_timer is not None:
            self.write_timer.cancel()
        self.server.connections.discard(self)
        self.buf = self.body = self.view = None

    def pause_writing(self) -> None:  # the client does not read its answers: at most `timeout` more
        self.paused_writing = True
        self.write_timer = self.loop.call_later(self.server.options.timeout, self.transport.abort)

    def resume_writing(self) -> None:
        self.paused_writing = False
        self.write_timer.cancel()
        if self.next_waiting:
            self.next_waiting = False
            self._await_head()

    # ---- a request
    def _arm(self, expire) -> None:
        """`expire()` once `timeout` seconds have passed (unless the state changes first)."""
        self.deadline, self.expire = self.loop.time() + self.server.options.timeout, expire

    def _pause(self) -> None:  # reading stops only when bytes come early: most clients wait for their answer
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            self.transport.resume_reading()

    def _await_head(self) -> None:
        """Ready for the next request: the bytes after the last one are its first."""
        left, old = self.filled - self.rest, self.buf
        if len(old) > HEAD_CHUNK and left <= HEAD_CHUNK:
            self.buf = bytearray(HEAD_CHUNK)  # after large headers
        if left:
            self.buf[:left] = old[self.rest : self.filled]
        self.filled, self.rest = left, 0
        self.state = HEAD
        self.requestline, self.declared_body, self.body_read, self.expects_continue = "", False, False, False
        self._arm(self.transport.close)  # silent for `timeout`: closed without an answer
        self._resume()
        if left:
            self.loop.call_soon(self._read_head)

    def _read_head(self) -> None:
        if self.state != HEAD:
            return
        buf, n = self.buf, self.filled
        crlf = buf.find(b"\n\r\n", 0, n)  # the head's end; "\n\n" only before it (bare-LF clients)
        lf = buf.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else n)
        ends = [i + k for i, k in ((crlf, 3), (lf, 2)) if i >= 0]
        end = min(ends) if ends else n
        line = buf.find(b"\n", 0, end)
        if (line < 0 and end > MAX_REQUEST_LINE) or line > MAX_REQUEST_LINE:
            self.requestline = ""
            return self._refuse(414, "request line too long", unread=True)
        if line >= 0 and end - line - 1 > MAX_HEADER_BYTES:
            self.requestline = buf[:line].decode("latin-1").rstrip()
            return self._refuse(431, f"headers of more than {MAX_HEADER_BYTES} bytes", unread=True)
        if not ends:
            return
        self.rest = end
        self.state, self.deadline = BUSY, float("inf")
        try:
            method, target, headers = self._parse_head(bytes(buf[:end]))
        except RequestError as e:
            self.close = True
            return self._refuse(e.status, str(e), unread=e.status == 431)
        self._dispatch(method, target, headers)

    def _parse_head(self, head: bytes) -> tuple[str, str, dict]:
        """(method, target, {lower-case name: value}) of a request's head, as http.server reads it."""
        lines = head.decode("latin-1").split("\n")
        self.requestline = lines[0].rstrip("\r")
        words = self.requestline.split()
        self.close, self.declared_body, self.body_read, self.expects_continue = True, False, False, False
        if len(words) != 3:
            raise RequestError(400, f"bad request syntax ({self.requestline[:100]!r})")
        method, target, version = words
        number = version[5:].split(".") if version.startswith("HTTP/") else []
        if len(number) != 2 or not all(p.isdigit() and len(p) <= 10 for p in number):
            raise RequestError(400, f"bad request version ({version[:20]!r})")
        if (int(number[0]), int(number[1])) >= (2, 0):
            raise RequestError(400, f"HTTP version {version[5:]} is not supported; use HTTP/1.1")
        headers = {}
        for raw in lines[1:-2]:
            name, colon, value = raw.rstrip("\r").partition(":")
            if not colon or not name or name != name.strip():
                raise RequestError(400, f"malformed header line {raw[:100]!r}")
            headers.setdefault(name.lower(), value.strip())  # the first of repeated ones, as http.client
        if len(lines) - 3 > MAX_HEADERS:
            raise RequestError(431, f"more than {MAX_HEADERS} headers")
        keep = headers.get("connection", "").lower()
        self.close = keep == "close" or (keep != "keep-alive" and number == ["1", "0"])
        self.declared_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        self.expects_continue = number != ["1", "0"] and headers.get("expect", "").lower() == "100-continue"
        return method, target, headers

    def _dispatch(self, method: str, target: str, headers: dict) -> None:
        srv = self.server
        if method not in ("GET", "POST"):
            self.close = True
            return self._refuse(405, f"method {method[:20]} not allowed; use GET or POST")
        try:
            route = resolve(method, target, srv.servable)
            if route.method == "GET":
                return self._respond(200, route.fn(Call(srv.servable, srv.input_limits, self._run)))
            self.route, self.length = route, _content_length(headers, srv.options.max_body)
            if srv.batcher.full():
                raise RequestError(503, f"busy: the queue is full; retry in {RETRY_AFTER_SECONDS} s")
        except RequestError as e:
            return self._refuse(e.status, str(e))
        except Exception as e:  # a fault of the server, not of the request
            return self._fault(e)
        if srv.take_turn(self):
            self._receive()
        else:
            self.state = WAITING
            self._arm(self._turn_timed_out)

    def turn_came(self) -> None:
        if self.state == WAITING:
            self._receive()
        else:
            self.server.give_turn()

    def _turn_timed_out(self) -> None:
        if self.state == WAITING:
            self.server.leave_line(self)
            opts = self.server.options
            self._refuse(503, f"busy: {opts.max_inflight} requests being received for {opts.timeout:g} s")

    def _receive(self) -> None:
        """The body: what came with the head, then straight into its buffer."""
        self.turn = True
        if self.expects_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.body = bytearray(self.length)
        self.view = memoryview(self.body)
        self.got = min(self.length, self.filled - self.rest)
        self.view[: self.got] = memoryview(self.buf)[self.rest : self.rest + self.got]
        self.rest += self.got
        if self.got == self.length:
            return self._body_done()
        self.state = BODY
        self._arm(self._body_timed_out)
        self._resume()

    def _body_timed_out(self) -> None:
        if self.state == BODY:
            timeout = self.server.options.timeout
            self._refuse(408, f"the body did not arrive within {timeout:g} s ({self.got} of {self.length} bytes)")

    def _body_done(self) -> None:
        self.state, self.body_read, self.deadline = BUSY, True, float("inf")
        body, self.body = self.body, None
        self.view.release()
        try:
            request = parse_json(body)
        except RequestError as e:
            return self._refuse(e.status, str(e))
        del body
        srv = self.server
        self._step(self.route.fn(Call(srv.servable, srv.input_limits, self._run), request))

    def _run(self, job) -> _ModelCall:
        """What a route awaits for the outputs of `job`'s share of a model call: the batcher
        hands them back to the loop's thread (`_outputs_came`), which goes on with the route."""
        loop, came = self.loop, self._outputs_came
        try:
            self.server.batcher.put(job, lambda pending: _hand_back(loop, came, pending))
        except QueueFull as e:
            raise RequestError(503, f"{e}; retry in {RETRY_AFTER_SECONDS} s") from None
        return MODEL_CALL

    def _outputs_came(self, pending) -> None:
        self._step(self.coro, pending.outputs, pending.error)

    def _step(self, coro, value=None, error: BaseException | None = None) -> None:
        """Runs a route's coroutine on to its next await (a model call) or its answer, in the
        loop's thread and at once, as an eager task would: the parse and the route's checks
        hold the turn, the model call does not; no future, no extra turn of the loop."""
        self.coro = coro
        try:
            awaited = coro.throw(error) if error is not None else coro.send(value)
            if awaited is not MODEL_CALL:
                raise TypeError(f"a route awaited {type(awaited).__name__}; routes await only call.run(job)")
        except StopIteration as done:
            self._release_turn()
            self.coro = None
            return self._respond(200, done.value)
        except RequestError as e:
            self._release_turn()
            self.coro = None
            return self._refuse(e.status, str(e))
        except Exception as e:
            self._release_turn()
            self.coro = None
            coro.close()
            return self._fault(e)
        self._release_turn()

    def _release_turn(self) -> None:
        if self.turn:
            self.turn = False
            self.server.give_turn()

    # ---- answers
    def _fault(self, e: Exception) -> None:
        print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        self._respond(500, {"error": f"internal error: {type(e).__name__}"})

    def _refuse(self, status: int, message: str, unread: bool = False) -> None:
        self._release_turn()
        self._respond(status, {"error": RequestError(status, message).args[0]}, unread)

    def _respond(self, status: int, body: dict, unread: bool = False) -> None:
        """Writes the answer; `unread`: the client may still be sending (not only a body)."""
        if self.state == CLOSED:
            return
        data = dumps(body)
        body_left = unread or (self.declared_body and not self.body_read)
        close = self.close or body_left
        head = b"HTTP/1.1 %d %s\r\nServer: alexnet_tf-serve\r\nDate: %s\r\nContent-Type: application/json\r\n" % (
            status,
            _PHRASES[status],
            self.server.date(),
        )
        head += b"Content-Length: %d\r\n" % len(data)
        if status == 503:
            head += b"Retry-After: %d\r\n" % RETRY_AFTER_SECONDS
        if close:
            head += b"Connection: close\r\n"
        self.transport.write(head + b"\r\n" + data)
        if not self.server.options.quiet:
            print(
                f'{self.transport.get_extra_info("peername", ("-",))[0]} "{self.requestline}" {status}', file=sys.stderr
            )
        if body_left:
            self._discard()
        elif close:
            self.state = CLOSED
            self.transport.close()
        elif self.paused_writing:
            self.next_waiting = True
        else:
            self._await_head()

    def _discard(self) -> None:
        """Reads and drops what the client still sends, at most `max_body` bytes for `timeout` s."""
        self.state, self.dropped = DISCARD, 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(self.transport.close)
        self._resume()


class _ModelCall:
    """`await call.run(job)`: suspends the route until `Connection._outputs_came` sends the outputs in."""

    __slots__ = ()

    def __await__(self):
        return (yield self)


MODEL_CALL = _ModelCall()


def _hand_back(loop: asyncio.AbstractEventLoop, came, pending) -> None:
    """In a batcher thread: `came(pending)` in the loop's thread."""
    try:
        loop.call_soon_threadsafe(came, pending)
    except RuntimeError:  # the loop is closed: the server is gone
        pass


def _content_length(headers: dict, max_body: int) -> int:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise RequestError(411, "chunked bodies are not accepted; send Content-Length")
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()):
        raise RequestError(411, "Content-Length is required")
    if len(length) > 15 or int(length) > max_body:
        raise RequestError(413, f"body of {length:.20} bytes exceeds the limit of {max_body}")
    return int(length)


_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
