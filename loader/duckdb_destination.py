"""The loader's DuckDB: the database file attached with small row groups, and dlt working in it.

DuckDB keeps the rows an uncommitted append adds in memory until a whole row group is full
(122,880 rows by default); a full one goes straight to the database file ("optimistic writes"),
the rest waits for the commit. A raw row is a whole webhook body, 17 KB at 50 flags, so one dlt
load of 20,000 deliveries is a single unfinished row group of ~340 MB: under the loader's memory
cap DuckDB spills it to temporary files and reads it back at the commit. Attached with
`ROW_GROUP_SIZE` (an ATTACH option, documented for DuckDB 1.4), full row groups of a few
thousand rows go to the file as they fill. Measured: dlt's load step for 20,000 bodies of 17 KB
went from 2.6 s to 0.8 s; a whole load of 6,000 bodies of 100 KB took 12.3 s with the default row
groups and 6.9 to 7.8 s with these (separate runs).

Bodies of hundreds of KB still need more than the default cap, for reasons inside DuckDB
not pinned down here: measured on DuckDB 2.0.1, 6,000 bodies of 100 KB load at the 384MB cap;
3,000 of 200 KB failed at it in one run of two and loaded at 1GB (the process peaked at 1.1 GB);
1,500 of 500 KB failed at it. On DuckDB 1.4.0 and 1.5.6 already bodies of 100 KB ran out of
memory (tests/test_loader.py), which is why the project asks for DuckDB 2.

The row group size is an option of ATTACH only, not of a file opened by `duckdb.connect(path)`,
and it is not stored in the file: dbt, which opens the file itself, is unaffected. dlt knows one
catalog per connection, the default one, and clones its connection for each use; a clone starts
on the default (here in-memory) catalog. The SQL client below switches each clone to the
attached catalog, as dlt's own DuckLake client does for its catalog.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import dlt
import duckdb
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.destinations.impl.duckdb.duck import DuckDbClient
from dlt.destinations.impl.duckdb.sql_client import DuckDbSqlClient

CATALOG = "flagsmith_warehouse"
# DuckDB's smallest row group (its vector size): the fewest bodies held per thread. Measured on
# 20,000 bodies of 17 KB, row groups of 2,048 and 4,096 rows landed equally fast.
ROW_GROUP_SIZE = 2048
# The loader's DuckDB threads. DuckDB would take one per core, and each holds its own unfinished
# row group and parquet row group: the loader's memory must not depend on the machine's cores.
THREADS = 2


_SIZE = re.compile(r"^\s*(\d*\.?\d*)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "byte": 1, "bytes": 1}
for _power, _prefix in enumerate(("kilo", "mega", "giga", "tera"), start=1):
    _letter = _prefix[0]
    for _unit in (_letter, f"{_letter}b", f"{_prefix}byte", f"{_prefix}bytes"):
        _UNITS[_unit] = 1000**_power
    _UNITS[f"{_letter}ib"] = 1024**_power


def parse_size(text: str) -> int:
    """`384MB`, `1G`, `512MiB`, `0.5 gigabytes` -> bytes, as DuckDB reads a memory limit
    (MB = 1000**2). Raises ValueError for anything else (DuckDB also takes `80%` and `-1`)."""
    match = _SIZE.match(text)
    if not match or match.group(1) in ("", ".") or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {text!r} (try 384MB or 1GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def connect(path: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with `path` attached as `CATALOG`, which its own session uses.

    Rows need no insertion order (the raw tables are keyed by delivery_id), which lets DuckDB
    stream them. Spilled data goes next to the database file, as with a file opened directly (an
    in-memory database would spill into the working directory).
    """
    connection = duckdb.connect(
        config={
            "memory_limit": memory_limit,
            "threads": THREADS,
            "preserve_insertion_order": False,
            "temp_directory": f"{path}.tmp",
        }
    )
    try:
        literal = str(path).replace("'", "''")
        connection.execute(f"attach '{literal}' as {CATALOG} (row_group_size {ROW_GROUP_SIZE})")
        connection.execute(f"use {CATALOG}")
    except Exception:
        connection.close()
        raise
    return connection


def release_cache(connection: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """Hand back the blocks DuckDB keeps cached after a commit.

    Between loads nothing is pinned, but DuckDB keeps the blocks it wrote cached up to its
    memory limit, and the next load's arrow batches would come on top: the peak would grow over
    the first loads of a run. Lowering the limit evicts the cache (the blocks are on disk);
    the limit is then restored. Best effort: if DuckDB cannot get under the lower limit, the
    cache stays, which costs memory, never data.
    """
    with contextlib.suppress(duckdb.Error):
        connection.execute("set memory_limit = '16MB'")
    connection.execute("set memory_limit = ?", [memory_limit])


def outside_catalog(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables and schemas in DuckDB's in-memory catalog, `memory` (there must be none).

    Everything dlt writes must land in the attached file. Were a dlt version to open a clone
    without `_AttachedSqlClient`, its tables would go to the in-memory catalog and vanish at the
    close while the load reports success: the loader checks this before it releases a segment.
    """
    rows = connection.execute(
        "select schema_name || '.' || table_name from duckdb_tables()"
        " where database_name = 'memory' and not temporary"
        " union all"
        " select schema_name from duckdb_schemas()"
        " where database_name = 'memory' and schema_name <> 'main' and not internal"
    ).fetchall()
    return sorted(f"memory.{row[0]}" for row in rows)


class _AttachedSqlClient(DuckDbSqlClient):
    def open_connection(self) -> duckdb.DuckDBPyConnection:
        connection = super().open_connection()
        try:
            connection.execute(f"use {CATALOG}")
            # `use` replaced the search path dlt set on the clone: set it again, in CATALOG.
            # Before the dataset's schema exists this fails, and dlt lets its own fail so too.
            with contextlib.suppress(duckdb.CatalogException):
                connection.execute(f"set search_path = '{self.fully_qualified_dataset_name()}'")
        except Exception:
            self.close_connection()  # hand the clone back: a leaked one keeps the file locked
            raise
        return connection


class _AttachedClient(DuckDbClient):
    def __init__(self, schema, config, capabilities) -> None:
        super().__init__(schema, config, capabilities)
        # DuckDbClient builds its SQL client inside __init__: the same object gets the one
        # method above. Only if it is exactly dlt's class, whose overrides would otherwise be
        # dropped silently.
        if type(self.sql_client) is not DuckDbSqlClient:
            raise TypeError(f"unexpected dlt DuckDB SQL client {type(self.sql_client)!r}")
        self.sql_client.__class__ = _AttachedSqlClient


class attached_duckdb(dlt.destinations.duckdb):
    """`dlt.destinations.duckdb` whose clients work in the catalog `connect` attached."""

    @property
    def client_class(self) -> type[DuckDbClient]:
        return _AttachedClient


def destination(connection: duckdb.DuckDBPyConnection) -> attached_duckdb:
    # Named as dlt's own: the pipeline state, dlt's settings (DESTINATION__DUCKDB__*) and its
    # messages stay those of the duckdb destination.
    return attached_duckdb(DuckDbCredentials(connection), destination_name="duckdb")
