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


def _one_per_segment(settings, count: int) -> bytes:
    """`count` deliveries of one shared example body, each in a segment of its own."""
    writer = SpoolWriter(settings.spool_dir, segment_bytes=1)
    body = shared_examples()[0][1]
    for _ in range(count):
        now = datetime.now(UTC)
        writer.append(Delivery(new_delivery_id(now), now, body))
    writer.close()
    return body


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


def test_a_package_left_pending_is_dropped_and_its_deliveries_load_with_new_ones(
    settings, monkeypatch
):
    """A crash after extract and normalize leaves a dlt package pending: the next load drops it
    (resuming is not exactly-once), loads the claimed segment again and the new delivery."""
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
    _one_per_segment(settings, 7)
    summary = pipeline.load(settings.with_overrides(batch_size=3))
    assert (summary.batches, summary.deliveries) == (3, 7)
    summary = pipeline.load(settings)
    assert summary.deliveries == 0


def test_max_batches_bounds_a_run(settings):
    _one_per_segment(settings, 4)
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


def test_batches_are_also_bounded_by_bytes(settings, monkeypatch):
    """Big bodies make smaller batches: a batch's memory does not follow the body size."""
    body = _one_per_segment(settings, 6)
    monkeypatch.setattr(pipeline, "BATCH_BYTES", 2 * len(body))
    summary = pipeline.load(settings.with_overrides(batch_size=1000))
    assert (summary.batches, summary.deliveries) == (3, 6)


def test_row_groups_cut_a_table_into_slices_of_bounded_size():
    import pyarrow as pa

    def text_bytes(piece):
        return sum(len(value) for value in piece.column("payload").to_pylist())

    table = pa.table({"payload": [b"x" * 1000] * 50, "n": list(range(50))})
    pieces = pipeline.row_groups(table, limit=10_000)
    assert len(pieces) == 5
    assert all(text_bytes(piece) <= 10_000 for piece in pieces)
    assert pa.concat_tables(pieces).equals(table)
    assert pipeline.row_groups(table, limit=10**9) == [table]
    # Rows of very different sizes: the bound holds for each slice, not on average.
    mixed = pa.table({"payload": [b"s" * 100] * 500 + [b"L" * 30_000] * 500})
    pieces = pipeline.row_groups(mixed, limit=100_000)
    assert max(text_bytes(piece) for piece in pieces) <= 100_000
    # 500 small rows (50 KB) and one big one fill the first slice; then three big rows a slice.
    assert [piece.num_rows for piece in pieces[:2]] == [501, 3]
    assert len(pieces) == 1 + -(-499 // 3)
    assert pa.concat_tables(pieces).equals(mixed)
    one_big_row = pa.table({"payload": [b"x" * 100_000], "n": [1]})
    big_rows = pa.concat_tables([one_big_row, one_big_row])
    assert [piece.num_rows for piece in pipeline.row_groups(big_rows, limit=10)] == [1, 1]


def test_bodies_of_hundreds_of_flags_load_within_a_small_memory_cap(settings, monkeypatch):
    """800 bodies of ~100 KB (300 flags) in one batch, under a 128MB DuckDB cap.

    dlt writes each arrow table it gets as one parquet row group, which DuckDB reads whole on
    each thread: the batch as one table was an ~80 MB row group, and the load failed with
    "Out of Memory Error: failed to allocate data", on every retry. The loader hands dlt slices
    of at most `PARQUET_ROW_GROUP_BYTES`.
    """
    from loader.simulate import iter_deliveries

    writer = SpoolWriter(settings.spool_dir, segment_bytes=1 << 30)
    total = 0
    for item in iter_deliveries(800, seed=5, n_flags=300, n_identities=100):
        writer.append(Delivery(new_delivery_id(item.at), item.at, item.body, item.environment_key))
        total += len(item.body)
    writer.close()
    assert total > 75_000_000
    monkeypatch.setattr(pipeline, "BATCH_BYTES", 1 << 30)
    summary = pipeline.load(settings.with_overrides(loader_duckdb_memory="128MB"))
    assert (summary.batches, summary.deliveries, summary.identity_webhooks) == (1, 800, 800)
    landed = _rows(settings, "select count(*) from flagsmith_raw.identity_webhooks")[0][0]
    assert landed == 800


def test_the_loader_writes_the_raw_tables_in_small_row_groups(settings):
    """DuckDB keeps an append's unfinished row group in memory, spilling it under the cap, until
    the commit: the loader's file is attached with row groups of `ROW_GROUP_SIZE` rows, written
    out as they fill (3x faster than the default 122,880 rows, bench/loader.py)."""
    from loader.duckdb_destination import ROW_GROUP_SIZE

    body = shared_examples()[0][1]
    _spool(settings, [body] * (3 * ROW_GROUP_SIZE + 5))
    summary = pipeline.load(settings)
    assert summary.deliveries == 3 * ROW_GROUP_SIZE + 5
    sizes = _rows(
        settings,
        "select row_group_id, max(count) from pragma_storage_info("
        "'flagsmith_raw.identity_webhooks') group by all order by 1",
    )
    assert len(sizes) == 4
    assert max(count for _, count in sizes) <= ROW_GROUP_SIZE


def test_a_load_that_landed_outside_the_file_releases_nothing(settings, monkeypatch):
    """Were dlt to write through a connection left on DuckDB's in-memory catalog, the rows would
    vanish at the close while the load reports success: the loader checks before it releases
    a segment, and the next load (with the right client) lands every delivery once."""
    from dlt.destinations.impl.duckdb.duck import DuckDbClient

    from loader import duckdb_destination

    deliveries = _spool(settings, [body for _, body, _ in shared_examples()][:3])
    with monkeypatch.context() as patch:
        patch.setattr(duckdb_destination.attached_duckdb, "client_class", DuckDbClient)
        with pytest.raises(RuntimeError, match="in-memory catalog"):
            pipeline.load(settings)
    assert SpoolReader(settings.spool_dir).claimed()  # kept for the next load
    summary = pipeline.load(settings)
    assert summary.deliveries == 3
    ids = _rows(settings, "select delivery_id from flagsmith_raw.identity_webhooks")
    assert sorted(row[0] for row in ids) == sorted(d.delivery_id for d in deliveries)


def test_release_cache_empties_duckdbs_cache_and_restores_its_limit(tmp_path):
    from loader.duckdb_destination import connect, release_cache

    connection = connect(tmp_path / "cache.duckdb", "256MB")
    try:
        connection.execute(
            "create table t as select concat_ws('', md5(range::varchar), md5((range * 7)::varchar),"
            " md5((range * 13)::varchar), md5((range * 17)::varchar)) as v from range(400000)"
        )
        connection.execute("checkpoint")
        connection.execute("select count(distinct v) from t").fetchall()

        def used() -> int:
            return connection.execute(
                "select sum(memory_usage_bytes) from duckdb_memory()"
            ).fetchone()[0]

        before = used()
        assert before > 32 * 2**20  # the scan left DuckDB's cache full enough to see it go
        release_cache(connection, "256MB")
        assert used() <= 16 * 2**20
        limit = connection.execute("select current_setting('memory_limit')").fetchone()[0]
        assert limit == "244.1 MiB"  # 256MB as DuckDB shows it: restored
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("384MB", 384_000_000),
        ("1GB", 10**9),
        ("1G", 10**9),
        ("2 GB", 2 * 10**9),
        (".5GB", 5 * 10**8),
        ("512MiB", 512 * 2**20),
        ("1.5GiB", int(1.5 * 2**30)),
        ("2 megabytes", 2 * 10**6),
    ],
)
def test_parse_size_reads_memory_limits_as_duckdb_does(text, size):
    from loader.duckdb_destination import parse_size

    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["80%", "-1", "1000", "lots", ""])
def test_parse_size_refuses_what_it_cannot_read(text):
    from loader.duckdb_destination import parse_size

    with pytest.raises(ValueError, match="not a memory size"):
        parse_size(text)
