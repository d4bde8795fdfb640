"""`export DIR` and `import DIR`: the raw history, moved between warehouses as parquet.

The raw tables are the source of truth (the marts are rebuilt from them), so history moves by
copying them: `export` writes every column of both raw tables of the configured warehouse, and
`import` loads such an export into the configured warehouse. An export is a folder:

    identity_webhooks.parquet      every column; `payload` as text, as the warehouse holds it
    quarantined_webhooks.parquet   every column
    manifest.json                  where it came from, when, and how many rows

Only rows of loads recorded complete in `_dlt_loads` are exported: the rows staging reads.
The payload is the warehouse's own text of it: the body as received, byte for byte, from DuckDB
and the lake; `jsonb`'s normalised text from Postgres (keys reordered, whitespace and some
number spellings changed). `body_sha256` is always the hash of the body as received.

An import is one dlt load through the same pipeline as the node's loader, so it is recorded in
`_dlt_loads` like any other and staging takes it in the next `transform`. Its rows get the new
load's `_dlt_load_id` (the source's load ids mean nothing in the target); `_dlt_id` stays the
delivery id. Delivery ids already in the target's raw tables are skipped, so running an import
twice, or importing overlapping exports, never doubles a delivery.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import lake, privacy
from .config import Settings
from .locks import exclusive
from .warehouses import DATASET, IDENTITY_TABLE, QUARANTINE_TABLE, RAW_TABLES, for_settings

MANIFEST = "manifest.json"
BATCH_ROWS = 2000  # rows read, converted and written at a time: memory follows this, not history
_TIMESTAMP = pa.timestamp("us", tz="UTC")
# What the warehouses call their column types, as arrow types; anything else is exported as text.
_ARROW_TYPES = {
    "timestamp with time zone": _TIMESTAMP,
    "bigint": pa.int64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "double precision": pa.float64(),
    "double": pa.float64(),
}


class HistoryError(RuntimeError):
    """An export or import cannot go ahead; the message says why."""


@dataclass
class HistorySummary:
    identity_webhooks: int = 0
    quarantined_webhooks: int = 0
    skipped: int = 0  # import: delivery ids already in the warehouse
    erased: int = 0  # import: deliveries of identities erased since (loader.privacy)
    seconds: float = 0.0

    def line(self, verb: str) -> str:
        return (
            f"{verb} {self.identity_webhooks} identity webhooks and {self.quarantined_webhooks}"
            " quarantined deliveries"
            + (f"; {self.skipped} already in the warehouse, skipped" if self.skipped else "")
            + (f"; {self.erased} of erased identities, skipped" if self.erased else "")
            + f", {self.seconds:.1f}s"
        )


# --- export ----------------------------------------------------------------------------------


def export(settings: Settings, directory: Path) -> HistorySummary:
    """Write both raw tables of the configured warehouse into `directory` (see the module doc).

    The files are written under temporary names and renamed at the end, the manifest last, so
    an export cut short is never mistaken for a whole one.
    """
    started = time.monotonic()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any((directory / name).exists() for name in (*_file_names(), MANIFEST)):
        raise HistoryError(f"{directory} already holds an export; choose an empty folder")
    counts = {}
    readers = {"duckdb": _duckdb_batches, "postgres": _postgres_batches, "spark": _lake_batches}
    with _reading(settings):
        for table in RAW_TABLES:
            final = directory / f"{table}.parquet"
            partial = directory / f".{table}.parquet.partial"
            counts[table] = _write(readers[settings.warehouse](settings, table), partial)
            os.replace(partial, final)
    manifest = {
        "format": "flagsmith-warehouse raw export 1",
        "warehouse": settings.warehouse,
        "payload": "jsonb text" if settings.warehouse == "postgres" else "body as received",
        "exported_at": datetime.now(UTC).isoformat(),
        "rows": counts,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return HistorySummary(
        counts[IDENTITY_TABLE], counts[QUARANTINE_TABLE], seconds=time.monotonic() - started
    )


def _file_names() -> list[str]:
    return [f"{table}.parquet" for table in RAW_TABLES]


def _reading(settings: Settings):
    """DuckDB admits a reading process only while no other process has the file open: wait for
    the loader and dbt. Elsewhere readers need no lock."""
    if settings.warehouse == "duckdb":
        return for_settings(settings).writer_lock()
    import contextlib

    return contextlib.nullcontext()


def _write(batches: Iterator[pa.RecordBatch], path: Path) -> int:
    rows = 0
    writer = None
    schema = None
    try:
        for batch in batches:
            if writer is None:
                schema = batch.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise HistoryError(f"no {path.stem.lstrip('.')} table to export in the warehouse")
    return rows


def _arrow_type(data_type: str) -> pa.DataType:
    return _ARROW_TYPES.get(data_type.lower(), pa.string())


def _as_batches(columns: list[tuple[str, str]], rows_iter) -> Iterator[pa.RecordBatch]:
    """(name, warehouse type) columns and row tuples -> record batches of the arrow types."""
    schema = pa.schema([(name, _arrow_type(kind)) for name, kind in columns])
    yielded = False
    for rows in rows_iter:
        arrays = [
            pa.array([row[i] for row in rows], schema.field(i).type) for i in range(len(columns))
        ]
        yielded = True
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    if not yielded:
        yield pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def _duckdb_batches(settings: Settings, table: str) -> Iterator[pa.RecordBatch]:
    import duckdb

    if not settings.duckdb_path.exists():
        raise HistoryError(f"no DuckDB warehouse at {settings.duckdb_path}")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        connection.execute("set TimeZone = 'UTC'")
        columns = connection.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = ? and table_name = ? order by ordinal_position",
            [DATASET, table],
        ).fetchall()
        if not columns:
            raise HistoryError(f"no table {DATASET}.{table} in {settings.duckdb_path}")
        # JSON is DuckDB's text of it: the body exactly as it was landed.
        select = ", ".join(
            f'"{name}"::varchar as "{name}"' if kind == "JSON" else f'"{name}"'
            for name, kind in columns
        )
        reader = connection.sql(
            f"select {select} from {DATASET}.{table} where _dlt_load_id in"
            f" (select load_id from {DATASET}._dlt_loads where status = 0) order by delivery_id"
        ).to_arrow_reader(BATCH_ROWS)
        yield from _or_empty((_normalise(batch) for batch in reader), reader.schema)


def _normalise(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamps as microseconds in UTC, text as plain strings: one schema for every source."""
    fields = []
    for field in batch.schema:
        kind = field.type
        if pa.types.is_timestamp(kind):
            kind = _TIMESTAMP
        elif pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
            kind = pa.string()
        fields.append(pa.field(field.name, kind, field.nullable))
    return batch.cast(pa.schema(fields))


def _postgres_batches(settings: Settings, table: str) -> Iterator[pa.RecordBatch]:
    import psycopg2

    from .config import postgres_connection_parameters

    connection = psycopg2.connect(**postgres_connection_parameters())
    try:
        with connection.cursor() as cursor:
            cursor.execute("set time zone 'UTC'")
            cursor.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = %s and table_name = %s order by ordinal_position",
                (DATASET, table),
            )
            columns = cursor.fetchall()
        if not columns:
            raise HistoryError(f"no table {DATASET}.{table} in the Postgres warehouse")
        select = ", ".join(
            f'"{name}"::text' if kind not in _ARROW_TYPES else f'"{name}"' for name, kind in columns
        )
        # A named (server-side) cursor: rows arrive BATCH_ROWS at a time.
        with connection.cursor(name="flagsmith_export") as cursor:
            cursor.itersize = BATCH_ROWS
            cursor.execute(
                f"select {select} from {DATASET}.{table} where _dlt_load_id in"
                f" (select load_id from {DATASET}._dlt_loads where status = 0)"
                " order by delivery_id"
            )

            def chunks():
                while rows := cursor.fetchmany(BATCH_ROWS):
                    yield rows

            yield from _as_batches(columns, chunks())
    finally:
        connection.close()


def _lake_batches(settings: Settings, table: str) -> Iterator[pa.RecordBatch]:
    loads = lake.completed_loads(settings.lake_dir, DATASET)
    files = lake.table_files(settings.lake_dir, DATASET, table, loads)
    if not files:
        raise HistoryError(f"no {table} file of a complete load in {settings.lake_dir}")
    fs, _ = lake.filesystem(settings.lake_dir)

    def batches() -> Iterator[pa.RecordBatch]:
        for path in files:
            with fs.open(path, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(BATCH_ROWS):
                    yield _normalise(batch)

    yield from _or_empty(batches(), pq.read_schema(files[0], filesystem=fs))


def _or_empty(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches, or one empty batch of `schema` (normalised) when there are none."""
    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        yield _normalise(pa.RecordBatch.from_pylist([], schema=schema))


# --- import ----------------------------------------------------------------------------------


def read_export(directory: Path) -> dict[str, pq.ParquetFile]:
    directory = Path(directory)
    if not (directory / MANIFEST).exists():
        raise HistoryError(
            f"{directory} holds no whole export ({MANIFEST} is missing): "
            "`flagsmith-warehouse export DIR` writes one"
        )
    return {table: pq.ParquetFile(directory / f"{table}.parquet") for table in RAW_TABLES}


def import_(settings: Settings, directory: Path) -> HistorySummary:
    """Load an export into the configured warehouse as one dlt load (see the module doc)."""
    from . import pipeline

    started = time.monotonic()
    files = read_export(directory)
    summary = HistorySummary()
    warehouse = for_settings(settings)
    schemas = {
        IDENTITY_TABLE: pipeline.IDENTITY_SCHEMA,
        QUARANTINE_TABLE: pipeline.QUARANTINE_SCHEMA,
    }
    for table, handle in files.items():
        missing = set(schemas[table].names) - set(handle.schema_arrow.names)
        if missing:
            raise HistoryError(f"{table}.parquet lacks the columns {', '.join(sorted(missing))}")
    with (
        exclusive(settings.state_dir / "loader.lock", what="a load of this spool", wait=True),
        warehouse.session(),
    ):
        dlt_pipeline = pipeline.make_pipeline(warehouse)
        pipeline._discard_pending(dlt_pipeline, warehouse)
        create = warehouse.set_up_raw_tables(
            dlt_pipeline,
            lambda p: pipeline._run(
                p,
                pipeline._resource([pipeline.to_tables([])], create=True),
                **warehouse.run_options,
            ),
        )
        seen: set[str] = set()
        erasures = privacy.loader_filter(warehouse, dlt_pipeline)

        def batches() -> Iterator[tuple[pa.Table, pa.Table]]:
            for table, handle in files.items():
                for batch in handle.iter_batches(BATCH_ROWS):
                    rows = pa.Table.from_batches([_normalise(batch)])
                    ids = rows["delivery_id"].to_pylist()
                    present = warehouse.loaded_delivery_ids(dlt_pipeline, ids) | seen
                    keep = [delivery_id not in present for delivery_id in ids]
                    summary.skipped += keep.count(False)
                    if erasures:
                        texts = rows["payload" if table == IDENTITY_TABLE else "body"]
                        for index, (text, at) in enumerate(
                            zip(texts.to_pylist(), rows["received_at"].to_pylist(), strict=True)
                        ):
                            if keep[index] and erasures.covers(text.encode("utf-8"), at):
                                keep[index] = False
                                summary.erased += 1
                    rows = rows.filter(pa.array(keep, pa.bool_()))
                    seen.update(rows["delivery_id"].to_pylist())
                    # The loader's own columns, in its order; `_dlt_id` is the delivery id.
                    if "_dlt_id" in rows.schema.names:
                        rows = rows.drop_columns(["_dlt_id"])
                    rows = rows.append_column("_dlt_id", rows["delivery_id"])
                    rows = rows.select(schemas[table].names).cast(schemas[table])
                    if table == IDENTITY_TABLE:
                        summary.identity_webhooks += rows.num_rows
                        yield rows, pipeline.QUARANTINE_SCHEMA.empty_table()
                    else:
                        summary.quarantined_webhooks += rows.num_rows
                        yield pipeline.IDENTITY_SCHEMA.empty_table(), rows

        source = batches()
        if create:
            source = itertools.chain([pipeline.to_tables([])], source)
        resource = pipeline._resource(source, create=create)
        pipeline._run(dlt_pipeline, resource, **warehouse.run_options)
        privacy.record_dropped(warehouse, dlt_pipeline, erasures)
        warehouse.after_load()
    summary.seconds = time.monotonic() - started
    return summary
