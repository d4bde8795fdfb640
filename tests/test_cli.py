from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request

import pytest

from loader.cli import main, parse_duration
from loader.demo import free_port, start_receiver, stop, wait_ready
from loader.locks import exclusive
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


def test_serve_refuses_to_start_without_a_secret(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "loader.cli", "serve", "--port", str(free_port())],
        env={
            "PATH": "/usr/bin:/bin",
            "FLAGSMITH_SPOOL_DIR": str(tmp_path / "spool"),
            "FLAGSMITH_WEBHOOK_SECRET": " , ",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FLAGSMITH_WEBHOOK_SECRET" in result.stderr and "--allow-unsigned" in result.stderr


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


def test_bad_configuration_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_WAREHOUSE", "oracle")
    assert main(["load"]) == 2
    assert "FLAGSMITH_WAREHOUSE must be one of duckdb, postgres" in capsys.readouterr().err
