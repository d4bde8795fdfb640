"""The experiment marts and the analyst options across incremental runs: a feature's type change
reclassifies its history, changed options apply on the next `transform` with every row right, and
bad options fail at compile time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from .bodies import body, flag
from .marts import assert_mart_equal, expected_marts, fetch_mart, mart_columns
from .oracle import COLUMNS, NO_OPTIONS, AnalystOptions
from .test_incremental import options_vars
from .warehouse import Posted, connect, create_identity_map, dbt, land, warehouse_settings

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPERIMENT_MARTS = (
    "flagsmith__experiment_assignments",
    "flagsmith__experiment_exposures",
    "flagsmith__experiments",
)


def _checkout(value, kind):
    return flag(1, "checkout", value=value, kind=kind)


def _posted(start_minute: int, identities: range, kind: str, traits=()) -> list[Posted]:
    return [
        Posted(
            body(f"user_{n}", [_checkout("ab"[n % 2], kind)], traits=traits),
            START + timedelta(minutes=start_minute + n),
        )
        for n in identities
    ]


def _assert_marts_equal_the_oracle(settings, options=NO_OPTIONS) -> dict:
    with connect(settings) as connection:
        expected = expected_marts(connection, options)
        for name in COLUMNS:
            assert_mart_equal(fetch_mart(connection, name, options=options), expected[name], name)
    return expected


def test_a_type_change_reclassifies_the_features_whole_history(tmp_path):
    settings = warehouse_settings(tmp_path)
    land(settings, _posted(0, range(6), "STANDARD"))
    assert dbt(settings, "build").returncode == 0
    expected = _assert_marts_equal_the_oracle(settings)
    assert all(expected[name] == [] for name in EXPERIMENT_MARTS)

    # one identity's next delivery calls it MULTIVARIATE: every identity's history is now in it
    land(settings, _posted(100, range(1), "MULTIVARIATE"))
    result = dbt(settings, "build")
    assert result.returncode == 0, result.output[-4000:]
    expected = _assert_marts_equal_the_oracle(settings)
    assert len(expected["flagsmith__experiment_exposures"]) == 6

    # and back: no experiment at all
    land(settings, _posted(200, range(1, 2), "STANDARD"))
    assert dbt(settings, "build").returncode == 0
    expected = _assert_marts_equal_the_oracle(settings)
    assert all(expected[name] == [] for name in EXPERIMENT_MARTS)
    with connect(settings) as connection:
        assert connection.execute(
            "select count(*) from flagsmith.int_flagsmith__experiment_arm_exposures"
        ).fetchone() == (0,)


def test_changed_options_apply_on_the_next_transform(tmp_path):
    settings = warehouse_settings(tmp_path)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    plan = {"trait_key": "plan", "trait_value": "pro", "transient": False}
    seats = {"trait_key": "Seat Count", "trait_value": 12, "transient": False}
    land(settings, _posted(0, range(4), "MULTIVARIATE", traits=[plan, seats]))
    before = AnalystOptions(
        identity_map=(("user_1", "u1"),), trait_columns=(("plan", "trait_plan"),)
    )
    create_identity_map(settings, before.identity_map)
    assert dbt(settings, "build", *options_vars(before)).returncode == 0
    _assert_marts_equal_the_oracle(settings, before)

    # other map rows, other trait columns; no new delivery, no --full-refresh
    after = AnalystOptions(
        identity_map=(("user_1", "u9"), ("user_2", "u2")),
        trait_columns=(("Seat Count", "trait_seat_count"), ("plan", "current_plan")),
    )
    create_identity_map(settings, after.identity_map)
    result = dbt(settings, "build", *options_vars(after))
    assert result.returncode == 0, result.output[-4000:]
    _assert_marts_equal_the_oracle(settings, after)
    with connect(settings) as connection:
        columns = mart_columns(connection, "flagsmith__identities")
        assert "trait_plan" not in columns  # no stale column
        assert columns[-2:] == ["trait_seat_count", "current_plan"]
        assert connection.execute(
            "select identity, user_id, trait_seat_count"
            " from flagsmith.flagsmith__experiment_exposures order by identity"
        ).fetchall() == [
            ("user_0", "user_0", "12"),
            ("user_1", "u9", "12"),
            ("user_2", "u2", "12"),
            ("user_3", "user_3", "12"),
        ]


@pytest.mark.parametrize(
    ("chosen", "message"),
    [
        (["Plan"], None),  # trait_plan: fine
        ([{"key": "plan", "alias": "Plan"}], "is not a column name"),
        (["a b", "a-b"], "two columns would be named 'trait_a_b'"),
        ([{"key": "plan", "alias": "identity"}], "two columns would be named 'identity'"),
        ([{"key": "plan", "label": "x"}], "unknown field(s) label"),
        ("plan", "must be a list"),
    ],
)
def test_trait_columns_are_checked_at_compile_time(tmp_path, chosen, message):
    settings = warehouse_settings(tmp_path)
    land(settings, _posted(0, range(1), "STANDARD"))
    result = dbt(
        settings,
        "compile",
        "--select",
        "flagsmith__identities",
        "--vars",
        json.dumps({"flagsmith__trait_columns": chosen}),
    )
    if message is None:
        assert result.returncode == 0, result.output[-3000:]
    else:
        assert result.returncode != 0
        assert message in result.output, result.output[-3000:]


def test_an_excluded_trait_key_cannot_be_a_column(tmp_path):
    settings = warehouse_settings(tmp_path)
    land(settings, _posted(0, range(1), "STANDARD"))
    result = dbt(
        settings,
        "compile",
        "--select",
        "flagsmith__identities",
        "--vars",
        json.dumps(
            {"flagsmith__trait_columns": ["email"], "flagsmith__excluded_trait_keys": ["email"]}
        ),
    )
    assert result.returncode != 0
    assert "trait key 'email' is excluded" in result.output
