"""The sample-ratio check's p-value, computed in SQL by the dbt macro `chi_square_upper_tail`,
against scipy's chi2.sf: within 1e-6 absolute over a grid of statistics and 1 to 40 degrees of
freedom, on DuckDB and on Postgres (the same SQL; neither has an incomplete gamma function)."""

from __future__ import annotations

import subprocess

import duckdb
import pytest
from scipy.stats import chi2

from loader.transform import dbt_command, dbt_environment

from .postgres import PostgresConnection, postgres_database  # noqa: F401 (fixture)
from .warehouse import warehouse_settings

STATISTICS = [
    0.0, 1e-6, 0.004, 0.1, 0.455, 1.0, 2.0, 3.84, 5.99, 7.81, 10.83, 15.0, 20.5,
    30.0, 45.0, 63.7, 90.0, 140.0, 250.0, 600.0, 1199.0, 1250.0, 5000.0,
]  # fmt: skip
DEGREES_OF_FREEDOM = range(1, 41)


def _grid_sql(settings) -> str:
    """The macro applied to every (statistic, degrees of freedom) of the grid, compiled by dbt
    for the settings' warehouse."""
    values = ", ".join(f"({x!r}, {k})" for x in STATISTICS for k in DEGREES_OF_FREEDOM)
    inline = (
        "select x, k, {{ flagsmith_warehouse.chi_square_upper_tail('x', 'k') }} as p"
        f" from (values {values}) as grid (x, k)"
    )
    completed = subprocess.run(
        dbt_command(settings, "compile", ["--quiet", "--inline", inline]),
        env=dbt_environment(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def _assert_close_to_scipy(rows: list[tuple]) -> None:
    assert len(rows) == len(STATISTICS) * len(DEGREES_OF_FREEDOM)
    worst = max(rows, key=lambda row: abs(row[2] - chi2.sf(row[0], row[1])))
    x, k, p = worst
    assert abs(p - chi2.sf(x, k)) <= 1e-6, f"chi2.sf({x}, {k}) = {chi2.sf(x, k)}, SQL gives {p}"


def test_p_value_matches_scipy_on_duckdb(tmp_path):
    settings = warehouse_settings(tmp_path)
    sql = _grid_sql(settings)
    with duckdb.connect() as connection:
        rows = [(float(x), int(k), p) for x, k, p in connection.execute(sql).fetchall()]
    _assert_close_to_scipy(rows)


def test_p_value_matches_scipy_on_postgres(tmp_path, postgres_database):  # noqa: F811
    settings = warehouse_settings(tmp_path, "postgres")
    sql = _grid_sql(settings)
    with PostgresConnection() as connection:
        rows = [(float(x), int(k), p) for x, k, p in connection.execute(sql).fetchall()]
    _assert_close_to_scipy(rows)


@pytest.mark.parametrize("statistic", [-1.0, None])
def test_no_p_value_without_a_statistic_or_past_the_degrees_supported(tmp_path, statistic):
    settings = warehouse_settings(tmp_path)
    inline = (
        "select {{ flagsmith_warehouse.chi_square_upper_tail('x', 'k') }} as p"
        f" from (values ({'null' if statistic is None else statistic}, 3), (5.0, 41))"
        " as grid (x, k)"
    )
    completed = subprocess.run(
        dbt_command(settings, "compile", ["--quiet", "--inline", inline]),
        env=dbt_environment(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    with duckdb.connect() as connection:
        values = [row[0] for row in connection.execute(completed.stdout).fetchall()]
    assert values == ([None, None] if statistic is None else [1.0, None])
