"""Spark reads the raw tables the loader landed in the lake, as the dbt-spark models will: only
files of complete loads, the payload byte for byte, JSON types told apart. Needs Spark
(tests/spark.py: required with FLAGSMITH_TEST_SPARK=1, skipped with the reason otherwise)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loader import lake, pipeline

from .spark import spark  # noqa: F401  (the fixture)
from .warehouse import Posted, deliveries, land, simulated, warehouse_settings

# (feature_state_value, what Spark 4's schema_of_variant calls it after parse_json)
TYPED_VALUES = [
    (False, "BOOLEAN"),
    ("false", "STRING"),
    (True, "BOOLEAN"),
    (42, "BIGINT"),
    (97.5, "DECIMAL(3,1)"),
    (1e-05, "DOUBLE"),
    (None, "VOID"),
]


def _typed_body() -> bytes:
    flags = [
        {
            "enabled": True,
            "environment": 7,
            "feature": {"id": number, "name": f"f{number}", "type": "STANDARD"},
            "feature_segment": None,
            "feature_state_value": value,
            "id": 100 + number,
            "identity": None,
        }
        for number, (value, _) in enumerate(TYPED_VALUES, start=1)
    ]
    body = {"flags": flags, "identity": "typed", "segments": [], "traits": []}
    return json.dumps(body, sort_keys=True).encode()


def completed_files_glob(lake_dir: str, table: str) -> str:
    """A Hadoop glob naming the files of every complete load of `table`: what Spark reads."""
    loads = lake.completed_loads(lake_dir, pipeline.DATASET)
    return f"{lake_dir}/{pipeline.DATASET}/{table}/{{{','.join(sorted(loads))}}}.*.parquet"


def test_spark_reads_the_landed_lake_byte_for_byte_with_json_types(tmp_path, spark):  # noqa: F811
    settings = warehouse_settings(tmp_path, "spark")
    typed = Posted(_typed_body(), datetime(2026, 2, 1, 12, 0, 0, 123456, tzinfo=UTC), "prod")
    first = deliveries([*simulated(40, seed=31), typed])
    second = deliveries(simulated(10, seed=32))
    assert land(settings, first) == 41
    assert land(settings, second) == 10
    records = {record.delivery_id: record for record in first + second}
    root = f"{settings.lake_dir}/{pipeline.DATASET}"
    # A file of a load that never completed, cut short mid-copy: never to be opened.
    cut = Path(root) / "identity_webhooks" / "1999999999.5.deadbeef00.parquet"
    cut.write_bytes(b"PAR1 cut short")

    source = completed_files_glob(settings.lake_dir, "identity_webhooks")
    rows = spark.sql(
        f"""
        select delivery_id, unix_micros(received_at) as received_us, environment_key,
            signature_status, body_sha256, payload, sha2(payload, 256) as payload_sha256
        from parquet.`{source}`
        where _dlt_load_id in (select load_id from json.`{root}/_dlt_loads` where status = 0)
        """
    ).collect()
    assert sorted(row.delivery_id for row in rows) == sorted(records)
    for row in rows:
        record = records[row.delivery_id]
        assert row.payload.encode() == record.body
        assert row.payload_sha256 == row.body_sha256 == hashlib.sha256(record.body).hexdigest()
        assert row.received_us == int(record.received_at.timestamp() * 1_000_000)
        assert (row.environment_key, row.signature_status) == (record.environment_key, "verified")

    types = spark.sql(
        f"""
        select
            variant_get(flag.value, '$.feature.id', 'bigint') as feature_id,
            schema_of_variant(variant_get(flag.value, '$.feature_state_value')) as value_type,
            variant_get(flag.value, '$.feature_state_value', 'string') as value
        from parquet.`{source}` as raw,
            lateral variant_explode(variant_get(parse_json(raw.payload), '$.flags')) as flag
        where variant_get(parse_json(raw.payload), '$.identity', 'string') = 'typed'
        order by feature_id
        """
    ).collect()
    assert [(row.value_type, row.value) for row in types] == [
        ("BOOLEAN", "false"),
        ("STRING", "false"),
        ("BOOLEAN", "true"),
        ("BIGINT", "42"),
        ("DECIMAL(3,1)", "97.5"),
        ("DOUBLE", "1.0E-5"),
        ("VOID", None),
    ]

    # Why readers name the files: reading the folder opens the cut-short file and fails.
    with pytest.raises(Exception, match="is not a Parquet file"):
        spark.sql(f"select count(*) from parquet.`{root}/identity_webhooks`").collect()
