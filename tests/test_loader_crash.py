"""kill -9 of the loader at every stage, then a normal `load`: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from loader import lake, pipeline
from loader.spool import Delivery, SpoolReader, SpoolWriter, new_delivery_id

from .conftest import REPO, shared_examples
from .harness.crash_loader import POINTS
from .warehouse import connect, landed_delivery_ids, warehouse_settings


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


def _crash(settings, point: str) -> None:
    """A `load` of `settings` in its own process, killed with SIGKILL at `point`."""
    env = dict(
        os.environ,
        FLAGSMITH_WAREHOUSE=settings.warehouse,
        FLAGSMITH_SPOOL_DIR=str(settings.spool_dir),
        FLAGSMITH_DUCKDB_PATH=str(settings.duckdb_path),
        FLAGSMITH_LAKE_DIR=settings.lake_dir,
        FLAGSMITH_STATE_DIR=str(settings.state_dir),
        FLAGSMITH_LOAD_BATCH_SIZE=str(settings.batch_size),
        FLAGSMITH_LOAD_COMMIT_SIZE=str(settings.commit_size),
        FLAGSMITH_NODE_ID=settings.node,
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


@pytest.mark.parametrize("warehouse", ["duckdb", "spark"])
@pytest.mark.parametrize("point", POINTS)
def test_a_killed_load_is_finished_exactly_once_by_the_next(tmp_path, point, warehouse):
    settings = warehouse_settings(tmp_path, warehouse).with_overrides(batch_size=10, commit_size=20)
    ids = _spool_batches(settings, segments=4, per_segment=10)  # 2 loads of 2 batches of 10
    _crash(settings, point)

    summary = pipeline.load(settings)  # the next scheduled load, in a fresh process's shoes
    # Only rows of loads recorded complete in `_dlt_loads` count: staging reads nothing else.
    loaded = landed_delivery_ids(settings)
    assert len(loaded) == len(set(loaded)), f"duplicates after a crash at {point}"
    assert sorted(loaded) == sorted(ids), f"deliveries lost after a crash at {point}"
    if point in ("committed", "releasing"):
        # the load completed: its claimed segments (all, or the half not yet released) are
        # found in it and skipped, none appended
        assert (summary.deliveries, summary.already_loaded) == (
            0,
            20 if point == "committed" else 10,
        )
    else:  # nothing of the second load completed: what it wrote is removed and loaded again
        assert (summary.deliveries, summary.already_loaded) == (20, 0)
    backlog = SpoolReader(settings.spool_dir).backlog()
    assert backlog["claimed_segments"] == backlog["ready_segments"] == 0
    with connect(settings) as connection:  # no row of an incomplete load is left behind
        stray = connection.execute(
            "select count(*) from flagsmith_raw.identity_webhooks where _dlt_load_id not in"
            " (select load_id from flagsmith_raw._dlt_loads where status = 0)"
        ).fetchone()[0]
    assert stray == 0
    if warehouse == "spark":
        files = list((Path(settings.lake_dir) / "flagsmith_raw" / "identity_webhooks").iterdir())
        complete = lake.completed_loads(settings.lake_dir, pipeline.DATASET)
        assert all(lake.load_id_of(path.name, complete) for path in files), files


def test_another_node_leaves_a_crashed_nodes_files_alone_until_it_restarts(tmp_path):
    """Two nodes, one lake: the files of node a's incomplete load stay (unread) while node b
    loads, and node a removes them itself when it loads again."""
    shared = tmp_path / "lake"
    first = warehouse_settings(tmp_path / "a", "spark", shared).with_overrides(
        batch_size=10, commit_size=20, node_id="a"
    )
    second = warehouse_settings(tmp_path / "b", "spark", shared).with_overrides(node_id="b")
    ids = _spool_batches(first, segments=4, per_segment=10)
    ids += _spool_batches(second, segments=1, per_segment=5)
    _crash(first, "loading")
    table = shared / "flagsmith_raw" / "identity_webhooks"

    def incomplete() -> list[Path]:
        complete = lake.completed_loads(str(shared), pipeline.DATASET)
        return [path for path in table.iterdir() if not lake.load_id_of(path.name, complete)]

    assert len(incomplete()) == 1
    assert pipeline.load(second).deliveries == 5
    assert len(incomplete()) == 1
    assert pipeline.load(first).deliveries == 20
    assert incomplete() == []
    loaded = landed_delivery_ids(first)
    assert sorted(loaded) == sorted(ids)


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
