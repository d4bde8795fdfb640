"""What differs between warehouses for the loader, one small object each.

The loader (`pipeline.load`) is the same on every warehouse: claim spool segments, hand dlt
arrow batches, release the segments once the load is complete. What a warehouse decides is
behind the methods below: its dlt destination and pipeline name, the connection the loader
holds while it loads, the lock that keeps other writers out, how the raw tables are first
created, what is already there, and what to check after a load before segments leave the spool.
It also decides how a load reads the erasures audit (loader.privacy) and appends its
`dropped_at_load` rows, and, on DuckDB and Postgres, which locks `forget` takes to record an
erasure and to delete.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .config import Settings, postgres_connection_parameters
from .locks import exclusive, postgres_advisory_lock, warehouse_writer_lock

if TYPE_CHECKING:
    import duckdb

    from .privacy import Erasure

# What the lock methods return: held inside a `with`.
Lock = AbstractContextManager[object]

PIPELINE_NAME = "flagsmith_warehouse"
DATASET = "flagsmith_raw"
IDENTITY_TABLE = "identity_webhooks"
QUARANTINE_TABLE = "quarantined_webhooks"
RAW_TABLES = (IDENTITY_TABLE, QUARANTINE_TABLE)
# Held shared by every Postgres load and exclusively by `forget` while it deletes.
ERASURE_LOCK = "flagsmith_warehouse.erasures"


class Warehouse:
    """What a SQL warehouse reached through dlt's SQL client does; subclasses override what
    differs (the lake has no SQL client: it reads its files)."""

    name = ""
    # dlt's `pipeline.run` arguments beyond the data (the lake asks for parquet files).
    run_options: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Settings):
        self.settings = settings

    def pipeline_name(self) -> str:
        """dlt keeps a pipeline's state in the destination keyed by this name, and two processes
        must never run one pipeline: where several nodes load into one warehouse, each node's
        loader is its own pipeline."""
        return f"{PIPELINE_NAME}_{self.settings.node}"

    def destination(self):
        raise NotImplementedError

    def writer_lock(self) -> Lock:
        """Held for the whole load: keeps out writers the warehouse cannot have at once."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def session(self) -> Iterator[Warehouse]:
        """The writer lock, and the loader's own connection where it keeps one."""
        with self.writer_lock():
            yield self

    def setup_lock(self) -> Lock:
        """Held while the raw tables are first created."""
        return contextlib.nullcontext()

    def set_up_raw_tables(self, pipeline, create_empty) -> bool:
        """Create both raw tables if missing, so dbt can build before any delivery arrives.

        `create_empty(pipeline)` runs a dlt load of two empty tables. Returns whether the first
        data load must still create them (the DuckDB loader folds it into that load).
        """
        if raw_tables_exist(pipeline):
            return False
        with self.setup_lock():
            if not raw_tables_exist(pipeline):
                create_empty(pipeline)
        return False

    def loaded_delivery_ids(self, pipeline, ids: list[str]) -> set[str]:
        """Those of `ids` already in either raw table (a crashed run may have committed some)."""
        loaded: set[str] = set()
        with pipeline.sql_client() as client:
            for name in RAW_TABLES:
                if not table_exists(client, name):  # a crash in the very first load
                    continue
                table = client.make_qualified_table_name(name)
                for start in range(0, len(ids), 1000):
                    chunk = ids[start : start + 1000]
                    marks = ", ".join(["%s"] * len(chunk))
                    rows = client.execute_sql(
                        f"select delivery_id from {table} where delivery_id in ({marks})", *chunk
                    )
                    loaded.update(row[0] for row in rows or ())
        return loaded

    def after_load(self) -> None:
        """Checks and clean-up after a load has committed, before its segments are released."""

    def discard_incomplete(self, pipeline, load_ids: list[str]) -> None:
        """Delete the rows that this node's loads `load_ids` committed without completing.

        dlt commits a load's jobs one by one and records the load in `_dlt_loads` last; staging
        takes only recorded loads, so rows of a load killed in between would be in the raw table
        and yet never reach a mart. `load_ids` are the node's own pending packages, so another
        node's load in progress is never touched; a load recorded complete keeps its rows.
        """
        if not load_ids:
            return
        with pipeline.sql_client() as client:
            recorded = table_exists(client, "_dlt_loads")
            loads = client.make_qualified_table_name("_dlt_loads")
            marks = ", ".join(["%s"] * len(load_ids))
            for name in RAW_TABLES:
                if not table_exists(client, name):
                    continue
                table = client.make_qualified_table_name(name)
                sql = f"delete from {table} where _dlt_load_id in ({marks})"
                if recorded:
                    sql += f" and _dlt_load_id not in (select load_id from {loads})"
                with client.begin_transaction():
                    client.execute_sql(sql, *load_ids)

    def transform_lock(self, schema: str) -> Lock:
        """Held by `transform` for dbt's whole run."""
        return contextlib.nullcontext()

    def read_erasures(self, pipeline) -> list[Erasure]:
        """Every erasure recorded (pending ones included: a loader drops from the moment one is
        recorded), through the pipeline's dlt SQL client; none while the erasures table does
        not exist."""
        from .privacy import ERASURES_TABLE, read_erasures

        with pipeline.sql_client() as client:
            if not table_exists(client, ERASURES_TABLE):
                return []
            return read_erasures(lambda sql: client.execute_sql(sql))

    def record_dropped(self, pipeline, rows: list[dict[str, object]]) -> None:
        """Append `rows` (`dropped_at_load` audit records: column -> value) to the erasures
        table, through the pipeline's dlt SQL client."""
        from .privacy import ERASURES_TABLE

        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(ERASURES_TABLE)
            for row in rows:
                columns = ", ".join(row)
                marks = ", ".join(["%s"] * len(row))
                client.execute_sql(
                    f"insert into {table} ({columns}) values ({marks})", *row.values()
                )

    def erasure_recording_lock(self) -> Lock:
        """Held by `forget` while it records an erasure over a connection of its own."""
        return contextlib.nullcontext()

    def erasure_lock(self) -> Lock:
        """Held by `forget`, inside the transform lock, while it deletes erased identities' rows:
        loads in progress (which read the erasures at their start) end first, and new ones wait
        for the deletes to commit. None where the transform lock already keeps loads out."""
        return contextlib.nullcontext()


class DuckDBWarehouse(Warehouse):
    """One file, one writer: the loader and dbt take turns through a file lock, and the loader
    writes through its own connection (small row groups, a memory cap; `duckdb_destination`)."""

    name = "duckdb"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.connection: duckdb.DuckDBPyConnection | None = None  # open inside `session()`

    def pipeline_name(self) -> str:
        return PIPELINE_NAME  # one loader per file

    def destination(self):
        import dlt

        if self.connection is None:
            self.settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
            return dlt.destinations.duckdb(str(self.settings.duckdb_path))
        from .duckdb_destination import destination as attached

        return attached(self.connection)

    def writer_lock(self) -> Lock:
        self.settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive(
            warehouse_writer_lock(self.settings.duckdb_path), what="another DuckDB writer"
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[Warehouse]:
        """DuckDB's buffer pool would otherwise grow toward 80% of RAM as the file grows: capping
        it keeps the loader's memory a function of the batch size, not of the history."""
        from .duckdb_destination import connect

        with self.writer_lock():
            connection = connect(self.settings.duckdb_path, self.settings.loader_duckdb_memory)
            self.connection = connection
            try:
                yield self
            finally:
                connection.close()
                self.connection = None

    def set_up_raw_tables(self, pipeline, create_empty) -> bool:
        # The writer lock already keeps everyone else out: the first data load creates them.
        return not raw_tables_exist(pipeline)

    def after_load(self) -> None:
        from .duckdb_destination import outside_catalog, release_cache

        if self.connection is None:
            raise RuntimeError("after_load runs inside session(), where the connection is open")
        # Refuse to release segments whose rows went anywhere but the DuckDB file: they stay
        # claimed, and nothing is lost.
        stray = outside_catalog(self.connection)
        if stray:
            raise RuntimeError(
                "dlt wrote outside the warehouse file, into DuckDB's in-memory catalog: "
                f"{', '.join(stray)}. The spool is left as it was; this dlt version needs a "
                "change in loader/duckdb_destination.py."
            )
        release_cache(self.connection, self.settings.loader_duckdb_memory)

    def transform_lock(self, schema: str) -> Lock:
        self.settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive(warehouse_writer_lock(self.settings.duckdb_path), what="the loader")

    def erasure_recording_lock(self) -> Lock:
        # `forget` opens the file to record an erasure, and a file has one writer at a time: the
        # transform lock is the file's writer lock, which a loader holds too.
        return self.transform_lock(self.settings.marts_schema)


class PostgresWarehouse(Warehouse):
    """A server several nodes load into at once: one dlt pipeline per node,
    the raw tables created under an advisory lock, no writer lock for loads."""

    name = "postgres"

    def destination(self):
        import dlt

        # Appends need no staging dataset. Should a load ever use one, dlt's default,
        # `<dataset>_staging`, would be shared by every node, each truncating and filling it
        # during its load: it is named per node.
        return dlt.destinations.postgres(
            postgres_credentials(),
            staging_dataset_name_layout=f"%s_staging_{self.settings.node}",
        )

    def writer_lock(self) -> Lock:
        """Loads of every node run at once; each holds the erasure lock shared, so `forget`
        (which takes it exclusively: `erasure_lock`) waits for loads that read the erasures
        before it recorded one, and new loads wait for its deletes (loader.privacy)."""
        return postgres_advisory_lock(ERASURE_LOCK, what="an erasure (forget)", shared=True)

    def setup_lock(self) -> Lock:
        # Loaders of several nodes may start at once on an empty database: the one that creates
        # the dataset and the raw tables does it alone (Postgres fails concurrent `create schema`
        # and `create table` of one name). Once they exist a load needs no DDL, so loads
        # themselves run concurrently.
        return postgres_advisory_lock(
            "flagsmith_warehouse.loader.setup", what="another loader's setup"
        )

    def transform_lock(self, schema: str) -> Lock:
        # Two dbt runs on one schema at once would both append the same loads.
        return postgres_advisory_lock(
            f"flagsmith_warehouse.transform:{schema}", what="another dbt run on this schema"
        )

    def erasure_lock(self) -> Lock:
        """The lock every load holds shared (`writer_lock`), taken exclusively."""
        return postgres_advisory_lock(ERASURE_LOCK, what="loads in progress")


def postgres_credentials():
    """The PG* variables as dlt credentials, resolved here: dlt would otherwise demand a password
    even where the server needs none (trust or peer authentication, a .pgpass file)."""
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    parameters = postgres_connection_parameters()
    credentials = PostgresCredentials()
    credentials.host = parameters["host"]
    credentials.port = int(parameters["port"])
    credentials.username = parameters["user"]
    credentials.password = parameters["password"]
    credentials.database = parameters["dbname"]
    credentials.resolve()
    return credentials


def raw_tables_exist(pipeline) -> bool:
    try:
        with pipeline.sql_client() as client:
            return client.has_dataset() and all(table_exists(client, name) for name in RAW_TABLES)
    except Exception:  # no dataset yet, or the destination is not created
        return False


def table_exists(client, name: str) -> bool:
    try:
        client.execute_sql(f"select 1 from {client.make_qualified_table_name(name)} limit 0")
    except Exception:
        return False
    return True


class LakeWarehouse(Warehouse):
    """Spark's raw tables: parquet files that dlt's filesystem destination writes under
    `FLAGSMITH_LAKE_DIR/flagsmith_raw/`, read by Spark (and by `export`) straight from the files.

    There is no database to lock or table to create: each load writes new files named by its
    load id and a random file id, and records itself in `_dlt_loads` last, so loaders of several
    nodes write into one lake at once without touching each other's files. A delivery is in the
    lake once a file holding it belongs to a load recorded complete (`loader.lake`); files of a
    load that never completed are ignored by every reader, and the node that wrote them deletes
    them when it next starts (`discard_incomplete`).
    """

    name = "spark"
    run_options: ClassVar[dict[str, str]] = {"loader_file_format": "parquet"}

    def destination(self):
        import dlt

        if "://" not in self.settings.lake_dir:
            os.makedirs(self.settings.lake_dir, exist_ok=True)
        return dlt.destinations.filesystem(bucket_url=self.settings.lake_dir)

    def set_up_raw_tables(self, pipeline, create_empty) -> bool:
        # Both tables get a file (empty if need be) in the first load, so readers find their
        # columns before any delivery arrives. Several nodes may do this at once: files only.
        return not self._completed_files()

    def _completed_files(self) -> bool:
        from . import lake

        loads = lake.completed_loads(self.settings.lake_dir, DATASET)
        return all(lake.table_files(self.settings.lake_dir, DATASET, t, loads) for t in RAW_TABLES)

    def loaded_delivery_ids(self, pipeline, ids: list[str]) -> set[str]:
        """Those of `ids` in a complete load of either raw table."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from . import lake

        wanted = pa.array(ids, pa.string())
        loaded: set[str] = set()
        for name in RAW_TABLES:
            table = lake.read_table(self.settings.lake_dir, DATASET, name, ["delivery_id"])
            if table is not None:
                found = table.filter(pc.is_in(table["delivery_id"], value_set=wanted))
                loaded.update(found["delivery_id"].to_pylist())
        return loaded

    @contextlib.contextmanager
    def session(self) -> Iterator[Warehouse]:
        """The node's marker in the lake for the whole load (`lake.announce_load`): `forget`,
        on any node, waits for loads that may have read the erasures before it recorded one."""
        from . import lake

        with lake.announce_load(self.settings.lake_dir, DATASET, self.settings.node):
            yield self

    def after_load(self) -> None:
        """The erasures table gets its first file once dlt has created the dataset, so Spark can
        read it (`erasure_state`) before anything was erased."""
        from . import lake

        lake.ensure_erasures(self.settings.lake_dir, DATASET)

    def discard_incomplete(self, pipeline, load_ids: list[str]) -> None:
        """Delete the data files of this node's loads that a crash left incomplete.

        `load_ids` are the node's own pending packages (dlt keeps them in the node's state
        folder), so another node's load in progress is never touched. A load recorded complete
        keeps its files even if its package was still pending: its rows are in the lake.
        """
        from . import lake

        fs, _ = lake.filesystem(self.settings.lake_dir)
        for name in RAW_TABLES:
            for path in lake.incomplete_files(self.settings.lake_dir, DATASET, name, load_ids):
                fs.rm(path)

    def transform_lock(self, schema: str) -> Lock:
        # Spark's embedded metastore (Derby) admits one process at a time.
        directory = self.settings.spark_warehouse_dir
        directory.parent.mkdir(parents=True, exist_ok=True)
        return exclusive(Path(f"{directory}.lock"), what="another Spark transform")

    def read_erasures(self, pipeline) -> list[Erasure]:
        """Every erasure recorded in the lake's audit files (pending ones included)."""
        from . import lake
        from .privacy import FORGET, Erasure

        rows = lake.read_erasures(self.settings.lake_dir, DATASET).to_pylist()
        return [
            Erasure.recorded(row["identity_hmac"], row["environment_id"], row["erased_at"])
            for row in rows
            if row["action"] == FORGET
        ]

    def record_dropped(self, pipeline, rows: list[dict[str, object]]) -> None:
        """Each row an audit file of its own, its name made unique by a random suffix: loads of
        several nodes may drop deliveries of one scope at once."""
        from . import lake

        for row in rows:
            name = f"{lake.audit_name(row)}-{uuid.uuid4().hex[:8]}"
            lake.write_erasure(self.settings.lake_dir, DATASET, name, row)


WAREHOUSE_CLASSES: dict[str, type[Warehouse]] = {
    "duckdb": DuckDBWarehouse,
    "postgres": PostgresWarehouse,
    "spark": LakeWarehouse,
}


def for_settings(settings: Settings) -> Warehouse:
    """The warehouse object for `settings.warehouse`."""
    try:
        return WAREHOUSE_CLASSES[settings.warehouse](settings)
    except KeyError:
        raise ValueError(f"unknown warehouse {settings.warehouse!r}") from None
