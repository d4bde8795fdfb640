"""`export DIR` / `import DIR`: raw history moved between DuckDB, Postgres and the lake, for real
(the real loader, a real Postgres database, dbt builds), with nothing lost or doubled."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loader import lake, pipeline
from loader.cli import main
from loader.history import HistoryError, export, import_

from .marts import every_row, fetch_mart, mart_columns
from .oracle import COLUMNS
from .warehouse import Posted, connect, dbt, deliveries, land, simulated, warehouse_settings

RAW_COLUMNS = (
    "delivery_id, received_at, environment_key, signature_status, body_sha256, payload::varchar,"
    " _dlt_id"
)
QUARANTINE_COLUMNS = (
    "delivery_id, received_at, environment_key, signature_status, body_sha256, reason, body,"
    " body_base64, _dlt_id"
)


def _raw(settings, columns: str = RAW_COLUMNS, table: str = "identity_webhooks") -> list[tuple]:
    """Every row of a raw table in a complete load (what staging reads), sorted."""
    with connect(settings) as connection:
        return sorted(
            connection.execute(
                f"select {columns} from flagsmith_raw.{table} where _dlt_load_id in"
                " (select load_id from flagsmith_raw._dlt_loads where status = 0)"
            ).fetchall()
        )


def _history():
    """Simulated traffic, and one authentic body that is not an identity webhook."""
    posted = simulated(300, seed=11)
    posted.append(
        Posted(b'{"data": {}, "event_type": "FLAG_UPDATED"}', datetime(2026, 1, 2, tzinfo=UTC))
    )
    return deliveries(posted)


def _assert_marts_equal(settings, reference) -> None:
    with connect(settings) as built, connect(reference) as expected:
        for name in COLUMNS:
            rows = fetch_mart(expected, name)
            assert rows, f"the history should produce rows for {name}"
            assert fetch_mart(built, name) == rows, name
            assert mart_columns(built, name) == mart_columns(expected, name), name
            assert every_row(built, name) == every_row(expected, name), name


def test_history_moves_duckdb_to_postgres_to_the_lake_and_back(tmp_path, postgres_database):
    records = _history()
    on_duckdb = warehouse_settings(tmp_path / "duckdb")
    on_postgres = warehouse_settings(tmp_path / "postgres", "postgres")
    on_lake = warehouse_settings(tmp_path / "spark", "spark")
    back_on_duckdb = warehouse_settings(tmp_path / "duckdb-again")
    assert land(on_duckdb, records) == len(records)
    assert dbt(on_duckdb, "build").returncode == 0

    # DuckDB -> Postgres: every mart of a full refresh equals DuckDB's, row by row.
    export(on_duckdb, tmp_path / "from-duckdb")
    first = import_(on_postgres, tmp_path / "from-duckdb")
    assert (first.identity_webhooks, first.quarantined_webhooks, first.skipped) == (300, 1, 0)
    again = import_(on_postgres, tmp_path / "from-duckdb")  # idempotent
    assert (again.identity_webhooks, again.quarantined_webhooks, again.skipped) == (0, 0, 301)
    built = dbt(on_postgres, "build", "--full-refresh")
    assert built.returncode == 0, built.output[-4000:]
    _assert_marts_equal(on_postgres, on_duckdb)
    with connect(on_postgres) as connection:
        loads = connection.execute(
            "select count(*), count(distinct _dlt_load_id) from flagsmith_raw.identity_webhooks"
        ).fetchone()
    assert loads == (300, 1)  # one import, one dlt load, recorded in _dlt_loads

    # Postgres -> the lake: the rows as Postgres holds them (the payload is jsonb's text).
    export(on_postgres, tmp_path / "from-postgres")
    manifest = json.loads((tmp_path / "from-postgres" / "manifest.json").read_text())
    assert (manifest["warehouse"], manifest["payload"]) == ("postgres", "jsonb text")
    assert import_(on_lake, tmp_path / "from-postgres").identity_webhooks == 300
    assert import_(on_lake, tmp_path / "from-postgres").skipped == 301
    assert _raw(on_lake) == _raw(on_postgres)
    assert _raw(on_lake, QUARANTINE_COLUMNS, "quarantined_webhooks") == _raw(
        on_postgres, QUARANTINE_COLUMNS, "quarantined_webhooks"
    )
    by_id = {record.delivery_id: record for record in records}
    for row in _raw(on_lake):
        assert json.loads(row[5]) == json.loads(by_id[row[0]].body)  # same JSON, other spelling

    # The lake -> DuckDB: the marts of the history that went round equal the first DuckDB's.
    export(on_lake, tmp_path / "from-lake")
    assert import_(back_on_duckdb, tmp_path / "from-lake").identity_webhooks == 300
    assert dbt(back_on_duckdb, "build", "--full-refresh").returncode == 0
    _assert_marts_equal(back_on_duckdb, on_duckdb)
    # and every raw column but the payload's spelling and the load id equal the first DuckDB's
    original = [row[:5] + row[6:] for row in _raw(on_duckdb)]
    assert [row[:5] + row[6:] for row in _raw(back_on_duckdb)] == original


def test_duckdb_to_the_lake_keeps_every_column_and_the_body_byte_for_byte(tmp_path):
    history = _history()
    records = history[:40] + history[-1:]
    on_duckdb = warehouse_settings(tmp_path / "duckdb")
    on_lake = warehouse_settings(tmp_path / "spark", "spark")
    assert land(on_duckdb, records) == 41
    summary = export(on_duckdb, tmp_path / "export")
    assert (summary.identity_webhooks, summary.quarantined_webhooks) == (40, 1)
    schema = pq.read_schema(tmp_path / "export" / "identity_webhooks.parquet")
    assert schema.names == [
        "delivery_id",
        "received_at",
        "environment_key",
        "signature_status",
        "body_sha256",
        "payload",
        "_dlt_id",
        "_dlt_load_id",
    ]
    assert import_(on_lake, tmp_path / "export").identity_webhooks == 40
    assert _raw(on_lake) == _raw(on_duckdb)
    assert _raw(on_lake, QUARANTINE_COLUMNS, "quarantined_webhooks") == _raw(
        on_duckdb, QUARANTINE_COLUMNS, "quarantined_webhooks"
    )
    by_id = {record.delivery_id: record for record in records}
    for row in _raw(on_lake):
        assert row[5].encode() == by_id[row[0]].body

    # The lake's export again: the same rows, its files of incomplete loads never read.
    table_dir = Path(on_lake.lake_dir) / "flagsmith_raw" / "identity_webhooks"
    (table_dir / "1999999999.5.deadbeef00.parquet").write_bytes(b"PAR1 cut short")
    export(on_lake, tmp_path / "from-lake")
    exported = pq.read_table(tmp_path / "from-lake" / "identity_webhooks.parquet")
    assert sorted(exported["delivery_id"].to_pylist()) == sorted(
        r.delivery_id for r in records[:40]
    )
    loads = lake.completed_loads(on_lake.lake_dir, pipeline.DATASET)
    assert set(exported["_dlt_load_id"].to_pylist()) <= set(loads)


def test_an_import_skips_delivery_ids_already_there_and_never_doubles(tmp_path):
    records = deliveries(simulated(30, seed=12))
    source = warehouse_settings(tmp_path / "source")
    target = warehouse_settings(tmp_path / "target")
    assert land(source, records) == 30
    export(source, tmp_path / "export")
    # The target already has ten of these deliveries (same ids) and five of its own.
    assert land(target, records[:10] + deliveries(simulated(5, seed=13))) == 15
    first = import_(target, tmp_path / "export")
    assert (first.identity_webhooks, first.skipped) == (20, 10)
    assert "10 already in the warehouse, skipped" in first.line("imported")
    second = import_(target, tmp_path / "export")
    assert (second.identity_webhooks, second.skipped) == (0, 30)
    ids = [row[0] for row in _raw(target)]
    assert len(ids) == len(set(ids)) == 35
    assert {record.delivery_id for record in records} <= set(ids)
    # the import is a load staging takes: a dbt build sees every delivery
    assert dbt(target, "run", "--select", "stg_flagsmith__identity_webhooks").returncode == 0
    with connect(target) as connection:
        staged = connection.execute(
            "select count(*) from flagsmith.stg_flagsmith__identity_webhooks"
        ).fetchone()[0]
    assert staged == 35


def test_export_and_import_refuse_what_they_cannot_use(tmp_path, monkeypatch, capsys):
    settings = warehouse_settings(tmp_path / "duckdb")
    assert land(settings, deliveries(simulated(3, seed=14))) == 3
    export(settings, tmp_path / "export")
    with pytest.raises(HistoryError, match="already holds an export"):
        export(settings, tmp_path / "export")
    with pytest.raises(HistoryError, match=r"manifest\.json is missing"):
        import_(settings, tmp_path / "nothing")

    # Through the command line, configured from the environment.
    monkeypatch.setenv("FLAGSMITH_SPOOL_DIR", str(settings.spool_dir))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(settings.duckdb_path))
    assert main(["export", str(tmp_path / "export")]) == 1
    assert "already holds an export" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "second")]) == 0
    assert "exported to" in capsys.readouterr().err
    monkeypatch.setenv("FLAGSMITH_WAREHOUSE", "spark")
    monkeypatch.setenv("FLAGSMITH_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(tmp_path / "lake-state"))
    assert main(["import", str(tmp_path / "second")]) == 0
    assert "imported from" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "second")]) == 0
    assert "3 already in the warehouse, skipped" in capsys.readouterr().err
