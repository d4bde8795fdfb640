"""Erasure (`forget`): exact, traceless, applied by every loader, and kept by incremental runs.

After erasures between incremental builds (one identity everywhere, one in one environment, a
late spool holding more of their deliveries), every mart and intermediate table equals a
`--full-refresh` of the same warehouse and the oracle run on the deliveries left, and the raw
table holds exactly the deliveries no erasure covers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from loader import lake, pipeline
from loader.config import ConfigError
from loader.privacy import DROPPED_AT_LOAD, FORGET, forget, identity_hmac

from .bodies import body, flag
from .marts import INTERMEDIATE_TABLES, assert_mart_equal, every_row, expected_marts, fetch_mart
from .oracle import COLUMNS
from .spark import SPARK_BUILD, spark  # noqa: F401  (spark: the fixture)
from .test_incremental import _batches, incremental_and_full_marts
from .warehouse import Posted, connect, dbt, deliveries, land, warehouse_settings

KEY = b"erasure-test-key"


def _settings(directory: Path, warehouse: str = "duckdb"):
    settings = warehouse_settings(directory, warehouse).with_overrides(erasure_key=KEY)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return settings


def _address(posted: Posted) -> tuple[str, int | None]:
    document = orjson.loads(posted.body)
    flags = document.get("flags") or []
    return document["identity"], flags[0]["environment"] if flags else None


def _raw_delivery_bodies(settings) -> list[bytes]:
    with connect(settings) as connection:
        rows = connection.execute(
            "select cast(payload as varchar) from flagsmith_raw.identity_webhooks"
        ).fetchall()
    return [row[0].encode() for row in rows]


def _audit(settings) -> list[tuple]:
    """(identity_hmac, environment_id, action, rows_removed) of every audit row, oldest first:
    the warehouse's table, or the lake's files."""
    if settings.warehouse == "spark":
        rows = sorted(
            lake.read_erasures(settings.lake_dir, pipeline.DATASET).to_pylist(),
            key=lambda row: (row["erased_at"], row["action"]),
        )
        names = ("identity_hmac", "environment_id", "action", "rows_removed")
        return [tuple(row[name] for name in names) for row in rows]
    with connect(settings) as connection:
        return connection.execute(
            "select identity_hmac, environment_id, action, rows_removed "
            "from flagsmith_raw.erasures order by erased_at"
        ).fetchall()


def assert_erasures_between_incremental_runs_equal_a_full_refresh(
    tmp_path, warehouse: str = "duckdb", seed: int = 5, size: int = 600
) -> None:
    settings = _settings(tmp_path / "incremental", warehouse)
    build = ["build", *(SPARK_BUILD if warehouse == "spark" else ())]
    batches = _batches(seed, size)  # the randomized streams of tests/test_incremental.py
    stream = [posted for batch in batches for posted in batch]
    counts: dict[tuple[str, int | None], int] = {}
    for posted in stream:
        counts[_address(posted)] = counts.get(_address(posted), 0) + 1
    # The two busiest identities: one erased everywhere, one in its busiest environment only.
    by_identity: dict[str, int] = {}
    for (identity, _), count in counts.items():
        by_identity[identity] = by_identity.get(identity, 0) + count
    everywhere, scoped = sorted(by_identity, key=lambda i: (-by_identity[i], i))[:2]
    scoped_environment = max(
        (env for (identity, env) in counts if identity == scoped and env is not None),
        key=lambda env: counts[scoped, env],
    )
    erased_after = {1: [(everywhere, None)], 2: [(scoped, scoped_environment)]}
    erasures: list[tuple[str, int | None, datetime]] = []
    for number, batch in enumerate(batches):
        land(settings, batch)
        result = dbt(settings, build if number == 0 else "run")
        assert result.returncode == 0, result.output[-4000:]
        for identity, environment in erased_after.get(number, []):
            summary = forget(settings, [identity], environment)
            assert summary.transform_status == 0
            assert summary.deliveries_removed > 0
            erasures.append((identity, environment, datetime.now(UTC)))
    # A later identify call of the identity erased everywhere is a new delivery, and kept.
    comeback = Posted(
        body(everywhere, [flag(1, "feature_1")]), datetime.now(UTC) + timedelta(seconds=1)
    )
    land(settings, [comeback])
    result = dbt(settings, build)
    assert result.returncode == 0, result.output[-4000:]

    def kept(posted: Posted) -> bool:
        identity, environment = _address(posted)
        return not any(
            identity == erased and scope in (None, environment) and posted.at <= at
            for erased, scope, at in erasures
        )

    expected_bodies = sorted(p.body for p in [*stream, comeback] if kept(p))
    if warehouse in ("duckdb", "spark"):  # the body byte for byte
        assert sorted(_raw_delivery_bodies(settings)) == expected_bodies
    else:  # jsonb reorders keys: compare the documents
        got = sorted(
            orjson.dumps(orjson.loads(b), option=orjson.OPT_SORT_KEYS)
            for b in _raw_delivery_bodies(settings)
        )
        want = sorted(
            orjson.dumps(orjson.loads(b), option=orjson.OPT_SORT_KEYS) for b in expected_bodies
        )
        assert got == want

    if warehouse == "duckdb":
        refreshed, full_schema = _settings(tmp_path / "refreshed"), "flagsmith"
        shutil.copy(settings.duckdb_path, refreshed.duckdb_path)
    elif warehouse == "spark":  # the same lake, the marts in a Spark warehouse of their own
        refreshed = warehouse_settings(tmp_path / "refreshed", "spark", Path(settings.lake_dir))
        full_schema = "flagsmith"
    else:
        refreshed, full_schema = _settings(tmp_path / "refreshed", warehouse), "flagsmith_full"
    result = dbt(refreshed, build, "--full-refresh", schema=full_schema)
    assert result.returncode == 0, result.output[-4000:]
    with connect(settings) as raw:
        expected = expected_marts(raw)
    opened = incremental_and_full_marts(settings, refreshed, tmp_path)
    with opened[0] as incremental, opened[1] as full:
        for name in COLUMNS:
            actual = fetch_mart(incremental, name)
            assert_mart_equal(actual, fetch_mart(full, name, full_schema), f"{name} (vs full)")
            assert_mart_equal(actual, expected[name], f"{name} (vs oracle)")
        for name in [*COLUMNS, *INTERMEDIATE_TABLES]:
            assert every_row(incremental, name) == every_row(full, name, full_schema), name
    audit = _audit(settings)
    forgets = [row for row in audit if row[2] == FORGET]
    assert [(h, e) for h, e, _, _ in forgets] == [
        (identity_hmac(KEY, identity), environment) for identity, environment, _ in erasures
    ]
    assert all(rows and rows > 0 for *_, rows in forgets)
    # the late spool's deliveries of the erased identities were dropped by the loader
    assert any(action == DROPPED_AT_LOAD for _, _, action, _ in audit)


@pytest.mark.parametrize("seed", [5, 11])
def test_erasures_between_incremental_runs_equal_a_full_refresh_and_the_oracle(tmp_path, seed):
    assert_erasures_between_incremental_runs_equal_a_full_refresh(tmp_path, seed=seed)


def test_erasures_between_incremental_runs_on_postgres(tmp_path, postgres_database):
    assert_erasures_between_incremental_runs_equal_a_full_refresh(tmp_path, "postgres")


def test_erasures_between_incremental_runs_on_spark(tmp_path, spark):  # noqa: F811
    """The lake's files rewritten, every Spark model rebuilt from what is left: a smaller
    stream, a Spark build costing seconds per model whatever its size."""
    assert_erasures_between_incremental_runs_equal_a_full_refresh(tmp_path, "spark", size=150)


ERASED = "erase-me-5f0c1d9e"
"""A distinctive identity, also inside one of its own trait values."""


def _distinctive_stream(start: datetime) -> list[Posted]:
    posted = []
    for number in range(12):
        at = start + timedelta(minutes=number)
        for identity in (ERASED, f"keep-{number % 3}"):
            traits = [{"trait_key": "plan", "trait_value": "pro"}]
            if identity == ERASED:
                traits.append({"trait_key": "email", "trait_value": f"{ERASED}@example.com"})
            segments = [{"id": 7, "name": "beta"}] if number % 2 else []
            flags = [
                flag(
                    1,
                    "checkout",
                    value="variant_a" if number % 2 else "control",
                    kind="MULTIVARIATE",
                ),
                flag(2, "dark_mode", enabled=number % 3 == 0),
            ]
            posted.append(Posted(body(identity, flags, traits, segments), at))
    return posted


def _text_mentions(connection, needle: str) -> list[str]:
    """Every (schema.table.column) of a base table or view holding a value that contains
    `needle`, over every column cast to text."""
    columns = connection.execute(
        """
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns as c
        where c.table_schema in ('flagsmith_raw', 'flagsmith')
        order by 1, 2, 3
        """
    ).fetchall()
    found = []
    for schema, table, column in columns:
        count = connection.execute(
            f'select count(*) from {schema}."{table}" '
            f"where strpos(cast(\"{column}\" as varchar), '{needle}') > 0"
        ).fetchone()[0]
        if count:
            found.append(f"{schema}.{table}.{column}")
    return found


def test_no_table_spool_or_mart_mentions_an_erased_identity(tmp_path):
    settings = _settings(tmp_path / "node")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    stream = _distinctive_stream(start)
    land(settings, stream[:12])
    assert dbt(settings, "build").returncode == 0
    land(settings, stream[12:18])  # loaded, not yet transformed
    # still in the spool when forget runs: forget's own load drops them
    from loader.spool import SpoolWriter

    writer = SpoolWriter(settings.spool_dir, segment_bytes=1 << 30, segment_seconds=3600)
    for record in deliveries(stream[18:]):
        writer.append(record)
    writer.close()
    with connect(settings) as connection:
        assert _text_mentions(connection, ERASED), "the stream should mention it before"

    summary = forget(settings, [ERASED])
    assert summary.transform_status == 0
    assert summary.dropped_from_spool == sum(1 for p in stream[18:] if _address(p)[0] == ERASED)
    with connect(settings) as connection:
        assert _text_mentions(connection, ERASED) == []
        (hashed,) = connection.execute(
            "select identity_hmac from flagsmith_raw.erasures where action = 'forget'"
        ).fetchone()
        identities = {
            row[0]
            for row in connection.execute(
                "select identity from flagsmith.flagsmith__identities"
            ).fetchall()
        }
    assert hashed == identity_hmac(KEY, ERASED) and ERASED not in hashed
    assert identities == {"keep-0", "keep-1", "keep-2"}
    for path in settings.spool_dir.rglob("*"):
        if path.is_file() and "corrupt" not in path.parts:
            assert ERASED.encode() not in path.read_bytes(), path
    # Idempotent: again, nothing is left to remove, and the marts stay as they are.
    with connect(settings) as connection:
        before = {name: every_row(connection, name) for name in COLUMNS}
    again = forget(settings, [ERASED])
    assert (again.deliveries_removed, again.rows_removed) == (0, 0)
    with connect(settings) as connection:
        assert {name: every_row(connection, name) for name in COLUMNS} == before


def test_loader_drops_erased_deliveries_received_before_the_erasure_only(tmp_path):
    settings = _settings(tmp_path / "node")
    before = datetime.now(UTC) - timedelta(hours=1)
    land(settings, [Posted(body("someone-else", [flag(1, "f")]), before)])
    forget(settings, ["gone"], transform=False)
    after = datetime.now(UTC) + timedelta(seconds=1)
    late = [
        Posted(body("gone", [flag(1, "f")]), before),  # a node's backlog, older than the erasure
        Posted(body("gone", [flag(1, "f")]), after),  # a new identify call: kept
        Posted(body("other", [flag(1, "f")]), before),
    ]
    summary_loaded = land(settings, late)
    assert summary_loaded == 2
    with connect(settings) as connection:
        identities = sorted(
            row[0]
            for row in connection.execute(
                "select json_extract_string(payload, '$.identity') "
                "from flagsmith_raw.identity_webhooks"
            ).fetchall()
        )
        dropped = connection.execute(
            "select identity_hmac, rows_removed from flagsmith_raw.erasures "
            f"where action = '{DROPPED_AT_LOAD}'"
        ).fetchall()
    assert identities == ["gone", "other", "someone-else"]
    assert dropped == [(identity_hmac(KEY, "gone"), 1)]


def test_a_loader_without_the_key_refuses_once_erasures_exist(tmp_path):
    settings = _settings(tmp_path / "node")
    land(settings, [Posted(body("a", [flag(1, "f")]), datetime.now(UTC))])
    forget(settings, ["a"], transform=False)
    keyless = settings.with_overrides()
    object.__setattr__(keyless, "erasure_key", None)
    from loader.spool import SpoolWriter

    writer = SpoolWriter(settings.spool_dir, segment_bytes=1 << 30, segment_seconds=3600)
    writer.append(deliveries([Posted(body("b", [flag(1, "f")]), datetime.now(UTC))])[0])
    writer.close()
    with pytest.raises(ConfigError, match="FLAGSMITH_ERASURE_KEY"):
        pipeline.load(keyless)
    assert pipeline.load(settings).deliveries == 1  # nothing was lost meanwhile


def test_forget_command_needs_the_key_and_says_what_it_removed(tmp_path):
    settings = _settings(tmp_path / "node")
    land(settings, [Posted(body("cli-person", [flag(1, "f")]), datetime.now(UTC))])
    env = dict(
        os.environ,
        FLAGSMITH_DUCKDB_PATH=str(settings.duckdb_path),
        FLAGSMITH_SPOOL_DIR=str(settings.spool_dir),
        FLAGSMITH_STATE_DIR=str(settings.state_dir),
        FLAGSMITH_DBT_TARGET_PATH=str(settings.dbt_target_path),
    )
    env.pop("FLAGSMITH_ERASURE_KEY", None)
    command = [sys.executable, "-m", "loader.cli", "forget", "--identity", "cli-person"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "FLAGSMITH_ERASURE_KEY" in refused.stderr
    env["FLAGSMITH_ERASURE_KEY"] = KEY.decode()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "forgot 1 identity: 1 deliveries" in done.stderr
    assert "cli-person" not in done.stdout + done.stderr


def test_import_of_an_older_export_skips_erased_deliveries(tmp_path):
    from loader.history import export, import_

    settings = _settings(tmp_path / "node")
    at = datetime.now(UTC) - timedelta(hours=2)
    land(
        settings,
        [
            Posted(body(identity, [flag(1, "f")]), at + timedelta(minutes=n))
            for n, identity in enumerate(["old-x", "old-y", "old-x"])
        ],
    )
    export(settings, tmp_path / "backup")
    forget(settings, ["old-x"], transform=False)
    summary = import_(settings, tmp_path / "backup")
    assert (summary.identity_webhooks, summary.skipped, summary.erased) == (0, 1, 2)
    with connect(settings) as connection:
        rows = connection.execute(
            "select json_extract_string(payload, '$.identity') from flagsmith_raw.identity_webhooks"
        ).fetchall()
        audit = connection.execute(
            "select action, rows_removed from flagsmith_raw.erasures order by erased_at"
        ).fetchall()
    assert rows == [("old-y",)]
    assert audit == [(FORGET, 2), (DROPPED_AT_LOAD, 2)]


SECRET_KEY = "secret_email"
SECRET_VALUE = "pii-3c9e1b@example.com"


def _with_secret_trait(posted: Posted, number: int) -> Posted:
    document = orjson.loads(posted.body)
    if number % 4 == 0:
        document.setdefault("traits", []).append(
            {"trait_key": SECRET_KEY, "trait_value": SECRET_VALUE}
        )
    return Posted(orjson.dumps(document), posted.at, posted.environment_key)


def _without_secret_trait(raw_row: tuple) -> tuple:
    delivery_id, at, key, payload = raw_row
    document = orjson.loads(payload)
    document["traits"] = [
        t for t in document.get("traits") or [] if t.get("trait_key") != SECRET_KEY
    ]
    return delivery_id, at, key, orjson.dumps(document)


def test_excluded_trait_keys_reach_no_model_and_a_change_rebuilds_exactly(tmp_path):
    assert_excluded_trait_keys_reach_no_model(tmp_path)


def test_excluded_trait_keys_on_postgres(tmp_path, postgres_database):
    assert_excluded_trait_keys_reach_no_model(tmp_path, "postgres")


def assert_excluded_trait_keys_reach_no_model(tmp_path, warehouse: str = "duckdb") -> None:
    from .marts import raw_rows
    from .oracle import build_marts

    settings = _settings(tmp_path / "node", warehouse)
    batches = _batches(6, 400)
    counter = iter(range(10_000))
    batches = [[_with_secret_trait(p, next(counter)) for p in batch] for batch in batches]
    excluded = ["--vars", '{"flagsmith__excluded_trait_keys": "' + SECRET_KEY + ', other"}']
    for number, batch in enumerate(batches):
        land(settings, batch)
        chosen = excluded if number in (1, 2) else []  # set from the second batch, then unset
        result = dbt(settings, "build", *chosen)
        assert result.returncode == 0, result.output[-4000:]
        with connect(settings) as connection:
            mentions = [
                where
                for needle in (SECRET_KEY, SECRET_VALUE)
                for where in _text_mentions(connection, needle)
                if where.startswith("flagsmith.")
            ]
            raw = raw_rows(connection)
        if chosen:
            assert mentions == [], mentions
        else:
            assert "flagsmith.flagsmith__trait_history.trait_key" in mentions
        if number in (2, 3):  # right after a run with the keys, and right after unsetting them
            refreshed = _settings(tmp_path / f"refreshed-{number}", warehouse)
            full_schema = "flagsmith" if warehouse == "duckdb" else "flagsmith_full"
            if warehouse == "duckdb":
                shutil.copy(settings.duckdb_path, refreshed.duckdb_path)
            result = dbt(refreshed, "build", "--full-refresh", *chosen, schema=full_schema)
            assert result.returncode == 0, result.output[-4000:]
            oracle = build_marts([_without_secret_trait(r) for r in raw] if chosen else raw)
            with connect(settings) as incremental, connect(refreshed) as full:
                for name in COLUMNS:
                    actual = fetch_mart(incremental, name)
                    assert_mart_equal(
                        actual, fetch_mart(full, name, full_schema), f"{name} (vs full)"
                    )
                    want = sorted(oracle[name], key=lambda row: [str(v) for v in row.values()])
                    got = sorted(actual, key=lambda row: [str(v) for v in row.values()])
                    assert_mart_equal(got, want, f"{name} (vs oracle)")
                for name in [*COLUMNS, *INTERMEDIATE_TABLES]:
                    assert every_row(incremental, name) == every_row(full, name, full_schema), name


def test_stripped_trait_keys_never_reach_the_warehouse(tmp_path):
    import hashlib

    from loader.config import Settings

    with pytest.raises(ConfigError, match="FLAGSMITH_EXCLUDED_TRAIT_KEYS"):
        Settings.from_env({"FLAGSMITH_STRIP_TRAIT_KEYS": "1"})
    configured = Settings.from_env(
        {"FLAGSMITH_STRIP_TRAIT_KEYS": "1", "FLAGSMITH_EXCLUDED_TRAIT_KEYS": f"{SECRET_KEY}, x"}
    )
    assert configured.excluded_trait_keys == (SECRET_KEY, "x") and configured.strip_trait_keys
    settings = _settings(tmp_path / "node").with_overrides(
        excluded_trait_keys=configured.excluded_trait_keys, strip_trait_keys=True
    )
    at = datetime(2026, 11, 2, tzinfo=UTC)
    posted = [
        _with_secret_trait(
            Posted(
                body(f"person-{n}", [flag(1, "f")], [{"trait_key": "plan", "trait_value": "pro"}]),
                at + timedelta(minutes=n),
            ),
            n,
        )
        for n in range(8)
    ]
    assert land(settings, posted) == 8
    with connect(settings) as connection:
        rows = connection.execute(
            "select cast(payload as varchar), body_sha256, stripped_trait_keys "
            "from flagsmith_raw.identity_webhooks order by received_at"
        ).fetchall()
        assert _text_mentions(connection, SECRET_VALUE) == []
    for (payload, sha, stripped), sent in zip(rows, posted, strict=True):
        assert sha == hashlib.sha256(sent.body).hexdigest()
        if SECRET_VALUE.encode() in sent.body:
            assert stripped == SECRET_KEY
            assert orjson.loads(payload)["traits"] == [{"trait_key": "plan", "trait_value": "pro"}]
        else:
            assert stripped is None and payload.encode() == sent.body  # untouched, byte for byte
    result = dbt(settings, "build", "--vars", '{"flagsmith__excluded_trait_keys": "x"}')
    assert result.returncode == 0, result.output[-4000:]
