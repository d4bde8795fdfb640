"""Postgres as the warehouse, for real: the loader into jsonb, `dbt build` with its data and unit
tests, marts equal to the oracle and to DuckDB's, incremental builds, the whole path over HTTP,
and several nodes loading into one database while dbt transforms.

Each test gets a new database (`postgres_database`, tests/postgres.py); they are required when
FLAGSMITH_TEST_POSTGRES=1 and skipped only when it is unset and no server answers. dbt and the
loader run with a far-off session time zone (tests.postgres.SESSION_TIME_ZONE): the marts must
not depend on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from loader.simulate import generate, post_all

from .marts import assert_mart_equal, every_row, expected_marts, fetch_mart, mart_columns
from .oracle import COLUMNS
from .postgres import PostgresConnection
from .test_end_to_end import (
    check_scripted_sequence_through_http_run_and_marts,
    check_simulated_traffic_marts_equal_the_independent_oracle,
    node_environment,
    running_receiver,
    wait_sealed,
)
from .test_incremental import (
    OPTIONS,
    assert_incremental_builds_equal_a_full_refresh_and_the_oracle,
)
from .test_reporting_timezone import check_zone_change_mid_history
from .warehouse import Posted, connect, dbt, deliveries, land, simulated, warehouse_settings


def test_loader_lands_the_payload_as_jsonb_with_a_node_pipeline(tmp_path, postgres_database):
    settings = warehouse_settings(tmp_path / "node", "postgres")
    posted = simulated(20, seed=1)
    assert land(settings, posted) == 20
    assert land(settings, []) == 0  # a second run of the same node: same pipeline, no new rows
    with connect(settings) as connection:
        types = dict(
            connection.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'flagsmith_raw' and table_name = 'identity_webhooks'"
            ).fetchall()
        )
        assert types["payload"] == "jsonb"
        assert types["received_at"] == "timestamp with time zone"
        assert connection.execute(
            "select count(*), count(distinct delivery_id) from flagsmith_raw.identity_webhooks"
        ).fetchone() == (20, 20)
        pipelines = connection.execute(
            "select distinct pipeline_name from flagsmith_raw._dlt_pipeline_state"
        ).fetchall()
        assert pipelines == [(f"flagsmith_warehouse_{settings.node}",)]
        schemas = {
            row[0]
            for row in connection.execute(
                "select schema_name from information_schema.schemata"
                " where schema_name like 'flagsmith_raw%'"
            ).fetchall()
        }
        assert schemas == {"flagsmith_raw", f"flagsmith_raw_staging_{settings.node}"}


def test_dbt_build_on_postgres_equals_the_oracle_and_duckdb_row_by_row(tmp_path, postgres_database):
    records = deliveries(simulated(400, seed=5))
    on_postgres = warehouse_settings(tmp_path / "postgres", "postgres")
    on_duckdb = warehouse_settings(tmp_path / "duckdb")
    for settings in (on_postgres, on_duckdb):
        assert land(settings, records) == len(records)

    built = dbt(on_postgres, "build")  # models, data tests and unit tests
    assert built.returncode == 0, built.output[-4000:]
    statuses = {result["unique_id"]: result["status"] for result in built.results}
    unit_tests = [key for key in statuses if key.startswith("unit_test.")]
    assert len(unit_tests) >= 12, unit_tests
    assert all(statuses[key] == "pass" for key in unit_tests), statuses
    # warn-severity health checks may warn on simulated experiments; nothing errors or fails
    assert set(statuses.values()) <= {"success", "pass", "warn"}, statuses
    assert dbt(on_duckdb, "build").returncode == 0

    with connect(on_postgres) as postgres, connect(on_duckdb) as duckdb:
        expected = expected_marts(postgres)
        assert expected == expected_marts(duckdb)  # the same raw deliveries in both
        for name in COLUMNS:
            assert expected[name], f"the stream should produce rows for {name}"
            actual = fetch_mart(postgres, name)
            assert_mart_equal(actual, expected[name], f"{name} (postgres vs oracle)")
            assert_mart_equal(actual, fetch_mart(duckdb, name), f"{name} (postgres vs duckdb)")
            assert mart_columns(postgres, name) == mart_columns(duckdb, name), name
            assert every_row(postgres, name) == every_row(duckdb, name), name


def _flag(feature_id: int, value) -> dict:
    return {
        "enabled": True,
        "environment": 7,
        "feature": {"id": feature_id, "name": f"f{feature_id}", "type": "STANDARD"},
        "feature_segment": None,
        "feature_state_value": value,
        "id": 100 + feature_id,
        "identity": None,
    }


# JSON values as Python's json (Flagsmith's serialiser) writes them, and the text and type the
# marts give them on both warehouses.
SCALARS = [
    (50.0, "50.0", "float"),
    (97.5, "97.5", "float"),
    (0.5, "0.5", "float"),
    (-2.25, "-2.25", "float"),
    (0.0, "0.0", "float"),
    (1e-05, "0.00001", "float"),  # json writes 1e-05; DuckDB (and so Postgres) 0.00001
    (1.5e-07, "1.5e-7", "float"),
    (123456.789, "123456.789", "float"),
    (0.1 + 0.2, "0.30000000000000004", "float"),
    (1e15, "1000000000000000.0", "float"),
    (42, "42", "integer"),
    (-7, "-7", "integer"),
    (12345678901234567890, "12345678901234567890", "integer"),
    ("plain", "plain", "string"),
    ('qu"ote\\ü', 'qu"ote\\ü', "string"),
    ("", "", "string"),
    ("1.5", "1.5", "string"),
    (True, "true", "boolean"),
    (False, "false", "boolean"),
    (None, None, "null"),
]


def test_scalar_text_and_type_on_postgres_equal_duckdb(tmp_path, postgres_database):
    flags = [_flag(number, value) for number, (value, _, _) in enumerate(SCALARS, start=1)]
    traits = [
        {"id": None, "trait_key": f"t{number}", "trait_value": value, "transient": False}
        for number, (value, _, _) in enumerate(SCALARS, start=1)
    ]
    # Documented difference: jsonb keeps a number's value, not its text, so a whole float that
    # json writes with an exponent (1e+16 and up) reads back as an integer on Postgres.
    traits.append({"id": None, "trait_key": "big", "trait_value": 1e16, "transient": False})
    body = json.dumps(
        {"flags": flags, "identity": "u1", "segments": [], "traits": traits}, sort_keys=True
    ).encode()
    records = deliveries([Posted(body, datetime(2026, 1, 1, tzinfo=UTC))])
    staging = ("--select", "+stg_flagsmith__flag_evaluations", "+stg_flagsmith__traits")
    found = {}
    for kind in ("postgres", "duckdb"):
        settings = warehouse_settings(tmp_path / kind, kind)
        assert land(settings, records) == 1
        result = dbt(settings, "run", *staging)
        assert result.returncode == 0, result.output[-4000:]
        with connect(settings) as connection:
            flags_found = connection.execute(
                "select feature_id, value, value_type"
                " from flagsmith.stg_flagsmith__flag_evaluations"
            ).fetchall()
            traits_found = connection.execute(
                "select trait_key, trait_value, trait_value_type, trait_value_number"
                " from flagsmith.stg_flagsmith__traits"
            ).fetchall()
        found[kind] = (sorted(flags_found), sorted(traits_found))

    postgres_flags, postgres_traits = found["postgres"]
    assert postgres_flags == [
        (number, text, kind) for number, (_, text, kind) in enumerate(SCALARS, start=1)
    ]
    traits_by_key = {key: row for key, *row in postgres_traits}
    for number, (value, text, kind) in enumerate(SCALARS, start=1):
        number_value = float(value) if kind in ("integer", "float") else None
        assert traits_by_key[f"t{number}"] == [text, kind, number_value], value
    assert traits_by_key["big"] == ["10000000000000000", "integer", 1e16]

    duckdb_flags, duckdb_traits = found["duckdb"]
    assert duckdb_flags == postgres_flags
    assert [row for row in duckdb_traits if row[0] != "big"] == [
        row for row in postgres_traits if row[0] != "big"
    ]
    assert ("big", "10000000000000000.0", "float", 1e16) in duckdb_traits


def test_incremental_builds_on_postgres_equal_a_full_refresh_and_the_oracle(
    tmp_path, postgres_database
):
    assert_incremental_builds_equal_a_full_refresh_and_the_oracle(
        tmp_path, seed=8, warehouse="postgres", size=300, options=OPTIONS
    )


def test_scripted_sequence_over_http_on_postgres(tmp_path, postgres_database):
    environment = node_environment(tmp_path, postgres_database)
    with running_receiver(environment) as receiver:
        check_scripted_sequence_through_http_run_and_marts(environment, receiver)


def test_simulated_traffic_over_http_on_postgres_equals_the_oracle(tmp_path, postgres_database):
    environment = node_environment(tmp_path, postgres_database)
    with running_receiver(environment) as receiver:
        check_simulated_traffic_marts_equal_the_independent_oracle(environment, receiver)


class _Looper(threading.Thread):
    """Runs one CLI command again and again until stopped; keeps each run's interval and exit."""

    def __init__(self, environment: dict[str, str], *command: str):
        super().__init__(daemon=True)
        self.environment, self.command = environment, command
        self.runs: list[tuple[float, float, int, str]] = []
        self.stopping = threading.Event()

    def run_once(self) -> int:
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "loader.cli", *self.command],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = completed.stdout[-3000:] + completed.stderr[-3000:]
        self.runs.append((started, time.monotonic(), completed.returncode, output))
        return completed.returncode

    def run(self) -> None:
        while not self.stopping.is_set():
            self.run_once()
            self.stopping.wait(0.5)  # leave the two cores some room between runs


def _overlap(first: list[tuple], second: list[tuple]) -> bool:
    return any(a[0] < b[1] and b[0] < a[1] for a in first for b in second)


def test_two_nodes_load_and_transform_at_once_into_one_postgres_database(
    tmp_path, postgres_database
):
    nodes = [node_environment(tmp_path / name, postgres_database) for name in ("a", "b")]
    # Flagsmith's webhook goes to a load balancer: one identity's deliveries reach both nodes.
    waves = [
        generate(60, seed=21 + wave, n_identities=20, n_flags=6, n_environments=2, mean_interval=60)
        for wave in range(3)
    ]
    accepted: list[str] = []
    with running_receiver(nodes[0]) as first, running_receiver(nodes[1]) as second:
        loaders = [_Looper(node, "load") for node in nodes]
        transformer = _Looper(nodes[0], "transform")
        for looper in [*loaders, transformer]:
            looper.start()
        for wave in waves:
            for base_url, half in ((first, wave[0::2]), (second, wave[1::2])):
                answers = post_all(base_url, half, concurrency=4)
                accepted += [delivery_id for status, delivery_id in answers if status == 202]
            time.sleep(1.5)
        deadline = time.monotonic() + 300
        while min(len(looper.runs) for looper in loaders) < 2 or not transformer.runs:
            assert time.monotonic() < deadline, "the loaders and dbt did not get to run"
            time.sleep(0.5)
        for looper in [*loaders, transformer]:
            looper.stopping.set()
        for looper in [*loaders, transformer]:
            looper.join(timeout=600)
    for node in nodes:
        wait_sealed(node)  # the receivers sealed their open segments on SIGTERM

    assert len(accepted) == sum(len(wave) for wave in waves)
    for looper in [*loaders, transformer]:
        assert [run[2] for run in looper.runs] == [0] * len(looper.runs), looper.runs[-1][3]
    assert _overlap(loaders[0].runs, loaders[1].runs), "the two loaders never ran at once"
    assert _overlap(transformer.runs, loaders[0].runs + loaders[1].runs), "dbt never overlapped"

    for looper in loaders:  # the rest of each spool, then a last build
        assert looper.run_once() == 0, looper.runs[-1][3]
    assert transformer.run_once() == 0, transformer.runs[-1][3]

    with PostgresConnection(postgres_database) as connection:
        landed = connection.execute(
            "select delivery_id, count(*) from flagsmith_raw.identity_webhooks group by 1"
        ).fetchall()
        assert sorted(delivery_id for delivery_id, _ in landed) == sorted(accepted)
        assert {count for _, count in landed} == {1}
        pipelines = connection.execute(
            "select count(distinct schema_name) from flagsmith_raw._dlt_loads"
        ).fetchone()[0]
        assert pipelines == 2, "each node loads through its own dlt pipeline"
        expected = expected_marts(connection)
        for name in COLUMNS:
            assert expected[name], f"the stream should produce rows for {name}"
            assert_mart_equal(fetch_mart(connection, name), expected[name], name)


def test_transform_waits_for_another_transform_on_postgres(tmp_path, postgres_database):
    """Two dbt runs on one schema would both append the same loads: the second one waits."""
    from loader.locks import postgres_advisory_lock
    from loader.transform import run_dbt

    settings = warehouse_settings(tmp_path / "node", "postgres")
    assert land(settings, simulated(10, seed=2)) == 10
    finished = threading.Event()

    def transform() -> None:
        assert run_dbt(settings, "run", ["--select", "+flagsmith__identities"]) == 0
        finished.set()

    worker = threading.Thread(target=transform, daemon=True)
    with postgres_advisory_lock("flagsmith_warehouse.transform:flagsmith", what="the test"):
        worker.start()
        time.sleep(3)
        assert not finished.is_set(), "transform ran while another held the schema's lock"
    worker.join(timeout=300)
    assert finished.is_set()
    with connect(settings) as connection:
        identities = connection.execute("select count(*) from flagsmith.flagsmith__identities")
        assert identities.fetchone()[0] > 0


def test_node_id_names_the_pipeline_and_staging_schema(tmp_path):
    """No database needed: how a node's dlt pipeline and staging schema are named."""
    from loader.config import ConfigError, Settings
    from loader.pipeline import destination, pipeline_name

    first = Settings.from_env({"FLAGSMITH_STATE_DIR": str(tmp_path / "a")})
    again = Settings.from_env({"FLAGSMITH_STATE_DIR": str(tmp_path / "a")})
    other = Settings.from_env({"FLAGSMITH_STATE_DIR": str(tmp_path / "b")})
    assert first.node == again.node != other.node
    named = Settings.from_env({"FLAGSMITH_NODE_ID": "EU_1", "FLAGSMITH_WAREHOUSE": "postgres"})
    assert named.node == "eu_1"
    assert pipeline_name(named) == "flagsmith_warehouse_eu_1"
    assert pipeline_name(first) == "flagsmith_warehouse"  # DuckDB: one loader per file
    layout = destination(named).config_params["staging_dataset_name_layout"]
    assert layout % "flagsmith_raw" == "flagsmith_raw_staging_eu_1"
    for bad in ("eu-1", "a" * 33, "ü"):
        with pytest.raises(ConfigError, match="FLAGSMITH_NODE_ID"):
            Settings.from_env({"FLAGSMITH_NODE_ID": bad})


def test_a_zone_change_mid_history_rebuilds_the_daily_marts_on_postgres(
    tmp_path, monkeypatch, postgres_database
):
    check_zone_change_mid_history(tmp_path, monkeypatch, "postgres")
