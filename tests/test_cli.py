from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from loader.cli import main, parse_duration
from loader.locks import exclusive
from loader.processes import free_port, start_receiver, stop, wait_ready
from loader.spool import iter_all_deliveries

from .conftest import SHARED


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("1h30m", 5400), ("2h", 7200)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "soon", "5x", "-3"])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "no webhook secret"),
        ("", "no webhook secret"),
        ("   ", "no webhook secret"),
        (" , ", "empty secret"),
        ("good,", "empty secret"),
    ],
    ids=["unset", "empty", "blank", "only-commas", "trailing-comma"],
)
def test_serve_refuses_to_start_without_a_usable_secret(tmp_path, secret, message):
    env = {"PATH": "/usr/bin:/bin", "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool")}
    if secret is not None:
        env["FLAGSMITH_WEBHOOK_SECRET"] = secret
    result = subprocess.run(
        [sys.executable, "-m", "loader.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "FLAGSMITH_WEBHOOK_SECRET" in result.stderr


def test_serve_refuses_allow_unsigned_next_to_secrets(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "loader.cli", "serve", "--allow-unsigned", "--port", "1"],
        env={
            "PATH": "/usr/bin:/bin",
            "FLAGSMITH_WEBHOOK_SECRET": "s3cr3t",
            "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--allow-unsigned" in result.stderr


def test_serve_allow_unsigned_stores_deliveries_marked_unsigned(tmp_path):
    spool = tmp_path / "spool"
    env = {"PATH": "/usr/bin:/bin", "FLAGSMITH_SPOOL_DIR": str(spool)}
    port = free_port()
    process = start_receiver(env, port, ["--allow-unsigned"])
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        body = (SHARED / "no_segments_no_traits.json").read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/flagsmith",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202
            delivery_id = json.loads(answer.read())["delivery_id"]
    finally:
        stop(process)
    [stored] = list(iter_all_deliveries(spool))
    assert (stored.delivery_id, stored.signature_status) == (delivery_id, "unsigned")
    assert stored.secret_fingerprint is None


def test_load_exits_75_when_another_load_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    with exclusive(tmp_path / "state" / "loader.lock", what="test"):
        assert main(["load"]) == 75
    assert "already running" in capsys.readouterr().err


def test_load_out_of_duckdb_memory_says_what_to_do_and_loses_nothing(tmp_path, monkeypatch, capsys):
    """Bodies too big for the loader's DuckDB cap: a clear message, exit 1, and the deliveries
    stay in the spool; with a bigger cap the next load lands each of them once."""
    import duckdb

    from loader.simulate import iter_deliveries
    from loader.spool import Delivery, SpoolWriter, new_delivery_id

    monkeypatch.setenv("FLAGSMITH_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "CRITICAL")
    writer = SpoolWriter(tmp_path / "spool")
    ids = set()
    for item in iter_deliveries(150, seed=9, n_flags=900, n_identities=50):
        delivery = Delivery(new_delivery_id(item.at), item.at, item.body, item.environment_key)
        writer.append(delivery)
        ids.add(delivery.delivery_id)
    writer.close()
    monkeypatch.setenv("FLAGSMITH_LOADER_DUCKDB_MEMORY", "32MB")
    assert main(["load"]) == 1
    err = capsys.readouterr().err
    assert "DuckDB ran out of memory" in err and "FLAGSMITH_LOADER_DUCKDB_MEMORY=32MB" in err
    assert "(Out of Memory Error: " in err and "try 64MB" in err
    assert {d.delivery_id for d in iter_all_deliveries(tmp_path / "spool")} == ids

    monkeypatch.setenv("FLAGSMITH_LOADER_DUCKDB_MEMORY", "1GB")
    assert main(["load"]) == 0
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        landed = connection.execute(
            "select delivery_id from flagsmith_raw.identity_webhooks"
        ).fetchall()
    assert sorted(row[0] for row in landed) == sorted(ids)


@pytest.mark.parametrize(("cap", "advice"), [("80%", "try twice that"), ("100KB", "try 1MB")])
def test_the_out_of_memory_advice_copes_with_any_cap_duckdb_takes(
    tmp_path, monkeypatch, capsys, cap, advice
):
    import duckdb

    from loader import pipeline

    def out_of_memory(*args, **kwargs):
        try:
            raise duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block")
        except duckdb.OutOfMemoryException as error:
            raise RuntimeError("Pipeline execution failed at step=load") from error

    monkeypatch.setenv("FLAGSMITH_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(pipeline, "load", out_of_memory)
    monkeypatch.setenv("FLAGSMITH_LOADER_DUCKDB_MEMORY", cap)
    assert main(["load"]) == 1
    err = capsys.readouterr().err
    assert f"FLAGSMITH_LOADER_DUCKDB_MEMORY={cap} (Out of Memory Error: failed to pin block)" in err
    assert advice in err


def test_bad_configuration_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_WAREHOUSE", "oracle")
    assert main(["load"]) == 2
    assert "FLAGSMITH_WAREHOUSE must be one of duckdb, postgres" in capsys.readouterr().err


def test_demo_lays_down_history_then_runs_the_whole_path_and_prints_the_first_look(tmp_path):
    data_dir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loader.cli",
            "demo",
            "--deliveries",
            "80",
            "--history-days",
            "6",
            "--data-dir",
            str(data_dir),
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DLT_DATA_DIR": str(tmp_path / "dlt")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    history = int(re.search(r"laying down (\d+) simulated deliveries over 6 days", out).group(1))
    assert 6 * 250 - 20 <= history <= 6 * 250
    assert f"loaded {history} deliveries ({history} identity webhooks, 0 quarantined)" in out
    live = 6 * 250 + 80 - history
    assert f"answers: {{202: {live}}}" in out
    assert f"loaded {live} deliveries ({live} identity webhooks, 0 quarantined)" in out
    for header in (
        ["environment", "keys", "identities", "deliveries", "first", "last", "days"],
        ["date", "identities", "per", "variant"],
        ["date", "members", "entered", "exited"],
    ):
        assert any(line.split() == header for line in out.splitlines()), header
    assert "Daily exposures of checkout_button in environment" in out
    assert "Segment gradual_rollout in environment" in out
    report = data_dir / "report.html"
    assert f"The report (open it in a browser): {report}" in out
    assert report.stat().st_size > 10_000

    # the history landed marked `simulated`, over the days asked, and the live part `verified`
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as connection:
        rows = connection.execute(
            "select signature_status, count(*), min(received_at), max(received_at)"
            " from flagsmith_raw.identity_webhooks group by 1 order by 1"
        ).fetchall()
    (simulated, count, first, last), (verified, live_count, live_first, _) = rows
    assert (simulated, count, verified, live_count) == ("simulated", history, "verified", live)
    assert timedelta(days=5) < last - first <= timedelta(days=6)
    assert last <= live_first


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--data-dir", str(tmp_path)]) == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_transform_waits_for_the_loader_instead_of_failing_on_the_duckdb_lock(tmp_path):
    from loader.locks import warehouse_writer_lock

    duckdb_path = tmp_path / "warehouse.duckdb"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FLAGSMITH_DUCKDB_PATH": str(duckdb_path),
        "FLAGSMITH_STATE_DIR": str(tmp_path / "state"),
    }
    with exclusive(warehouse_writer_lock(duckdb_path), what="a test load"):
        transform = subprocess.Popen(
            [sys.executable, "-m", "loader.cli", "transform"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                transform.wait(timeout=3)  # still waiting: it has not touched the file
            assert not duckdb_path.exists()
        finally:
            transform.kill()
            _, stderr = transform.communicate()
    assert "waiting for the loader to finish" in stderr


def test_load_without_a_terminal_logs_one_summary_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "loader.cli", "load"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
            "FLAGSMITH_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            "FLAGSMITH_STATE_DIR": str(tmp_path / "state"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("loaded 0 deliveries (0 identity webhooks, 0 quarantined)")


def test_load_on_a_terminal_shows_progress(tmp_path):
    import pty

    from loader.spool import Delivery, SpoolWriter, new_delivery_id

    writer = SpoolWriter(tmp_path / "spool", segment_bytes=1)
    body = (SHARED / "no_segments_no_traits.json").read_bytes()
    for _ in range(6):
        now = datetime.now(UTC)
        writer.append(Delivery(new_delivery_id(now), now, body))
    writer.close()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
        "FLAGSMITH_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "FLAGSMITH_STATE_DIR": str(tmp_path / "state"),
        "FLAGSMITH_LOAD_BATCH_SIZE": "2",
        "FLAGSMITH_LOAD_COMMIT_SIZE": "2",  # progress follows commits: one per 2 deliveries
    }
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "loader.cli", "load"],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0
    os.close(leader)
    text = output.decode()
    assert "\rloaded 2 deliveries in 1 batches" in text and "waiting:" in text
    assert "loaded 6 deliveries (6 identity webhooks, 0 quarantined)" in text


def test_the_demo_history_takes_only_bodies_the_simulator_signed(tmp_path):
    from loader.demo import write_history
    from loader.simulate import SimulatedWebhook, generate

    stream = generate(5, seed=3, secret=b"demo")
    forged = SimulatedWebhook(b'{"identity": "mallory"}', stream[0].signature, None, stream[0].at)
    with pytest.raises(ValueError, match="only deliveries the simulator signed"):
        write_history(tmp_path / "spool", [*stream, forged], b"demo")
    assert not list(iter_all_deliveries(tmp_path / "spool")), "nothing written"

    assert write_history(tmp_path / "spool", stream, b"demo") == 5
    written = list(iter_all_deliveries(tmp_path / "spool"))
    assert [(d.body, d.received_at, d.signature_status) for d in written] == [
        (s.body, s.at, "simulated") for s in stream
    ]
