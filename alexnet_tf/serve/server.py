"""The server: one event loop (asyncio's, or uvloop's where installed) for every connection, in one thread.

The loop's thread accepts connections (`connection.Connection`: each request's head, body
and admission control), parses the JSON and answers; bodies of over 256 KiB are parsed
in a thread of their own, one at a time, so that the loop goes on reading and answering
meanwhile; the model calls run in the batcher's threads, which hand the outputs back to
the loop (`routes` has what each URL does). Beyond `max_connections` open connections a new one gets 503 at once, its request
unread. Timeouts are noticed by one sweep of the connections every second (or a quarter of
`timeout`, if less), not by a timer per request.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque

from alexnet_tf.serve.batching import Batcher
from alexnet_tf.serve.connection import WAITING, Connection, begin
from alexnet_tf.serve.inputs import InputLimits
from alexnet_tf.serve.model import Servable
from alexnet_tf.serve.options import ServeOptions


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
        self.threads = "TensorFlow's threads as they are"  # the thread plan, in words (`make_server` sets it)
        self.input_limits = InputLimits(options.max_batch, options.max_pixels, options.max_request_pixels)
        self.socket = socket.create_server((options.host, options.port), backlog=options.max_connections)
        self.server_address = self.socket.getsockname()
        self.loop = new_event_loop()
        self.connections: set[Connection] = set()
        self.scratch = memoryview(bytearray(1 << 16))  # where dropped bytes are read to
        self._free_turns, self._waiting = options.max_inflight, deque()
        self._stopped, self._date = threading.Event(), (0, b"")
        self.arms = itertools.count()  # the order in which connections' deadlines were set
        self._listener = self.loop.run_until_complete(
            self.loop.create_server(lambda: Connection(self), sock=self.socket, backlog=options.max_connections)
        )  # no connection is served before serve_forever: announced only then, none is there yet
        self._sweep_every = min(1.0, options.timeout / 4)  # how late a timeout may be noticed
        self.loop.call_later(self._sweep_every, self._sweep)
        self._to_parse = queue.SimpleQueue()
        self._parser = threading.Thread(target=self._parse_forever, name="parse", daemon=True)
        self._parser.start()

    def serve_forever(self) -> None:
        """Serves until `shutdown()` (or, in the main thread, SIGINT or SIGTERM). The signals'
        handlers are the loop's, set before it runs: they stop it between callbacks, where
        Python's KeyboardInterrupt would land in whichever callback runs, be reported there
        and not end the loop."""
        self._stopped.clear()
        signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
        try:
            try:
                for sig in signals:
                    self.loop.add_signal_handler(sig, self.loop.stop)
            except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt as usual
                signals = ()
            self.loop.run_forever()
        finally:
            for sig in signals:
                self.loop.remove_signal_handler(sig)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stops `serve_forever` (from another thread) and waits for it to return."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.wait()

    def server_close(self) -> None:
        """Closes the connections, the socket, the loop and the batcher."""
        self._listener.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if not self.loop.is_closed():
            self.loop.run_until_complete(asyncio.sleep(0))  # their connection_lost
            self.loop.close()
        self.socket.close()
        self._to_parse.put(None)
        self.batcher.close()

    def _sweep(self) -> None:
        """Ends what has waited for `timeout`: one timer for all connections, not one per request."""
        self.loop.call_later(self._sweep_every, self._sweep)  # first: a fault below must not end the sweeps
        now = self.loop.time()
        # In the order they fell due: a body's 408 passes its turn on before a later waiter times out.
        # (The loop's clock moves once a turn of the loop: `armed` orders deadlines set in one turn.)
        for conn in sorted((c for c in self.connections if c.deadline <= now), key=lambda c: (c.deadline, c.armed)):
            if conn.deadline > now:  # given its turn meanwhile
                continue
            conn.deadline = float("inf")
            try:
                conn.expire()
            except Exception as e:  # a fault of the server: that connection goes, the others are swept
                print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                conn.transport.abort()

    # ---- what connections share: the parsing thread, turns to receive a body, the Date header
    def parse_later(self, conn: Connection, call, holder: list) -> None:
        """Has the parsing thread parse a large body and start its route (`connection.begin`),
        one at a time, while the loop goes on with other connections' reads and answers."""
        self._to_parse.put((conn, call, holder))

    def _parse_forever(self) -> None:
        while (item := self._to_parse.get()) is not None:
            conn, call, holder = item
            del item
            outcome = begin(conn.route.fn, call, holder)
            try:
                self.loop.call_soon_threadsafe(conn.after, outcome)
            except RuntimeError:  # the loop is closed
                pass
            del conn, call, outcome

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
                conn.deadline = float("inf")  # no longer waiting: its turn has come
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
