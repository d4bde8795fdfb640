"""The oracle is what the SQL is judged against, so it is judged against hand-computed rows.

Each test builds a few deliveries of one scenario and checks one behaviour of one mart.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from loader.simulate import generate
from tests.oracle import COLUMNS, KEYS, AnalystOptions, build_marts, value_text

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_MISSING = object()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def flag(
    feature_id: int = 1,
    name: str = "dark_mode",
    *,
    enabled: bool = True,
    value: Any = None,
    environment: int = 10,
    identity: int | None = None,
    feature_segment: int | None = None,
    state_id: int = 100,
    feature_type: str = "STANDARD",
    allocation: Any = _MISSING,
    description: str | None = None,
    initial_value: str | None = None,
    default_enabled: bool = False,
) -> dict[str, Any]:
    result = {
        "enabled": enabled,
        "environment": environment,
        "feature": {
            "created_date": "2026-01-02T03:04:05.123456Z",
            "default_enabled": default_enabled,
            "description": description,
            "id": feature_id,
            "initial_value": initial_value,
            "name": name,
            "type": feature_type,
        },
        "feature_segment": feature_segment,
        "feature_state_value": value,
        "id": state_id,
        "identity": identity,
    }
    if allocation is not _MISSING:
        result["percentage_allocation"] = allocation
    return result


def trait(key: str, value: Any, *, transient: bool = False) -> dict[str, Any]:
    return {"id": None, "trait_key": key, "trait_value": value, "transient": transient}


def segment(segment_id: int, name: str, member: bool) -> dict[str, Any]:
    return {"id": segment_id, "member": member, "name": name}


def body(
    identity: str = "u1",
    flags: list[dict[str, Any]] | None = None,
    traits: list[dict[str, Any]] | None = None,
    segments: list[dict[str, Any]] | None = None,
) -> bytes:
    payload = {
        "flags": [flag()] if flags is None else flags,
        "identity": identity,
        "segments": segments or [],
        "traits": traits or [],
    }
    return json.dumps(payload, sort_keys=True).encode()


def raw(minutes: float, payload: bytes, key: str | None = "production", delivery_id: str = ""):
    return (delivery_id or f"d{minutes:08.2f}", at(minutes), key, payload)


def mart(name: str, *rows) -> list[dict[str, Any]]:
    return build_marts(rows)[f"flagsmith__{name}"]


def pick(rows: list[dict[str, Any]], *columns: str) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in columns) for row in rows]


# --- value text and flag evaluations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text", "value_type"),
    [
        ("variant_b", "variant_b", "string"),
        ("", "", "string"),
        ("Zo\u00eb", "Zo\u00eb", "string"),
        (42, "42", "integer"),
        (-7, "-7", "integer"),
        (97.5, "97.5", "float"),
        (50.0, "50.0", "float"),
        (1e16, "1e+16", "float"),
        (True, "true", "boolean"),
        (False, "false", "boolean"),
        (None, None, "null"),
    ],
)
def test_value_text(value: Any, text: str | None, value_type: str) -> None:
    assert value_text(value) == (text, value_type)


@pytest.mark.parametrize(
    ("enabled", "value", "variant"),
    [
        (False, "variant_b", "off"),
        (False, None, "off"),
        (True, None, "on"),
        (True, False, "false"),
        (True, 3, "3"),
        (True, "variant_b", "variant_b"),
        (True, "", ""),
    ],
)
def test_variant(enabled: bool, value: Any, variant: str) -> None:
    rows = mart("flag_evaluations", raw(0, body(flags=[flag(enabled=enabled, value=value)])))
    assert rows[0]["variant"] == variant


@pytest.mark.parametrize(
    ("identity", "feature_segment", "source"),
    [(7, 4, "identity_override"), (7, None, "identity_override"), (None, 4, "segment_override")],
)
def test_assignment_source_precedence(
    identity: int | None, feature_segment: int | None, source: str
) -> None:
    payload = body(flags=[flag(identity=identity, feature_segment=feature_segment)])
    assert mart("flag_evaluations", raw(0, payload))[0]["assignment_source"] == source


REAL_MULTIVARIATE_BODY = (
    b'{"flags": [{"enabled": true, "environment": 10, "feature": {"created_date": "2026-11-2'
    b'8T08:52:52.189731Z", "default_enabled": true, "description": "Checkout button copy exp'
    b'eriment", "id": 16, "initial_value": "control", "name": "checkout_button", "type": "MU'
    b'LTIVARIATE"}, "feature_segment": null, "feature_state_value": "variant_b", "id": 25, "'
    b'identity": null, "percentage_allocation": 50.0}, {"enabled": true, "environment": 10, '
    b'"feature": {"created_date": "2026-11-28T08:52:52.219228Z", "default_enabled": false, "'
    b'description": null, "id": 17, "initial_value": "Welcome", "name": "banner_text", "type'
    b'": "STANDARD"}, "feature_segment": 4, "feature_state_value": "Welcome, beta tester", "'
    b'id": 27, "identity": null, "percentage_allocation": null}], "identity": "user_mv_1", "'
    b'segments": [{"id": 10, "member": true, "name": "beta_users"}, {"id": 11, "member": fal'
    b'se, "name": "enterprise"}], "traits": [{"id": 19, "trait_key": "plan", "trait_value": '
    b'"beta", "transient": false}]}'
)


def test_flag_evaluations_of_a_real_body() -> None:
    rows = mart("flag_evaluations", ("d1", T0, "production", REAL_MULTIVARIATE_BODY))
    common = {
        "delivery_id": "d1",
        "received_at": T0,
        "environment_id": 10,
        "environment_key": "production",
        "identity": "user_mv_1",
        "enabled": True,
        "value_type": "string",
    }
    assert rows == [
        {
            **common,
            "feature_id": 16,
            "feature_name": "checkout_button",
            "feature_type": "MULTIVARIATE",
            "feature_state_id": 25,
            "value": "variant_b",
            "variant": "variant_b",
            "assignment_source": "default",
            "feature_segment_id": None,
            "percentage_allocation": 50.0,
        },
        {
            **common,
            "feature_id": 17,
            "feature_name": "banner_text",
            "feature_type": "STANDARD",
            "feature_state_id": 27,
            "value": "Welcome, beta tester",
            "variant": "Welcome, beta tester",
            "assignment_source": "segment_override",
            "feature_segment_id": 4,
            "percentage_allocation": None,
        },
    ]
    assert [list(row) for row in rows] == [list(COLUMNS["flagsmith__flag_evaluations"])] * 2


def test_received_at_is_normalised_to_utc() -> None:
    local = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    rows = mart("flag_evaluations", ("d1", local, None, body()))
    assert rows[0]["received_at"] == T0
    assert rows[0]["received_at"].utcoffset() == timedelta(0)


def test_non_identity_bodies_are_ignored() -> None:
    other = json.dumps({"data": {}, "event_type": "FLAG_UPDATED"}).encode()
    marts = build_marts([raw(0, other), raw(1, b"not json"), raw(2, b"[1]")])
    assert all(rows == [] for rows in marts.values())


# --- exposure periods ---------------------------------------------------------------------------

PERIOD = ("valid_from", "valid_to", "last_evaluated_at", "evaluation_count", "is_current")


def test_toggle_off_and_on_makes_three_periods() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(enabled=True)])),
        raw(10, body(flags=[flag(enabled=True)])),
        raw(20, body(flags=[flag(enabled=False)])),
        raw(30, body(flags=[flag(enabled=True)])),
    )
    assert pick(rows, "variant", *PERIOD) == [
        ("on", at(0), at(20), at(10), 2, False),
        ("off", at(20), at(30), at(20), 1, False),
        ("on", at(30), None, at(30), 1, True),
    ]


def test_period_row_has_contract_columns() -> None:
    rows = mart("flag_exposure_periods", raw(0, body(flags=[flag(value=5, enabled=True)])))
    assert rows == [
        {
            "environment_id": 10,
            "identity": "u1",
            "feature_id": 1,
            "valid_from": at(0),
            "feature_name": "dark_mode",
            "enabled": True,
            "value": "5",
            "value_type": "integer",
            "variant": "5",
            "assignment_source": "default",
            "valid_to": None,
            "last_evaluated_at": at(0),
            "evaluation_count": 1,
            "is_current": True,
        }
    ]


def test_variant_change_starts_a_period() -> None:
    def mv(value: str, allocation: float) -> bytes:
        return body(flags=[flag(value=value, feature_type="MULTIVARIATE", allocation=allocation)])

    rows = mart(
        "flag_exposure_periods",
        raw(0, mv("control", 80.0)),
        raw(5, mv("variant_b", 20.0)),
        raw(9, mv("variant_b", 30.0)),  # allocation is not state
    )
    assert pick(rows, "variant", *PERIOD) == [
        ("control", at(0), at(5), at(0), 1, False),
        ("variant_b", at(5), None, at(9), 2, True),
    ]


def test_override_applied_then_removed_makes_three_periods() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(value="a")])),
        raw(10, body(flags=[flag(value="a", identity=7, state_id=101)])),
        raw(20, body(flags=[flag(value="a")])),
    )
    assert pick(rows, "assignment_source", "variant", "valid_from", "valid_to") == [
        ("default", "a", at(0), at(10)),
        ("identity_override", "a", at(10), at(20)),
        ("default", "a", at(20), None),
    ]


def test_boolean_false_and_string_false_are_different_states() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(value=False)])),
        raw(10, body(flags=[flag(value="false")])),
    )
    assert pick(rows, "value", "value_type", "variant", "valid_to") == [
        ("false", "boolean", "false", at(10)),
        ("false", "string", "false", None),
    ]


def test_feature_state_id_is_not_state() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(state_id=100)])),
        raw(10, body(flags=[flag(state_id=200)])),
    )
    assert pick(rows, *PERIOD) == [(at(0), None, at(10), 2, True)]


def test_delivery_lacking_the_feature_is_skipped() -> None:
    other = flag(feature_id=2, name="other")
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(), other])),
        raw(10, body(flags=[other])),  # e.g. hidden while disabled
        raw(20, body(flags=[flag(), other])),
    )
    feature_1 = [r for r in rows if r["feature_id"] == 1]
    assert pick(feature_1, *PERIOD) == [(at(0), None, at(20), 2, True)]


def test_delivery_lacking_the_feature_does_not_end_a_period() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(enabled=True)])),
        raw(10, body(flags=[])),
        raw(20, body(flags=[flag(enabled=False)])),
    )
    assert pick(rows, "variant", "valid_from", "valid_to") == [
        ("on", at(0), at(20)),
        ("off", at(20), None),
    ]


def test_identical_repeated_bodies_are_separate_evaluations() -> None:
    rows = [raw(0, body()), raw(1, body()), raw(2, body())]
    marts = build_marts(rows)
    assert len(marts["flagsmith__flag_evaluations"]) == 3
    assert pick(marts["flagsmith__flag_exposure_periods"], *PERIOD) == [
        (at(0), None, at(2), 3, True)
    ]
    assert marts["flagsmith__identities"][0]["delivery_count"] == 3


def test_period_name_is_the_name_at_its_latest_evaluation() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(name="old_name")])),
        raw(10, body(flags=[flag(name="new_name")])),
        raw(20, body(flags=[flag(name="newest", enabled=False)])),
    )
    assert pick(rows, "feature_name", "variant") == [("new_name", "on"), ("newest", "off")]


def test_order_is_received_at_not_input_order() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(20, body(flags=[flag(enabled=True)])),
        raw(0, body(flags=[flag(enabled=True)])),
        raw(10, body(flags=[flag(enabled=False)])),
    )
    assert pick(rows, "variant", "valid_from", "valid_to") == [
        ("on", at(0), at(10)),
        ("off", at(10), at(20)),
        ("on", at(20), None),
    ]


def test_equal_received_at_is_one_instant_in_the_state_of_the_last_delivery_id() -> None:
    rows = mart(
        "flag_exposure_periods",
        raw(0, body(flags=[flag(enabled=False)]), delivery_id="b"),
        raw(0, body(flags=[flag(enabled=True)]), delivery_id="a"),
        raw(10, body(flags=[flag(enabled=True)]), delivery_id="c"),
        raw(10, body(flags=[flag(enabled=False)]), delivery_id="d"),
    )
    assert pick(rows, "variant", "valid_from", "valid_to", "evaluation_count") == [
        ("off", at(0), None, 4),
    ]


def test_equal_received_at_segment_and_trait_runs_start_at_distinct_times() -> None:
    marts = build_marts(
        [
            raw(
                0,
                body(traits=[trait("plan", "free")], segments=[segment(1, "beta", True)]),
                delivery_id="a",
            ),
            raw(
                10,
                body(traits=[trait("plan", "pro")], segments=[segment(1, "beta", True)]),
                delivery_id="b",
            ),
            raw(10, body(traits=[trait("plan", "free")], segments=[]), delivery_id="c"),
            raw(20, body(traits=[], segments=[segment(1, "beta", False)]), delivery_id="d"),
            raw(
                20,
                body(traits=[trait("plan", "pro")], segments=[segment(1, "beta", True)]),
                delivery_id="e",
            ),
        ]
    )
    assert pick(marts["flagsmith__trait_history"], "trait_value", "valid_from", "valid_to") == [
        ("free", at(0), at(20)),
        ("pro", at(20), None),
    ]
    periods = marts["flagsmith__segment_membership_periods"]
    assert pick(periods, "valid_from", "valid_to", "evaluation_count") == [
        (at(0), at(10), 1),
        (at(20), None, 2),
    ]


# --- scope --------------------------------------------------------------------------------------


def test_identities_are_scoped_by_environment() -> None:
    rows = mart(
        "identities",
        raw(0, body(flags=[flag(environment=10)])),
        raw(5, body(flags=[flag(environment=11)]), key="staging"),
        raw(10, body(flags=[flag(environment=10)])),
        raw(15, body(flags=[])),
    )
    assert pick(rows, "environment_id", "first_seen_at", "last_seen_at", "delivery_count") == [
        (None, at(15), at(15), 1),
        (10, at(0), at(10), 2),
        (11, at(5), at(5), 1),
    ]


# --- experiments --------------------------------------------------------------------------------


def mv(value: Any, **options: Any) -> dict[str, Any]:
    """A flag of the multivariate feature 'checkout' (id 1)."""
    return flag(1, "checkout", value=value, feature_type="MULTIVARIATE", **options)


def test_experiment_assignments_one_row_per_experiment_period() -> None:
    """Only the default split's enabled periods are assignments: an override and the test being
    switched off are not arms, and the arm keeps its bucket through the switch-off."""
    rows = mart(
        "experiment_assignments",
        raw(0, body(flags=[mv("control")]), key="eu"),
        raw(10, body(flags=[mv("control")]), key="us"),
        raw(20, body(flags=[mv("variant_b", identity=7)]), key="us"),
        raw(30, body(flags=[mv("control", enabled=False)])),
        raw(40, body(flags=[mv("control")])),
    )
    assert rows == [
        {
            "environment_id": 10,
            "identity": "u1",
            "feature_id": 1,
            "timestamp": at(0),
            "user_id": "u1",
            "experiment_id": "checkout",
            "variation_id": "control",
            "experiment_name": "checkout",
            "variation_name": "control",
            "environment_key": "eu",  # the key of the period's first delivery
            "assignment_source": "default",
        },
        {
            "environment_id": 10,
            "identity": "u1",
            "feature_id": 1,
            "timestamp": at(40),
            "user_id": "u1",
            "experiment_id": "checkout",
            "variation_id": "control",
            "experiment_name": "checkout",
            "variation_name": "control",
            "environment_key": "production",
            "assignment_source": "default",
        },
    ]


def test_an_ordinary_flag_is_no_experiment() -> None:
    marts = build_marts([raw(0, body(flags=[flag(1, "dark_mode", value="x")]))])
    assert marts["flagsmith__experiment_assignments"] == []
    assert marts["flagsmith__experiment_exposures"] == []
    assert marts["flagsmith__experiments"] == []


def test_the_latest_type_classifies_the_whole_history() -> None:
    """A feature turned MULTIVARIATE later: its earlier periods become experiment periods, and
    its latest name names the experiment (a rename does not split it)."""
    rows = mart(
        "experiment_assignments",
        raw(0, body(flags=[flag(1, "old_name", value="a")])),
        raw(10, body(flags=[flag(1, "checkout", value="b", feature_type="MULTIVARIATE")])),
    )
    assert pick(rows, "timestamp", "experiment_id", "variation_id") == [
        (at(0), "checkout", "a"),
        (at(10), "checkout", "b"),
    ]


def test_experiment_exposure_one_row_per_identity_and_experiment() -> None:
    rows = mart(
        "experiment_exposures",
        raw(0, body("u1", flags=[mv("control", enabled=False)])),
        raw(5, body("u1", flags=[mv("control")]), key="eu"),
        raw(10, body("u1", flags=[mv("control")])),
        raw(20, body("u1", flags=[mv("variant_b")])),
        raw(30, body("u1", flags=[mv("variant_b", enabled=False)])),
        raw(40, body("u2", flags=[mv("variant_b")])),
        raw(50, body("u3", flags=[mv("variant_b", feature_segment=3)])),
    )
    assert rows == [
        {
            "environment_id": 10,
            "identity": "u1",
            "feature_id": 1,
            "feature_name": "checkout",
            "user_id": "u1",
            "first_exposed_at": at(5),
            "first_arm": "control",
            "environment_key": "eu",
            "last_exposed_at": at(20),
            "exposure_count": 3,
            "arm_count": 2,
            "is_multi_arm": True,
        },
        {
            "environment_id": 10,
            "identity": "u2",
            "feature_id": 1,
            "feature_name": "checkout",
            "user_id": "u2",
            "first_exposed_at": at(40),
            "first_arm": "variant_b",
            "environment_key": "production",
            "last_exposed_at": at(40),
            "exposure_count": 1,
            "arm_count": 1,
            "is_multi_arm": False,
        },
    ]


def test_identity_map_and_trait_columns() -> None:
    options = AnalystOptions(
        identity_map=(("u1", "42"), ("u1", "17"), ("u2", "7")),
        trait_columns=(("plan", "trait_plan"), ("Country Code", "country")),
    )
    marts = build_marts(
        [
            raw(0, body("u1", flags=[mv("a")], traits=[trait("plan", "free")])),
            raw(10, body("u1", flags=[mv("a")], traits=[trait("plan", "pro")])),
            raw(20, body("u3", flags=[mv("b")], traits=[trait("Country Code", "NZ")])),
        ],
        options,
    )
    exposures = marts["flagsmith__experiment_exposures"]
    assert pick(exposures, "identity", "user_id", "trait_plan", "country") == [
        ("u1", "17", "free", None),  # the smallest key; the plan as of the first exposure
        ("u3", "u3", None, "NZ"),
    ]
    identities = marts["flagsmith__identities"]
    assert pick(identities, "identity", "trait_plan", "country") == [
        ("u1", "pro", None),
        ("u3", None, "NZ"),
    ]
    assert {row["user_id"] for row in marts["flagsmith__experiment_assignments"]} == {"17", "u3"}


def split_stream(counts: dict[str, int], allocations: dict[str, float | None]) -> list:
    """One identity per unit in each arm of 'checkout', with the arm's reported allocation."""
    rows, minute = [], 0
    for arm, count in counts.items():
        for n in range(count):
            share = allocations.get(arm)
            options = {} if share is None else {"allocation": share}
            rows.append(raw(minute, body(f"{arm}_{n}", flags=[mv(arm, **options)])))
            minute += 1
    return rows


def test_sample_ratio_mismatch_against_the_reported_split() -> None:
    """The control reports no allocation: it gets 100 less the others' sum."""
    from scipy.stats import chi2

    (row,) = mart(
        "experiments", *split_stream({"control": 60, "b": 40, "c": 20}, {"b": 30.0, "c": 20.0})
    )
    expected = {"control": 60.0, "b": 36.0, "c": 24.0}  # n = 120: 50% / 30% / 20%
    observed = {"control": 60, "b": 40, "c": 20}
    statistic = sum((observed[a] - expected[a]) ** 2 / expected[a] for a in expected)
    assert row["identities_exposed"] == 120
    assert row["arm_count"] == 3
    assert row["srm_chi_square"] == pytest.approx(statistic)
    assert row["srm_degrees_of_freedom"] == 2
    assert row["srm_p_value"] == pytest.approx(chi2.sf(statistic, 2))


@pytest.mark.parametrize(
    ("counts", "allocations"),
    [
        ({"a": 60, "b": 60}, {}),  # two arms without a share
        ({"a": 60, "b": 60}, {"a": 50.0, "b": 40.0}),  # shares that do not sum to 100
        ({"a": 40, "b": 40}, {"b": 50.0}),  # n < 100
        ({"a": 98, "b": 2}, {"b": 2.0}),  # an expected count below 5
        ({"a": 120}, {}),  # one arm
        ({"a": 60, "b": 60}, {"b": 100.0}),  # the control's share is 0
    ],
)
def test_sample_ratio_is_null_when_it_cannot_be_judged(counts, allocations) -> None:
    (row,) = mart("experiments", *split_stream(counts, allocations))
    assert (row["srm_chi_square"], row["srm_degrees_of_freedom"], row["srm_p_value"]) == (
        None,
        None,
        None,
    )


def test_the_latest_reported_allocation_of_an_arm_counts() -> None:
    rows = split_stream({"a": 50, "b": 50}, {"b": 10.0})
    rows.append(raw(500, body("b_0", flags=[mv("b", allocation=50.0)])))
    (row,) = mart("experiments", *rows)
    assert row["srm_chi_square"] == pytest.approx(0.0)


# --- first exposures ----------------------------------------------------------------------------


def test_first_exposure_row() -> None:
    rows = mart(
        "first_exposures",
        raw(0, body(flags=[flag(enabled=False, value="a")])),
        raw(10, body(flags=[flag(enabled=True, value="a", identity=7)])),
        raw(20, body(flags=[flag(enabled=True, value="b", name="renamed")])),
        raw(30, body(flags=[])),
    )
    assert rows == [
        {
            "environment_id": 10,
            "identity": "u1",
            "feature_id": 1,
            "feature_name": "renamed",
            "first_exposed_at": at(0),
            "first_variant": "off",
            "first_enabled": False,
            "first_value": "a",
            "first_assignment_source": "default",
            "last_evaluated_at": at(20),
            "variant_count": 3,
            "is_multi_variant": True,
        }
    ]


def test_single_variant_is_not_multi_variant() -> None:
    rows = mart("first_exposures", raw(0, body()), raw(10, body(flags=[flag(identity=7)])))
    assert pick(rows, "variant_count", "is_multi_variant") == [(1, False)]


# --- segments -----------------------------------------------------------------------------------

BETA_IN, BETA_OUT = segment(3, "beta_users", True), segment(3, "beta_users", False)
SEGMENT_PERIOD = ("valid_from", "valid_to", "last_evaluated_at", "evaluation_count", "is_current")


def test_segment_left_and_rejoined() -> None:
    rows = mart(
        "segment_membership_periods",
        raw(0, body(segments=[BETA_IN])),
        raw(10, body(segments=[BETA_IN])),
        raw(20, body(segments=[BETA_OUT])),
        raw(30, body(segments=[BETA_IN])),
    )
    assert pick(rows, "segment_id", "segment_name", *SEGMENT_PERIOD) == [
        (3, "beta_users", at(0), at(20), at(10), 2, False),
        (3, "beta_users", at(30), None, at(30), 1, True),
    ]


def test_segment_absent_ends_membership() -> None:
    rows = mart(
        "segment_membership_periods",
        raw(0, body(segments=[BETA_IN])),
        raw(10, body(segments=[])),
        raw(20, body(segments=[BETA_IN])),
    )
    assert pick(rows, "valid_from", "valid_to") == [(at(0), at(10)), (at(20), None)]


def test_segment_never_member_has_no_period() -> None:
    assert mart("segment_membership_periods", raw(0, body(segments=[BETA_OUT]))) == []


def test_segment_period_name_at_its_latest_evaluation() -> None:
    rows = mart(
        "segment_membership_periods",
        raw(0, body(segments=[BETA_IN])),
        raw(10, body(segments=[segment(3, "beta", True)])),
    )
    assert pick(rows, "segment_name", "evaluation_count") == [("beta", 2)]


def test_segments_dimension() -> None:
    rows = mart(
        "segments",
        raw(0, body("u1", segments=[BETA_OUT])),
        raw(10, body("u2", segments=[BETA_IN])),
        raw(20, body("u1", segments=[BETA_IN])),
        raw(30, body("u2", segments=[BETA_OUT])),
        raw(40, body("u3", segments=[BETA_IN])),
        raw(50, body("u3", segments=[])),
        raw(60, body("u4", segments=[segment(3, "beta users", True)])),
    )
    assert rows == [
        {
            "environment_id": 10,
            "segment_id": 3,
            "segment_name": "beta users",
            "first_seen_at": at(0),
            "last_seen_at": at(60),
            "current_member_count": 2,  # u1 and u4; u2 left, u3's latest lists nothing
        }
    ]


# --- traits -------------------------------------------------------------------------------------

TRAIT_RUN = ("trait_value", "trait_value_type", "valid_from", "valid_to", "is_current")


def test_trait_value_columns_of_a_real_body() -> None:
    payload = body(
        traits=[
            trait("age", 34),
            trait("score", 97.5),
            trait("is_premium", True),
            trait("nickname", "Zo\u00eb"),
            trait("session_coupon", None, transient=True),
        ]
    )
    rows = mart("trait_history", raw(0, payload))
    assert pick(rows, "trait_key", "trait_value", "trait_value_type", "trait_value_number") == [
        ("age", "34", "integer", 34.0),
        ("is_premium", "true", "boolean", None),
        ("nickname", "Zo\u00eb", "string", None),
        ("score", "97.5", "float", 97.5),
    ]
    assert [r["trait_value_boolean"] for r in rows] == [None, True, None, None]
    assert list(rows[0]) == list(COLUMNS["flagsmith__trait_history"])


def test_trait_changed() -> None:
    rows = mart(
        "trait_history",
        raw(0, body(traits=[trait("age", 34)])),
        raw(10, body(traits=[trait("age", 34)])),
        raw(20, body(traits=[trait("age", 35)])),
    )
    assert pick(rows, *TRAIT_RUN) == [
        ("34", "integer", at(0), at(20), False),
        ("35", "integer", at(20), None, True),
    ]


def test_trait_type_change_with_same_text_is_a_new_run() -> None:
    rows = mart(
        "trait_history",
        raw(0, body(traits=[trait("age", 34)])),
        raw(10, body(traits=[trait("age", "34")])),
    )
    assert pick(rows, "trait_value", "trait_value_type", "trait_value_number") == [
        ("34", "integer", 34.0),
        ("34", "string", None),
    ]


def test_trait_deleted_ends_the_run() -> None:
    rows = mart(
        "trait_history",
        raw(0, body(traits=[trait("plan", "beta")])),
        raw(10, body(traits=[])),
        raw(20, body(traits=[trait("plan", "beta")])),
    )
    assert pick(rows, *TRAIT_RUN) == [
        ("beta", "string", at(0), at(10), False),
        ("beta", "string", at(20), None, True),
    ]


def test_transient_trait_is_not_state() -> None:
    rows = mart(
        "trait_history",
        raw(0, body(traits=[trait("plan", "beta"), trait("session_id", "a", transient=True)])),
        raw(10, body(traits=[trait("plan", "beta"), trait("session_id", "b", transient=True)])),
        raw(20, body(traits=[trait("plan", "beta")])),
    )
    assert pick(rows, "trait_key", *TRAIT_RUN) == [("plan", "beta", "string", at(0), None, True)]


def test_transient_trait_does_not_mask_the_stored_one() -> None:
    rows = mart(
        "trait_history",
        raw(0, body(traits=[trait("plan", "beta")])),
        raw(10, body(traits=[trait("plan", "pro", transient=True), trait("plan", "beta")])),
        raw(20, body(traits=[trait("plan", None, transient=True)])),
    )
    assert pick(rows, *TRAIT_RUN) == [("beta", "string", at(0), at(20), False)]


# --- dimensions ---------------------------------------------------------------------------------


def test_features_dimension_takes_attributes_from_the_latest_delivery() -> None:
    rows = mart(
        "features",
        raw(0, body("u1", flags=[flag(description=None, initial_value="1")])),
        raw(10, body("u2", flags=[flag(enabled=False, description="kill switch")])),
        raw(20, body("u1", flags=[flag(name="renamed", description="v2", default_enabled=True)])),
        raw(30, body("u3", flags=[flag(feature_id=2, name="other")])),
    )
    assert rows[0] == {
        "environment_id": 10,
        "feature_id": 1,
        "feature_name": "renamed",
        "feature_type": "STANDARD",
        "default_enabled": True,
        "initial_value": None,
        "description": "v2",
        "created_date": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        "first_seen_at": at(0),
        "last_seen_at": at(20),
        "identities_exposed": 2,
    }
    assert pick(rows, "feature_id", "identities_exposed") == [(1, 2), (2, 1)]


# --- daily exposures ----------------------------------------------------------------------------

MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)


def night(minutes_after_midnight: float, payload: bytes):
    """A raw row around the UTC midnight between March 1st and 2nd."""
    when = MIDNIGHT + timedelta(minutes=minutes_after_midnight)
    return (f"n{minutes_after_midnight:+08.2f}", when, None, payload)


def test_daily_exposures_split_at_utc_midnight() -> None:
    local = timezone(timedelta(hours=2))  # 01:30 local on March 2nd is 23:30 UTC on March 1st
    rows = mart(
        "daily_feature_exposures",
        ("a", datetime(2026, 3, 2, 1, 30, tzinfo=local), None, body("u1")),
        night(-10, body("u2")),
        night(10, body("u1")),
        night(20, body("u1")),
    )
    assert pick(
        rows, "exposure_date", "variant", "identities", "evaluations", "first_exposures"
    ) == [
        (date(2026, 3, 1), "on", 2, 2, 2),
        (date(2026, 3, 2), "on", 1, 2, 0),
    ]


def test_daily_first_exposures_count_in_the_first_variant() -> None:
    rows = mart(
        "daily_feature_exposures",
        night(-10, body("u1", flags=[flag(enabled=False)])),
        night(10, body("u1", flags=[flag(enabled=True)])),
        night(20, body("u2", flags=[flag(enabled=True)])),
    )
    assert pick(
        rows, "exposure_date", "variant", "identities", "evaluations", "first_exposures"
    ) == [
        (date(2026, 3, 1), "off", 1, 1, 1),
        (date(2026, 3, 2), "on", 2, 2, 1),
    ]


def test_daily_exposures_are_per_feature_and_environment() -> None:
    rows = mart(
        "daily_feature_exposures",
        night(1, body("u1", flags=[flag(), flag(feature_id=2, name="b")])),
        night(2, body("u1", flags=[flag(environment=11)])),
    )
    assert pick(rows, "environment_id", "feature_id", "evaluations") == [
        (10, 1, 1),
        (10, 2, 1),
        (11, 1, 1),
    ]


# --- cohorts ------------------------------------------------------------------------------------


def test_feature_variant_cohorts_follow_the_variant_alone() -> None:
    rows = mart(
        "cohort_memberships",
        raw(0, body(flags=[flag(value="a")])),
        raw(10, body(flags=[flag(value="a", identity=7)])),  # new period, same cohort
        raw(15, body(flags=[])),  # skipped
        raw(20, body(flags=[flag(value="b")])),
        raw(30, body(flags=[flag(enabled=False, value="b")])),
    )
    assert rows == [
        {
            "environment_id": 10,
            "identity": "u1",
            "cohort_type": "feature_variant",
            "cohort_key": key,
            "entered_at": entered,
            "exited_at": exited,
        }
        for key, entered, exited in [
            ("dark_mode=a", at(0), at(20)),
            ("dark_mode=b", at(20), at(30)),
            ("dark_mode=off", at(30), None),
        ]
    ]


def test_segment_cohorts_are_the_membership_periods() -> None:
    rows = mart(
        "cohort_memberships",
        raw(0, body(flags=[], segments=[BETA_IN])),
        raw(10, body(flags=[], segments=[BETA_OUT])),
        raw(20, body(flags=[], segments=[BETA_IN])),
    )
    assert pick(rows, "environment_id", "cohort_type", "cohort_key", "entered_at", "exited_at") == [
        (None, "segment", "beta_users", at(0), at(10)),
        (None, "segment", "beta_users", at(20), None),
    ]


# --- every mart ---------------------------------------------------------------------------------


def test_every_mart_has_exactly_the_contract_columns() -> None:
    marts = build_marts(
        [
            raw(0, body(traits=[trait("plan", "beta")], segments=[BETA_IN])),
            raw(10, REAL_MULTIVARIATE_BODY),
        ]
    )
    assert set(marts) == set(COLUMNS) == set(KEYS)
    for model, rows in marts.items():
        assert rows, model
        assert all(list(row) == list(COLUMNS[model]) for row in rows), model
        assert set(KEYS[model]) <= set(COLUMNS[model]), model


def test_keys_are_unique_over_a_simulated_stream() -> None:
    deliveries = generate(3000, seed=11, n_identities=20, n_environments=2)
    marts = build_marts(
        (f"d{i:05d}", d.at, d.environment_key, d.body) for i, d in enumerate(deliveries)
    )
    for model, rows in marts.items():
        assert rows, model
        keys = [tuple(row[c] for c in KEYS[model]) for row in rows]
        assert len(keys) == len(set(keys)), model
