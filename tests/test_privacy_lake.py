"""`forget` on the lake (FLAGSMITH_WAREHOUSE=spark), without Spark: the raw parquet files are
rewritten without the identities' deliveries (each file once for all of them), the audit is
kept in the lake's erasures files, a `forget` killed between writing a file's new revision and
removing the old one is finished by the next, and `forget` waits for loads other nodes started
before it recorded the erasure. The marts rebuilt on Spark afterwards: tests/test_privacy.py
(`..._on_spark`)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from loader import lake, pipeline, privacy
from loader.config import ConfigError
from loader.privacy import DROPPED_AT_LOAD, FORGET, forget, identity_hmac
from loader.spool import SpoolWriter

from .bodies import body, flag
from .test_privacy import ERASED, KEY, _address, _audit, _distinctive_stream
from .warehouse import Posted, connect, deliveries, land, landed_delivery_ids, warehouse_settings

DATASET = pipeline.DATASET


def _lake_settings(directory: Path, lake_dir: Path | None = None):
    return warehouse_settings(directory, "spark", lake_dir).with_overrides(erasure_key=KEY)


def _raw_identities(settings) -> list[str]:
    with connect(settings) as connection:
        rows = connection.execute(
            "select json_extract_string(payload, '$.identity') from flagsmith_raw.identity_webhooks"
        ).fetchall()
    return sorted(row[0] for row in rows)


def _quarantined_count(settings) -> int:
    with connect(settings) as connection:
        return connection.execute(
            "select count(*) from flagsmith_raw.quarantined_webhooks"
        ).fetchone()[0]


def _files_mentioning(settings, needle: str) -> list[str]:
    """Every parquet file in the lake (any table, any revision) with a value containing
    `needle`."""
    found = []
    for path in sorted(Path(settings.lake_dir).rglob("*.parquet")):
        if needle in str(pq.read_table(path).to_pylist()):
            found.append(str(path))
    return found


def _spool(settings, posted: list[Posted]) -> None:
    writer = SpoolWriter(settings.spool_dir, segment_bytes=1 << 30, segment_seconds=3600)
    for record in deliveries(posted):
        writer.append(record)
    writer.close()


def test_forget_on_the_lake_rewrites_the_raw_files_and_records_the_audit(tmp_path):
    settings = _lake_settings(tmp_path / "node")
    stream = _distinctive_stream(datetime(2026, 11, 1, tzinfo=UTC))
    unusable = Posted(b'{"identity": "' + ERASED.encode() + b'", "flags": 5}', stream[0].at, "prod")
    assert land(settings, [*stream[:12], unusable]) == 13
    assert land(settings, stream[12:18]) == 6
    _spool(settings, stream[18:])  # still in the spool when forget runs
    assert _quarantined_count(settings) == 1
    assert _files_mentioning(settings, ERASED)

    summary = forget(settings, [ERASED], transform=False)

    landed = [_address(p)[0] for p in stream[:18]]
    assert summary.deliveries_removed == landed.count(ERASED) + 1  # and the quarantined body
    assert summary.rows_removed == summary.deliveries_removed  # the marts rebuild on Spark
    assert summary.dropped_from_spool == [_address(p)[0] for p in stream[18:]].count(ERASED)
    assert _raw_identities(settings) == sorted(
        _address(p)[0] for p in stream if _address(p)[0] != ERASED
    )
    assert _quarantined_count(settings) == 0
    assert _files_mentioning(settings, ERASED) == []
    for path in settings.spool_dir.rglob("*"):
        if path.is_file() and "corrupt" not in path.parts:
            assert ERASED.encode() not in path.read_bytes(), path
    hashed = identity_hmac(KEY, ERASED)
    assert _audit(settings) == [
        (hashed, None, FORGET, summary.deliveries_removed),
        (hashed, None, DROPPED_AT_LOAD, summary.dropped_from_spool),
    ]
    # Run again: nothing is left to remove, and nothing else changes.
    before = _raw_identities(settings)
    assert forget(settings, [ERASED], transform=False).deliveries_removed == 0
    assert _raw_identities(settings) == before


def test_forget_on_the_lake_in_one_environment_keeps_the_others(tmp_path):
    settings = _lake_settings(tmp_path / "node")
    at = datetime.now(UTC) - timedelta(hours=1)
    bodies = [
        (
            b'{"flags":[{"environment":%d,"enabled":true,"feature":{"id":1,"name":"f","type":'
            b'"STANDARD"},"feature_segment":null,"feature_state_value":null,"id":101,'
            b'"identity":null}],"identity":"scoped","segments":[],"traits":[]}'
        )
        % environment
        for environment in (7, 8, 7)
    ]
    land(settings, [Posted(b, at + timedelta(seconds=n)) for n, b in enumerate(bodies)])
    summary = forget(settings, ["scoped"], 7, transform=False)
    assert summary.deliveries_removed == 2
    with connect(settings) as connection:
        left = connection.execute(
            "select cast(json_extract(payload, '$.flags[0].environment') as int) "
            "from flagsmith_raw.identity_webhooks"
        ).fetchall()
    assert left == [(8,)]
    assert _audit(settings) == [(identity_hmac(KEY, "scoped"), 7, FORGET, 2)]


def test_forget_on_the_lake_erases_several_identities_in_one_pass(tmp_path, monkeypatch):
    settings = _lake_settings(tmp_path / "node")
    at = datetime.now(UTC) - timedelta(hours=1)

    def posted(identities: list[str], start: int) -> list[Posted]:
        return [
            Posted(body(identity, [flag(1, "f")]), at + timedelta(seconds=start + n))
            for n, identity in enumerate(identities)
        ]

    # Each load's file holds both erased identities beside the one that stays.
    land(settings, posted(["gone-a", "gone-b", "stays", "gone-a"], 0))
    land(settings, posted(["gone-b", "stays", "gone-b", "gone-b"], 10))
    land(settings, [Posted(b'{"identity": "gone-a", "flags": 5}', at, "prod")])  # quarantined
    assert _quarantined_count(settings) == 1
    rewritten: list[str] = []
    real_rewrite = lake.rewrite_file

    def counted(lake_dir, path, rows):
        rewritten.append(path)
        return real_rewrite(lake_dir, path, rows)

    monkeypatch.setattr(lake, "rewrite_file", counted)

    summary = forget(settings, ["gone-a", "gone-b"], transform=False)

    assert summary.identities == 2
    assert summary.deliveries_removed == summary.rows_removed == 3 + 4
    assert len(rewritten) == len(set(rewritten)) == 3  # each file holding them, once
    assert _raw_identities(settings) == ["stays", "stays"]
    assert _quarantined_count(settings) == 0
    assert _files_mentioning(settings, "gone-") == []
    assert sorted(_audit(settings)) == sorted(
        [
            (identity_hmac(KEY, "gone-a"), None, FORGET, 3),  # its quarantined body included
            (identity_hmac(KEY, "gone-b"), None, FORGET, 4),
        ]
    )


def test_a_forget_killed_between_a_files_revisions_is_finished_by_the_next(tmp_path, monkeypatch):
    settings = _lake_settings(tmp_path / "node")
    stream = _distinctive_stream(datetime(2026, 11, 1, tzinfo=UTC))
    land(settings, stream[:10])
    land(settings, stream[10:20])
    kept = sorted(_address(p)[0] for p in stream[:20] if _address(p)[0] != ERASED)
    real_rm = LocalFileSystem.rm

    def killed(self, path, *args, **kwargs):
        if str(path).endswith(".parquet") and "/identity_webhooks/" in str(path):
            raise KeyboardInterrupt("killed after the new revision was moved into place")
        return real_rm(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "rm", killed)
    with pytest.raises(KeyboardInterrupt):
        forget(settings, [ERASED], transform=False)
    monkeypatch.setattr(LocalFileSystem, "rm", real_rm)

    folder = Path(settings.lake_dir) / DATASET / "identity_webhooks"
    names = sorted(path.name for path in folder.glob("*.parquet"))
    assert len(names) == 3 and sum(".r1." in name for name in names) == 1, names
    # Readers take the newest revision: no delivery twice, the rewritten file's without ERASED.
    loads = lake.completed_loads(settings.lake_dir, DATASET)
    assert len(lake.table_files(settings.lake_dir, DATASET, "identity_webhooks", loads)) == 2
    assert len(_raw_identities(settings)) == len(set(landed_delivery_ids(settings)))
    assert _audit(settings) == [(identity_hmac(KEY, ERASED), None, FORGET, None)]  # pending

    second_load = [_address(p)[0] for p in stream[10:20]].count(ERASED)
    again = forget(settings, [ERASED], transform=False)
    assert again.deliveries_removed == second_load  # the file the first run never reached
    names = sorted(path.name for path in folder.glob("*.parquet"))
    assert len(names) == 2 and all(".r1." in name for name in names), names
    assert _raw_identities(settings) == kept
    assert _files_mentioning(settings, ERASED) == []


def test_forget_on_the_lake_waits_for_loads_other_nodes_started_before_it(tmp_path, monkeypatch):
    settings = _lake_settings(tmp_path / "node")
    other = _lake_settings(tmp_path / "other", Path(settings.lake_dir))
    assert other.node != settings.node
    at = datetime.now(UTC) - timedelta(minutes=5)
    land(settings, [Posted(_distinctive_stream(at)[0].body, at)])
    assert _raw_identities(settings) == [ERASED]

    # A load on the other node in progress that never ends: forget gives up before deleting.
    monkeypatch.setattr(privacy, "LOADS_WAIT_SECONDS", 1.0)
    with (
        lake.announce_load(settings.lake_dir, DATASET, other.node),
        pytest.raises(ConfigError, match="loads in progress on other nodes"),
    ):
        forget(settings, [ERASED], transform=False)
    assert _raw_identities(settings) == [ERASED]

    # One that ends while forget waits: forget goes on once it has.
    monkeypatch.setattr(privacy, "LOADS_WAIT_SECONDS", 60.0)
    ended = threading.Event()
    started = threading.Event()

    def a_load_on_the_other_node():
        with lake.announce_load(settings.lake_dir, DATASET, other.node):
            started.set()
            ended.wait(2.0)

    loading = threading.Thread(target=a_load_on_the_other_node)
    loading.start()
    started.wait(10)
    summary = forget(settings, [ERASED], transform=False)
    loading.join()
    assert summary.deliveries_removed == 1
    assert _raw_identities(settings) == []
    # The markers of finished loads are gone; a loader's next run of this node leaves none.
    assert lake.loads_in_progress(settings.lake_dir, DATASET) == {}


def test_every_lake_loader_drops_erased_deliveries_received_before_the_erasure(tmp_path):
    settings = _lake_settings(tmp_path / "node")
    other = _lake_settings(tmp_path / "other", Path(settings.lake_dir))
    before = datetime.now(UTC) - timedelta(hours=1)
    land(settings, [Posted(_distinctive_stream(before)[1].body, before)])
    forget(settings, ["gone"], transform=False)
    body = _distinctive_stream(before)[1].body.replace(b'"keep-0"', b'"gone"')
    late = [
        Posted(body, before),  # the other node's backlog, older than the erasure: dropped
        Posted(body, datetime.now(UTC) + timedelta(seconds=1)),  # a new identify call: kept
    ]
    assert land(other, late) == 1
    assert _raw_identities(settings) == ["gone", "keep-0"]
    assert _audit(settings)[-1] == (identity_hmac(KEY, "gone"), None, DROPPED_AT_LOAD, 1)
