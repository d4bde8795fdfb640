"""Bad inputs against the real receiver (gunicorn, HTTP on a socket), one row of the table each.

Every answer is checked, and so is the spool: a 202 names a delivery that is on disk with the
exact bytes sent, anything else leaves the spool as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from loader import pipeline
from loader.config import Settings
from loader.processes import free_port, start_receiver, stop, wait_ready
from loader.simulate import generate, post_all
from loader.spool import iter_all_deliveries

from .conftest import shared_examples, sign
from .warehouse import landed_delivery_ids

NEW_SECRET = b"new-secret"
RETIRED_SECRET = b"retired-secret"  # rotated out: configured nowhere any more
PRODUCTION_SECRET = b"production-only"
LIMIT = 64 * 1024
BODY = shared_examples()[1][1]  # a real Flagsmith body (multivariate and segment override)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    directory = tmp_path_factory.mktemp("receiver")
    secrets_file = directory / "secrets.conf"
    secrets_file.write_text("# per-environment secrets\nproduction = production-only\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "FLAGSMITH_WEBHOOK_SECRET": NEW_SECRET.decode(),
        "FLAGSMITH_WEBHOOK_SECRETS_FILE": str(secrets_file),
        "FLAGSMITH_SPOOL_DIR": str(directory / "spool"),
        "FLAGSMITH_MAX_BODY_BYTES": str(LIMIT),
    }
    port = free_port()
    log = (directory / "receiver.log").open("wb")
    process = start_receiver(env, port, log=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield port, directory / "spool"
    finally:
        stop(process)
        log.close()


def _request(
    port: int,
    body: bytes = b"",
    *,
    method: str = "POST",
    path: str = "/webhooks/flagsmith",
    headers: list[tuple[str, bytes | str]] = (),
    content_length: int | None = None,
    chunked: bool = False,
) -> tuple[int, dict]:
    """One request written by hand on a socket, so headers can be repeated, lie or be chunked."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers:
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192])
                for i in range(0, len(body), 8192)
            )
            + b"0\r\n\r\n"
        )
    else:
        lines.append(
            b"Content-Length: %d" % (len(body) if content_length is None else content_length)
        )
        payload = body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(payload)  # the server may answer early (413) and close
        answer = b""
        while chunk := _recv(connection):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(rest) if rest else {}
    except ValueError:
        return status, {}


def _recv(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except (ConnectionResetError, TimeoutError):
        return b""


def _signed(body: bytes, secret: bytes = NEW_SECRET) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("X-Flagsmith-Signature", sign(body, secret))]


def _reserialised(**dumps_options) -> bytes:
    return json.dumps(json.loads(BODY), **dumps_options).encode()


def _reordered() -> bytes:
    document = json.loads(BODY)
    return json.dumps(dict(reversed(list(document.items())))).encode()


def _with_non_ascii_identity(**dumps_options) -> bytes:
    document = json.loads(BODY)
    document["identity"] = "zoë"
    return json.dumps(document, sort_keys=True, **dumps_options).encode()


ESCAPED = _with_non_ascii_identity()  # as Flagsmith sends and signs it: "zo\u00eb"
UNESCAPED = _with_non_ascii_identity(ensure_ascii=False)  # the same JSON, re-encoded by a relay
FLIPPED = BODY[:100] + bytes([BODY[100] ^ 1]) + BODY[101:]
LARGE = b'{"identity": "' + b"x" * (LIMIT + 10) + b'"}'
ENVELOPE = b'{"data": {"id": 1}, "event_type": "FLAG_UPDATED"}'
ACCEPTED, QUARANTINED = "accepted", "quarantined"

# (id, request keyword arguments, expected status, expected outcome or error)
CASES = [
    (
        "no-header",
        {"body": BODY, "headers": [("Content-Type", "application/json")]},
        401,
        "missing_signature",
    ),
    (
        "empty-header",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", "")]},
        401,
        "missing_signature",
    ),
    ("wrong-secret", {"body": BODY, "headers": _signed(BODY, b"guess")}, 401, "invalid_signature"),
    (
        "old-secret-after-rotation",
        {"body": BODY, "headers": _signed(BODY, RETIRED_SECRET)},
        401,
        "invalid_signature",
    ),
    (
        "truncated-signature",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", sign(BODY, NEW_SECRET)[:-1])]},
        401,
        "malformed_signature",
    ),
    (
        "too-long-signature",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", sign(BODY, NEW_SECRET) + "0")]},
        401,
        "malformed_signature",
    ),
    (
        "non-hex-signature",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", "z" * 64)]},
        401,
        "malformed_signature",
    ),
    (
        "non-ascii-signature",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", "é".encode() * 32)]},
        401,
        "malformed_signature",
    ),
    (
        "uppercase-hex",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", sign(BODY, NEW_SECRET).upper())]},
        202,
        ACCEPTED,
    ),
    (
        "sha256-prefix",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", "sha256=" + sign(BODY, NEW_SECRET))]},
        401,
        "malformed_signature",
    ),
    (
        "header-sent-twice",
        {"body": BODY, "headers": [("X-Flagsmith-Signature", sign(BODY, NEW_SECRET))] * 2},
        401,
        "malformed_signature",
    ),
    (
        "one-body-byte-flipped",
        {"body": FLIPPED, "headers": _signed(BODY)},
        401,
        "invalid_signature",
    ),
    (
        "trailing-newline-added",
        {"body": BODY + b"\n", "headers": _signed(BODY)},
        401,
        "invalid_signature",
    ),
    (
        "reserialised-key-order",
        {"body": _reordered(), "headers": _signed(BODY)},
        401,
        "invalid_signature",
    ),
    (
        "reserialised-compact",
        {"body": _reserialised(sort_keys=True, separators=(",", ":")), "headers": _signed(BODY)},
        401,
        "invalid_signature",
    ),
    (
        "unescaped-non-ascii",
        {"body": UNESCAPED, "headers": _signed(ESCAPED)},
        401,
        "invalid_signature",
    ),
    ("empty-body-signed", {"body": b"", "headers": _signed(b"")}, 202, QUARANTINED),
    ("empty-body-unsigned", {"body": b""}, 401, "missing_signature"),
    ("over-the-limit", {"body": LARGE, "headers": _signed(LARGE)}, 413, "too_large"),
    (
        "over-the-limit-declared-small",
        {"body": LARGE, "headers": _signed(LARGE), "content_length": 1000},
        401,
        "invalid_signature",
    ),
    (
        "declared-over-the-limit",
        {"body": BODY, "headers": _signed(BODY), "content_length": LIMIT + 1},
        413,
        "too_large",
    ),
    (
        "over-the-limit-chunked",
        {"body": LARGE, "headers": _signed(LARGE), "chunked": True},
        413,
        "too_large",
    ),
    (
        "chunked-within-the-limit",
        {"body": BODY, "headers": _signed(BODY), "chunked": True},
        202,
        ACCEPTED,
    ),
    (
        "form-content-type-signed",
        {
            "body": BODY,
            "headers": [
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Flagsmith-Signature", sign(BODY, NEW_SECRET)),
            ],
        },
        202,
        ACCEPTED,
    ),
    (
        "form-content-type-unsigned",
        {"body": b"a=1&b=2", "headers": [("Content-Type", "application/x-www-form-urlencoded")]},
        401,
        "missing_signature",
    ),
    ("get", {"method": "GET"}, 405, "method_not_allowed"),
    (
        "unknown-path",
        {"body": BODY, "headers": _signed(BODY), "path": "/webhooks/github"},
        404,
        "not_found",
    ),
    (
        "odd-environment-key",
        {"body": BODY, "headers": _signed(BODY), "path": "/webhooks/flagsmith/a%20b"},
        404,
        "unknown_environment_key",
    ),
    ("not-json-signed", {"body": b"hello", "headers": _signed(b"hello")}, 202, QUARANTINED),
    ("other-envelope-signed", {"body": ENVELOPE, "headers": _signed(ENVELOPE)}, 202, QUARANTINED),
    (
        "environment-secret",
        {
            "body": BODY,
            "headers": _signed(BODY, PRODUCTION_SECRET),
            "path": "/webhooks/flagsmith/production",
        },
        202,
        ACCEPTED,
    ),
    (
        "global-secret-on-an-environment-with-its-own",
        {"body": BODY, "headers": _signed(BODY), "path": "/webhooks/flagsmith/production"},
        401,
        "invalid_signature",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "outcome"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_table(receiver, kwargs, status, outcome):
    port, spool = receiver
    before = {d.delivery_id for d in iter_all_deliveries(spool)}
    answer_status, answer = _request(port, **kwargs)
    assert answer_status == status, answer
    after = {d.delivery_id: d for d in iter_all_deliveries(spool)}
    if status == 202:
        assert answer["status"] == outcome
        stored = after[answer["delivery_id"]]
        assert stored.body == kwargs["body"]
        assert set(after) - before == {answer["delivery_id"]}
    else:
        assert answer.get("error") == outcome
        assert set(after) == before, "a refused request must store nothing"


def test_metrics_count_across_workers(receiver):
    port, _ = receiver
    for _ in range(6):
        assert _request(port, BODY, headers=_signed(BODY))[0] == 202
        assert _request(port, BODY, headers=_signed(BODY, b"guess"))[0] == 401
    status, _ = _request(port, method="GET", path="/metrics")
    assert status == 200
    text = _metrics_text(port)
    assert _value(text, "flagsmith_webhook_accepted_total") >= 6
    assert _value(text, 'flagsmith_webhook_refused_total{reason="invalid_signature"}') >= 6
    assert _value(text, "flagsmith_receiver_unsigned_mode") == 0
    assert _value(text, "flagsmith_spool_writable") == 1
    assert 'flagsmith_spool_backlog_segments{state="ready"}' in text
    assert _value(text, "flagsmith_webhook_request_seconds_count") >= 12


def test_the_log_has_one_line_per_delivery_and_gunicorn_lines_intact(receiver):
    port, spool = receiver
    status, answer = _request(port, BODY, headers=_signed(BODY))
    assert status == 202
    log = (spool.parent / "receiver.log").read_text()
    assert "Logging error" not in log  # every handler formats every record, gunicorn's included
    assert re.search(r"\[\d+\] \[INFO\] Booting worker with pid: \d+", log)
    deliveries = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and '"event":"delivery"' in line
    ]
    assert [d for d in deliveries if d["delivery_id"] == answer["delivery_id"]]
    for secret in (NEW_SECRET.decode(), "production-only"):
        assert secret not in log
    assert BODY.decode() not in log


def _metrics_text(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := _recv(connection):
            answer += chunk
    return answer.partition(b"\r\n\r\n")[2].decode()


def _value(text: str, sample: str) -> float:
    """The value of one sample line, named with its labels exactly as exposed."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if not line.startswith("#") and line.rsplit(" ", 1)[0] == sample
    ]
    assert len(values) == 1, f"{sample} not found once in /metrics"
    return values[0]


def test_kill_9_during_a_burst_loses_nothing_that_got_a_202(tmp_path):
    """Every delivery answered 202 before the whole receiver was killed is loaded, once."""
    env = {
        "PATH": "/usr/bin:/bin",
        "FLAGSMITH_WEBHOOK_SECRET": "s3cr3t",
        "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
    }
    port = free_port()
    process = start_receiver(env, port)
    wait_ready(f"http://127.0.0.1:{port}", process)
    deliveries = generate(3000, seed=5, n_flags=20)
    answers: list = []
    sender = threading.Thread(
        target=lambda: answers.extend(
            post_all(f"http://127.0.0.1:{port}", deliveries, concurrency=16, timeout=5)
        )
    )
    sender.start()
    deadline = time.monotonic() + 30
    while not list(Path(tmp_path / "spool" / "open").glob("*.seg")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # in the middle of the burst
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    sender.join(120)
    acknowledged = {delivery_id for status, delivery_id in answers if status == 202}
    assert 0 < len(acknowledged) < len(deliveries), "the kill should land mid-burst"

    settings = Settings(
        spool_dir=tmp_path / "spool",
        duckdb_path=tmp_path / "warehouse.duckdb",
        state_dir=tmp_path / "state",
    )
    pipeline.load(settings)
    loaded = landed_delivery_ids(settings)
    assert len(loaded) == len(set(loaded))
    missing = acknowledged - set(loaded)
    assert not missing, f"{len(missing)} deliveries answered 202 were lost"


def test_sighup_applies_an_edited_secrets_file_without_a_restart(tmp_path):
    secrets_file = tmp_path / "secrets.conf"
    secrets_file.write_text("production = first\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "FLAGSMITH_WEBHOOK_SECRETS_FILE": str(secrets_file),
        "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
    }
    port = free_port()
    process = start_receiver(env, port)
    path = "/webhooks/flagsmith/production"
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        assert _request(port, BODY, headers=_signed(BODY, b"first"), path=path)[0] == 202
        assert _request(port, BODY, headers=_signed(BODY, b"second"), path=path)[0] == 401

        secrets_file.write_text("production = second\n")
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while _request(port, BODY, headers=_signed(BODY, b"second"), path=path)[0] != 202:
            assert time.monotonic() < deadline, "the new secret was not applied after SIGHUP"
            time.sleep(0.2)
        assert _request(port, BODY, headers=_signed(BODY, b"first"), path=path)[0] == 401

        secrets_file.write_text("production = \n")  # broken: the receiver keeps serving
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(3)
        assert process.poll() is None
        assert _request(port, BODY, headers=_signed(BODY, b"second"), path=path)[0] == 202
    finally:
        stop(process)


def test_sigterm_lets_a_request_in_flight_finish_and_be_stored(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "FLAGSMITH_WEBHOOK_SECRET": NEW_SECRET.decode(),
        "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
    }
    port = free_port()
    process = start_receiver(env, port)
    wait_ready(f"http://127.0.0.1:{port}", process)
    head = (
        b"POST /webhooks/flagsmith HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Flagsmith-Signature: "
        + sign(BODY, NEW_SECRET).encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head + BODY[:100])  # the request is in flight, its body half sent
        time.sleep(0.5)
        os.kill(process.pid, signal.SIGTERM)
        time.sleep(0.5)
        connection.sendall(BODY[100:])
        answer = b""
        while chunk := _recv(connection):
            answer += chunk
    process.wait(timeout=30)
    status = int(answer.split(b" ", 2)[1])
    assert status == 202, answer
    delivery_id = json.loads(answer.partition(b"\r\n\r\n")[2])["delivery_id"]
    stored = {d.delivery_id: d for d in iter_all_deliveries(tmp_path / "spool")}
    assert stored[delivery_id].body == BODY
    assert not list((tmp_path / "spool" / "open").glob("*.seg")), "the segment was sealed"
