"""Each dbt analysis in analyses/, compiled by dbt and run on a warehouse built from simulated
traffic and a small events table, gives the figures a Python computation gives from the oracle's
marts."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from loader.simulate import iter_deliveries

from .marts import raw_rows
from .oracle import AnalystOptions, build_marts
from .warehouse import Posted, connect, dbt, land, warehouse_settings

REPO = Path(__file__).resolve().parent.parent
ANALYSES = sorted(path.stem for path in (REPO / "analyses").glob("*.sql"))
VARS = (
    "{flagsmith__analysis_events: analytics.events, flagsmith__analysis_conversion_event: purchase,"
    " flagsmith__analysis_trait_key: plan}"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A DuckDB warehouse: 3,000 simulated deliveries of 200 identities, marts built, an events
    table (analytics.events) with purchases before and after exposures, and every analysis
    compiled. Yields (connection, oracle marts, compiled SQL by analysis, events)."""
    directory = tmp_path_factory.mktemp("analyses")
    settings = warehouse_settings(directory)
    posted = [
        Posted(d.body, d.at, d.environment_key)
        for d in iter_deliveries(
            3000, seed=21, n_identities=200, n_flags=12, n_environments=1, mean_interval=300
        )
    ]
    land(settings, posted)
    assert dbt(settings, "build").returncode == 0
    first, last = posted[0].at, posted[-1].at
    rng = random.Random(4)
    events = [
        (
            f"user_{rng.randrange(200)}",
            rng.choice(["purchase", "purchase", "view"]),
            first + (last - first) * rng.random() + timedelta(minutes=rng.randrange(-60, 60)),
        )
        for _ in range(600)
    ]
    with duckdb.connect(str(settings.duckdb_path)) as connection:
        connection.execute("create schema analytics")
        connection.execute(
            "create table analytics.events"
            " (user_id varchar, event_name varchar, occurred_at timestamp with time zone)"
        )
        connection.executemany("insert into analytics.events values (?, ?, ?)", events)
    result = dbt(settings, "compile", "--select", "resource_type:analysis", "--vars", VARS)
    assert result.returncode == 0, result.output[-4000:]
    compiled_dir = settings.dbt_target_path / "compiled" / "flagsmith_warehouse" / "analyses"
    compiled = {name: (compiled_dir / f"{name}.sql").read_text() for name in ANALYSES}
    with connect(settings) as connection:
        marts = build_marts(raw_rows(connection), AnalystOptions(trait_columns=(("plan", "t"),)))
        yield connection, marts, compiled, events


def _run(connection, sql: str) -> list[dict]:
    cursor = connection.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_every_analysis_is_checked():
    assert ANALYSES == [
        "conversion_by_arm",
        "segment_entry_then_arm_change",
        "srm_readout",
        "trait_at_exposure_by_arm",
    ]


def test_conversion_by_arm(built):
    connection, marts, compiled, events = built
    purchases = defaultdict(list)
    for user_id, name, at in events:
        if name == "purchase":
            purchases[user_id].append(at)
    expected: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for unit in marts["flagsmith__experiment_exposures"]:
        if unit["is_multi_arm"]:
            continue
        key = (unit["environment_id"], unit["feature_id"], unit["first_arm"])
        expected[key][0] += 1
        expected[key][1] += any(
            at >= unit["first_exposed_at"] for at in purchases[unit["identity"]]
        )
    rows = _run(connection, compiled["conversion_by_arm"])
    assert {
        (r["environment_id"], r["feature_id"], r["arm"]): [r["identities"], r["converted"]]
        for r in rows
    } == dict(expected)
    assert all(
        r["conversion_rate"] == pytest.approx(r["converted"] / r["identities"]) for r in rows
    )
    assert sum(r["converted"] for r in rows) > 0


def test_srm_readout(built):
    connection, marts, compiled, _events = built
    shares: dict[tuple, tuple] = {}
    for e in marts["flagsmith__flag_evaluations"]:
        if e["enabled"] and e["assignment_source"] == "default" and e["percentage_allocation"]:
            key = (e["environment_id"], e["feature_id"], e["variant"])
            if key not in shares or shares[key][0] < (e["received_at"], e["delivery_id"]):
                shares[key] = ((e["received_at"], e["delivery_id"]), e["percentage_allocation"])
    observed: dict[tuple, int] = defaultdict(int)
    arms = defaultdict(set)
    for a in marts["flagsmith__experiment_assignments"]:
        arms[(a["environment_id"], a["feature_id"])].add(a["variation_id"])
    for unit in marts["flagsmith__experiment_exposures"]:
        observed[(unit["environment_id"], unit["feature_id"], unit["first_arm"])] += 1
    rows = _run(connection, compiled["srm_readout"])
    experiments = {
        (e["environment_id"], e["feature_id"]): e for e in marts["flagsmith__experiments"]
    }
    assert {(r["environment_id"], r["feature_id"]) for r in rows} == set(experiments)
    assert any(e["srm_p_value"] is not None for e in experiments.values())
    for (environment_id, feature_id), experiment in experiments.items():
        mine = [
            r
            for r in rows
            if (r["environment_id"], r["feature_id"]) == (environment_id, feature_id)
        ]
        assert sorted(r["arm"] for r in mine) == sorted(arms[(environment_id, feature_id)])
        reported = {
            arm: shares[(environment_id, feature_id, arm)][1]
            for arm in arms[(environment_id, feature_id)]
            if (environment_id, feature_id, arm) in shares
        }
        for r in mine:
            assert r["observed"] == observed[(environment_id, feature_id, r["arm"])]
            share = reported.get(r["arm"], 100 - sum(reported.values()))
            assert r["share"] == pytest.approx(share)
            assert r["expected"] == pytest.approx(experiment["identities_exposed"] * share / 100)
        if experiment["srm_chi_square"] is not None:
            assert sum(r["chi_square_part"] for r in mine) == pytest.approx(
                experiment["srm_chi_square"]
            )
            assert mine[0]["srm_p_value"] == pytest.approx(experiment["srm_p_value"], abs=1e-6)


def test_trait_at_exposure_by_arm(built):
    connection, marts, compiled, _events = built
    expected: dict[tuple, int] = defaultdict(int)
    for unit in marts["flagsmith__experiment_exposures"]:
        if not unit["is_multi_arm"]:
            value = unit["t"] if unit["t"] is not None else "(absent)"
            expected[(unit["environment_id"], unit["feature_id"], unit["first_arm"], value)] += 1
    rows = _run(connection, compiled["trait_at_exposure_by_arm"])
    got = {
        (r["environment_id"], r["feature_id"], r["arm"], r["trait_value"]): r["identities"]
        for r in rows
    }
    assert got == dict(expected)
    assert len({key[3] for key in got}) > 1


def test_segment_entry_then_arm_change(built):
    connection, marts, compiled, _events = built
    assignments = defaultdict(list)
    for a in marts["flagsmith__experiment_assignments"]:
        assignments[(a["environment_id"], a["identity"])].append(a)
    expected = set()
    for period in marts["flagsmith__segment_membership_periods"]:
        entered = period["valid_from"]
        scope = (period["environment_id"], period["identity"])
        by_feature = defaultdict(list)
        for a in assignments[scope]:
            by_feature[a["feature_id"]].append(a)
        for periods in by_feature.values():
            before = [a for a in periods if a["timestamp"] <= entered]
            if not before:
                continue
            arm = max(before, key=lambda a: a["timestamp"])["variation_id"]
            for a in periods:
                if a["timestamp"] > entered and a["variation_id"] != arm:
                    expected.add(
                        (scope[1], period["segment_name"], entered, a["experiment_name"], arm,
                         a["variation_id"], a["timestamp"])
                    )  # fmt: skip
    rows = _run(connection, compiled["segment_entry_then_arm_change"])
    got = {
        (r["identity"], r["segment_name"], r["entered_at"], r["experiment_name"], r["arm_at_entry"],
         r["arm_after"], r["changed_at"])
        for r in rows
    }  # fmt: skip
    assert len(rows) == len(got)
    assert got == expected
    assert got, "the simulated traffic should move some segment members between arms"
