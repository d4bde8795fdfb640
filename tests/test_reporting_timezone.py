"""The reporting time zone: daily marts in local dates, and a zone change mid-history.

History spans about two weeks (one delivery every couple of hours); it is built in batches, one
of them late, first in one zone; then the zone changes (FLAGSMITH_REPORTING_TIMEZONE) and more
batches arrive. After every build the daily marts must equal the oracle in the zone of that
build, and at the end a full refresh: a changed zone rebuilds them whole, never a mix.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest

from loader.simulate import iter_deliveries

from .marts import assert_mart_equal, every_row, expected_marts, fetch_mart
from .oracle import COLUMNS, AnalystOptions
from .warehouse import Posted, connect, dbt, land, warehouse_settings

DAILY_MARTS = ("flagsmith__daily_feature_exposures", "flagsmith__daily_segment_memberships")


def _history(seed: int, count: int) -> list[list[Posted]]:
    """Four batches in arrival order; the third holds deliveries received before the second's."""
    stream = [
        Posted(d.body, d.at, d.environment_key)
        for d in iter_deliveries(
            count, seed=seed, n_identities=25, n_environments=2, mean_interval=7200
        )
    ]
    rng = random.Random(seed)
    late = set(rng.sample(range(count // 3, count), count // 8))
    on_time = [d for i, d in enumerate(stream) if i not in late]
    third = len(on_time) // 3
    return [
        on_time[:third],
        on_time[third : 2 * third],
        [d for i, d in enumerate(stream) if i in late],
        on_time[2 * third :],
    ]


def _recorded_states(connection) -> dict[str, str | None]:
    rows = connection.execute(
        "select model_name, recorded_state from flagsmith.flagsmith__transform_watermarks"
    ).fetchall()
    return dict(rows)


def _check_daily_marts(settings, zone: str) -> None:
    options = AnalystOptions(reporting_timezone=zone)
    with connect(settings) as connection:
        expected = expected_marts(connection, options)
        for name in DAILY_MARTS:
            actual = fetch_mart(connection, name, options=options)
            assert actual, f"{name} is empty"
            assert_mart_equal(actual, expected[name], f"{name} in {zone}")
        states = _recorded_states(connection)
    for name in DAILY_MARTS:
        assert states[name] == f"reporting_timezone={zone}"


def check_zone_change_mid_history(tmp_path, monkeypatch, warehouse: str) -> None:
    settings = warehouse_settings(tmp_path / "incremental", warehouse)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    batches = _history(seed=5, count=240)
    # UTC-8/-7 first, then a half-hour zone east of UTC: most days move for some deliveries
    zones = ["America/Los_Angeles", "America/Los_Angeles", "Asia/Kolkata", "Asia/Kolkata"]
    for batch, zone in zip(batches, zones, strict=True):
        monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", zone)
        assert land(settings, batch) == len(batch)
        result = dbt(settings, "build")
        assert result.returncode == 0, result.output[-4000:]
        _check_daily_marts(settings, zone)

    if warehouse == "duckdb":
        refreshed, schema = warehouse_settings(tmp_path / "refreshed"), "flagsmith"
        refreshed.duckdb_path.parent.mkdir(parents=True)
        shutil.copy(settings.duckdb_path, refreshed.duckdb_path)
    else:
        refreshed, schema = warehouse_settings(tmp_path / "refreshed", warehouse), "flagsmith_full"
    result = dbt(refreshed, "build", "--full-refresh", schema=schema)
    assert result.returncode == 0, result.output[-4000:]
    with connect(settings) as incremental, connect(refreshed) as full:
        for name in [*COLUMNS]:
            assert every_row(incremental, name) == every_row(full, name, schema), name


def test_a_zone_change_mid_history_rebuilds_the_daily_marts(tmp_path, monkeypatch):
    check_zone_change_mid_history(tmp_path, monkeypatch, "duckdb")


def test_vars_given_to_dbt_win_over_the_environment(tmp_path, monkeypatch):
    settings = warehouse_settings(tmp_path / "vars")
    settings.duckdb_path.parent.mkdir(parents=True)
    batch = [d for batch in _history(seed=2, count=80) for d in batch]
    land(settings, batch)
    monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", "America/Los_Angeles")
    chosen = json.dumps({"flagsmith__reporting_timezone": "Pacific/Auckland"})
    result = dbt(settings, "build", "--vars", chosen)
    assert result.returncode == 0, result.output[-4000:]
    _check_daily_marts(settings, "Pacific/Auckland")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "utc+2", "Europe/Berlin'; drop table x"])
def test_an_unknown_zone_is_an_error_at_compile_time(tmp_path, monkeypatch, zone):
    settings = warehouse_settings(tmp_path / "bad")
    settings.duckdb_path.parent.mkdir(parents=True)
    land(settings, [d for batch in _history(seed=1, count=12) for d in batch])
    monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", zone)
    result = dbt(settings, "build")
    assert result.returncode != 0
    assert "must be an IANA time zone name" in result.output
    assert zone in result.output
