"""`flagsmith-warehouse status` against an empty, a healthy, a busy, a stale and a broken set-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from loader.cli import main
from loader.config import Settings
from loader.locks import warehouse_writer_lock
from loader.spool import Delivery, SpoolWriter, new_delivery_id
from loader.status import check, read_record

from .warehouse import land, simulated, warehouse_settings


def _environment(monkeypatch, settings: Settings) -> None:
    """The CLI reads its configuration from the environment: point it at `settings`."""
    monkeypatch.setenv("FLAGSMITH_SPOOL_DIR", str(settings.spool_dir))
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(settings.duckdb_path))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("FLAGSMITH_WAREHOUSE", settings.warehouse)
    monkeypatch.setenv("FLAGSMITH_DBT_TARGET_PATH", str(settings.dbt_target_path))


def _status_json(capsys, *flags: str) -> tuple[int, dict]:
    code = main(["status", "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


def _built(tmp_path, warehouse: str = "duckdb", count: int = 60) -> Settings:
    """A warehouse with `count` deliveries loaded and transformed through the real commands'
    code paths (the load and the transform record their state)."""
    from loader.transform import run_dbt

    settings = warehouse_settings(tmp_path / "node", warehouse)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    assert land(settings, simulated(count, seed=4)) == count
    assert run_dbt(settings, "build", ["--quiet"]) == 0
    return settings


def _spool_old_delivery(settings: Settings, age: timedelta) -> datetime:
    at = datetime.now(UTC) - age
    writer = SpoolWriter(settings.spool_dir, segment_seconds=3600)
    writer.append(Delivery(new_delivery_id(at), at, b'{"identity": "u1"}', None))
    writer.close()  # sealed: waits in ready/
    return at


def test_an_empty_set_up_is_healthy_with_nothing_received(tmp_path, monkeypatch, capsys):
    _environment(monkeypatch, warehouse_settings(tmp_path / "empty"))
    code, status = _status_json(capsys)
    assert code == 0
    assert status["verdict"] == "healthy: nothing received yet"
    assert status["warehouse_state"] == "missing"
    assert status["spool"]["exists"] is False
    assert sum(status["spool"]["segments"].values()) == 0
    assert status["spool"]["oldest_waiting_received_at"] is None
    assert status["last_load"] is None and status["last_transform"] is None
    assert not (tmp_path / "empty" / "warehouse.duckdb").exists(), "status must not create it"


def test_a_built_warehouse_is_healthy_and_shows_what_the_load_and_transform_did(
    tmp_path, monkeypatch, capsys
):
    settings = _built(tmp_path)
    _environment(monkeypatch, settings)
    code, status = _status_json(capsys)
    assert code == 0, status
    assert status["verdict"] == "healthy"
    assert status["figures_from"] == "warehouse"
    newest = max(posted.at for posted in simulated(60, seed=4))
    assert datetime.fromisoformat(status["raw_newest_received_at"]) == newest
    assert datetime.fromisoformat(status["marts_newest_received_at"]) == newest
    assert status["marts_lag_seconds"] == 0
    assert status["last_load"]["result"] == "success"
    assert status["last_load"]["deliveries"] == 60
    assert datetime.fromisoformat(status["last_load"]["raw_newest_received_at"]) == newest
    assert status["last_transform"]["result"] == "success"
    assert status["last_transform"]["dbt_exit_code"] == 0
    assert status["last_transform"]["dbt_results"]["success"] > 20
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert "last load: success at" in text and "60 deliveries" in text
    assert "verdict: healthy" in text


def test_a_backlog_older_than_the_threshold_is_unhealthy(tmp_path, monkeypatch, capsys):
    settings = warehouse_settings(tmp_path / "backlog")
    _environment(monkeypatch, settings)
    at = _spool_old_delivery(settings, timedelta(minutes=30))
    code, status = _status_json(capsys)
    assert code == 1
    assert status["spool"]["segments"]["ready"] == 1
    assert status["spool"]["bytes"]["ready"] > 0
    assert datetime.fromisoformat(status["spool"]["oldest_waiting_received_at"]) == at
    assert "the oldest delivery waiting in the spool was received 30m" in status["verdict"]
    code, status = _status_json(capsys, "--max-backlog-age", "1h")
    assert code == 0, status["verdict"]


def test_an_open_segment_of_a_running_receiver_counts_as_waiting(tmp_path, monkeypatch, capsys):
    settings = warehouse_settings(tmp_path / "receiving")
    _environment(monkeypatch, settings)
    writer = SpoolWriter(settings.spool_dir, segment_seconds=3600)  # holds its segment open
    try:
        at = datetime.now(UTC) - timedelta(seconds=5)
        writer.append(Delivery(new_delivery_id(at), at, b'{"identity": "u1"}', None))
        code, status = _status_json(capsys)
    finally:
        writer.close()
    assert code == 0
    assert status["spool"]["segments"]["open"] == 1
    assert datetime.fromisoformat(status["spool"]["oldest_waiting_received_at"]) == at


def test_marts_lagging_the_raw_tables_are_unhealthy(tmp_path, monkeypatch, capsys):
    settings = _built(tmp_path)
    later = simulated(90, seed=4)[60:]  # loaded, not transformed
    land(settings, later)
    _environment(monkeypatch, settings)
    code, status = _status_json(capsys, "--max-marts-lag", "1s")
    assert code == 1
    assert "the marts lag the raw tables by" in status["verdict"]
    expected_lag = (later[-1].at - simulated(60, seed=4)[-1].at).total_seconds()
    assert status["marts_lag_seconds"] == pytest.approx(expected_lag)
    code, _ = _status_json(capsys, "--max-marts-lag", f"{int(expected_lag) + 60}s")
    assert code == 0


def test_a_failed_transform_is_unhealthy(tmp_path, monkeypatch, capsys):
    from loader.transform import run_dbt

    settings = _built(tmp_path)
    monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", "Nowhere/Atlantis")
    assert run_dbt(settings, "build", ["--quiet"]) != 0
    monkeypatch.delenv("FLAGSMITH_REPORTING_TIMEZONE")
    record = read_record(settings, "transform")
    assert record["result"].startswith("failed (dbt exit code")
    _environment(monkeypatch, settings)
    code, status = _status_json(capsys)
    assert code == 1
    assert "the last transform did not succeed: failed (dbt exit code" in status["verdict"]


def _hold_the_file(settings: Settings):
    """A process holding the DuckDB file as a load does: the writer lock and a write connection."""
    script = (
        "import sys, time, duckdb\n"
        "from loader.locks import exclusive\n"
        f"with exclusive({str(warehouse_writer_lock(settings.duckdb_path))!r}, what='a test'):\n"
        f"    connection = duckdb.connect({str(settings.duckdb_path)!r})\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    return holder


def test_a_busy_duckdb_file_reads_the_recorded_state(tmp_path, monkeypatch, capsys):
    settings = _built(tmp_path)
    _environment(monkeypatch, settings)
    holder = _hold_the_file(settings)
    try:
        started = time.monotonic()
        code, status = _status_json(capsys)
        assert time.monotonic() - started < 10, "status must not wait for the load"
    finally:
        holder.kill()
        holder.wait()
    assert code == 0, status
    assert status["warehouse_state"] == "busy"
    assert status["figures_from"] == "recorded"
    newest = max(posted.at for posted in simulated(60, seed=4))
    assert datetime.fromisoformat(status["raw_newest_received_at"]) == newest
    assert datetime.fromisoformat(status["marts_newest_received_at"]) == newest
    assert status["verdict"].startswith("healthy (as last recorded: a load or transform is")


def test_a_busy_duckdb_file_with_nothing_recorded_cannot_tell(tmp_path, monkeypatch, capsys):
    settings = warehouse_settings(tmp_path / "busy")
    settings.duckdb_path.parent.mkdir(parents=True)
    _environment(monkeypatch, settings)
    holder = _hold_the_file(settings)
    try:
        code, status = _status_json(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert status["verdict"].startswith("cannot tell: a load or transform is already running")


def test_a_load_in_progress_is_shown_running(tmp_path, monkeypatch):
    settings = _built(tmp_path)
    from loader.status import recorded_step

    with recorded_step(settings, "load"):
        status = check(settings)
        assert status.last_load["result"] == "running"
        assert status.last_load["previous"]["deliveries"] == 60
    assert read_record(settings, "load")["result"] == "success"


def test_a_load_killed_mid_way_shows_interrupted(tmp_path):
    settings = warehouse_settings(tmp_path / "killed")
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from loader.config import Settings\n"
        "from loader.status import recorded_step\n"
        f"settings = Settings(state_dir=Path({str(settings.state_dir)!r}))\n"
        "with recorded_step(settings, 'load'):\n"
        "    os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    status = check(settings)
    assert status.last_load["result"] == "interrupted (the process is gone)"
    assert status.exit_code == 1


def test_a_broken_duckdb_file_cannot_tell(tmp_path, monkeypatch, capsys):
    settings = warehouse_settings(tmp_path / "broken")
    settings.duckdb_path.parent.mkdir(parents=True)
    settings.duckdb_path.write_bytes(b"this is not a database" * 1000)
    _environment(monkeypatch, settings)
    code, status = _status_json(capsys)
    assert code == 2
    assert status["warehouse_state"] == "unreachable"
    assert status["verdict"].startswith(f"cannot tell: cannot open {settings.duckdb_path}")


def test_an_unreachable_postgres_cannot_tell_and_says_why(tmp_path, monkeypatch, capsys):
    settings = warehouse_settings(tmp_path / "pg", "postgres")
    _environment(monkeypatch, settings)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", "1")  # nothing listens there
    code, status = _status_json(capsys)
    assert code == 2
    assert "cannot tell: cannot connect to Postgres postgres@127.0.0.1:1/" in status["verdict"]
    assert "Connection refused" in status["verdict"]


def test_status_on_postgres_reads_the_warehouse(tmp_path, monkeypatch, capsys, postgres_database):
    settings = _built(tmp_path, "postgres")
    _environment(monkeypatch, settings)
    code, status = _status_json(capsys)
    assert code == 0, status
    assert status["figures_from"] == "warehouse"
    newest = max(posted.at for posted in simulated(60, seed=4))
    assert datetime.fromisoformat(status["marts_newest_received_at"]) == newest
