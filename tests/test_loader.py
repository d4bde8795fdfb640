from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import duckdb
import pytest

from loader import pipeline
from loader.locks import LockBusy, exclusive
from loader.spool import Delivery, SpoolReader, SpoolWriter, new_delivery_id

from .conftest import shared_examples


def _spool(settings, bodies, kind="identity", reason=None) -> list[Delivery]:
    writer = SpoolWriter(settings.spool_dir)
    deliveries = []
    for body in bodies:
        now = datetime.now(UTC)
        delivery = Delivery(new_delivery_id(now), now, body, "prod", "verified", "fp", kind, reason)
        writer.append(delivery)
        deliveries.append(delivery)
    writer.close()
    return deliveries


def _rows(settings, sql):
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_load_lands_payloads_raw_and_quarantine_apart(settings):
    bodies = [body for _, body, _ in shared_examples()]
    identity = _spool(settings, bodies)
    quarantined = _spool(settings, [b"\xffnot json"], kind="quarantine", reason="not_json")
    summary = pipeline.load(settings)
    assert (summary.identity_webhooks, summary.quarantined) == (3, 1)

    rows = _rows(
        settings,
        "select delivery_id, received_at, environment_key, signature_status, body_sha256,"
        " payload, _dlt_load_id, _dlt_id from flagsmith_raw.identity_webhooks order by delivery_id",
    )
    assert [r[0] for r in rows] == sorted(d.delivery_id for d in identity)
    by_id = {d.delivery_id: d for d in identity}
    for delivery_id, received_at, key, status, sha, payload, load_id, dlt_id in rows:
        original = by_id[delivery_id]
        assert received_at == original.received_at
        assert (key, status) == ("prod", "verified")
        assert json.loads(payload) == json.loads(original.body)
        assert sha == hashlib.sha256(original.body).hexdigest() and load_id and dlt_id
    types = dict(
        _rows(
            settings,
            "select column_name, data_type from information_schema.columns"
            " where table_name = 'identity_webhooks' and table_schema = 'flagsmith_raw'",
        )
    )
    assert types["payload"] == "JSON"
    assert types["received_at"] == "TIMESTAMP WITH TIME ZONE"
    # never flattened into child tables
    tables = {
        r[0]
        for r in _rows(
            settings,
            "select table_name from information_schema.tables where table_schema = 'flagsmith_raw'",
        )
    }
    assert not any(name.startswith("identity_webhooks__") for name in tables)

    [row] = _rows(
        settings,
        "select delivery_id, reason, body, body_base64 from flagsmith_raw.quarantined_webhooks",
    )
    assert row[0] == quarantined[0].delivery_id and row[1] == "not_json"
    assert row[3] == "/25vdCBqc29u"
    assert SpoolReader(settings.spool_dir).backlog()["claimed_segments"] == 0


def test_empty_spool_still_creates_the_raw_tables(settings):
    summary = pipeline.load(settings)
    assert summary.deliveries == 0
    assert _rows(settings, "select count(*) from flagsmith_raw.identity_webhooks") == [(0,)]
    assert _rows(settings, "select count(*) from flagsmith_raw.quarantined_webhooks") == [(0,)]


def test_crash_after_commit_before_release_never_duplicates(settings, monkeypatch):
    _spool(settings, [body for _, body, _ in shared_examples()])

    def crash(self, paths):
        raise RuntimeError("killed after the commit")

    monkeypatch.setattr(SpoolReader, "release", crash)
    with pytest.raises(RuntimeError):
        pipeline.load(settings)
    monkeypatch.undo()
    assert len(SpoolReader(settings.spool_dir).claimed()) == 1
    pipeline.load(settings)
    assert _rows(
        settings,
        "select count(*), count(distinct delivery_id) from flagsmith_raw.identity_webhooks",
    ) == [(3, 3)]


def test_crash_with_a_pending_package_loads_it_and_the_new_data(settings, monkeypatch):
    first = _spool(settings, [shared_examples()[0][1]])

    def extract_and_die(p, resource):
        p.extract(resource)
        p.normalize()
        raise RuntimeError("killed before the load step")

    monkeypatch.setattr(pipeline, "_run", extract_and_die)
    with pytest.raises(RuntimeError):
        pipeline.load(settings)
    monkeypatch.undo()
    second = _spool(settings, [shared_examples()[1][1]])
    pipeline.load(settings)
    ids = [r[0] for r in _rows(settings, "select delivery_id from flagsmith_raw.identity_webhooks")]
    assert sorted(ids) == sorted([first[0].delivery_id, second[0].delivery_id])


def test_batches_are_bounded_by_batch_size(settings):
    writer = SpoolWriter(settings.spool_dir, segment_bytes=1)  # one delivery per segment
    body = shared_examples()[0][1]
    for _ in range(7):
        now = datetime.now(UTC)
        writer.append(Delivery(new_delivery_id(now), now, body))
    writer.close()
    summary = pipeline.load(settings.with_overrides(batch_size=3))
    assert (summary.batches, summary.deliveries) == (3, 7)
    summary = pipeline.load(settings)
    assert summary.deliveries == 0


def test_max_batches_bounds_a_run(settings):
    writer = SpoolWriter(settings.spool_dir, segment_bytes=1)
    body = shared_examples()[0][1]
    for _ in range(4):
        now = datetime.now(UTC)
        writer.append(Delivery(new_delivery_id(now), now, body))
    writer.close()
    small = settings.with_overrides(batch_size=1)
    assert pipeline.load(small, max_batches=2).deliveries == 2
    assert pipeline.load(small).deliveries == 2


def test_a_second_load_of_the_same_spool_exits_clearly(settings):
    with (
        exclusive(settings.state_dir / "loader.lock", what="test"),
        pytest.raises(LockBusy) as busy,
    ):
        pipeline.load(settings)
    assert "already running" in str(busy.value)


def test_reclaimed_segments_load_only_what_is_not_committed_yet(settings):
    """A crashed run's claimed segments are partly committed: only the rest is appended."""
    first = _spool(settings, [body for _, body, _ in shared_examples()])
    first += _spool(settings, [b"[]"], kind="quarantine", reason="not_an_object")
    segments = {path: path.read_bytes() for path in (settings.spool_dir / "ready").glob("*.seg")}
    assert pipeline.load(settings).deliveries == 4
    later = _spool(settings, [shared_examples()[0][1]])  # never loaded
    claimed = settings.spool_dir / "claimed"
    for path, data in segments.items():  # as if the first run died before releasing them
        (claimed / path.name).write_bytes(data)
    for path in (settings.spool_dir / "ready").glob("*.seg"):
        path.rename(claimed / path.name)

    summary = pipeline.load(settings)
    assert (summary.deliveries, summary.already_loaded) == (1, 4)
    assert "4 already loaded" in summary.line()
    ids = _rows(
        settings,
        "select delivery_id from flagsmith_raw.identity_webhooks"
        " union all select delivery_id from flagsmith_raw.quarantined_webhooks",
    )
    assert sorted(r[0] for r in ids) == sorted(d.delivery_id for d in first + later)
    assert SpoolReader(settings.spool_dir).backlog()["claimed_segments"] == 0
