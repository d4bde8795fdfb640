"""kill -9 of the loader at every stage, then a normal `load`: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from loader import pipeline
from loader.spool import Delivery, SpoolReader, SpoolWriter, new_delivery_id

from .conftest import REPO, shared_examples
from .harness.crash_loader import POINTS
from .warehouse import landed_delivery_ids


def _spool_batches(settings, segments: int, per_segment: int) -> list[str]:
    bodies = [body for _, body, _ in shared_examples()]
    ids = []
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for segment in range(segments):
        writer = SpoolWriter(settings.spool_dir, segment_seconds=3600)
        for n in range(per_segment):
            at = start + timedelta(seconds=segment * per_segment + n)
            delivery = Delivery(new_delivery_id(at), at, bodies[n % len(bodies)], "prod")
            writer.append(delivery)
            ids.append(delivery.delivery_id)
        writer.close()
    return ids


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_load_is_finished_exactly_once_by_the_next(settings, point):
    settings = settings.with_overrides(batch_size=10, commit_size=20)
    ids = _spool_batches(settings, segments=4, per_segment=10)  # 2 loads of 2 batches of 10
    env = dict(
        os.environ,
        FLAGSMITH_SPOOL_DIR=str(settings.spool_dir),
        FLAGSMITH_DUCKDB_PATH=str(settings.duckdb_path),
        FLAGSMITH_STATE_DIR=str(settings.state_dir),
        FLAGSMITH_LOAD_BATCH_SIZE="10",
        FLAGSMITH_LOAD_COMMIT_SIZE="20",
    )
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.harness.crash_loader", point],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]

    summary = pipeline.load(settings)  # the next scheduled load, in a fresh process's shoes
    loaded = landed_delivery_ids(settings)
    assert len(loaded) == len(set(loaded)), f"duplicates after a crash at {point}"
    assert sorted(loaded) == sorted(ids), f"deliveries lost after a crash at {point}"
    if point in ("claimed", "extracted", "normalized"):  # nothing of the second load committed
        assert (summary.deliveries, summary.already_loaded) == (20, 0)
    else:  # its claimed segments are found committed and skipped, none appended twice
        assert summary.already_loaded > 0
    backlog = SpoolReader(settings.spool_dir).backlog()
    assert backlog["claimed_segments"] == backlog["ready_segments"] == 0


def test_a_corrupt_segment_is_kept_aside_and_does_not_block_the_others(settings, caplog):
    ids = _spool_batches(settings, segments=3, per_segment=5)
    ready = sorted((settings.spool_dir / "ready").glob("*.seg"))
    middle = ready[1]
    data = bytearray(middle.read_bytes())
    data[40] ^= 0xFF  # inside the first record of the middle segment
    middle.write_bytes(bytes(data[: len(data) - 7]))  # and its last record cut short
    summary = pipeline.load(settings)
    loaded = set(landed_delivery_ids(settings))
    assert set(ids[:5]) | set(ids[10:]) <= loaded  # the other segments are all there
    assert len(loaded & set(ids[5:10])) == 3  # the middle one's first and last records are not
    # A sealed segment holds whole records only: its cut end is corruption too, and both damaged
    # records are kept aside.
    assert summary.corrupt_ranges == 2
    assert len(list((settings.spool_dir / "corrupt").iterdir())) == 2
    assert SpoolReader(settings.spool_dir).backlog()["claimed_segments"] == 0


def test_load_leaves_no_dlt_packages_or_staging_rows_behind(settings):
    _spool_batches(settings, segments=3, per_segment=5)
    pipeline.load(settings.with_overrides(batch_size=5))
    dlt_dir = settings.state_dir / "dlt" / pipeline.PIPELINE_NAME / "load"
    leftovers = [p for p in dlt_dir.rglob("*") if p.is_file() and p.name != ".version"]
    assert leftovers == []
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        staging = connection.execute(
            "select table_name from information_schema.tables"
            " where table_schema = 'flagsmith_raw_staging'"
        ).fetchall()
    assert staging == []  # rows are appended straight into the raw tables
