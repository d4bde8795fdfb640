"""What differs between warehouses for the loader, one small object each.

The loader (`pipeline.load`) is the same on every warehouse: claim spool segments, hand dlt
arrow batches, release the segments once the load has committed. What a warehouse decides is
behind the methods below: its dlt destination and pipeline name, the connection the loader
holds while it loads, the lock that keeps other writers out, how the raw tables are first
created, what is already there, and what to check after a load before segments leave the spool.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import ClassVar

from .config import Settings, postgres_connection_parameters
from .locks import exclusive, postgres_advisory_lock, warehouse_writer_lock

PIPELINE_NAME = "flagsmith_warehouse"
DATASET = "flagsmith_raw"
IDENTITY_TABLE = "identity_webhooks"
QUARANTINE_TABLE = "quarantined_webhooks"
RAW_TABLES = (IDENTITY_TABLE, QUARANTINE_TABLE)


# DuckDB's memory limit inside the loader.
LOADER_DUCKDB_MEMORY = os.environ.get("FLAGSMITH_LOADER_DUCKDB_MEMORY", "384MB")


class Warehouse:
    """The SQL warehouses' shared behaviour; subclasses say what is their own."""

    name = ""
    # dlt's `pipeline.run` arguments beyond the data (the lake asks for parquet files).
    run_options: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Settings):
        self.settings = settings
        self.connection = None  # set inside `session()` where the loader holds one

    def pipeline_name(self) -> str:
        """dlt keeps a pipeline's state in the destination keyed by this name, and two processes
        must never run one pipeline: where several nodes load into one warehouse, each node's
        loader is its own pipeline."""
        return f"{PIPELINE_NAME}_{self.settings.node}"

    def destination(self):
        raise NotImplementedError

    def writer_lock(self):
        """Held for the whole load: keeps out writers the warehouse cannot have at once."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def session(self) -> Iterator[Warehouse]:
        """The writer lock, and the loader's own connection where it keeps one."""
        with self.writer_lock():
            yield self

    def setup_lock(self):
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

    def transform_lock(self, schema: str):
        """Held by `transform` for dbt's whole run."""
        return contextlib.nullcontext()


class DuckDBWarehouse(Warehouse):
    """One file, one writer: the loader and dbt take turns through a file lock, and the loader
    writes through its own connection (small row groups, a memory cap; `duckdb_destination`)."""

    name = "duckdb"

    def pipeline_name(self) -> str:
        return PIPELINE_NAME  # one loader per file

    def destination(self):
        import dlt

        if self.connection is None:
            self.settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
            return dlt.destinations.duckdb(str(self.settings.duckdb_path))
        from .duckdb_destination import destination as attached

        return attached(self.connection)

    def writer_lock(self):
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
            self.connection = connect(self.settings.duckdb_path, LOADER_DUCKDB_MEMORY)
            try:
                yield self
            finally:
                self.connection.close()
                self.connection = None

    def set_up_raw_tables(self, pipeline, create_empty) -> bool:
        # The writer lock already keeps everyone else out: the first data load creates them.
        return not raw_tables_exist(pipeline)

    def after_load(self) -> None:
        from .duckdb_destination import outside_catalog, release_cache

        # Refuse to release segments whose rows went anywhere but the DuckDB file: they stay
        # claimed, and nothing is lost.
        stray = outside_catalog(self.connection)
        if stray:
            raise RuntimeError(
                "dlt wrote outside the warehouse file, into DuckDB's in-memory catalog: "
                f"{', '.join(stray)}. The spool is left as it was; this dlt version needs a "
                "change in loader/duckdb_destination.py."
            )
        release_cache(self.connection, LOADER_DUCKDB_MEMORY)

    def transform_lock(self, schema: str):
        self.settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive(warehouse_writer_lock(self.settings.duckdb_path), what="the loader")


class PostgresWarehouse(Warehouse):
    """A server several nodes load into at once: one dlt pipeline and staging schema per node,
    the raw tables created under an advisory lock, no writer lock for loads."""

    name = "postgres"

    def destination(self):
        import dlt

        # dlt's default staging dataset, `<dataset>_staging`, would be shared by every node, and
        # each truncates and fills it during its load: one node's staging schema each keeps
        # their merges apart.
        return dlt.destinations.postgres(
            postgres_credentials(),
            staging_dataset_name_layout=f"%s_staging_{self.settings.node}",
        )

    def setup_lock(self):
        # Loaders of several nodes may start at once on an empty database: the one that creates
        # the dataset and the raw tables does it alone (Postgres fails concurrent `create schema`
        # and `create table` of one name). Once they exist a load needs no DDL but its own
        # node's staging schema, so loads themselves run concurrently.
        return postgres_advisory_lock(
            "flagsmith_warehouse.loader.setup", what="another loader's setup"
        )

    def transform_lock(self, schema: str):
        # Two dbt runs on one schema at once would both append the same loads.
        return postgres_advisory_lock(
            f"flagsmith_warehouse.transform:{schema}", what="another dbt run on this schema"
        )


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


WAREHOUSE_CLASSES: dict[str, type[Warehouse]] = {
    "duckdb": DuckDBWarehouse,
    "postgres": PostgresWarehouse,
}


def for_settings(settings: Settings) -> Warehouse:
    """The warehouse object for `settings.warehouse`."""
    try:
        return WAREHOUSE_CLASSES[settings.warehouse](settings)
    except KeyError:
        raise ValueError(f"unknown warehouse {settings.warehouse!r}") from None
