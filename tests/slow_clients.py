"""Slow clients held against a real server while signed deliveries are posted to it.

`SlowClients` keeps `trickling` connections that send a request's headers one line a second and
never finish them, and `idle` connections that made one keep-alive request and then say nothing.
Whenever the server closes one, it opens another, so the same number is held all the time. It
records how long each lived before the server closed it. `post_deliveries` posts signed bodies
one after another meanwhile, each on a new connection, and times every answer.

Used by tests/test_receiver_slow_clients.py (straight at `serve`, and through nginx) and runnable
as a script against any receiver, for measurements:

    .venv/bin/python -m tests.slow_clients --port 8000 --secret s3cr3t
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import selectors
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

from loader.signature import sign
from loader.simulate import generate

TRICKLE_START = b"POST /webhooks/flagsmith HTTP/1.1\r\nHost: 127.0.0.1\r\n"
IDLE_REQUEST = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class _Held:
    sock: socket.socket
    kind: str  # "trickling" or "idle"
    opened: float
    lines: int = 0


@dataclass
class Report:
    opened: dict[str, int] = field(default_factory=lambda: {"trickling": 0, "idle": 0})
    # Seconds each connection lived before the server closed it (idle: from its answer).
    closed_after: dict[str, list[float]] = field(
        default_factory=lambda: {"trickling": [], "idle": []}
    )
    # The longest any connection still open at the end had been held.
    oldest_open: dict[str, float] = field(default_factory=lambda: {"trickling": 0.0, "idle": 0.0})
    failed_to_open: int = 0


class SlowClients:
    """Holds the slow connections from a thread of its own until `stop` (or `max_seconds`)."""

    def __init__(
        self,
        port: int,
        *,
        trickling: int = 64,
        idle: int = 64,
        host: str = "127.0.0.1",
        max_seconds: float = 120.0,
    ) -> None:
        self.address = (host, port)
        self.wanted = {"trickling": trickling, "idle": idle}
        self.max_seconds = max_seconds
        self.report = Report()
        self._held: dict[socket.socket, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def held(self) -> dict[str, int]:
        with self._lock:
            counts = {"trickling": 0, "idle": 0}
            for connection in self._held.values():
                counts[connection.kind] += 1
            return counts

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        now = time.monotonic()
        with self._lock:
            for connection in self._held.values():
                age = now - connection.opened
                oldest = self.report.oldest_open
                oldest[connection.kind] = max(oldest[connection.kind], age)
                connection.sock.close()
            self._held.clear()

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + self.max_seconds
        next_line = time.monotonic() + 1.0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._top_up(selector)
                for key, _ in selector.select(timeout=0.05):
                    self._readable(selector, key.fileobj)
                if time.monotonic() >= next_line:
                    next_line += 1.0
                    self._trickle(selector)
        finally:
            selector.close()

    def _top_up(self, selector: selectors.BaseSelector) -> None:
        counts = self.held()
        for kind, wanted in self.wanted.items():
            for _ in range(wanted - counts[kind]):
                try:
                    sock = socket.create_connection(self.address, timeout=2)
                    sock.sendall(TRICKLE_START if kind == "trickling" else IDLE_REQUEST)
                except OSError:
                    self.report.failed_to_open += 1
                    continue
                sock.setblocking(False)
                with self._lock:
                    self._held[sock] = _Held(sock, kind, time.monotonic())
                self.report.opened[kind] += 1
                selector.register(sock, selectors.EVENT_READ)

    def _readable(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        connection = self._held[sock]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data and connection.kind == "idle" and connection.lines == 0:
            connection.lines = 1  # the answer to its one request: idle from now on
            connection.opened = time.monotonic()
            return
        if data:
            return  # an error page (a proxy's 408, say): the end follows
        self._forget(selector, connection)

    def _trickle(self, selector: selectors.BaseSelector) -> None:
        for connection in [c for c in list(self._held.values()) if c.kind == "trickling"]:
            connection.lines += 1
            try:
                connection.sock.send(b"X-Trickle-%d: %d\r\n" % (connection.lines, connection.lines))
            except OSError:
                self._forget(selector, connection)

    def _forget(self, selector: selectors.BaseSelector, connection: _Held) -> None:
        self.report.closed_after[connection.kind].append(time.monotonic() - connection.opened)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection.sock)
        connection.sock.close()
        with self._lock:
            self._held.pop(connection.sock, None)


@dataclass
class PostAnswer:
    status: int | None  # None: no answer within the timeout
    seconds: float
    delivery_id: str | None
    held: dict[str, int]  # slow connections held when it was sent


def post_deliveries(
    port: int,
    secret: bytes,
    count: int = 20,
    *,
    host: str = "127.0.0.1",
    interval: float = 0.5,
    timeout: float = 5.0,
    slow: SlowClients | None = None,
) -> list[PostAnswer]:
    """`count` signed Flagsmith bodies, one at a time, each on a new connection."""
    answers = []
    for simulated in generate(count, seed=12, n_flags=10):
        held = slow.held() if slow else {}
        started = time.monotonic()
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request(
                "POST",
                "/webhooks/flagsmith",
                body=simulated.body,
                headers={
                    "Content-Type": "application/json",
                    "X-Flagsmith-Signature": sign(simulated.body, secret),
                },
            )
            response = connection.getresponse()
            body = response.read()
            status = response.status
            delivery_id = json.loads(body).get("delivery_id") if status == 202 else None
        except OSError:  # timed out, refused or reset: no answer
            status, delivery_id = None, None
        finally:
            connection.close()
        answers.append(PostAnswer(status, time.monotonic() - started, delivery_id, held))
        time.sleep(interval)
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--deliveries", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30.0, help="per delivery")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of slow clients first")
    args = parser.parse_args()
    with SlowClients(args.port, host=args.host) as slow:
        time.sleep(args.settle)
        answers = post_deliveries(
            args.port,
            args.secret.encode(),
            args.deliveries,
            host=args.host,
            timeout=args.timeout,
            slow=slow,
        )
    for number, answer in enumerate(answers, 1):
        print(
            f"delivery {number}: {answer.status or 'no answer'} after {answer.seconds:.3f} s"
            f" (held: {answer.held})"
        )
    seconds = [answer.seconds for answer in answers]
    report = slow.report
    print(
        f"202s: {sum(a.status == 202 for a in answers)}/{len(answers)}; slowest"
        f" {max(seconds):.3f} s, median {statistics.median(seconds):.3f} s"
    )
    for kind in ("trickling", "idle"):
        lived = report.closed_after[kind]
        print(
            f"{kind}: opened {report.opened[kind]}, closed by the server {len(lived)}"
            + (f" after {min(lived):.1f} to {max(lived):.1f} s" if lived else "")
            + f", oldest still open {report.oldest_open[kind]:.1f} s"
        )
    return 0 if all(a.status == 202 for a in answers) else 1


if __name__ == "__main__":
    raise SystemExit(main())
