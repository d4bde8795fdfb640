"""Erasing identities (`forget`), and the check every loader makes against erased ones.

An erasure is recorded in `flagsmith_raw.erasures` by a keyed hash of the identity
(HMAC-SHA256 with FLAGSMITH_ERASURE_KEY), never the identity itself, with its environment scope
(an environment id, or null for every environment including deliveries without flags) and the
time it was made. `forget` then:

1. records the erasure with `rows_removed` still null: from then on every loader, on any node,
   drops the identity's deliveries received up to that time when it takes them from a spool
   (`ErasureFilter`), and records what it dropped in a second row (`action` `dropped_at_load`);
2. drains this node's spool through the loader, so none of its deliveries wait here;
3. under the transform lock, in one transaction: deletes the identity's deliveries from both raw
   tables, its rows from staging and from every table of the marts keyed by (environment_id,
   identity), and sets `rows_removed`, which completes the erasure;
4. runs the scheduled `dbt build`. The marts that count across identities (features, segments,
   daily counts, experiment allocations) record the completed erasures beside their watermark
   (macro `erasure_state`): a new one makes them rebuild whole from what is left, so they equal
   a full refresh over the remaining deliveries.

A `forget` killed after step 3 leaves the erasure complete: the next `transform` rebuilds what
step 4 would have. Run again, `forget` finds nothing left to delete and records that.

On the lake (`FLAGSMITH_WAREHOUSE=spark`) the same steps run on files (`_forget_on_lake`): the
audit records are parquet files under `flagsmith_raw/erasures/`; before deleting, `forget` waits
for loads that other nodes started before it recorded the erasure (their markers,
`lake.announce_load`); the deletes rewrite each raw file holding any of the identities, once, as
its next revision (`lake.rewrite_file`); and since parquet tables have no DELETE, every Spark
model keeps the completed erasures in its recorded state and the build of step 4 rebuilds every
mart from what is left. A `forget` killed while rewriting is finished by running it again; a
`transform` first removes any older revision it left (`lake.finish_rewrites`).

What a load does differently per warehouse is in the warehouse object (`loader.warehouses`):
reading the erasures it applies (`read_erasures`) and appending its `dropped_at_load` rows
(`record_dropped`); on DuckDB and Postgres also the locks `forget` takes to record an erasure and
to delete (`erasure_recording_lock`, `erasure_lock`). `forget`'s own SQL in both dialects
(`_Database`, `_delete_identity`) and its steps on the lake (`_forget_on_lake`) are here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import orjson
import pyarrow as pa

from . import lake
from .config import ConfigError, Settings, postgres_connection_parameters
from .spool import Delivery
from .warehouses import (
    DATASET,
    IDENTITY_TABLE,
    QUARANTINE_TABLE,
    RAW_TABLES,
    LakeWarehouse,
    Warehouse,
    for_settings,
)

ERASURES_TABLE = lake.ERASURES_TABLE
FORGET = "forget"
DROPPED_AT_LOAD = "dropped_at_load"

ERASURES_DDL = f"""
create table if not exists {DATASET}.{ERASURES_TABLE} (
    erased_at timestamp with time zone not null,
    identity_hmac varchar not null,
    environment_id bigint,
    action varchar not null,
    node varchar,
    deliveries_removed bigint,
    rows_removed bigint
)
"""


def identity_hmac(key: bytes, identity: str) -> str:
    """The keyed hash an erasure is recorded by: HMAC-SHA256(key, identity) in hex."""
    return hmac.new(key, identity.encode("utf-8"), hashlib.sha256).hexdigest()


def erasure_key(settings: Settings) -> bytes:
    if not settings.erasure_key:
        raise ConfigError(
            "FLAGSMITH_ERASURE_KEY is not set: erasures are recorded by a keyed hash of the "
            "identity, and every loader needs the same key to recognise them"
        )
    return settings.erasure_key


# --- what a loader checks -------------------------------------------------------------------


class _FlagEnvironment(msgspec.Struct):
    environment: int | None = None


class _Addressed(msgspec.Struct):
    """The two fields of a body an erasure is about; everything else is skipped unparsed."""

    identity: str | None = None
    flags: list[_FlagEnvironment] = []


_ADDRESS = msgspec.json.Decoder(_Addressed)


def delivery_address(body: bytes) -> tuple[str, int | None] | None:
    """(identity, environment id of its first flag) of a body, or None where it names none.

    Staging takes the environment from the first flag the same way. A quarantined body of
    another shape is read generically: only a string `identity` field counts."""
    try:
        found = _ADDRESS.decode(body)
    except msgspec.DecodeError:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict) or not isinstance(document.get("identity"), str):
            return None
        flags = document.get("flags")
        first = flags[0] if isinstance(flags, list) and flags else None
        environment = first.get("environment") if isinstance(first, dict) else None
        valid = isinstance(environment, int) and not isinstance(environment, bool)
        return document["identity"], environment if valid else None
    if found.identity is None:
        return None
    return found.identity, found.flags[0].environment if found.flags else None


@dataclass(frozen=True)
class Erasure:
    identity_hmac: str
    environment_id: int | None  # None: every environment
    erased_at: datetime

    @classmethod
    def recorded(cls, identity_hmac: str, environment_id, erased_at) -> Erasure:
        """The erasure of an audit row as a warehouse returns it: the time in UTC (a naive one,
        or text, read as UTC), the environment id a Python int."""
        environment = None if environment_id is None else int(environment_id)
        return cls(identity_hmac, environment, _utc(erased_at))


@dataclass
class ErasureFilter:
    """The erasures recorded in the warehouse, applied to deliveries a loader takes."""

    key: bytes | None
    erasures: list[Erasure]
    dropped: dict[tuple[str, int | None], int] = field(default_factory=dict)
    _by_hash: dict[str, list[Erasure]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.erasures and not self.key:
            raise ConfigError(
                f"the warehouse holds {len(self.erasures)} erasure(s) in "
                f"{DATASET}.{ERASURES_TABLE} but FLAGSMITH_ERASURE_KEY is not set: this loader "
                "cannot tell erased identities' deliveries apart, so it does not load"
            )
        for erasure in self.erasures:
            self._by_hash.setdefault(erasure.identity_hmac, []).append(erasure)

    def __bool__(self) -> bool:
        return bool(self.erasures)

    def covers(self, body: bytes, received_at: datetime) -> Erasure | None:
        """The erasure that covers a body received then, if one does; counted in `dropped`."""
        erasure = self._covering(body, received_at)
        if erasure is not None:
            scope = (erasure.identity_hmac, erasure.environment_id)
            self.dropped[scope] = self.dropped.get(scope, 0) + 1
        return erasure

    def _covering(self, body: bytes, received_at: datetime) -> Erasure | None:
        if not self._by_hash:
            return None
        address = delivery_address(body)
        if address is None:
            return None
        identity, environment = address
        assert self.key is not None
        for erasure in self._by_hash.get(identity_hmac(self.key, identity), ()):
            in_scope = erasure.environment_id is None or erasure.environment_id == environment
            if in_scope and _utc(received_at) <= erasure.erased_at:
                return erasure
        return None

    def keep(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries no erasure covers; the others are counted in `dropped`."""
        if not self._by_hash:
            return deliveries
        return [d for d in deliveries if self.covers(d.body, d.received_at) is None]


def read_erasures(execute) -> list[Erasure]:
    """Every erasure recorded (pending ones included: a loader must drop from the moment one is
    recorded). `execute(sql)` returns rows; the erasures table must exist."""
    rows = execute(
        f"select identity_hmac, environment_id, erased_at from {DATASET}.{ERASURES_TABLE} "
        f"where action = '{FORGET}'"
    )
    return [Erasure.recorded(*row) for row in rows or ()]


def loader_filter(warehouse: Warehouse, pipeline) -> ErasureFilter:
    """The erasures a load applies, read by the warehouse object (`Warehouse.read_erasures`:
    through the loader's own dlt SQL client, or on the lake from its files)."""
    return ErasureFilter(warehouse.settings.erasure_key, warehouse.read_erasures(pipeline))


def record_dropped(warehouse: Warehouse, pipeline, erasures: ErasureFilter) -> None:
    """One `dropped_at_load` row per erasure scope that dropped deliveries in this load, written
    by the warehouse object (`Warehouse.record_dropped`)."""
    if not erasures.dropped:
        return
    now = datetime.now(UTC)
    rows = []
    for (hash_, environment), count in sorted(erasures.dropped.items(), key=str):
        row = _audit_record(now, hash_, environment, DROPPED_AT_LOAD, warehouse.settings.node)
        row.update(deliveries_removed=count, rows_removed=count)
        rows.append(row)
    warehouse.record_dropped(pipeline, rows)
    erasures.dropped.clear()


def _audit_record(
    at: datetime, hash_: str, environment_id: int | None, action: str, node: str
) -> dict[str, object]:
    return {
        "erased_at": at,
        "identity_hmac": hash_,
        "environment_id": environment_id,
        "action": action,
        "node": node,
        "deliveries_removed": None,
        "rows_removed": None,
    }


def _utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- trait keys stripped at load -------------------------------------------------------------


def strip_traits(body: bytes, keys: frozenset[str]) -> tuple[bytes, str | None]:
    """The body without the traits whose trait_key is in `keys`, and the keys removed (sorted,
    comma-joined; None when none were, and then the body is returned as it came). A body that
    keeps all its traits stays byte for byte; one that loses some is re-serialised."""
    if not keys:
        return body, None
    document = orjson.loads(body)
    traits = document.get("traits") if isinstance(document, dict) else None
    if not isinstance(traits, list):
        return body, None
    kept = [t for t in traits if not (isinstance(t, dict) and t.get("trait_key") in keys)]
    if len(kept) == len(traits):
        return body, None
    removed = sorted({t["trait_key"] for t in traits if t not in kept})
    document["traits"] = kept
    return orjson.dumps(document), ",".join(removed)


# --- forget ---------------------------------------------------------------------------------


@dataclass
class ForgetSummary:
    identities: int = 0
    deliveries_removed: int = 0
    rows_removed: int = 0
    dropped_from_spool: int = 0
    transform_status: int | None = None

    def line(self) -> str:
        return (
            f"forgot {self.identities} identit{'y' if self.identities == 1 else 'ies'}: "
            f"{self.deliveries_removed} deliveries and {self.rows_removed} rows removed from "
            f"the warehouse, {self.dropped_from_spool} deliveries dropped from the spool"
        )


class _Database:
    """A DB-API connection to the warehouse with one parameter style (%s) for both engines."""

    def __init__(self, settings: Settings):
        self.engine = settings.warehouse
        if self.engine == "duckdb":
            import duckdb

            self.connection = duckdb.connect(str(settings.duckdb_path))
            self.connection.execute("set TimeZone = 'UTC'")
            self.connection.execute("begin")
        else:
            import psycopg2

            self.connection = psycopg2.connect(**postgres_connection_parameters())
            with self.connection.cursor() as cursor:
                cursor.execute("set time zone 'UTC'")

    def execute(self, sql: str, *parameters) -> list[tuple]:
        if self.engine == "duckdb":
            result = self.connection.execute(sql.replace("%s", "?"), list(parameters))
            return result.fetchall() if result.description else []
        with self.connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchall() if cursor.description else []

    def delete(self, sql: str, *parameters) -> int:
        """Runs a delete; the number of rows it removed."""
        if self.engine == "duckdb":
            # DuckDB answers a delete with one row: the count of rows deleted.
            result = self.connection.execute(sql.replace("%s", "?"), list(parameters))
            return int(result.fetchall()[0][0])
        with self.connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.rowcount

    def commit(self) -> None:
        if self.engine == "duckdb":
            self.connection.execute("commit")
        else:
            self.connection.commit()

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[_Database]:
    database = _Database(settings)
    try:
        yield database
    finally:
        database.close()


def forget(
    settings: Settings,
    identities: Iterable[str],
    environment_id: int | None = None,
    *,
    transform: bool = True,
) -> ForgetSummary:
    """Erase `identities` (in environment `environment_id`, or everywhere); see the module doc."""
    from . import pipeline
    from .transform import SCHEDULED_BUILD, run_dbt

    key = erasure_key(settings)
    wanted = sorted(set(identities))
    if not wanted or any(not identity for identity in wanted):
        raise ConfigError("forget needs at least one non-empty --identity")
    hashes = {identity: identity_hmac(key, identity) for identity in wanted}
    erased_at = datetime.now(UTC)
    warehouse = for_settings(settings)
    summary = ForgetSummary(identities=len(wanted))
    if isinstance(warehouse, LakeWarehouse):
        return _forget_on_lake(
            warehouse, wanted, hashes, environment_id, erased_at, summary, transform
        )

    # 1. Record the erasures (pending): every loader drops their deliveries from now on.
    with warehouse.erasure_recording_lock(), _database(settings) as database:
        database.execute(f"create schema if not exists {DATASET}")
        database.execute(ERASURES_DDL)
        for identity in wanted:
            database.execute(
                f"insert into {DATASET}.{ERASURES_TABLE} (erased_at, identity_hmac, "
                "environment_id, action, node) values (%s, %s, %s, %s, %s)",
                erased_at,
                hashes[identity],
                environment_id,
                FORGET,
                settings.node,
            )
        database.commit()

    # 2. This node's spool: the loader drops the erased deliveries it holds.
    loaded = pipeline.load(settings, wait=True)
    summary.dropped_from_spool = loaded.dropped_by_erasure

    # 3. Delete, and complete the erasures, in one transaction; 4. rebuild what counts them.
    with warehouse.transform_lock(settings.marts_schema):
        with warehouse.erasure_lock(), _database(settings) as database:
            for identity in wanted:
                deliveries, rows = _delete_identity(
                    database, identity, environment_id, settings.marts_schema
                )
                database.execute(
                    f"update {DATASET}.{ERASURES_TABLE} set deliveries_removed = %s, "
                    "rows_removed = %s where action = %s and identity_hmac = %s "
                    "and erased_at = %s and rows_removed is null",
                    deliveries,
                    rows,
                    FORGET,
                    hashes[identity],
                    erased_at,
                )
                summary.deliveries_removed += deliveries
                summary.rows_removed += rows
            database.commit()
            if settings.warehouse == "duckdb":
                database.execute("checkpoint")
        if transform:
            summary.transform_status = run_dbt(settings, "build", list(SCHEDULED_BUILD), lock=False)
    return summary


LOADS_WAIT_SECONDS = 600.0
"""How long `forget` on the lake waits for other nodes' loads in progress before it gives up."""


def _forget_on_lake(
    warehouse: LakeWarehouse,
    wanted: list[str],
    hashes: dict[str, str],
    environment_id: int | None,
    erased_at: datetime,
    summary: ForgetSummary,
    transform: bool,
) -> ForgetSummary:
    """`forget` on the lake: the steps of the module doc, on files."""
    from . import pipeline
    from .transform import SCHEDULED_BUILD, run_dbt

    settings = warehouse.settings
    lake_dir = settings.lake_dir
    if not lake.dataset_exists(lake_dir, DATASET):
        pipeline.load(settings, wait=True)  # dlt creates the dataset's folder in its first load
    records = {}
    # 1. Record the erasures (pending); then note the loads in progress, which may have read
    # the erasures before this record: a load that starts later reads it.
    for identity in wanted:
        record = _audit_record(erased_at, hashes[identity], environment_id, FORGET, settings.node)
        records[identity] = record
        lake.write_erasure(lake_dir, DATASET, lake.audit_name(record), record)
    in_progress = lake.loads_in_progress(lake_dir, DATASET)

    # 2. This node's spool: the loader drops the erased deliveries it holds.
    loaded = pipeline.load(settings, wait=True)
    summary.dropped_from_spool = loaded.dropped_by_erasure
    try:
        lake.wait_for_loads(lake_dir, DATASET, in_progress, LOADS_WAIT_SECONDS)
    except TimeoutError as waiting:
        raise ConfigError(
            f"forget waited {LOADS_WAIT_SECONDS:.0f} s for loads in progress on other nodes "
            f"(markers {waiting}); nothing was deleted yet. A marker a killed loader left goes "
            "when that node loads again; delete the file of a node that is gone. Then run "
            "forget again."
        ) from None

    # 3. Rewrite the raw files holding the identities, then complete the erasures; 4. rebuild.
    with warehouse.transform_lock(settings.marts_schema):
        lake.finish_rewrites(lake_dir, DATASET, RAW_TABLES)
        removed = _delete_from_lake(lake_dir, wanted, environment_id)
        for identity in wanted:
            count = removed[identity]
            record = dict(records[identity], deliveries_removed=count, rows_removed=count)
            lake.write_erasure(lake_dir, DATASET, lake.audit_name(record), record)
            summary.deliveries_removed += count
            summary.rows_removed += count
        if transform:
            summary.transform_status = run_dbt(settings, "build", list(SCHEDULED_BUILD), lock=False)
    return summary


def _delete_from_lake(
    lake_dir: str, identities: Iterable[str], environment_id: int | None
) -> dict[str, int]:
    """Rewrites every raw file of a complete load holding a delivery of any of `identities` (in
    scope) without those deliveries, each file once; returns how many deliveries of each
    identity were removed. Only files whose text mentions one of the identities are parsed row
    by row."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    removed = dict.fromkeys(identities, 0)
    wanted = frozenset(removed)
    fs, _ = lake.filesystem(lake_dir)
    loads = lake.completed_loads(lake_dir, DATASET)
    for table_name, column in ((IDENTITY_TABLE, "payload"), (QUARANTINE_TABLE, "body")):
        for path in lake.table_files(lake_dir, DATASET, table_name, loads):
            texts = pq.read_table(path, columns=[column], filesystem=fs)[column]
            if not any(pc.any(pc.match_substring(texts, name)).as_py() for name in wanted):
                continue
            erased = [
                None
                if text is None
                else _erased_identity(text.encode("utf-8"), wanted, environment_id)
                for text in texts.to_pylist()
            ]
            if all(identity is None for identity in erased):
                continue
            rows = pq.read_table(path, filesystem=fs)
            keep = pa.array([identity is None for identity in erased])
            lake.rewrite_file(lake_dir, path, rows.filter(keep))
            for identity in erased:
                if identity is not None:
                    removed[identity] += 1
    return removed


def _erased_identity(body: bytes, wanted: Set[str], environment_id: int | None) -> str | None:
    """The identity of `wanted` that `body` is a delivery of, in scope of `environment_id`
    (None: every environment); None when it is none of theirs."""
    address = delivery_address(body)
    if address is None or address[0] not in wanted or environment_id not in (None, address[1]):
        return None
    return address[0]


def _scope(environment_id: int | None, column: str = "environment_id") -> tuple[str, tuple]:
    if environment_id is None:
        return "", ()
    return f" and {column} = %s", (environment_id,)


def _delete_identity(
    database: _Database, identity: str, environment_id: int | None, marts_schema: str
) -> tuple[int, int]:
    """Deletes one identity's deliveries (both raw tables) and rows (staging, marts); returns
    (deliveries removed, all rows removed)."""
    raw = f"{DATASET}.{IDENTITY_TABLE}"
    if database.engine == "duckdb":
        identity_of = "json_extract_string(payload, '$.identity')"
        environment_of = "try_cast(json_extract(payload, '$.flags[0].environment') as bigint)"
    else:
        identity_of = "payload ->> 'identity'"
        environment_of = "(payload -> 'flags' -> 0 ->> 'environment')::bigint"
    where, parameters = _scope(environment_id, environment_of)
    deliveries = database.delete(
        f"delete from {raw} where {identity_of} = %s{where}", identity, *parameters
    )
    # Quarantined bodies are text and need not be JSON: those mentioning the identity are
    # parsed here, and deleted when their `identity` field is it.
    quarantine = f"{DATASET}.{QUARANTINE_TABLE}"
    candidates = database.execute(
        f"select delivery_id, body from {quarantine} where strpos(body, %s) > 0", identity
    )
    ids = []
    for delivery_id, body in candidates:
        if _erased_identity(body.encode("utf-8"), {identity}, environment_id) is not None:
            ids.append(delivery_id)
    for delivery_id in ids:
        deliveries += database.delete(
            f"delete from {quarantine} where delivery_id = %s", delivery_id
        )
    rows = deliveries
    for table in _identity_tables(database, marts_schema):
        where, parameters = _scope(environment_id)
        rows += database.delete(
            f"delete from {table} where identity = %s{where}", identity, *parameters
        )
    return deliveries, rows


def _identity_tables(database: _Database, marts_schema: str) -> list[str]:
    """Every table (not view) of the marts schema with `identity` and `environment_id` columns:
    staging, the intermediate tables and the marts keyed by identity."""
    rows = database.execute(
        """
        select c.table_name
        from information_schema.columns as c
        inner join information_schema.tables as t
            on t.table_schema = c.table_schema and t.table_name = c.table_name
        where c.table_schema = %s and t.table_type = 'BASE TABLE'
            and c.column_name in ('identity', 'environment_id')
        group by c.table_name
        having count(distinct c.column_name) = 2
        order by c.table_name
        """,
        marts_schema,
    )
    return [f"{marts_schema}.{name}" for (name,) in rows]
