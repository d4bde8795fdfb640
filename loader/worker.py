"""The receiver's gunicorn worker: gthread, with requests read in full before a thread takes them.

gunicorn's `gthread` worker hands a new connection to one of its threads, which then reads and
parses the request with blocking reads; and it takes no more connections than `worker_connections`.
A client that sends its headers a line a second therefore holds a thread for as long as it likes,
and a few dozen such connections leave no thread (or no connection slot) for a real delivery.

`ReceiverWorker` keeps gthread's shape (a poller in the main thread, a pool of request threads,
gunicorn's parser, keep-alive, graceful shutdown) and changes what a thread is given: the main
thread reads each request without blocking, into a buffer, and hands it to the pool only once it
is complete, headers and body. So:

- Headers must be complete within `HEADER_TIMEOUT` of the connection opening (or, on a kept-alive
  connection, of its first byte); otherwise the connection is closed without an answer.
- A body must arrive within `BODY_GRACE` plus its size at `BODY_MIN_RATE`, else the same.
- Idle kept-alive connections wait in the poller, as in gthread, and are closed after `keepalive`.
- Connections that are waiting (idle, or still sending) hold no thread. A worker takes new
  connections while it has a free thread, as many as `worker_connections`; past all but
  `SHED_RESERVE` of those, each new connection closes the one that has waited longest. So the
  connections other clients hold open never bound the requests being served.
- A body declared over the size limit is not waited for (the application answers 413 unread);
  a chunked one is read to one byte past the limit, so the application can tell.

A request thread then reads only buffered bytes; any read the buffer does not cover (a malformed
request the parser reads past) ends `THREAD_READ_TIMEOUT` after the thread took the request.
Requests of one process still wait on the same spool flushes in their threads (group commit), as
with gthread.
"""

from __future__ import annotations

import contextlib
import errno
import select
import selectors
import socket
import time
from collections import OrderedDict
from functools import partial

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from .config import DEFAULT_MAX_BODY_BYTES

HEADER_TIMEOUT = 5.0
BODY_GRACE = 5.0
BODY_MIN_RATE = 64 * 1024  # bytes per second, on average, after the grace
MAX_HEADER_BYTES = 64 * 1024
SHED_RESERVE = 16
THREAD_READ_TIMEOUT = 5.0
_SWEEP_EVERY = 0.25  # seconds between checks of the reading deadlines
_RECV_BYTES = 256 * 1024
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class _Reading:
    """What the main thread knows of a request it is still receiving."""

    __slots__ = ("body_end", "body_since", "buffer", "chunk_at", "deadline", "head_end", "since")

    def __init__(self, data: bytes, now: float) -> None:
        self.buffer = bytearray(data)
        self.since = now
        self.deadline = now + HEADER_TIMEOUT
        self.head_end: int | None = None  # where the body starts, once the headers are in
        self.body_end: int | None = None  # Content-Length bodies: where the request ends
        self.body_since = now  # when the headers were complete
        self.chunk_at = 0  # chunked bodies: the first chunk not yet seen whole


class ReceiverWorker(ThreadWorker):
    """gthread that buffers each request in the main thread until it is complete."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reading: OrderedDict[TConn, _Reading] = OrderedDict()
        self.busy = 0  # connections handed to the thread pool and not yet back
        self._next_sweep = 0.0
        settings = getattr(self.app, "settings", None)
        self.max_body_bytes = getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)

    # -- accepting -----------------------------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        # gthread asks for accepting whenever it holds fewer than `worker_connections`; this
        # worker also waits for a free thread, so that one worker does not take a whole burst of
        # connections while the other idles (waiting connections do not count: they hold none).
        super().set_accept_enabled(enabled and self._may_accept())

    def _may_accept(self) -> bool:
        room = self.nr_conns < self.worker_connections
        return self.alive and room and self.busy < self.cfg.threads

    def accept(self, listener) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking
        if self.nr_conns > self.worker_connections - SHED_RESERVE:
            self._shed()
        self._start_reading(conn, b"")

    def _shed(self) -> None:
        """Close the connection that has waited longest for a request (idle or still sending)."""
        idle = self.keepalived_conns[0] if self.keepalived_conns else None
        sending = next(iter(self.reading), None)
        if sending is not None and (
            idle is None or self.reading[sending].since <= idle.timeout - self.cfg.keepalive
        ):
            del self.reading[sending]
            self._close(sending, "shed")
        elif idle is not None:
            self.keepalived_conns.popleft()
            self._close(idle, "shed")

    # -- reading requests in the main thread ---------------------------------------------------

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection has sent something: its next request starts."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn, b"")

    def _start_reading(self, conn: TConn, data: bytes) -> None:
        self.reading[conn] = _Reading(data, time.monotonic())
        if data and self._complete(conn):
            return
        self._receive(conn)  # often the request is there already
        if conn in self.reading:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: TConn, _client) -> None:
        self._receive(conn)

    def _receive(self, conn: TConn) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            del self.reading[conn]
            self._close(conn, None)
            return
        self.reading[conn].buffer += data
        self._complete(conn)

    def _complete(self, conn: TConn) -> bool:
        """Hand the request to the thread pool if it is all here; True if it was."""
        request = self.reading[conn]
        buffer = request.buffer
        if request.head_end is None:
            if buffer[:1] in (b"\r", b"\n"):  # blank lines before a request are ignored
                del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    del self.reading[conn]
                    _send_quietly(conn.sock, _TOO_LARGE)
                    self._close(conn, None)
                    return True
                return False
            over_limit = self._head_done(conn, request, end + 4)
            if over_limit is not None:
                return self._dispatch(conn, over_limit=over_limit)
        if request.body_end is not None:
            if len(buffer) < request.body_end:
                return False
            return self._dispatch(conn, over_limit=False)
        return self._chunks_done(conn, request)

    def _head_done(self, conn: TConn, request: _Reading, head_end: int) -> bool | None:
        """Note how the body is framed: None to wait for it, else whether it is over the limit."""
        request.head_end = head_end
        now = request.body_since = time.monotonic()
        length, chunked, expects_continue = _framing(request.buffer[:head_end])
        if length is None and not chunked:
            return False  # no body, or framing the parser will refuse: it answers now
        if length is not None and length > self.max_body_bytes:
            return True  # the application refuses it unread (413), and the rest is never read
        if chunked:
            request.chunk_at = head_end
            request.deadline = now + BODY_GRACE
        else:
            assert length is not None  # neither chunked nor a length returned above
            request.body_end = head_end + length
            request.deadline = now + BODY_GRACE + length / BODY_MIN_RATE
        if expects_continue and len(request.buffer) == head_end:
            _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    def _chunks_done(self, conn: TConn, request: _Reading) -> bool:
        assert request.head_end is not None  # called once the headers are in
        buffer = request.buffer
        position = request.chunk_at
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return False
            try:
                size = int(bytes(buffer[position:line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                return self._dispatch(conn, over_limit=False)  # the parser answers 400
            if size == 0:  # the last chunk; done at the blank line that ends the trailers
                if buffer.find(b"\r\n\r\n", line_end) >= 0:
                    return self._dispatch(conn, over_limit=False)
                return False
            following = line_end + 2 + size + 2
            if following > len(buffer):
                return False
            position = request.chunk_at = following
            body = position - request.head_end
            request.deadline = request.body_since + BODY_GRACE + body / BODY_MIN_RATE
            if body > self.max_body_bytes:
                return self._dispatch(conn, over_limit=True)

    def _dispatch(self, conn: TConn, *, over_limit: bool) -> bool:
        request = self.reading.pop(conn)
        self._unregister(conn)  # a pool thread reads it from now on
        conn.received = bytes(request.buffer)
        conn.over_limit = over_limit
        self.busy += 1
        if not self._may_accept() and self._accepting:
            super().set_accept_enabled(False)
        self.enqueue_req(conn)
        return True

    # -- deadlines -----------------------------------------------------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY
        expired = [conn for conn, request in self.reading.items() if request.deadline <= now]
        for conn in expired:
            request = self.reading.pop(conn)
            self._close(conn, "header_timeout" if request.head_end is None else "body_timeout")

    # -- the request thread --------------------------------------------------------------------

    def handle(self, conn: TConn):
        """In a pool thread: parse and serve the buffered request."""
        received = conn.received
        conn.received = b""
        conn.data_ready = True  # gthread's wait for a first byte is already done
        try:
            conn.sock.setblocking(True)
            conn.init()
        except OSError:
            return False
        unreader = conn.parser.unreader
        if not isinstance(unreader.sock, _BoundedReads):
            unreader.sock = _BoundedReads(unreader.sock)
        unreader.sock.deadline = time.monotonic() + THREAD_READ_TIMEOUT
        unreader.unread(received)
        return super().handle(conn)

    def handle_request(self, req, conn):
        conn.sock.settimeout(THREAD_READ_TIMEOUT)  # bounds the answer's writes
        if conn.over_limit:
            req.force_close()  # the rest of an oversized chunked body is never read
        return super().handle_request(req, conn)

    # -- back in the main thread ---------------------------------------------------------------

    def finish_request(self, conn, fs) -> None:
        self.busy -= 1
        try:
            keep = fs.result() if not fs.cancelled() else False
        except Exception:
            keep = False
        if not keep:
            self.nr_conns -= 1
            conn.close(graceful=True)
            return
        try:
            conn.sock.setblocking(False)
            leftover = conn.parser.unreader.take_buffered()
            if leftover:  # the client sent its next request already
                self._start_reading(conn, leftover)
                return
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
            self.keepalived_conns.append(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        except Exception:
            self.nr_conns -= 1
            conn.close()

    # -- helpers -------------------------------------------------------------------------------

    def _unregister(self, conn: TConn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):  # it was not registered
            self.poller.unregister(conn.sock)

    def _close(self, conn: TConn, reason: str | None) -> None:
        self._unregister(conn)
        self.nr_conns -= 1
        conn.close()
        if reason is not None:
            from .metrics import CONNECTIONS_CLOSED

            CONNECTIONS_CLOSED.labels(reason).inc()


class _BoundedReads:
    """The socket as a request thread's parser sees it: reads end at a deadline.

    The buffered request normally holds every byte the parser and the application read; a read
    past it (a request the parser frames differently, say) gets at most what is left of
    `THREAD_READ_TIMEOUT` for this request, then reads as the end of the stream, which gunicorn
    treats as a client that went away.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = 0.0

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]:
            return b""
        return self._sock.recv(size)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def _framing(head: bytearray) -> tuple[int | None, bool, bool]:
    """(Content-Length, chunked, Expect: 100-continue) of a request's header block.

    Anything unusual (two lengths, a length and chunked, a length that is not a number, another
    transfer coding) reads as no body: the request goes to gunicorn's parser at once, which
    refuses it.
    """
    lengths = []
    codings = []
    expects_continue = False
    for line in bytes(head).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths.append(value.strip())
        elif name == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
        elif name == b"expect":
            expects_continue = value.strip().lower() == b"100-continue"
    if codings:
        return None, not lengths and codings == [b"chunked"], expects_continue
    if len(lengths) != 1 or not lengths[0].isdigit():
        return None, False, expects_continue
    length = int(lengths[0])
    return (length or None), False, expects_continue


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.send(data)
