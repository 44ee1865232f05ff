"""One client connection on the event loop: its requests one at a time, and the server's admission control.

A request passes, in order: its head (`protocol`'s limits; a connection silent for
`timeout` between requests is closed), its route (`routes.resolve`: 404, 405), and for a
POST route Content-Length (411, 413), the queue (503 while at one of its bounds), its turn
(at most `max_inflight` bodies received and parsed at once; the others wait up to
`timeout`, then 503, their bytes left in the kernel) and its body (within `timeout` of its
turn, else 408; read straight into its own buffer). The body is then parsed and the
route's coroutine run at once up to its model call (`call.run`): in the loop's thread for
an ordinary body, in the server's parsing thread for one of over INLINE_BODY bytes (one at
a time, while the loop goes on). The job is queued, the turn passes on, and the model's
outputs come back from a batcher thread; the route goes on to its answer.

A refused request whose body was not read is answered with `Connection: close`; what the
client still sends is read and dropped (at most `max_body` bytes for `timeout` seconds),
so that a client that sends all before it reads gets the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TYPE_CHECKING

from alexnet_tf.serve import protocol
from alexnet_tf.serve.batching import QueueFull
from alexnet_tf.serve.inputs import RequestError, dumps, parse_json
from alexnet_tf.serve.protocol import RETRY_AFTER_SECONDS
from alexnet_tf.serve.routes import Call, resolve

if TYPE_CHECKING:
    from alexnet_tf.serve.server import Server

HEAD_CHUNK = 65536  # bytes read at a time before a request's body (an ordinary request in one read)
INLINE_BODY = 256 * 1024  # larger bodies are parsed in the parsing thread: the loop goes on meanwhile
HEAD, WAITING, BODY, BUSY, DISCARD, CLOSED = range(6)  # what a connection is doing
NEVER = float("inf")
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Retry-After: %d\r\nConnection: close\r\n\r\n%s"
)


class Connection(asyncio.BufferedProtocol):
    """One client connection: its requests one at a time, in the order they came."""

    def __init__(self, server: Server):
        self.server, self.loop = server, server.loop
        self.transport, self.state, self.write_timer = None, HEAD, None
        self.deadline, self.expire, self.armed = NEVER, None, 0  # when `expire()` is due (Server._sweep)
        self.buf, self.filled, self.rest = bytearray(HEAD_CHUNK), 0, 0  # head bytes; rest: where the head ended
        self.turn = self.close = self.paused = self.paused_writing = self.next_waiting = self.eof = False
        self.head, self.body_read = None, False
        self.coro = self.job = None  # the route's coroutine, while its model call runs; the call's job

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
        self.eof = True
        if self.state == BODY:
            self.close = True
            self._refuse(400, f"the body ended after {self.got} of {self.length} bytes")
        elif self.state in (BUSY, WAITING):  # the client only stopped sending: answer, then close
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
        self.armed = next(self.server.arms)

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
        self.state, self.head, self.body_read = HEAD, None, False
        self._arm(self.transport.close)  # silent for `timeout`: closed without an answer
        self._resume()
        if left:
            self.loop.call_soon(self._read_head)

    def _read_head(self) -> None:
        if self.state != HEAD:
            return
        try:
            end = protocol.head_end(self.buf, self.filled)
            if end < 0:
                return
            self.rest, self.state, self.deadline = end, BUSY, NEVER
            self.head = protocol.parse_head(bytes(self.buf[:end]))
        except RequestError as e:  # the client may still be sending a head: read and dropped
            self.close = True
            return self._refuse(e.status, str(e), unread=e.status in (414, 431))
        self.close = self.head.close
        self._dispatch(self.head)

    def _dispatch(self, head: protocol.Head) -> None:
        srv = self.server
        if head.method not in ("GET", "POST"):
            self.close = True
            return self._refuse(405, f"method {head.method[:20]} not allowed; use GET or POST")
        try:
            route = resolve(head.method, head.target, srv.servable)
            if route.method == "GET":
                return self._respond(200, route.fn(Call(srv.servable, srv.input_limits, self._run)))
            self.route, self.length = route, protocol.content_length(head.headers, srv.options.max_body)
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
        if self.head.expects_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.body = bytearray(self.length)
        self.view = memoryview(self.body)
        self.got = min(self.length, self.filled - self.rest)
        self.view[: self.got] = memoryview(self.buf)[self.rest : self.rest + self.got]
        self.rest += self.got
        if self.got == self.length:
            return self._body_done()
        if self.eof:  # the client stopped sending while it waited for its turn
            return self._refuse(400, f"the body ended after {self.got} of {self.length} bytes")
        self.state = BODY
        self._arm(self._body_timed_out)
        self._resume()

    def _body_timed_out(self) -> None:
        if self.state == BODY:
            timeout = self.server.options.timeout
            self._refuse(408, f"the body did not arrive within {timeout:g} s ({self.got} of {self.length} bytes)")

    def _body_done(self) -> None:
        self.state, self.body_read, self.deadline = BUSY, True, NEVER
        holder = [self.body]  # the only reference: parsed, then dropped
        self.body = None
        self.view.release()
        call = Call(self.server.servable, self.server.input_limits, self._run)
        if len(holder[0]) > INLINE_BODY:
            return self.server.parse_later(self, call, holder)
        self.after(begin(self.route.fn, call, holder))

    def _run(self, job) -> _ModelCall:
        """What a route awaits for the outputs of `job`'s share of a model call. The job is
        queued once the route has stopped at its await (`after`): the outputs, handed back
        by a batcher thread, go on with it (`_outputs_came`)."""
        self.job = job
        return MODEL_CALL

    def _outputs_came(self, pending) -> None:
        self.after((self.coro, *advance(self.coro, pending.outputs, pending.error)))

    def after(self, outcome: tuple) -> None:
        """In the loop's thread, once a route's coroutine has stopped: (coroutine, "await",
        None) at a model call, ("answer", dict) or ("error", exception) at its end. The turn
        to receive a body is held until then: the parse and the route's checks hold it, the
        model call does not."""
        coro, kind, payload = outcome
        self._release_turn()
        if kind == "await":
            job, self.job = self.job, None
            if self.state == CLOSED:
                return coro.close()
            loop, came = self.loop, self._outputs_came
            try:
                self.server.batcher.put(job, lambda pending: _hand_back(loop, came, pending))
            except QueueFull as e:
                coro.close()
                return self._refuse(503, f"{e}; retry in {RETRY_AFTER_SECONDS} s")
            self.coro = coro
            return
        self.coro = None
        if kind == "answer":
            return self._respond(200, payload)
        if isinstance(payload, RequestError):
            return self._refuse(payload.status, str(payload))
        self._fault(payload)

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
        body_left = unread or (self.head is not None and self.head.declared_body and not self.body_read)
        close = self.close or body_left
        self.transport.write(protocol.answer(status, dumps(body), self.server.date(), close))
        if not self.server.options.quiet:
            peer = self.transport.get_extra_info("peername") or ("-",)
            line = self.head.requestline if self.head is not None else "-"
            print(f'{peer[0]} "{line}" {status}', file=sys.stderr)
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


def begin(fn, call: Call, holder: list) -> tuple:
    """Parses the body in `holder` (and drops it) and runs the route `fn` on to its first
    await or its end: (coroutine, kind, payload) for `Connection.after`. In the loop's
    thread, or in the parsing thread for large bodies."""
    try:
        request = parse_json(holder.pop())
    except RequestError as e:
        return None, "error", e
    coro = fn(call, request)
    del request
    return (coro, *advance(coro))


def advance(coro, value=None, error: BaseException | None = None) -> tuple[str, object]:
    """Runs a route's coroutine on to its next await ("await", None) or its end ("answer",
    its dict, or "error", the exception), at once, as an eager task would; no future, no
    extra turn of the loop."""
    try:
        awaited = coro.throw(error) if error is not None else coro.send(value)
    except StopIteration as done:
        return "answer", done.value
    except Exception as e:
        return "error", e
    if awaited is not MODEL_CALL:
        coro.close()
        return "error", TypeError(f"a route awaited {type(awaited).__name__}; routes await only call.run(job)")
    return "await", None


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
