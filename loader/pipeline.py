"""The loader: drains the spool into the raw tables through dlt, each delivery exactly once.

How exactly-once holds through a crash at any instant:
1. Segments are moved from ready/ (or a dead writer's open/) to claimed/ before they are read.
2. Claimed segments are read a batch at a time, each batch one arrow table per raw table; one dlt
   load appends the batches of about `commit_size` deliveries.
3. Segments leave claimed/ only after dlt reports the load complete (recorded in `_dlt_loads`,
   the only loads staging reads).
A segment that was never claimed before cannot be in the warehouse, so its rows are appended
as they are: no staging table, no merge. Only segments found in claimed/ when a run starts may
be (a crash before 3): any dlt package left pending by the crash is dropped first, after what
its load wrote without being recorded is deleted (resuming it is not exactly-once, see
`_discard_pending`; and dlt would otherwise load the old package and silently drop the new
data); then the delivery ids already in the raw tables are looked up and left out, so loading
the segments again inserts exactly what the crash kept out. Several loaders appending distinct
delivery ids to one warehouse or lake never touch each other's rows, and each filters and
cleans up only its own. What differs per warehouse is in `loader.warehouses`.

The payload is handed to dlt as a JSON string column of an arrow table, never as dicts: dlt does
not flatten it into child tables and skips its row-by-row normalizer, which is far slower.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from . import privacy
from .config import Settings
from .locks import exclusive
from .spool import Delivery, SpoolReader
from .status import recorded_step
from .warehouses import (
    DATASET,
    IDENTITY_TABLE,
    PIPELINE_NAME,
    QUARANTINE_TABLE,
    Warehouse,
    for_settings,
)

log = logging.getLogger("flagsmith_warehouse.loader")

__all__ = ["DATASET", "IDENTITY_TABLE", "PIPELINE_NAME", "QUARANTINE_TABLE"]

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_COMMON_FIELDS = [
    pa.field("delivery_id", pa.string(), nullable=False),
    pa.field("received_at", _TIMESTAMP, nullable=False),
    pa.field("environment_key", pa.string()),
    pa.field("signature_status", pa.string(), nullable=False),
    pa.field("body_sha256", pa.string(), nullable=False),
]
_DLT_ID = pa.field("_dlt_id", pa.string(), nullable=False)
IDENTITY_SCHEMA = pa.schema(
    [*_COMMON_FIELDS, pa.field("payload", pa.string(), nullable=False), _DLT_ID]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        *_COMMON_FIELDS,
        pa.field("reason", pa.string(), nullable=False),
        pa.field("body", pa.string(), nullable=False),
        pa.field("body_base64", pa.string(), nullable=False),
        _DLT_ID,
    ]
)

_COMMON_HINTS = {
    "_dlt_id": {"data_type": "text", "nullable": False, "unique": True},
    "delivery_id": {"data_type": "text", "nullable": False, "unique": True},
    "received_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    "environment_key": {"data_type": "text", "nullable": True},
    "signature_status": {"data_type": "text", "nullable": False},
    "body_sha256": {"data_type": "text", "nullable": False},
}
IDENTITY_HINTS = {**_COMMON_HINTS, "payload": {"data_type": "json", "nullable": False}}
QUARANTINE_HINTS = {
    **_COMMON_HINTS,
    "reason": {"data_type": "text", "nullable": False},
    "body": {"data_type": "text", "nullable": False},
    "body_base64": {"data_type": "text", "nullable": False},
}
# A spool batch also ends at this many bytes of bodies, and dlt gets it in parquet row groups of
# at most PARQUET_ROW_GROUP_BYTES of text (or one row): memory follows these, not a body's size.
BATCH_BYTES = 32 * 1024 * 1024
PARQUET_ROW_GROUP_BYTES = 8 * 1024 * 1024


@dataclass
class LoadSummary:
    deliveries: int = 0
    identity_webhooks: int = 0
    quarantined: int = 0
    segments: int = 0
    batches: int = 0
    already_loaded: int = 0  # in segments a crashed run claimed, found committed and skipped
    dropped_by_erasure: int = 0  # deliveries of erased identities (loader.privacy), not loaded
    corrupt_ranges: int = 0
    seconds: float = 0.0
    paths: list[Path] = field(default_factory=list)  # segments read (of one dlt load)
    newest_received_at: datetime | None = None  # of the deliveries loaded

    def add(self, other: LoadSummary) -> None:
        if other.newest_received_at is not None and (
            self.newest_received_at is None or other.newest_received_at > self.newest_received_at
        ):
            self.newest_received_at = other.newest_received_at
        for name in (
            "deliveries",
            "identity_webhooks",
            "quarantined",
            "segments",
            "batches",
            "already_loaded",
            "dropped_by_erasure",
            "corrupt_ranges",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def recorded(self) -> dict[str, object]:
        """What `status` shows of this load (loader/status.py)."""
        return {
            "deliveries": self.deliveries,
            "identity_webhooks": self.identity_webhooks,
            "quarantined": self.quarantined,
            "segments": self.segments,
            "corrupt_ranges": self.corrupt_ranges,
            "seconds": round(self.seconds, 3),
            "newest_received_at": (
                None if self.newest_received_at is None else self.newest_received_at.isoformat()
            ),
        }

    def line(self) -> str:
        rate = self.deliveries / self.seconds if self.seconds else 0.0
        return (
            f"loaded {self.deliveries} deliveries ({self.identity_webhooks} identity webhooks, "
            f"{self.quarantined} quarantined) from {self.segments} spool segments in "
            f"{self.batches} batches, {self.seconds:.1f}s ({rate:.0f}/s)"
            + (
                f"; {self.already_loaded} already loaded by an interrupted run, skipped"
                if self.already_loaded
                else ""
            )
            + (
                f"; {self.dropped_by_erasure} deliveries of erased identities dropped"
                if self.dropped_by_erasure
                else ""
            )
            + (
                f"; {self.corrupt_ranges} corrupt spool ranges kept aside"
                if self.corrupt_ranges
                else ""
            )
        )


def _configure_dlt() -> None:
    # Keep dlt quiet, offline and adding its row lineage columns to arrow tables too.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
    # `_dlt_id` comes with the arrow table (the delivery id, unique and stable across retries):
    # letting dlt generate one per row would make it rewrite every file it normalizes.
    os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID"] = "false"
    # Each spool batch dlt pulls is written out (one parquet row group) before the next is read,
    # instead of being buffered and concatenated up to 5,000 rows: memory follows the batch.
    os.environ.setdefault("DATA_WRITER__BUFFER_MAX_ITEMS", "1")
    # Disk stays proportional to the backlog: no job files or staging rows kept after a load.
    os.environ.setdefault("LOAD__DELETE_COMPLETED_JOBS", "true")
    os.environ.setdefault("LOAD__TRUNCATE_STAGING_DATASET", "true")
    logging.getLogger("dlt").setLevel(logging.ERROR)


def destination(settings: Settings):
    """dlt's destination for the configured warehouse (see `loader.warehouses`)."""
    return for_settings(settings).destination()


def pipeline_name(settings: Settings) -> str:
    """The dlt pipeline's name: one per DuckDB file, one per node on a shared warehouse."""
    return for_settings(settings).pipeline_name()


def make_pipeline(warehouse: Warehouse):
    import dlt

    _configure_dlt()
    return dlt.pipeline(
        pipeline_name=warehouse.pipeline_name(),
        pipelines_dir=str(warehouse.settings.state_dir / "dlt"),
        destination=warehouse.destination(),
        dataset_name=DATASET,
    )


def _resource(batches: Iterable[tuple[pa.Table, pa.Table]], *, create: bool = False):
    """One dlt resource feeding both raw tables, one pair of arrow tables per spool batch.

    dlt pulls the batches as it extracts, so a load holds about one batch in memory however many
    it spans; all of them land in one file per table and one dlt load. Empty tables are skipped,
    except the first pair when `create` asks for both tables to exist.
    """
    import dlt

    def tables():
        first = create
        for identity, quarantine in batches:
            for table, name in ((identity, IDENTITY_TABLE), (quarantine, QUARANTINE_TABLE)):
                if table.num_rows or first:
                    for piece in row_groups(table):
                        yield dlt.mark.with_table_name(piece, name)
            first = False

    resource = dlt.resource(tables(), name="raw_webhooks", max_table_nesting=0)
    for name, hints in ((IDENTITY_TABLE, IDENTITY_HINTS), (QUARANTINE_TABLE, QUARANTINE_HINTS)):
        resource.apply_hints(
            table_name=name,
            columns=hints,
            primary_key="delivery_id",
            write_disposition="append",
            create_table_variant=True,
        )
    return resource


def row_groups(table: pa.Table, limit: int | None = None) -> list[pa.Table]:
    """`table` cut (without copying) into slices of at most `limit` bytes of text, or one row.

    dlt writes each item it is given as its own parquet row group, and DuckDB reads a row group
    whole on each of its threads. A batch of 800 bodies of 100 KB as one table was an 80 MB row
    group, and the load failed at a 128MB cap ("failed to allocate data") on every retry
    (tests/test_loader.py). Slices keep DuckDB's share the same whatever the size of the bodies.
    """
    limit = PARQUET_ROW_GROUP_BYTES if limit is None else limit
    if table.num_rows <= 1 or table.nbytes <= limit:
        return [table]
    import pyarrow.compute as pc

    sizes = [0] * table.num_rows
    for column in table.columns:
        kind = column.type
        if any(
            check(kind)
            for check in (
                pa.types.is_string,
                pa.types.is_binary,
                pa.types.is_large_string,
                pa.types.is_large_binary,
            )
        ):
            lengths = pc.fill_null(pc.binary_length(column), 0).to_pylist()
            sizes = [size + length for size, length in zip(sizes, lengths, strict=True)]
    pieces = []
    start = used = 0
    for row, size in enumerate(sizes):
        if row > start and used + size > limit:
            pieces.append(table.slice(start, row - start))
            start, used = row, 0
        used += size
    pieces.append(table.slice(start))
    return pieces


def to_tables(
    deliveries: Iterable[Delivery], strip: frozenset[str] = frozenset()
) -> tuple[pa.Table, pa.Table]:
    """Arrow tables for the two raw tables.

    Bodies are not parsed here: the receiver classified each one when it arrived, and the spool
    record carrying that verdict is checksummed. An identity body becomes the JSON column as is
    (arrow checks that it is UTF-8 in C); a quarantined one is kept as text and base64. With
    `strip` (FLAGSMITH_STRIP_TRAIT_KEYS), identity bodies lose those traits first and the table
    gains `stripped_trait_keys`; `body_sha256` stays the hash of the body as received.
    """
    identity = [d for d in deliveries if d.kind == "identity"]
    quarantine = [d for d in deliveries if d.kind != "identity"]
    try:
        payloads = pa.array([d.body for d in identity], pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8: cannot be JSON, whatever the record says
        quarantine += [d for d in identity if not _is_utf8(d.body)]
        identity = [d for d in identity if _is_utf8(d.body)]
        payloads = pa.array([d.body for d in identity], pa.binary()).cast(pa.string())
    identity_table = pa.Table.from_arrays(
        [*_common_columns(identity), payloads, _ids(identity)],
        schema=IDENTITY_SCHEMA,
    )
    if strip:
        stripped = [privacy.strip_traits(d.body, strip) for d in identity]
        identity_table = identity_table.set_column(
            IDENTITY_SCHEMA.get_field_index("payload"),
            IDENTITY_SCHEMA.field("payload"),
            pa.array([b for b, _ in stripped], pa.binary()).cast(pa.string()),
        ).append_column(
            pa.field("stripped_trait_keys", pa.string()),
            pa.array([keys for _, keys in stripped], pa.string()),
        )
    quarantine_table = pa.Table.from_arrays(
        [
            *_common_columns(quarantine),
            pa.array([d.reason or "not_utf8" for d in quarantine], pa.string()),
            pa.array([d.body.decode("utf-8", errors="replace") for d in quarantine], pa.string()),
            pa.array([base64.b64encode(d.body).decode("ascii") for d in quarantine], pa.string()),
            _ids(quarantine),
        ],
        schema=QUARANTINE_SCHEMA,
    )
    return identity_table, quarantine_table


def _common_columns(deliveries: list[Delivery]) -> list[pa.Array]:
    return [
        pa.array([d.delivery_id for d in deliveries], pa.string()),
        pa.array([d.received_at for d in deliveries], _TIMESTAMP),
        pa.array([d.environment_key for d in deliveries], pa.string()),
        pa.array([d.signature_status for d in deliveries], pa.string()),
        pa.array([hashlib.sha256(d.body).hexdigest() for d in deliveries], pa.string()),
    ]


def _ids(deliveries: list[Delivery]) -> pa.Array:
    return pa.array([d.delivery_id for d in deliveries], pa.string())


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _run(pipeline, resource, **options) -> None:
    info = pipeline.run(resource, **options)
    info.raise_on_failed_jobs()
    _forget_loaded_packages(pipeline)


def _forget_loaded_packages(pipeline) -> None:
    """dlt keeps every loaded package's folder; the warehouse has the data, so drop them."""
    loaded = Path(pipeline.working_dir) / "load" / "loaded"
    if loaded.is_dir():
        for package in loaded.iterdir():
            shutil.rmtree(package, ignore_errors=True)


def _discard_pending(pipeline, warehouse: Warehouse) -> None:
    """Drop load packages an interrupted run left behind; their segments are still claimed.

    dlt would resume such a package, but resuming is not exactly-once: a file whose copy into
    the raw table committed before the crash would be appended again (tests/test_loader_crash.py,
    crash point "loading"). The claimed segments are the source of truth, so they are loaded
    again as a new package, without the delivery ids the interrupted run had already committed.
    What the package's load wrote without completing (rows or files of a load missing from
    `_dlt_loads`, which staging never reads) is removed first, so those deliveries load again in
    a complete load. Never leaving a package pending also keeps `run(data)` from silently
    ignoring new data.
    """
    if pipeline.has_pending_data:
        log.warning("dropping a load package left by an interrupted run; reloading its segments")
        pending = [
            *pipeline.list_extracted_load_packages(),
            *pipeline.list_normalized_load_packages(),
        ]
        warehouse.discard_incomplete(pipeline, pending)
        # abort_packages (its successor) would also record the package as aborted through a
        # load step; a plain drop is what is wanted here, and dlt < 2 is pinned.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pipeline.drop_pending_packages()


def load(
    settings: Settings,
    *,
    max_batches: int | None = None,
    wait: bool = False,
    progress: Callable[[LoadSummary, dict[str, int]], None] | None = None,
) -> LoadSummary:
    """Drain the spool once (or `max_batches` batches) into the raw tables; see the module doc."""
    started = time.monotonic()
    summary = LoadSummary()
    reader = SpoolReader(settings.spool_dir)
    warehouse = for_settings(settings)
    with (
        exclusive(settings.state_dir / "loader.lock", what="a load of this spool", wait=wait),
        recorded_step(settings, "load") as record,
        warehouse.session(),
    ):
        pipeline = make_pipeline(warehouse)
        _discard_pending(pipeline, warehouse)
        # Claimed by a run that did not finish: some of their rows may be committed.
        recovering = reader.claimed()
        # The first load of a new warehouse creates both raw tables, even with no data, so dbt
        # can build before any delivery arrives.
        create = warehouse.set_up_raw_tables(
            pipeline,
            lambda p: _run(p, _resource([to_tables([])], create=True), **warehouse.run_options),
        )
        # Read once per run, under the session's locks: `forget` records an erasure before it
        # deletes, and waits for loads in progress before deleting (loader.privacy).
        erasures = privacy.loader_filter(warehouse, pipeline)
        while max_batches is None or summary.batches < max_batches:
            budget = None if max_batches is None else max_batches - summary.batches
            group = _load_group(pipeline, warehouse, reader, recovering, budget, create, erasures)
            create = False
            if not group.paths:
                break
            # The audit of what was dropped is written after the load commits; a crash before
            # the segments are released can count those deliveries again on the retry.
            privacy.record_dropped(warehouse, pipeline, erasures)
            warehouse.after_load()
            reader.release(group.paths)
            summary.add(group)
            summary.seconds = time.monotonic() - started
            if progress is not None:
                progress(summary, reader.backlog())
        summary.seconds = time.monotonic() - started
        record.update(summary.recorded())
    return summary


def _load_group(
    pipeline,
    warehouse: Warehouse,
    reader: SpoolReader,
    recovering: list[Path],
    max_batches: int | None,
    create: bool = False,
    erasures: privacy.ErasureFilter | None = None,
) -> LoadSummary:
    """One dlt load of about `settings.commit_size` deliveries, read `batch_size` at a time.

    Segments are claimed one at a time as dlt asks for more, after the `recovering` ones. While
    dlt writes one batch, a thread reads the next one and builds its arrow tables (reading,
    hashing and writing parquet release the GIL). The summary returned lists every segment read,
    to release once the load has committed; no segment is claimed beyond this load.
    """
    settings = warehouse.settings
    strip = frozenset(settings.excluded_trait_keys) if settings.strip_trait_keys else frozenset()
    group = LoadSummary()
    maybe_loaded = set(recovering)

    def read_next() -> _ReadBatch:
        batch = _take_batch(reader, recovering, settings.batch_size, group)
        paths = [path for path, _ in batch]
        deliveries = [delivery for _, found in batch for delivery in found]
        if erasures:
            kept = erasures.keep(deliveries)
            group.dropped_by_erasure += len(deliveries) - len(kept)
            deliveries = kept
        if maybe_loaded.intersection(paths):
            return paths, deliveries, None  # filtered in the caller's thread, through dlt
        return paths, deliveries, to_tables(deliveries, strip)

    def batches():
        try:
            yield from read_ahead()
        finally:
            # Hand the batches' arrow buffers back to the system before DuckDB takes its share.
            pa.default_memory_pool().release_unused()

    def read_ahead():
        with ThreadPoolExecutor(1, thread_name_prefix="spool-reader") as pool:
            following: Future[_ReadBatch] | None = pool.submit(read_next)
            while following is not None:
                paths, deliveries, tables = following.result()
                if not paths:
                    return
                if tables is None:
                    kept = _not_yet_loaded(pipeline, warehouse, deliveries)
                    group.already_loaded += len(deliveries) - len(kept)
                    deliveries = kept
                    tables = to_tables(deliveries, strip)
                group.paths += paths
                group.batches += 1
                group.deliveries += len(deliveries)
                group.identity_webhooks += tables[0].num_rows
                group.quarantined += tables[1].num_rows
                if deliveries:
                    newest = max(delivery.received_at for delivery in deliveries)
                    if group.newest_received_at is None or newest > group.newest_received_at:
                        group.newest_received_at = newest
                more = group.deliveries < settings.commit_size and (
                    max_batches is None or group.batches < max_batches
                )
                following = pool.submit(read_next) if more else None
                yield tables

    if not create:
        # Nothing to load: no dlt run at all (a scheduled `load` of an idle spool costs nothing).
        source = batches()
        first = next(source, None)
        if first is None:
            return group
        _run(pipeline, _resource(itertools.chain([first], source)), **warehouse.run_options)
    else:
        resource = _resource(itertools.chain([to_tables([])], batches()), create=True)
        _run(pipeline, resource, **warehouse.run_options)
    return group


# A batch as read from the spool: its segments, their deliveries, and their arrow tables (None
# where a segment may already be loaded: filtered first, in the loading thread).
_ReadBatch = tuple[list[Path], list[Delivery], tuple[pa.Table, pa.Table] | None]


def _not_yet_loaded(pipeline, warehouse: Warehouse, deliveries: list[Delivery]) -> list[Delivery]:
    """The deliveries whose id is in neither raw table (a crashed run may have committed some)."""
    loaded = warehouse.loaded_delivery_ids(pipeline, [d.delivery_id for d in deliveries])
    return [d for d in deliveries if d.delivery_id not in loaded]


def _take_batch(
    reader: SpoolReader, recovering: list[Path], batch_size: int, group: LoadSummary
) -> list[tuple[Path, list[Delivery]]]:
    """Whole segments until the batch holds `batch_size` deliveries or `BATCH_BYTES` of bodies.

    The `recovering` segments come first (consumed from the list), then newly claimed ones. The
    byte bound keeps a batch's memory the same whatever the size of the bodies (a receiver's
    segment is about 8 MiB, so a batch overshoots it by about that).
    """
    batch: list[tuple[Path, list[Delivery]]] = []
    count = 0
    size = 0
    while not batch or (count < batch_size and size < BATCH_BYTES):
        if recovering:
            path = recovering.pop(0)
        else:
            claimed = reader.claim(limit=1)
            if not claimed:
                break
            path = claimed[0]
        try:
            deliveries, report = reader.read(path)
        except FileNotFoundError:
            continue
        group.segments += 1
        group.corrupt_ranges += report.corrupt_ranges
        batch.append((path, deliveries))
        count += len(deliveries)
        size += sum(len(delivery.body) for delivery in deliveries)
    return batch


def print_progress(summary: LoadSummary, backlog: dict[str, int]) -> None:
    """One line, rewritten in place: what is done, how fast, and what is still waiting."""
    rate = summary.deliveries / summary.seconds if summary.seconds else 0.0
    segments = sum(backlog.get(f"{state}_segments", 0) for state in ("ready", "claimed"))
    megabytes = sum(backlog.get(f"{state}_bytes", 0) for state in ("ready", "claimed")) / 1e6
    sys.stderr.write(
        f"\rloaded {summary.deliveries} deliveries in {summary.batches} batches, {rate:.0f}/s;"
        f" waiting: {segments} segments ({megabytes:.1f} MB)   "
    )
    sys.stderr.flush()
