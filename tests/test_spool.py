from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import pytest

from loader.spool import (
    CLAIMED,
    CORRUPT,
    OPEN,
    PREALLOCATE_BYTES,
    READY,
    Delivery,
    SpoolReader,
    SpoolWriteError,
    SpoolWriter,
    new_delivery_id,
    read_segment,
)


def _delivery(n: int, body: bytes | None = None, **kw) -> Delivery:
    now = datetime.now(UTC)
    return Delivery(
        delivery_id=new_delivery_id(now),
        received_at=now,
        body=body if body is not None else b'{"identity": "u%d"}' % n,
        **kw,
    )


def test_roundtrip_keeps_body_bytes_and_metadata_exactly(tmp_path):
    writer = SpoolWriter(tmp_path)
    original = _delivery(
        1,
        body=b"\x00\xffnot json at all\n",
        environment_key="prod",
        signature_status="verified",
        secret_fingerprint="abc123",
        kind="quarantine",
        reason="not_json",
    )
    writer.append(original)
    writer.close()
    [segment] = (tmp_path / READY).iterdir()
    deliveries, report = read_segment(segment)
    assert deliveries == [original]
    assert report.deliveries == 1 and report.torn_tail_bytes == 0 and report.corrupt_ranges == 0


def test_a_forked_child_never_repeats_its_parents_random_bits():
    new_delivery_id(datetime.now(UTC))  # the parent's buffer now holds unused random bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the next id and leave at once
        os.write(write_end, new_delivery_id(datetime.now(UTC)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = os.read(read_end, 100).decode()
    os.close(read_end)
    parent = new_delivery_id(datetime.now(UTC))
    assert child[19:] != parent[19:]  # rand_b: 62 random bits each


def test_delivery_ids_are_uuid7_and_sort_by_time():
    earlier = new_delivery_id(datetime(2026, 1, 1, tzinfo=UTC))
    later = new_delivery_id(datetime(2026, 1, 1, 0, 0, 0, 2000, tzinfo=UTC))
    assert earlier < later
    assert earlier[14] == "7" and len(earlier) == 36


def test_appends_are_on_disk_before_append_returns(tmp_path):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    delivery = _delivery(1)
    writer.append(delivery)
    # Still open (not sealed), yet a reader of the file sees the whole record.
    [segment] = (tmp_path / OPEN).glob("*.seg")
    assert read_segment(segment)[0] == [delivery]
    writer.close()


def test_open_segment_grows_in_flushed_zeros_and_seals_to_its_records(tmp_path):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    deliveries = [_delivery(n) for n in range(3)]
    for delivery in deliveries:
        writer.append(delivery)
    [open_segment] = (tmp_path / OPEN).glob("*.seg")
    records = b"".join(delivery.encode() for delivery in deliveries)
    data = open_segment.read_bytes()
    assert len(data) == PREALLOCATE_BYTES
    assert data[: len(records)] == records
    assert data.count(0, len(records)) == len(data) - len(records)
    found, report = read_segment(open_segment, tmp_path / CORRUPT)
    assert found == deliveries
    assert report.torn_tail_bytes == 0 and report.corrupt_ranges == 0
    writer.close()
    [sealed] = (tmp_path / READY).glob("*.seg")
    assert sealed.read_bytes() == records  # cut back: no zeros left for the loader


def test_a_record_bigger_than_a_preallocation_step(tmp_path):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    small, big = _delivery(1), _delivery(2, body=b"b" * (PREALLOCATE_BYTES + 1000))
    writer.append(small)
    writer.append(big)
    [open_segment] = (tmp_path / OPEN).glob("*.seg")
    assert read_segment(open_segment)[0] == [small, big]
    writer.close()
    [sealed] = (tmp_path / READY).glob("*.seg")
    assert read_segment(sealed)[0] == [small, big]


def test_bodies_ending_in_zero_bytes_survive_the_zero_tail(tmp_path):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    binary = [_delivery(n, body=b"\x01binary" + b"\x00" * n, kind="quarantine") for n in (1, 9)]
    for delivery in binary:
        writer.append(delivery)
    [open_segment] = (tmp_path / OPEN).glob("*.seg")
    found, report = read_segment(open_segment, tmp_path / CORRUPT)
    assert found == binary and report.corrupt_ranges == 0 and report.torn_tail_bytes == 0
    writer.close()


@pytest.mark.parametrize("cut", [1, 3, 4, 6, 10, 17, 40, -1])
def test_record_cut_short_in_preallocated_space_is_dropped_not_called_corrupt(tmp_path, cut):
    """A writer killed mid-record leaves a prefix of it, then the zeros of its preallocation."""
    first, second = _delivery(1), _delivery(2)
    whole, partial = first.encode(), second.encode()
    cut = cut if cut > 0 else len(partial) - 1
    segment = tmp_path / "x.unsealed.seg"  # as the loader names a segment claimed from open/
    tail = PREALLOCATE_BYTES - len(whole) - cut
    segment.write_bytes(whole + partial[:cut] + bytes(tail))
    deliveries, report = read_segment(segment, tmp_path / CORRUPT)
    assert deliveries == [first]
    assert report.corrupt_ranges == 0
    [kept] = (tmp_path / CORRUPT).iterdir()
    assert kept.name == f"x.unsealed.seg.{len(whole)}.cut-short.bin"
    assert kept.read_bytes() == partial[:cut].rstrip(b"\0")
    assert report.torn_tail_bytes == len(kept.read_bytes())


def test_a_damaged_last_record_is_kept_as_corrupt_open_or_sealed(tmp_path):
    first, second = _delivery(1), _delivery(2)
    records = first.encode() + second.encode()
    damaged = bytearray(records)
    damaged[len(first.encode()) + 30] ^= 0xFF
    for name, data in (
        ("sealed.seg", bytes(damaged)),
        ("open.unsealed.seg", bytes(damaged) + bytes(999)),
    ):
        (tmp_path / name).write_bytes(data)
        deliveries, report = read_segment(tmp_path / name, tmp_path / CORRUPT)
        assert deliveries == [first], name
        assert report.corrupt_ranges == 1 and report.torn_tail_bytes == 0, name
    assert len(list((tmp_path / CORRUPT).iterdir())) == 2


def test_concurrent_appends_share_flushes_and_lose_nothing(tmp_path, monkeypatch):
    flushes = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd):
        flushes.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    written: list[Delivery] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        for n in range(start, start + 50):
            delivery = _delivery(n)
            writer.append(delivery)
            with lock:
                written.append(delivery)

    threads = [threading.Thread(target=worker, args=(i * 1000,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    found = [d for path in (tmp_path / READY).glob("*.seg") for d in read_segment(path)[0]]
    assert sorted(d.delivery_id for d in found) == sorted(d.delivery_id for d in written)
    assert len(found) == 400
    assert len(flushes) <= 400  # never more than one flush per delivery, usually far fewer


def test_segments_rotate_by_size(tmp_path):
    writer = SpoolWriter(tmp_path, segment_bytes=1000, segment_seconds=3600)
    for n in range(50):
        writer.append(_delivery(n, body=b"x" * 100))
    writer.close()
    segments = list((tmp_path / READY).glob("*.seg"))
    assert len(segments) > 5
    assert sum(len(read_segment(p)[0]) for p in segments) == 50


def test_idle_segment_is_sealed_by_age(tmp_path):
    writer = SpoolWriter(tmp_path, segment_seconds=0.1)
    writer.append(_delivery(1))
    for _ in range(100):
        if list((tmp_path / READY).glob("*.seg")):
            break
        threading.Event().wait(0.05)
    assert len(list((tmp_path / READY).glob("*.seg"))) == 1
    assert not list((tmp_path / OPEN).glob("*.seg"))
    writer.close()


def test_a_failed_write_raises_and_leaves_no_partial_record(tmp_path, monkeypatch):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    writer.append(_delivery(1))

    def full_disk(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(SpoolWriteError):
        writer.append(_delivery(2))
    monkeypatch.undo()
    writer.append(_delivery(3))  # the next request gets a fresh segment
    writer.close()
    found = [d.body for p in (tmp_path / READY).glob("*.seg") for d in read_segment(p)[0]]
    assert sorted(found) == [b'{"identity": "u1"}', b'{"identity": "u3"}']


def test_a_failed_flush_raises(tmp_path, monkeypatch):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    writer.append(_delivery(1))  # the segment and its first preallocation exist

    def broken_flush(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_flush)
    with pytest.raises(SpoolWriteError):
        writer.append(_delivery(2))


def test_after_a_failed_flush_no_waiting_record_is_acknowledged(tmp_path, monkeypatch):
    """Linux reports a writeback error to one fdatasync; the next one on the file returns 0."""
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    writer.append(_delivery(1))
    segment = writer._segment
    flushes = []
    real_fdatasync = os.fdatasync

    def fails_once(fd):
        flushes.append(fd)
        if len(flushes) == 1:
            raise OSError(5, "Input/output error")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fails_once)
    # Two records written, neither flushed yet (the second thread is still on its way to _sync).
    record = _delivery(2).encode()
    os.pwrite(segment.fd, record, segment.written)
    segment.written += len(record)
    with pytest.raises(SpoolWriteError):  # the first thread's flush fails
        writer._sync(segment, segment.written)
    with pytest.raises(SpoolWriteError):  # the second must not succeed on a later flush
        writer._sync(segment, segment.written)
    assert len(flushes) == 1


def test_a_preallocation_that_fails_breaks_the_segment_for_records_waiting_on_it(
    tmp_path, monkeypatch
):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    writer.append(_delivery(1))
    segment = writer._segment
    record = _delivery(2).encode()
    os.pwrite(segment.fd, record, segment.written)  # written, waiting for its flush
    segment.written += len(record)

    def broken_flush(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_flush)
    with pytest.raises(SpoolWriteError):  # a big one needs the next preallocation step
        writer.append(_delivery(3, body=b"x" * PREALLOCATE_BYTES))
    monkeypatch.undo()
    assert segment.broken
    with pytest.raises(SpoolWriteError):
        writer._sync(segment, segment.written)


def test_a_full_disk_still_takes_a_delivery_that_fits(tmp_path, monkeypatch):
    """A whole preallocation step does not fit, the room one record needs does."""
    real_pwrite = os.pwrite

    def small_disk(fd, data, offset):
        if offset + len(data) > 100_000:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", small_disk)
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    first = _delivery(1, body=b"x" * 40_000)
    writer.append(first)
    writer.append(second := _delivery(2, body=b"y" * 40_000))
    with pytest.raises(SpoolWriteError):
        writer.append(_delivery(3, body=b"z" * 40_000))
    monkeypatch.undo()
    writer.close()
    found = [d for p in (tmp_path / READY).glob("*.seg") for d in read_segment(p)[0]]
    assert found == [first, second]


def test_unwritable_spool_raises(tmp_path, read_only_filesystem):
    writer = SpoolWriter(tmp_path / "spool")
    with pytest.raises(SpoolWriteError):
        writer.append(_delivery(1))


def test_torn_last_record_of_an_appended_open_segment_is_left_out_and_kept(tmp_path):
    """Segments written by appending (before preallocation) end where the writer was cut off."""
    first, second = _delivery(1), _delivery(2)
    data = first.encode() + second.encode()
    (tmp_path / OPEN).mkdir()
    segment = tmp_path / OPEN / "appended.seg"
    for cut in (len(data) - 1, len(data) - len(second.body) - 3, len(first.encode()) + 5):
        segment.write_bytes(data[:cut])
        deliveries, report = read_segment(segment, tmp_path / CORRUPT)
        assert deliveries == [first]
        assert report.corrupt_ranges == 0
        kept = tmp_path / CORRUPT / f"appended.seg.{len(first.encode())}.cut-short.bin"
        # Kept up to its last non-zero byte: zeros at the end cannot be told from unused space.
        assert kept.read_bytes() == data[len(first.encode()) : cut].rstrip(b"\0")
        assert report.torn_tail_bytes == len(kept.read_bytes())


def test_a_sealed_segment_cut_short_or_ending_in_zeros_is_corruption_not_a_torn_write(tmp_path):
    """Sealing flushes every record and cuts the file back, so a sealed segment is whole."""
    first, second = _delivery(1), _delivery(2)
    whole = first.encode() + second.encode()
    lost_last_record = first.encode() + bytes(len(second.encode()))
    for name, data in (("cut.seg", whole[:-7]), ("zeroed.seg", lost_last_record)):
        (tmp_path / name).write_bytes(data)
        deliveries, report = read_segment(tmp_path / name, tmp_path / CORRUPT)
        assert deliveries == [first], name
        assert report.corrupt_ranges == 1 and report.torn_tail_bytes == 0, name
        assert (tmp_path / CORRUPT / f"{name}.{len(first.encode())}.bin").exists()


def test_corrupt_record_is_kept_aside_and_does_not_block_the_rest(tmp_path):
    writer = SpoolWriter(tmp_path)
    records = [_delivery(n) for n in range(3)]
    for record in records:
        writer.append(record)
    writer.close()
    [segment] = (tmp_path / READY).glob("*.seg")
    data = bytearray(segment.read_bytes())
    start = len(records[0].encode())
    data[start + 20] ^= 0xFF  # inside the second record
    segment.write_bytes(bytes(data))
    deliveries, report = read_segment(segment, tmp_path / CORRUPT)
    assert deliveries == [records[0], records[2]]
    assert report.corrupt_ranges == 1
    [kept] = (tmp_path / CORRUPT).iterdir()
    assert kept.read_bytes() == bytes(data[start : start + len(records[1].encode())])


def test_garbage_file_yields_nothing_and_is_kept(tmp_path):
    segment = tmp_path / "x.seg"
    segment.write_bytes(b"garbage" * 100)
    deliveries, report = read_segment(segment, tmp_path / CORRUPT)
    assert deliveries == [] and report.corrupt_ranges == 1


def test_reader_claims_sealed_segments_and_releases_them(tmp_path):
    writer = SpoolWriter(tmp_path)
    writer.append(_delivery(1))
    writer.close()
    reader = SpoolReader(tmp_path)
    claimed = reader.claim()
    assert [p.parent.name for p in claimed] == [CLAIMED]
    assert reader.claimed() == claimed
    assert reader.claim() == []
    reader.release(claimed)
    assert reader.claimed() == [] and reader.backlog()["claimed_segments"] == 0


def test_reader_leaves_a_live_writers_open_segment_alone(tmp_path):
    writer = SpoolWriter(tmp_path, segment_seconds=3600)
    writer.append(_delivery(1))
    assert SpoolReader(tmp_path).claim() == []
    writer.close()
    assert len(SpoolReader(tmp_path).claim()) == 1


def test_reader_takes_the_open_segment_of_a_killed_writer(tmp_path):
    delivery = _delivery(7)
    pid = os.fork()
    if pid == 0:  # the writer: append, then die without sealing (as kill -9 would)
        try:
            SpoolWriter(tmp_path, segment_seconds=3600).append(delivery)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert len(list((tmp_path / OPEN).glob("*.seg"))) == 1
    reader = SpoolReader(tmp_path)
    [claimed] = reader.claim()
    assert reader.read(claimed)[0] == [delivery]
