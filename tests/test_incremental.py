"""Incremental builds give exactly the rows of a full refresh, whatever the batching and lateness.

A randomized stream of deliveries (some of one identity at the same instant) is landed in
random batches, one of them a "late spool" (a second receiver's deliveries, received earlier,
loaded after newer ones were transformed). After every batch the marts are built incrementally;
at the end they must equal, mart by mart and row by row, both a `--full-refresh` build of the
same data and the independent oracle.
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from loader.spool import Delivery

from .bodies import body, flag
from .marts import INTERMEDIATE_TABLES, assert_mart_equal, every_row, expected_marts, fetch_mart
from .oracle import COLUMNS, NO_OPTIONS, AnalystOptions
from .spark import SPARK_BUILD, spark_tables
from .warehouse import (
    Posted,
    connect,
    create_identity_map,
    dbt,
    land,
    simulated,
    warehouse_settings,
)


def _batches(seed: int, size: int = 700) -> list[list[Posted]]:
    rng = random.Random(seed)
    stream = simulated(size, seed, hide_disabled_flags=seed % 2 == 1)
    # Some deliveries of an identity share the received_at of its previous one, as when two
    # workers or two receivers stamp the same microsecond: they form one instant.
    previous_at: dict[str, datetime] = {}
    for index, posted in enumerate(stream):
        identity = orjson.loads(posted.body)["identity"]
        if identity in previous_at and rng.random() < 0.08:
            stream[index] = Posted(posted.body, previous_at[identity], posted.environment_key)
        previous_at[identity] = stream[index].at
    late = set(rng.sample(range(len(stream)), len(stream) // 6))
    on_time = [d for i, d in enumerate(stream) if i not in late]
    cuts = sorted(rng.sample(range(1, len(on_time)), 3))
    batches = [on_time[a:b] for a, b in zip([0, *cuts], [*cuts, len(on_time)], strict=True)]
    late_spool = [d for i, d in enumerate(stream) if i in late]
    batches.insert(rng.randint(1, len(batches) - 1), late_spool)
    return batches


OPTIONS = AnalystOptions(
    identity_map=(("user_1", "u-0001"), ("user_2", "u-0002"), ("user_2", "u-0000")),
    trait_columns=(("plan", "trait_plan"), ("country", "home_country")),
)
"""Analyst options for the runs that set them: two identities mapped (one to two keys), two
trait columns (one with an alias)."""


def options_vars(options: AnalystOptions) -> list[str]:
    """`--vars` for dbt that set these options (the map in analytics.user_map)."""
    trait_columns = [{"key": key, "alias": name} for key, name in options.trait_columns]
    chosen: dict = {"flagsmith__trait_columns": trait_columns}
    if options.identity_map:
        chosen["flagsmith__identity_map"] = "analytics.user_map"
    return ["--vars", json.dumps(chosen)]


def incremental_and_full_marts(settings, refreshed, tmp_path: Path):
    """Read connections to the marts and intermediate tables of two builds (`settings`, then
    `refreshed`): the warehouses' own, or on Spark DuckDB views over the tables read out to
    parquet under `tmp_path`."""
    if settings.warehouse != "spark":
        return connect(settings), connect(refreshed)
    names = [*COLUMNS, *INTERMEDIATE_TABLES]
    return (
        spark_tables(settings, names, tmp_path / "incremental-marts"),
        spark_tables(refreshed, names, tmp_path / "refreshed-marts"),
    )


def assert_incremental_builds_equal_a_full_refresh_and_the_oracle(
    tmp_path,
    seed: int,
    warehouse: str = "duckdb",
    size: int = 700,
    options: AnalystOptions = NO_OPTIONS,
) -> None:
    """Builds after every batch, then a full refresh of the same data (DuckDB: a copy of the
    file; Postgres: the same raw tables, marts in another schema), compared row by row, every
    mart and every intermediate table."""
    settings = warehouse_settings(tmp_path / "incremental", warehouse)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    if options.identity_map:
        create_identity_map(settings, options.identity_map)
    # Spark builds without the unit tests: their fixtures are written in DuckDB's and
    # Postgres's types, and they test the SQL those two run (docs/scaling-out.md).
    chosen = options_vars(options)
    build = ["build", *(SPARK_BUILD if warehouse == "spark" else ())]
    for number, batch in enumerate(_batches(seed, size)):
        assert land(settings, batch) == len(batch)
        result = dbt(settings, build if number == 0 else "run", *chosen)
        assert result.returncode == 0, result.output[-4000:]
    result = dbt(settings, build, *chosen)  # the scoped data tests pass on the last batch too
    assert result.returncode == 0, result.output[-4000:]

    if warehouse == "duckdb":
        refreshed, full_schema = warehouse_settings(tmp_path / "refreshed"), "flagsmith"
        refreshed.duckdb_path.parent.mkdir(parents=True)
        shutil.copy(settings.duckdb_path, refreshed.duckdb_path)
    elif warehouse == "spark":
        # the same lake, the marts in a Spark warehouse of their own
        refreshed = warehouse_settings(tmp_path / "refreshed", "spark", Path(settings.lake_dir))
        full_schema = "flagsmith"
    else:
        refreshed, full_schema = (
            warehouse_settings(tmp_path / "refreshed", warehouse),
            "flagsmith_full",
        )
    result = dbt(refreshed, build, "--full-refresh", *chosen, schema=full_schema)
    assert result.returncode == 0, result.output[-4000:]

    with connect(settings) as raw:  # the raw rows: the warehouse's own, or the lake's
        expected = expected_marts(raw, options)
    opened = incremental_and_full_marts(settings, refreshed, tmp_path)
    with opened[0] as incremental, opened[1] as full:
        for name in COLUMNS:
            actual = fetch_mart(incremental, name, options=options)
            assert actual, f"{name} is empty: the stream should exercise it"
            assert_mart_equal(
                actual,
                fetch_mart(full, name, full_schema, options),
                f"{name} (incremental vs full)",
            )
            assert_mart_equal(actual, expected[name], f"{name} (incremental vs oracle)")
        for name in [*COLUMNS, *INTERMEDIATE_TABLES]:
            assert every_row(incremental, name) == every_row(full, name, full_schema), name


@pytest.mark.parametrize(
    ("seed", "options"), [(3, NO_OPTIONS), (8, OPTIONS)], ids=["seed3", "seed8-options"]
)
def test_incremental_builds_equal_a_full_refresh_and_the_oracle(tmp_path, seed, options):
    assert_incremental_builds_equal_a_full_refresh_and_the_oracle(tmp_path, seed, options=options)


def test_a_late_delivery_at_the_same_instant_can_end_an_identitys_only_runs(tmp_path):
    """u1's only delivery makes it a segment member with a stored trait, exposed to an experiment.
    A delivery landed later, stamped with the same microsecond and a greater delivery id, lists
    neither and has the experiment switched off: the instant's state is the later one's, so u1
    has no membership, trait run or experiment period at all. The incremental run must remove
    the rows of a partition that is now empty, not only replace non-empty ones."""
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    features = [flag(1, "checkout", value="b", kind="MULTIVARIATE")]
    switched_off = [flag(1, "checkout", value="b", kind="MULTIVARIATE", enabled=False)]
    member = body(
        "u1",
        features,
        traits=[{"trait_key": "plan", "trait_value": "free", "transient": False}],
        segments=[{"id": 5, "name": "beta", "member": True}],
    )
    neither = body("u1", switched_off)
    other = body("u2", features, segments=[{"id": 5, "name": "beta", "member": True}])

    def record(delivery_id: str, payload: bytes, received_at: datetime) -> Delivery:
        return Delivery(delivery_id, received_at, payload, "production", "verified", None)

    settings = warehouse_settings(tmp_path / "late")
    land(settings, [record("0190-a", member, at), record("0190-c", other, at)])
    assert dbt(settings, "build").returncode == 0
    with connect(settings) as connection:
        before = fetch_mart(connection, "flagsmith__segment_membership_periods")
        assert [row["identity"] for row in before] == ["u1", "u2"]

    land(settings, [record("0190-b", neither, at)])
    result = dbt(settings, "build")
    assert result.returncode == 0, result.output[-4000:]
    with connect(settings) as connection:
        expected = expected_marts(connection)
        assert [r["identity"] for r in expected["flagsmith__segment_membership_periods"]] == ["u2"]
        assert expected["flagsmith__trait_history"] == []
        assert [r["identity"] for r in expected["flagsmith__experiment_exposures"]] == ["u2"]
        for name in COLUMNS:
            assert_mart_equal(fetch_mart(connection, name), expected[name], name)
