"""Every mart on Spark (dbt-spark, parquet tables in a local warehouse) from the raw tables the
loader landed in the lake: equal to the oracle and to DuckDB row by row, incremental builds
equal to a full refresh, and a transform killed while it writes safe to run again.

Needs Spark (tests/spark.py: required with FLAGSMITH_TEST_SPARK=1, skipped with the reason
otherwise). Spark builds run without the unit tests, as a scheduled `transform` does
(tests/spark.py, SPARK_BUILD). The histories are small: a Spark build costs seconds per model
whatever its size (docs/scaling-out.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loader.history import export, import_
from loader.transform import dbt_command, dbt_environment

from .marts import (
    INTERMEDIATE_TABLES,
    assert_mart_equal,
    every_row,
    expected_marts,
    fetch_mart,
    mart_columns,
)
from .oracle import COLUMNS
from .spark import (  # noqa: F401  (spark: the fixture)
    SPARK_BUILD,
    spark,
    spark_columns,
    spark_rows,
    spark_tables,
)
from .test_incremental import (
    _batches,
    assert_incremental_builds_equal_a_full_refresh_and_the_oracle,
)
from .test_postgres import SCALARS, _flag
from .warehouse import Posted, connect, dbt, deliveries, land, simulated, warehouse_settings

MARTS_AND_TABLES = [*COLUMNS, *INTERMEDIATE_TABLES]


@pytest.fixture
def spark_available(spark):  # noqa: F811
    """Spark can start here (the session fixture fails or skips otherwise); the builds run in
    dbt's own process."""
    return spark


def test_dbt_build_on_spark_equals_the_oracle_and_duckdb_row_by_row(tmp_path, spark_available):
    """Two nodes land their halves of the history into one lake; the Spark build (models and
    data tests) equals the oracle and a DuckDB build of the same deliveries, every column."""
    records = deliveries(simulated(300, seed=5))
    lake_dir = tmp_path / "lake"
    nodes = [
        replace(warehouse_settings(tmp_path / name, "spark", lake_dir), node_id=f"node_{name}")
        for name in ("a", "b")
    ]
    assert land(nodes[0], records[::2]) == len(records[::2])
    assert land(nodes[1], records[1::2]) == len(records[1::2])
    on_duckdb = warehouse_settings(tmp_path / "duckdb")
    assert land(on_duckdb, records) == len(records)

    built = dbt(nodes[0], ["build", *SPARK_BUILD])
    assert built.returncode == 0, built.output[-4000:]
    statuses = {result["unique_id"]: result["status"] for result in built.results}
    assert sum(key.startswith("test.") for key in statuses) >= 40, statuses
    # warn-severity health checks may warn on simulated experiments; nothing errors or fails
    assert set(statuses.values()) <= {"success", "pass", "warn"}, statuses
    assert dbt(on_duckdb, "build").returncode == 0

    with (
        connect(nodes[0]) as lake,
        connect(on_duckdb) as duckdb,
        spark_tables(nodes[0], MARTS_AND_TABLES, tmp_path / "marts") as marts,
    ):
        expected = expected_marts(lake)
        assert expected == expected_marts(duckdb)  # the same raw deliveries in both
        for name in COLUMNS:
            assert expected[name], f"the stream should produce rows for {name}"
            actual = fetch_mart(marts, name)
            assert_mart_equal(actual, expected[name], f"{name} (spark vs oracle)")
            assert_mart_equal(actual, fetch_mart(duckdb, name), f"{name} (spark vs duckdb)")
        for name in MARTS_AND_TABLES:
            assert spark_columns(marts, name) == mart_columns(duckdb, name), name
            assert spark_rows(marts, name) == every_row(duckdb, name), name


def test_scalar_text_and_type_on_spark_equal_duckdb(tmp_path, spark_available):
    """A variant keeps a number's value, not its text: the text and JSON type of every kind of
    flag value and trait value come out as DuckDB's (the table in tests/test_postgres.py); an
    excluded trait key is left out."""
    flags = [_flag(number, value) for number, (value, _, _) in enumerate(SCALARS, start=1)]
    traits = [
        {"id": None, "trait_key": f"t{number}", "trait_value": value, "transient": False}
        for number, (value, _, _) in enumerate(SCALARS, start=1)
    ]
    traits.append({"id": None, "trait_key": "big", "trait_value": 1e16, "transient": False})
    traits.append({"id": None, "trait_key": "email", "trait_value": "a@b.c", "transient": False})
    body = json.dumps(
        {"flags": flags, "identity": "u1", "segments": [], "traits": traits}, sort_keys=True
    ).encode()
    settings = warehouse_settings(tmp_path / "spark", "spark")
    assert land(settings, deliveries([Posted(body, datetime(2026, 1, 1, tzinfo=UTC))])) == 1
    staging = ("--select", "+stg_flagsmith__flag_evaluations", "+stg_flagsmith__traits")
    # excluded trait keys: staging leaves them out of the payload (docs/personal-data.md)
    result = dbt(settings, "run", *staging, "--vars", '{"flagsmith__excluded_trait_keys": "email"}')
    assert result.returncode == 0, result.output[-4000:]
    names = ["stg_flagsmith__flag_evaluations", "stg_flagsmith__traits"]
    with spark_tables(settings, names, tmp_path / "staged") as connection:
        flags_found = connection.execute(
            "select feature_id, value, value_type from flagsmith.stg_flagsmith__flag_evaluations"
        ).fetchall()
        traits_found = connection.execute(
            "select trait_key, trait_value, trait_value_type, trait_value_number"
            " from flagsmith.stg_flagsmith__traits"
        ).fetchall()
    assert sorted(flags_found) == [
        (number, text, kind) for number, (_, text, kind) in enumerate(SCALARS, start=1)
    ]
    traits_by_key = {key: row for key, *row in traits_found}
    for number, (value, text, kind) in enumerate(SCALARS, start=1):
        number_value = float(value) if kind in ("integer", "float") else None
        assert traits_by_key[f"t{number}"] == [text, kind, number_value], value
    assert traits_by_key["big"] == ["10000000000000000.0", "float", 1e16]  # as on DuckDB
    assert "email" not in traits_by_key
    assert len(traits_found) == len(SCALARS) + 1


def test_incremental_builds_on_spark_equal_a_full_refresh_and_the_oracle(tmp_path, spark_available):
    assert_incremental_builds_equal_a_full_refresh_and_the_oracle(
        tmp_path, seed=3, warehouse="spark", size=240
    )


def _writing_marks(settings) -> dict[str, str]:
    """The `writing` marks in the Spark watermark table, by model, read from its files."""
    table = Path(settings.spark_warehouse_dir) / "flagsmith.db" / "flagsmith__transform_watermarks"
    marks = {}
    for folder in table.glob("model_name=*"):
        for file in folder.glob("*.parquet"):
            try:
                rows = pq.read_table(file, columns=["writing"]).column("writing").to_pylist()
            except (OSError, ValueError):  # being written or replaced
                continue
            for value in rows:
                if value is not None:
                    marks[folder.name.split("=", 1)[1]] = value
    return marks


def _killed_while_writing(settings, model: str) -> str:
    """Runs `dbt run` and kills it (SIGKILL, JVM included) as soon as `model` has marked that it
    is writing its table; returns the mark."""
    process = subprocess.Popen(
        dbt_command(settings, "run"),
        env=dbt_environment(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            mark = _writing_marks(settings).get(model)
            if mark is not None:
                return mark
            assert process.poll() is None, f"dbt ended before {model} marked its write"
            time.sleep(0.05)
        raise AssertionError(f"{model} did not mark a write in 600 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_transform_killed_while_writing_is_safe_to_run_again(tmp_path, spark_available):
    """A transform killed (SIGKILL) while staging adds loads, and another while a mart rewrites
    its partitions: each next run finishes the work, and the marts equal a full refresh and the
    oracle."""
    settings = warehouse_settings(tmp_path / "incremental", "spark")
    batches = _batches(seed=11, size=160)
    assert land(settings, batches[0]) == len(batches[0])
    assert dbt(settings, "run").returncode == 0

    assert land(settings, batches[1]) == len(batches[1])
    mark = _killed_while_writing(settings, "stg_flagsmith__identity_webhooks")
    assert mark.startswith("loads "), mark  # staging lists the loads it is adding
    assert dbt(settings, "run").returncode == 0
    assert _writing_marks(settings) == {}

    assert land(settings, batches[2]) == len(batches[2])
    assert _killed_while_writing(settings, "flagsmith__flag_exposure_periods") == "rows"
    for batch in batches[3:]:
        assert land(settings, batch) == len(batch)
    result = dbt(settings, ["build", *SPARK_BUILD])
    assert result.returncode == 0, result.output[-4000:]
    assert _writing_marks(settings) == {}

    refreshed = warehouse_settings(tmp_path / "refreshed", "spark", Path(settings.lake_dir))
    result = dbt(refreshed, ["build", *SPARK_BUILD, "--full-refresh"])
    assert result.returncode == 0, result.output[-4000:]
    with connect(settings) as lake:
        expected = expected_marts(lake)
    with (
        spark_tables(settings, MARTS_AND_TABLES, tmp_path / "incremental-marts") as incremental,
        spark_tables(refreshed, MARTS_AND_TABLES, tmp_path / "refreshed-marts") as full,
    ):
        for name in COLUMNS:
            actual = fetch_mart(incremental, name)
            assert_mart_equal(actual, expected[name], f"{name} (after the kills vs oracle)")
        for name in MARTS_AND_TABLES:
            assert every_row(incremental, name) == every_row(full, name), name


def test_history_moved_from_duckdb_through_postgres_to_the_lake_builds_the_same_marts(
    tmp_path, postgres_database, spark_available
):
    """`export` from DuckDB, `import` into Postgres, `export` from Postgres (the payload as jsonb
    text), `import` into the lake: a full Spark build equals DuckDB's marts, every column."""
    records = deliveries(simulated(200, seed=13))
    on_duckdb = warehouse_settings(tmp_path / "duckdb")
    on_postgres = warehouse_settings(tmp_path / "postgres", "postgres")
    on_lake = warehouse_settings(tmp_path / "spark", "spark")
    assert land(on_duckdb, records) == len(records)
    assert dbt(on_duckdb, "run").returncode == 0
    export(on_duckdb, tmp_path / "from-duckdb")
    assert import_(on_postgres, tmp_path / "from-duckdb").identity_webhooks == len(records)
    export(on_postgres, tmp_path / "from-postgres")
    assert import_(on_lake, tmp_path / "from-postgres").identity_webhooks == len(records)
    built = dbt(on_lake, ["build", *SPARK_BUILD, "--full-refresh"])
    assert built.returncode == 0, built.output[-4000:]
    with (
        connect(on_duckdb) as duckdb,
        spark_tables(on_lake, list(COLUMNS), tmp_path / "marts") as marts,
    ):
        for name in COLUMNS:
            rows = fetch_mart(duckdb, name)
            assert rows, f"the history should produce rows for {name}"
            assert fetch_mart(marts, name) == rows, name
            assert spark_columns(marts, name) == mart_columns(duckdb, name), name
            assert spark_rows(marts, name) == every_row(duckdb, name), name
