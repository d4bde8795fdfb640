"""The receiver's gunicorn worker: gevent's, with deadlines on what clients send.

A gevent worker holds each connection in a greenlet, so a connection that sends slowly or not
at all costs memory, not a thread: it cannot keep a valid delivery waiting. On top of gunicorn's
`GeventWorker` this class adds what a receiver exposed without a buffering proxy needs:

- Headers: a request's headers must be complete within `HEADER_TIMEOUT` of the connection
  opening or of the previous answer on it (so an idle kept-alive connection is closed after
  that long too); otherwise the connection is closed without an answer.
- Body: read in full here, before the application is called, and only at `BODY_MIN_RATE` or
  faster after `BODY_GRACE`; otherwise the connection is closed without an answer. The
  application gets complete requests only and never waits on a client. A body declared over the
  size limit is left unread (the application answers 413); a chunked one is read to one byte
  past the limit so that the application can tell.
- Shedding: connections that are waiting for a request (still sending headers, or idle between
  requests) give way to new ones. When the worker holds all but `SHED_RESERVE` of its
  `worker_connections`, each new connection closes the one that has waited longest, so the
  connections held open never bound the requests being served.
- Disk: the spool's fsyncs run in the gevent hub's thread pool (`--threads` threads), so a flush
  never stops the event loop; requests waiting on one flush still share it (group commit).
"""

from __future__ import annotations

import contextlib
import io
import socket
import time
from collections import OrderedDict

import gevent
from gunicorn.workers.ggevent import GeventWorker

from . import spool
from .config import DEFAULT_MAX_BODY_BYTES

HEADER_TIMEOUT = 5.0
BODY_GRACE = 5.0
BODY_MIN_RATE = 64 * 1024  # bytes per second, on average, after the grace
SHED_RESERVE = 16
_READ_STEP = 64 * 1024


class ReceiverWorker(GeventWorker):
    """gunicorn's gevent worker, with header and body deadlines and shedding of waiting sockets."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._connections: dict[gevent.Greenlet, socket.socket] = {}
        self._waiting: OrderedDict[gevent.Greenlet, socket.socket] = OrderedDict()
        settings = getattr(self.app, "settings", None)
        self.max_body_bytes = getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)

    def init_process(self) -> None:
        spool.run_blocking_io_with(self._in_thread_pool)
        super().init_process()  # patches the standard library, then loads the app and runs

    def _in_thread_pool(self, function, *args):
        hub = gevent.get_hub()
        if hub.threadpool.maxsize != self.cfg.threads:
            hub.threadpool.maxsize = self.cfg.threads
        return hub.threadpool.apply(function, args)

    # -- connections -------------------------------------------------------------------------

    def handle(self, listener, client, addr) -> None:
        current = gevent.getcurrent()
        self._connections[current] = client
        try:
            self._shed_if_full()
            super().handle(listener, client, addr)
        finally:
            self._connections.pop(current, None)
            self._waiting.pop(current, None)

    def _shed_if_full(self) -> None:
        room = self.worker_connections - len(self._connections)
        while room < SHED_RESERVE and self._waiting:
            _, client = self._waiting.popitem(last=False)  # the longest waiting
            _closed("shed")
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # its greenlet reads the end and exits
            room += 1

    @contextlib.contextmanager
    def timeout_ctx(self):
        """Around the wait for each request's headers (gunicorn's keep-alive loop)."""
        current = gevent.getcurrent()
        client = self._connections.get(current)
        if client is not None:
            self._waiting[current] = client
        timer = gevent.Timeout(HEADER_TIMEOUT)
        timer.start()
        try:
            yield
        except gevent.Timeout as fired:
            if fired is not timer:
                raise
            _closed("header_timeout")  # leaving the block with no request closes the connection
        finally:
            timer.close()
            self._waiting.pop(current, None)

    # -- requests ----------------------------------------------------------------------------

    def handle_request(self, listener_name, req, sock, addr):
        if not self._read_body(req, sock):
            raise StopIteration()  # too slow: closed without an answer
        return super().handle_request(listener_name, req, sock, addr)

    def _read_body(self, req, sock) -> bool:
        """Replace `req.body` with its bytes, read under the deadlines; False if too slow."""
        if req.body is None:
            return True
        declared = _content_length(req)
        limit = self.max_body_bytes
        if declared == 0:
            return True
        if declared is not None and declared > limit:
            req.force_close()  # the application refuses it unread; the rest is never read
            return True
        if req._expected_100_continue:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req._expected_100_continue = False
        wanted = declared if declared is not None else limit + 1
        data = bytearray()
        started = time.monotonic()
        while len(data) < wanted:
            step = min(_READ_STEP, wanted - len(data))
            deadline = started + BODY_GRACE + (len(data) + step) / BODY_MIN_RATE
            chunk = None
            with gevent.Timeout(max(deadline - time.monotonic(), 0.0), False):
                chunk = req.body.read(step)
            if chunk is None:
                _closed("body_timeout")
                return False
            if not chunk:
                break  # the end of a chunked body, or a sender that stopped short
            data += chunk
        if len(data) > limit:
            req.force_close()  # a chunked body over the limit, not read to its end
        req.body = _Body(bytes(data))
        return True


class _Body(io.BytesIO):
    """A request body already read; `failed` is what gunicorn's parser asks of a body."""

    failed = False


def _content_length(req) -> int | None:
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            return int(value)  # gunicorn has checked it is a single non-negative integer
    return None


def _closed(reason: str) -> None:
    from .metrics import CONNECTIONS_CLOSED

    CONNECTIONS_CLOSED.labels(reason).inc()
