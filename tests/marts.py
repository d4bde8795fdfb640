"""Reading marts out of the warehouse in the oracle's shape, for row-by-row comparisons.

`connection` is a DuckDB connection or `tests.postgres.PostgresConnection` (the same API), in UTC.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from .oracle import KEYS, NO_OPTIONS, AnalystOptions, build_marts, columns


def raw_rows(connection) -> list[tuple]:
    """The raw table as the oracle takes it: (delivery_id, received_at, environment_key, body)."""
    rows = connection.execute(
        "select delivery_id, received_at, environment_key, payload::varchar"
        " from flagsmith_raw.identity_webhooks"
    ).fetchall()
    return [(d, at.astimezone(UTC), key, payload.encode()) for d, at, key, payload in rows]


def _normal(value):
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _sort_key(row: dict, key: tuple[str, ...]):
    return tuple((row[column] is None, row[column]) for column in key)


def fetch_mart(
    connection, name: str, schema: str = "flagsmith", options: AnalystOptions = NO_OPTIONS
) -> list[dict]:
    selected = columns(name, options)
    select = ", ".join(f'"{column}"' for column in selected)
    result = connection.execute(f"select {select} from {schema}.{name}").fetchall()
    rows = [dict(zip(selected, map(_normal, row), strict=True)) for row in result]
    return sorted(rows, key=lambda row: _sort_key(row, KEYS[name]))


def expected_marts(connection, options: AnalystOptions = NO_OPTIONS) -> dict[str, list[dict]]:
    marts = build_marts(raw_rows(connection), options)
    return {
        name: sorted(rows, key=lambda row: _sort_key(row, KEYS[name]))
        for name, rows in marts.items()
    }


INTERMEDIATE_TABLES = (
    "int_flagsmith__identities",
    "int_flagsmith__experiment_arm_exposures",
    "int_flagsmith__experiment_allocations",
)
"""The incremental tables under the views, compared whole between incremental and full builds."""

TOLERANCE = {"srm_chi_square": (1e-9, 0.0), "srm_p_value": (0.0, 1e-6)}
"""Columns computed in floating point by different means (relative, absolute): the chi-square
summed in another order, the p-value by a series in SQL against scipy (1e-6 absolute)."""


def _same(column: str, got, want) -> bool:
    if column in TOLERANCE and isinstance(got, float) and isinstance(want, float):
        relative, absolute = TOLERANCE[column]
        return math.isclose(got, want, rel_tol=relative, abs_tol=absolute)
    return got == want


def assert_mart_equal(actual: list[dict], expected: list[dict], name: str) -> None:
    """Row-by-row equality with a readable first difference."""
    assert len(actual) == len(expected), f"{name}: {len(actual)} rows, oracle {len(expected)}"
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        if got.keys() != want.keys() or not all(_same(k, got[k], want[k]) for k in want):
            differing = {
                k: (got.get(k), want[k]) for k in want if not _same(k, got.get(k), want[k])
            }
            raise AssertionError(
                f"{name} row {index} differs (warehouse, oracle): "
                + json.dumps(differing, default=str)
                + f"\nwarehouse row: {got}"
            )


def mart_columns(connection, name: str, schema: str = "flagsmith") -> list[str]:
    """Every column of a built mart, the contract's and the model's own, but the batch stamp
    (a build's clock, not data)."""
    rows = connection.execute(
        "select column_name from information_schema.columns"
        " where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, name],
    ).fetchall()
    return [row[0] for row in rows if row[0] != "transform_batch_at"]


def every_row(connection, name: str, schema: str = "flagsmith") -> list[tuple]:
    """All rows of a mart with all its columns (`mart_columns`), in a stable order."""
    columns = mart_columns(connection, name, schema)
    select = ", ".join(f'"{column}"' for column in columns)
    return sorted(
        (
            tuple(map(_normal, row))
            for row in connection.execute(f"select {select} from {schema}.{name}").fetchall()
        ),
        key=lambda row: tuple((value is None, str(value)) for value in row),
    )
