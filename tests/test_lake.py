"""FLAGSMITH_WAREHOUSE=spark: the loader lands the raw tables as parquet files in the lake through
dlt's filesystem destination. Read back here with pyarrow and DuckDB: no Spark needed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from loader import lake, pipeline
from loader.config import Settings
from loader.spool import SpoolReader, SpoolWriter

from .conftest import REPO, shared_examples
from .test_loader import _spool
from .warehouse import connect, deliveries, land, landed_delivery_ids, simulated, warehouse_settings


def _files(settings, table: str) -> list[Path]:
    return sorted((Path(settings.lake_dir) / "flagsmith_raw" / table).glob("*.parquet"))


def test_the_loader_lands_both_raw_tables_as_parquet_with_every_column(tmp_path):
    settings = warehouse_settings(tmp_path, "spark")
    bodies = [body for _, body, _ in shared_examples()]
    records = deliveries(simulated(30, seed=3))
    assert land(settings, records) == 30
    identity = pa.concat_tables(
        pq.read_table(path) for path in _files(settings, "identity_webhooks")
    )
    assert identity.schema.names == [
        "delivery_id",
        "received_at",
        "environment_key",
        "signature_status",
        "body_sha256",
        "payload",
        "_dlt_id",
        "_dlt_load_id",
    ]
    assert identity.schema.field("received_at").type == pa.timestamp("us", tz="UTC")
    assert identity.schema.field("payload").type == pa.string()
    by_id = {record.delivery_id: record for record in records}
    rows = identity.to_pylist()
    assert sorted(row["delivery_id"] for row in rows) == sorted(by_id)
    loads = lake.completed_loads(settings.lake_dir, pipeline.DATASET)
    for row in rows:
        record = by_id[row["delivery_id"]]
        # The body as received, byte for byte, like DuckDB's JSON column.
        assert row["payload"].encode() == record.body
        assert row["body_sha256"] == hashlib.sha256(record.body).hexdigest()
        assert row["received_at"] == record.received_at
        assert (row["environment_key"], row["signature_status"]) == (
            record.environment_key,
            "verified",
        )
        assert row["_dlt_id"] == row["delivery_id"] and row["_dlt_load_id"] in loads
    assert set(loads.values()) == {f"flagsmith_warehouse_{settings.node}"}

    # The real Flagsmith bodies too, and an authentic body that is not an identity webhook.
    real = _spool(settings, bodies)
    quarantined = _spool(settings, [b"\xffnot json"], kind="quarantine", reason="not_json")
    assert pipeline.load(settings).deliveries == len(bodies) + 1
    with connect(settings) as connection:
        payloads = dict(
            connection.execute(
                "select delivery_id, payload from flagsmith_raw.identity_webhooks"
            ).fetchall()
        )
        for delivery in real:
            assert payloads[delivery.delivery_id].encode() == delivery.body
        [row] = connection.execute(
            "select delivery_id, reason, body, body_base64, environment_key"
            " from flagsmith_raw.quarantined_webhooks"
        ).fetchall()
    assert row == (quarantined[0].delivery_id, "not_json", "\ufffdnot json", "/25vdCBqc29u", "prod")
    assert SpoolReader(settings.spool_dir).backlog()["claimed_segments"] == 0


def test_an_empty_spool_still_writes_both_tables_and_a_completed_load(tmp_path):
    settings = warehouse_settings(tmp_path, "spark")
    assert pipeline.load(settings).deliveries == 0
    for table in ("identity_webhooks", "quarantined_webhooks"):
        [path] = _files(settings, table)
        assert pq.read_table(path).num_rows == 0
        assert "delivery_id" in pq.read_schema(path).names
    assert len(lake.completed_loads(settings.lake_dir, pipeline.DATASET)) == 1
    assert pipeline.load(settings).deliveries == 0  # nothing new: no load, no file
    assert len(_files(settings, "identity_webhooks")) == 1


def test_the_lake_directory_comes_from_the_environment(tmp_path):
    settings = Settings.from_env(
        {
            "FLAGSMITH_WAREHOUSE": "spark",
            "FLAGSMITH_LAKE_DIR": "relative/lake",
            "FLAGSMITH_SPARK_WAREHOUSE_DIR": str(tmp_path / "sw"),
        }
    )
    assert settings.lake_dir == str(Path("relative/lake").absolute())
    assert settings.spark_warehouse_dir == tmp_path / "sw"
    assert Settings.from_env({"FLAGSMITH_LAKE_DIR": "s3://bucket/lake"}).lake_dir == (
        "s3://bucket/lake"
    )
    defaults = Settings.from_env({})
    assert defaults.lake_dir == str(Path("data/lake").absolute())
    assert defaults.spark_warehouse_dir == Path("data/spark-warehouse").absolute()


def test_readers_take_only_files_of_loads_recorded_complete(tmp_path):
    """A data file whose load id has no `_dlt_loads` line (a loader killed before it completed,
    maybe mid-copy) is never opened: not by `lake.read_table`, not by the tests' DuckDB views."""
    settings = warehouse_settings(tmp_path, "spark")
    assert land(settings, simulated(5, seed=4)) == 5
    table_dir = Path(settings.lake_dir) / "flagsmith_raw" / "identity_webhooks"
    (table_dir / "1999999999.123456.deadbeef00.parquet").write_bytes(b"PAR1 cut short")
    table = lake.read_table(settings.lake_dir, pipeline.DATASET, "identity_webhooks")
    assert table.num_rows == 5
    assert len(landed_delivery_ids(settings)) == 5


def test_load_id_of_matches_whole_load_ids_only():
    loads = {"1796016733.6423578", "1796016733.64235"}
    assert lake.load_id_of("1796016733.6423578.f9234f32b0.parquet", loads) == "1796016733.6423578"
    assert lake.load_id_of("1796016733.64235.0a1b2c3d4e.parquet", loads) == "1796016733.64235"
    assert lake.load_id_of("1796016733.642357.f9234f32b0.parquet", loads) is None


def test_two_nodes_load_into_one_lake_at_once(tmp_path):
    """Two nodes (two spools, two state folders, two dlt pipelines) load into one lake in two
    processes at once, three rounds: every delivery once, in loads recorded complete, and each
    node's loads recorded under its own pipeline."""
    shared = tmp_path / "lake"
    nodes = [warehouse_settings(tmp_path / name, "spark", shared) for name in ("a", "b")]
    expected: list[str] = []
    for round_number in range(3):
        processes = []
        for index, settings in enumerate(nodes):
            records = deliveries(simulated(40, seed=100 + 10 * round_number + index))
            expected += [record.delivery_id for record in records]
            writer = SpoolWriter(settings.spool_dir, segment_bytes=1 << 16, segment_seconds=3600)
            for record in records:
                writer.append(record)
            writer.close()
            env = dict(
                os.environ,
                FLAGSMITH_WAREHOUSE="spark",
                FLAGSMITH_LAKE_DIR=str(shared),
                FLAGSMITH_SPOOL_DIR=str(settings.spool_dir),
                FLAGSMITH_STATE_DIR=str(settings.state_dir),
                FLAGSMITH_NODE_ID=f"node_{index}",
                FLAGSMITH_LOAD_COMMIT_SIZE="15",  # several loads per run, interleaving
                FLAGSMITH_LOAD_BATCH_SIZE="5",
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "loader.cli", "load"],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for process in processes:
            output, _ = process.communicate(timeout=300)
            assert process.returncode == 0, output[-3000:]
    loaded = landed_delivery_ids(nodes[0])
    assert len(loaded) == len(set(loaded))
    assert sorted(loaded) == sorted(expected)
    loads = lake.completed_loads(str(shared), pipeline.DATASET)
    assert set(loads.values()) == {"flagsmith_warehouse_node_0", "flagsmith_warehouse_node_1"}
    files = _files(nodes[0], "identity_webhooks")
    assert all(lake.load_id_of(path.name, loads) for path in files)
    with connect(nodes[0]) as connection:
        per_load = connection.execute(
            "select _dlt_load_id, count(*) from flagsmith_raw.identity_webhooks group by 1"
        ).fetchall()
    assert sum(count for _, count in per_load) == 240
    assert len(per_load) >= 2 * 3 * 2  # at least two loads per node and round (40 by 15)
