"""The whole path for real: gunicorn receiver, signed posts over HTTP, `run`, SQL on the marts."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from datetime import UTC
from pathlib import Path

import pytest

from loader.config import Settings
from loader.processes import free_port, start_receiver, stop, wait_ready
from loader.simulate import generate, post_all
from loader.transform import dbt_command, dbt_environment

from .bodies import ENVIRONMENT, body, flag
from .conftest import SECRET, sign
from .marts import assert_mart_equal, expected_marts, fetch_mart, raw_rows
from .oracle import COLUMNS
from .warehouse import connect


def _checkout(variant):
    return flag(1, "checkout_button", value=variant, kind="MULTIVARIATE", allocation=50.0)


def _dark_mode(enabled):
    return flag(2, "dark_mode", enabled=enabled)


def _max_items(value, identity=None, segment=None):
    return flag(3, "max_items", value=value, identity=identity, segment=segment)


# The scripted sequence, posted in this order (so received_at increases along it).
SCRIPT = [
    ("alice", [_checkout("variant_b"), _dark_mode(True), _max_items(10)]),
    ("alice", [_checkout("variant_b"), _dark_mode(False), _max_items(10)]),  # dark_mode off
    ("alice", [_checkout("variant_b"), _dark_mode(True), _max_items(42, identity=5)]),  # override
    ("alice", [_checkout("variant_b"), _dark_mode(True), _max_items(42, identity=5)]),  # same state
    ("bob", [_checkout("control"), _dark_mode(True), _max_items(25, segment=9)]),
    ("bob", [_checkout("control"), _max_items(25, segment=9)]),  # dark_mode hidden: skipped
    ("bob", [_checkout("control"), _dark_mode(True), _max_items(25, segment=9)]),
]


def _post(base_url, body, signature, path="/webhooks/flagsmith/production"):
    request = urllib.request.Request(
        base_url + path,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Flagsmith-Signature": signature},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def node_environment(directory: Path, postgres: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one node's processes (receiver, `run`), all its files in `directory`;
    with `postgres` (the PG* variables), its warehouse is that Postgres database."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory),
        "FLAGSMITH_WEBHOOK_SECRET": f"rotated-out,{SECRET.decode()}",
        "FLAGSMITH_SPOOL_DIR": str(directory / "spool"),
        "FLAGSMITH_DUCKDB_PATH": str(directory / "warehouse.duckdb"),
        "FLAGSMITH_STATE_DIR": str(directory / "state"),
        "DLT_DATA_DIR": str(directory / "dlt-home"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    if postgres is not None:
        env.update(postgres, FLAGSMITH_WAREHOUSE="postgres")
    return env


@contextlib.contextmanager
def running_receiver(environment):
    """A real gunicorn receiver on a free port; yields its base URL, stopped (SIGTERM) after."""
    port = free_port()
    process = start_receiver(environment, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process)
        yield base_url
    finally:
        stop(process)


@pytest.fixture
def environment(tmp_path):
    return node_environment(tmp_path)


@pytest.fixture
def receiver(environment):
    with running_receiver(environment) as base_url:
        yield base_url


def wait_sealed(environment, timeout=10.0):
    """The receiver hands an idle segment to the loader within about a second: wait for that."""
    open_dir = Path(environment["FLAGSMITH_SPOOL_DIR"]) / "open"
    deadline = time.monotonic() + timeout
    while list(open_dir.glob("*.seg")):
        assert time.monotonic() < deadline, "the receiver did not seal its spool segments"
        time.sleep(0.05)


def _cli(environment, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "loader.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _query(environment, sql):
    with connect(Settings.from_env(environment)) as connection:
        return connection.execute(sql).fetchall()


def test_scripted_sequence_through_http_run_and_marts(environment, receiver):
    check_scripted_sequence_through_http_run_and_marts(environment, receiver)


def check_scripted_sequence_through_http_run_and_marts(environment, receiver):
    ids = []
    for identity, flags in SCRIPT:
        payload = body(identity, flags)
        status, answer = _post(receiver, payload, sign(payload))
        assert status == 202, answer
        ids.append(answer["delivery_id"])
    forged = body("mallory", [_dark_mode(True)])
    assert _post(receiver, forged, sign(forged, b"guess"))[0] == 401
    envelope = b'{"data": {"feature": 1}, "event_type": "FLAG_UPDATED"}'
    status, answer = _post(receiver, envelope, sign(envelope))
    assert (status, answer["status"]) == (202, "quarantined")

    wait_sealed(environment)
    result = _cli(environment, "run")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    raw = _query(environment, "select delivery_id from flagsmith_raw.identity_webhooks")
    assert sorted(r[0] for r in raw) == sorted(ids)  # exactly once, the forgery nowhere
    assert _query(environment, "select reason from flagsmith_raw.quarantined_webhooks") == [
        ("other_webhook_type",)
    ]
    received = dict(
        _query(environment, "select delivery_id, received_at from flagsmith_raw.identity_webhooks")
    )
    at = [received[i] for i in ids]
    assert at == sorted(at) and all(t.tzinfo is not None for t in at)

    evaluations = _query(
        environment,
        "select delivery_id, feature_id, environment_id, environment_key, identity, feature_name,"
        " feature_type, feature_state_id, enabled, value, value_type, variant, assignment_source,"
        " feature_segment_id, percentage_allocation"
        " from flagsmith.flagsmith__flag_evaluations order by received_at, feature_id",
    )
    assert len(evaluations) == 20
    first = {row[1]: row for row in evaluations if row[0] == ids[0]}
    assert first[1][2:] == (
        ENVIRONMENT,
        "production",
        "alice",
        "checkout_button",
        "MULTIVARIATE",
        101,
        True,
        "variant_b",
        "string",
        "variant_b",
        "default",
        None,
        50.0,
    )
    assert first[2][9:13] == (None, "null", "on", "default")
    assert first[3][9:13] == ("10", "integer", "10", "default")
    second = {row[1]: row for row in evaluations if row[0] == ids[1]}
    assert second[2][8:13] == (False, None, "null", "off", "default")
    third = {row[1]: row for row in evaluations if row[0] == ids[2]}
    assert third[3][9:13] == ("42", "integer", "42", "identity_override")
    bob = {row[1]: row for row in evaluations if row[0] == ids[4]}
    assert bob[3][12:14] == ("segment_override", 9)
    assert bob[1][11] == "control"

    periods = _query(
        environment,
        "select identity, feature_name, variant, assignment_source, valid_from, valid_to,"
        " last_evaluated_at, evaluation_count, is_current"
        " from flagsmith.flagsmith__flag_exposure_periods"
        " order by identity, feature_id, valid_from",
    )
    assert periods == [
        ("alice", "checkout_button", "variant_b", "default", at[0], None, at[3], 4, True),
        ("alice", "dark_mode", "on", "default", at[0], at[1], at[0], 1, False),
        ("alice", "dark_mode", "off", "default", at[1], at[2], at[1], 1, False),
        ("alice", "dark_mode", "on", "default", at[2], None, at[3], 2, True),
        ("alice", "max_items", "10", "default", at[0], at[2], at[1], 2, False),
        ("alice", "max_items", "42", "identity_override", at[2], None, at[3], 2, True),
        ("bob", "checkout_button", "control", "default", at[4], None, at[6], 3, True),
        ("bob", "dark_mode", "on", "default", at[4], None, at[6], 2, True),  # the gap is skipped
        ("bob", "max_items", "25", "segment_override", at[4], None, at[6], 3, True),
    ]

    first_exposures = _query(
        environment,
        "select identity, feature_name, first_exposed_at, first_variant, first_enabled,"
        " first_value, first_assignment_source, last_evaluated_at, variant_count, is_multi_variant"
        " from flagsmith.flagsmith__first_exposures order by identity, feature_id",
    )
    assert first_exposures == [
        (
            "alice",
            "checkout_button",
            at[0],
            "variant_b",
            True,
            "variant_b",
            "default",
            at[3],
            1,
            False,
        ),
        ("alice", "dark_mode", at[0], "on", True, None, "default", at[3], 2, True),
        ("alice", "max_items", at[0], "10", True, "10", "default", at[3], 2, True),
        ("bob", "checkout_button", at[4], "control", True, "control", "default", at[6], 1, False),
        ("bob", "dark_mode", at[4], "on", True, None, "default", at[6], 1, False),
        ("bob", "max_items", at[4], "25", True, "25", "segment_override", at[6], 1, False),
    ]

    identities = _query(
        environment,
        "select environment_id, identity, first_seen_at, last_seen_at, delivery_count"
        " from flagsmith.flagsmith__identities order by identity",
    )
    assert identities == [
        (ENVIRONMENT, "alice", at[0], at[3], 4),
        (ENVIRONMENT, "bob", at[4], at[6], 3),
    ]
    assert all(t.tzinfo is UTC or t.utcoffset().total_seconds() == 0 for t in at)

    _assert_every_model_and_column_documented(environment)


def _assert_every_model_and_column_documented(environment):
    """`dbt docs generate` works, and the docs match what was built, column for column."""
    settings = Settings.from_env(environment)
    command = dbt_command(settings, ["docs", "generate"])
    result = subprocess.run(command, env=dbt_environment(settings), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    target = Path(environment["FLAGSMITH_STATE_DIR"]) / "dbt" / "target"
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    models = {
        key: node
        for key, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and node["package_name"] == "flagsmith_warehouse"
    }
    assert models
    for key, node in models.items():
        assert node["description"].strip(), f"{node['name']} has no description"
        documented = {name: column["description"] for name, column in node["columns"].items()}
        if node["config"]["materialized"] == "ephemeral":  # inlined: nothing built to compare
            assert all(text.strip() for text in documented.values()), node["name"]
            continue
        built = {name.lower() for name in catalog["nodes"][key]["columns"]}
        assert set(documented) == built, f"{node['name']}: documented {set(documented) ^ built}"
        assert all(text.strip() for text in documented.values()), f"{node['name']}: empty doc"
    for macro in manifest["macros"].values():
        if macro["package_name"] == "flagsmith_warehouse" and not macro["name"].startswith(
            ("duckdb__", "default__", "postgres__", "spark__", "test_")
        ):
            assert macro["description"].strip(), f"macro {macro['name']} has no description"


def test_simulated_traffic_marts_equal_the_independent_oracle(environment, receiver):
    check_simulated_traffic_marts_equal_the_independent_oracle(environment, receiver)


def check_simulated_traffic_marts_equal_the_independent_oracle(environment, receiver):
    deliveries = generate(
        600, seed=11, n_identities=30, n_flags=8, n_environments=2, mean_interval=240
    )
    answers = post_all(receiver, deliveries, concurrency=4)
    assert [status for status, _ in answers] == [202] * len(deliveries)

    wait_sealed(environment)
    result = _cli(environment, "run")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    with connect(Settings.from_env(environment)) as connection:
        assert len(raw_rows(connection)) == len(deliveries)
        expected = expected_marts(connection)
        for name in COLUMNS:
            assert expected[name], f"the stream should produce rows for {name}"
            assert_mart_equal(fetch_mart(connection, name), expected[name], name)
