"""Helpers for tests that land deliveries with the real loader and run dbt for real."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from loader import lake, pipeline
from loader.config import Settings
from loader.payload import classify
from loader.simulate import iter_deliveries
from loader.spool import Delivery, SpoolWriter, new_delivery_id
from loader.transform import dbt_command, dbt_environment

from .postgres import PostgresConnection


@dataclass(frozen=True)
class Posted:
    """A body as it reached a receiver: when, and under which URL key."""

    body: bytes
    at: datetime
    environment_key: str | None = None


def simulated(count: int, seed: int, *, hide_disabled_flags: bool = True) -> list[Posted]:
    """Simulated traffic of a small project (30 identities, 8 flags, 2 environments)."""
    return [
        Posted(d.body, d.at, d.environment_key)
        for d in iter_deliveries(
            count,
            seed=seed,
            n_identities=30,
            n_flags=8,
            n_environments=2,
            mean_interval=600,
            hide_disabled_flags=hide_disabled_flags,
        )
    ]


def warehouse_settings(
    directory: Path, warehouse: str = "duckdb", lake_dir: Path | None = None
) -> Settings:
    """A node's settings in `directory`; on Postgres, the database of the PG* variables; on
    Spark, the lake `lake_dir` (default `directory/lake`), which several nodes may share."""
    return Settings(
        spool_dir=directory / "spool",
        warehouse=warehouse,
        duckdb_path=directory / "warehouse.duckdb",
        state_dir=directory / "state",
        dbt_target_path=directory / "dbt-target",
        lake_dir=str(lake_dir or directory / "lake"),
        spark_warehouse_dir=directory / "spark-warehouse",
    )


def deliveries(posted: Iterable[Posted]) -> list[Delivery]:
    """The spool records a receiver would write for these bodies (received_at = `at`)."""
    records = []
    for item in posted:
        verdict = classify(item.body)
        records.append(
            Delivery(
                new_delivery_id(item.at),
                item.at,
                item.body,
                item.environment_key,
                "verified",
                None,
                verdict.kind,
                verdict.reason,
            )
        )
    return records


def land(settings: Settings, posted: Iterable[Posted | Delivery]) -> int:
    """Spool the bodies (or ready spool records, to land the same ones in two warehouses), then
    run the real loader."""
    writer = SpoolWriter(settings.spool_dir, segment_bytes=1 << 30, segment_seconds=3600)
    for item in posted:
        for record in [item] if isinstance(item, Delivery) else deliveries([item]):
            writer.append(record)
    writer.close()
    return pipeline.load(settings).deliveries


@dataclass
class DbtResult:
    returncode: int
    output: str
    results: list[dict]

    def status_of(self, name: str) -> str:
        return next(r["status"] for r in self.results if r["unique_id"].split(".")[-1] == name)


def dbt(
    settings: Settings, command: str | Sequence[str], *extra: str, schema: str | None = None
) -> DbtResult:
    """Run dbt on the project against `settings` (the marts in `schema`, default `flagsmith`);
    returns its exit code, output, run results."""
    environment = dbt_environment(settings)
    if schema is not None:
        environment["FLAGSMITH_DBT_SCHEMA"] = schema
    completed = subprocess.run(
        dbt_command(settings, command, extra),
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    results_path = Path(settings.dbt_target_path) / "run_results.json"
    results = json.loads(results_path.read_text())["results"] if results_path.exists() else []
    return DbtResult(completed.returncode, completed.stdout + completed.stderr, results)


def connect(settings: Settings):
    """A read connection to the warehouse in UTC: DuckDB's, one with its API on Postgres, or on
    the lake an in-memory DuckDB whose `flagsmith_raw` views read the files of complete loads."""
    if settings.warehouse == "postgres":
        return PostgresConnection()
    if settings.warehouse == "spark":
        return lake_connection(settings.lake_dir)
    connection = duckdb.connect(str(settings.duckdb_path), read_only=True)
    connection.execute("set TimeZone = 'UTC'")
    return connection


def lake_connection(lake_dir: str):
    """DuckDB views `flagsmith_raw.identity_webhooks`, `quarantined_webhooks` and `_dlt_loads`
    over the lake's files, as readers must take them: only files of loads recorded complete."""
    connection = duckdb.connect()
    connection.execute("set TimeZone = 'UTC'")
    connection.execute("create schema flagsmith_raw")
    loads = lake.completed_loads(lake_dir, pipeline.DATASET)
    connection.execute(
        "create table flagsmith_raw._dlt_loads (load_id varchar, schema_name varchar, status int)"
    )
    for load_id, schema_name in loads.items():
        connection.execute(
            "insert into flagsmith_raw._dlt_loads values (?, ?, 0)", [load_id, schema_name]
        )
    for table in (pipeline.IDENTITY_TABLE, pipeline.QUARANTINE_TABLE):
        files = lake.table_files(lake_dir, pipeline.DATASET, table, loads)
        assert files, f"no file of a complete load for {table} in {lake_dir}"
        listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
        connection.execute(
            f"create view flagsmith_raw.{table} as select * from read_parquet([{listed}])"
        )
    return connection


def landed_delivery_ids(settings: Settings) -> list[str]:
    """Every delivery id in the raw identity table in a load recorded complete (what staging
    reads), duplicates kept (so tests can find them)."""
    with connect(settings) as connection:
        rows = connection.execute(
            "select delivery_id from flagsmith_raw.identity_webhooks"
            " where _dlt_load_id in (select load_id from flagsmith_raw._dlt_loads where status = 0)"
        )
        return [row[0] for row in rows.fetchall()]


def create_identity_map(settings: Settings, pairs: Iterable[tuple[str, str]]) -> None:
    """analytics.user_map(identity, user_id) in the warehouse, as a host project's own table."""
    statements = [
        "create schema if not exists analytics",
        "drop table if exists analytics.user_map",
        "create table analytics.user_map (identity varchar, user_id varchar)",
    ]
    if settings.warehouse == "postgres":
        connection = PostgresConnection()
    else:
        connection = duckdb.connect(str(settings.duckdb_path))
    with connection:
        for statement in statements:
            connection.execute(statement)
        for identity, user_id in pairs:
            connection.execute("insert into analytics.user_map values (?, ?)", [identity, user_id])
