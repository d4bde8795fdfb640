"""Slow clients cannot starve the receiver: real gunicorn over real sockets, and through nginx.

64 connections trickle their headers a line a second and 64 sit idle after one keep-alive
request, reopened whenever the server closes one, while 20 signed deliveries are posted one
after another. Every delivery must get its 202 within 5 s (a correctness bound, far above what
an unloaded receiver takes) and be loaded; the slow connections must have been held meanwhile,
and closed by the server within a few seconds of going quiet.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from loader import pipeline
from loader.config import Settings
from loader.processes import free_port, start_receiver, stop, wait_ready
from loader.spool import iter_all_deliveries

from .conftest import REPO, sign
from .slow_clients import SlowClients, post_deliveries
from .warehouse import landed_delivery_ids

SECRET = b"slow-client-secret"
ANSWER_WITHIN = 5.0  # seconds: Flagsmith waits 10
CLOSED_WITHIN = 10.0  # seconds: the server's header and keep-alive timeouts are 5
NGINX_EXAMPLE = REPO / "docs" / "nginx" / "flagsmith-warehouse.conf"


def _receiver(tmp_path: Path, extra: list[str] | None = None):
    env = {
        "PATH": "/usr/bin:/bin",
        "FLAGSMITH_WEBHOOK_SECRET": SECRET.decode(),
        "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
    }
    port = free_port()
    log = (tmp_path / "receiver.log").open("wb")
    process = start_receiver(env, port, extra, log=log)
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process, port, log


def _check_slow_clients(port: int, record_property) -> list[str]:
    """The issue's check against whatever listens on `port`; the delivery ids answered 202."""
    with SlowClients(port) as slow:
        time.sleep(3)  # the slow connections are all open before the first delivery
        answers = post_deliveries(port, SECRET, 20, timeout=ANSWER_WITHIN + 5, slow=slow)
    slowest = max(answer.seconds for answer in answers)
    record_property("slowest_answer_seconds", round(slowest, 3))
    report = slow.report
    print(
        f"slowest of 20 answers: {slowest:.3f} s; opened {report.opened}, closed by the server"
        f" { {kind: len(lived) for kind, lived in report.closed_after.items()} }"
    )

    assert [answer.status for answer in answers] == [202] * 20
    assert slowest < ANSWER_WITHIN, [round(answer.seconds, 3) for answer in answers]
    for kind in ("trickling", "idle"):
        # Held while the deliveries went in (a closed one is reopened within a tick) ...
        assert statistics.median(answer.held[kind] for answer in answers) >= 60, kind
        # ... and closed by the server, each within a few seconds.
        closed = report.closed_after[kind]
        assert len(closed) >= 64, (kind, report.opened, len(closed))
        assert max(closed) < CLOSED_WITHIN, (kind, max(closed))
        assert report.oldest_open[kind] < CLOSED_WITHIN, (kind, report.oldest_open)
    return [answer.delivery_id for answer in answers]


def _assert_loaded(tmp_path: Path, delivery_ids: list[str]) -> None:
    settings = Settings(
        spool_dir=tmp_path / "spool",
        duckdb_path=tmp_path / "warehouse.duckdb",
        state_dir=tmp_path / "state",
    )
    pipeline.load(settings)
    loaded = landed_delivery_ids(settings)
    assert set(delivery_ids) <= set(loaded)
    assert len(loaded) == len(set(loaded))


def _metric(port: int, sample: str) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    for line in answer.decode().splitlines():
        if line.rsplit(" ", 1)[0] == sample:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_slow_clients_do_not_starve_serve_as_it_starts_by_default(tmp_path, record_property):
    process, port, log = _receiver(tmp_path)
    try:
        delivery_ids = _check_slow_clients(port, record_property)
        closed = 'flagsmith_receiver_connections_closed_total{reason="header_timeout"}'
        assert _metric(port, closed) >= 64
    finally:
        stop(process)
        log.close()
    _assert_loaded(tmp_path, delivery_ids)


def test_waiting_connections_give_way_when_a_worker_is_full(tmp_path, record_property):
    """128 slow connections against one worker that holds 64: the waiting ones are shed."""
    process, port, log = _receiver(tmp_path, ["--workers", "1", "--connections", "64"])
    try:
        delivery_ids = _check_slow_clients(port, record_property)
        assert _metric(port, 'flagsmith_receiver_connections_closed_total{reason="shed"}') > 0
    finally:
        stop(process)
        log.close()
    _assert_loaded(tmp_path, delivery_ids)


def test_a_body_sent_too_slowly_is_cut_off_and_not_stored(tmp_path):
    process, port, log = _receiver(tmp_path)
    body = b'{"identity": "slow", "flags": [], "traits": [], "segments": []}' * 200
    head = b"POST /webhooks/flagsmith HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(head)
            started = time.monotonic()
            answer = None
            for offset in range(0, len(body), 50):  # 50 bytes a second, far under the minimum
                try:
                    connection.sendall(body[offset : offset + 50])
                except OSError:
                    break
                connection.settimeout(1.0)
                try:
                    answer = connection.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionResetError:  # closed with bytes of ours still unread
                    answer = b""
                break
            lived = time.monotonic() - started
        assert not answer, answer  # closed without an answer: no status at all
        assert lived < CLOSED_WITHIN
        closed = 'flagsmith_receiver_connections_closed_total{reason="body_timeout"}'
        assert _metric(port, closed) == 1
    finally:
        stop(process)
        log.close()
    assert list(iter_all_deliveries(tmp_path / "spool")) == []


def _signed_request(body: bytes, *, close: bool) -> bytes:
    return (
        b"POST /webhooks/flagsmith HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"X-Flagsmith-Signature: %s\r\n" % sign(body, SECRET).encode()
        + (b"Connection: close\r\n" if close else b"")
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _read_all(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_pipelined_requests_and_oversized_headers(tmp_path):
    """Requests sent back to back in one write are each answered; a header block past 64 KiB
    is refused with 431 instead of being waited on."""
    process, port, log = _receiver(tmp_path)
    first = b'{"identity": "a", "flags": [], "traits": [], "segments": []}'
    second = b'{"identity": "b", "flags": [], "traits": [], "segments": []}'
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(
                _signed_request(first, close=False) + _signed_request(second, close=True)
            )
            answer = _read_all(connection)
        assert answer.count(b"HTTP/1.1 202") == 2, answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"POST /webhooks/flagsmith HTTP/1.1\r\n")
            connection.sendall(b"X-Padding: %s\r\n" % (b"p" * 8000) * 9)  # no blank line
            answer = _read_all(connection)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
    finally:
        stop(process)
        log.close()
    stored = sorted(d.body for d in iter_all_deliveries(tmp_path / "spool"))
    assert stored == [first, second]


def test_a_request_thread_only_ever_gets_complete_requests(tmp_path):
    """One worker with one thread: clients stalled at every point of a request hold no thread."""
    process, port, log = _receiver(tmp_path, ["--workers", "1", "--threads", "1"])
    stalled = [
        b"\r\n\r\nPOST /webhooks/flagsmith HTTP/1.1\r\n",  # blank lines, then half a head
        b"POST /webhooks/flagsmith HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",  # half a body
        b"POST /webhooks/flagsmith HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{",
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n",  # then idle, kept alive
    ]
    connections = []
    try:
        for start in stalled:
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(start)
            connections.append(connection)
        time.sleep(0.5)
        answers = post_deliveries(port, SECRET, 3, interval=0.1, timeout=ANSWER_WITHIN)
        assert [answer.status for answer in answers] == [202] * 3
    finally:
        for connection in connections:
            connection.close()
        stop(process)
        log.close()


def _nginx() -> str | None:
    return shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _nginx_config(tmp_path: Path, listen: int, upstream: int) -> Path:
    """The documented example, on test ports, inside a minimal main config of its own."""
    example = NGINX_EXAMPLE.read_text()
    example, listens = re.subn(r"listen 127\.0\.0\.1:8080;", f"listen 127.0.0.1:{listen};", example)
    example, servers = re.subn(
        r"server 127\.0\.0\.1:8000\b", f"server 127.0.0.1:{upstream}", example
    )
    assert (listens, servers) == (1, 1), "the example's listen and upstream lines moved"
    (tmp_path / "flagsmith-warehouse.conf").write_text(example)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "temp" / name).mkdir(parents=True, exist_ok=True)
    config = tmp_path / "nginx.conf"
    config.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # its temporary files live in tmp_path
        + f"""
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/temp/client_body;
    proxy_temp_path {tmp_path}/temp/proxy;
    fastcgi_temp_path {tmp_path}/temp/fastcgi;
    uwsgi_temp_path {tmp_path}/temp/uwsgi;
    scgi_temp_path {tmp_path}/temp/scgi;
    include {tmp_path}/flagsmith-warehouse.conf;
}}
"""
    )
    return config


def test_slow_clients_do_not_starve_the_receiver_behind_the_nginx_example(
    tmp_path, record_property
):
    nginx = _nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's nginx-light)")
    process, upstream, log = _receiver(tmp_path)
    listen = free_port()
    config = _nginx_config(tmp_path, listen, upstream)
    subprocess.run([nginx, "-t", "-c", str(config), "-p", str(tmp_path)], check=True)
    proxy = subprocess.Popen(
        [nginx, "-c", str(config), "-p", str(tmp_path), "-g", "daemon off;"],
        start_new_session=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{listen}", proxy)
        delivery_ids = _check_slow_clients(listen, record_property)
    finally:
        proxy.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            proxy.wait(30)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        stop(process)
        log.close()
    _assert_loaded(tmp_path, delivery_ids)
