"""The experiment-health data tests warn on the failures they exist for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .bodies import body, flag
from .warehouse import Posted, dbt, land, warehouse_settings

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _experiment(variant, *, allocation=50.0):
    return flag(1, "checkout_button", value=variant, kind="MULTIVARIATE", allocation=allocation)


def test_sample_ratio_mismatch_and_switching_identities_warn(tmp_path):
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

    result = dbt(settings, "build")
    assert result.returncode == 0, result.output[-4000:]  # warnings, not errors
    assert result.status_of("warn_sample_ratio_mismatch") == "warn"
    assert result.status_of("warn_identity_in_several_variants_of_a_multivariate_flag") == "warn"


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
    assert result.status_of("warn_identity_in_several_variants_of_a_multivariate_flag") == "pass"
