"""The experiment-health data tests warn on the failures they exist for, and `transform` shows
their warnings to the person running it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import duckdb

from loader.transform import dbt_environment

from .bodies import body, flag
from .warehouse import Posted, dbt, land, warehouse_settings

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _experiment(variant):
    # Flagsmith reports the allocation of a multivariate option, none for the control
    allocation = None if variant == "control" else 50.0
    return flag(1, "checkout_button", value=variant, kind="MULTIVARIATE", allocation=allocation)


def _transform(settings, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loader.cli", "transform", *extra],
        env=dbt_environment(settings)
        | {
            "FLAGSMITH_SPOOL_DIR": str(settings.spool_dir),
            "FLAGSMITH_STATE_DIR": str(settings.state_dir),
        },
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_sample_ratio_mismatch_and_multi_arm_identities_warn_and_transform_says_so(tmp_path):
    posted = []
    at = START
    for number in range(200):  # reported 50/50, observed 150/50: a broken split
        at += timedelta(seconds=30)
        variant = "control" if number % 4 else "variant_b"
        posted.append(Posted(body(f"user_{number}", [_experiment(variant)]), at))
    at += timedelta(seconds=30)  # user_1 was control; the default now serves it variant_b
    posted.append(Posted(body("user_1", [_experiment("variant_b")]), at))
    settings = warehouse_settings(tmp_path)
    land(settings, posted)

    result = _transform(settings)
    assert result.returncode == 0, result.stdout[-4000:]  # warnings, not errors
    assert "warning: dbt data test warn_sample_ratio_mismatch found 1 row(s)" in result.stderr
    assert "warning: dbt data test warn_multi_arm_identities found 1 row(s)" in result.stderr
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        (p_value,) = connection.execute(
            "select srm_p_value from flagsmith.flagsmith__experiments"
        ).fetchone()
        assert p_value < 1e-6  # chi-square 50.0 with 1 degree of freedom


def test_a_healthy_experiment_passes_the_health_checks(tmp_path):
    posted = []
    at = START
    for number in range(200):
        at += timedelta(seconds=30)
        variant = "control" if number % 2 else "variant_b"
        posted.append(Posted(body(f"user_{number}", [_experiment(variant)]), at))
        posted.append(Posted(body(f"user_{number}", [_experiment(variant)]), at + timedelta(1)))
    settings = warehouse_settings(tmp_path)
    land(settings, posted)

    result = dbt(settings, "build")
    assert result.returncode == 0, result.output[-4000:]
    assert result.status_of("warn_sample_ratio_mismatch") == "pass"
    assert result.status_of("warn_multi_arm_identities") == "pass"


def test_an_identity_mapped_to_several_users_warns(tmp_path):
    settings = warehouse_settings(tmp_path)
    land(settings, [Posted(body("anon_1", [_experiment("control")]), START)])
    with duckdb.connect(str(settings.duckdb_path)) as connection:
        connection.execute("create schema analytics")
        connection.execute(
            "create table analytics.user_map as"
            " select * from (values ('anon_1', 'u_9'), ('anon_1', 'u_10')) as m(anonymous_id, uid)"
        )
    # the vars pass through `transform` to dbt, as a scheduled job would set them
    result = _transform(
        settings,
        "--",
        "--vars",
        "{flagsmith__identity_map: analytics.user_map,"
        " flagsmith__identity_map_identity_column: anonymous_id,"
        " flagsmith__identity_map_user_id_column: uid}",
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "warning: dbt data test warn_identity_mapped_to_several_users found 1 row(s)" in (
        result.stderr
    )
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        assert connection.execute(
            "select user_id from flagsmith.flagsmith__experiment_exposures"
        ).fetchall() == [("u_10",)]  # the smallest key, compared as text
