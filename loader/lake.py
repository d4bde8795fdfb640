"""Reading the raw tables of the lake: parquet files that dlt's filesystem destination wrote.

Layout under the lake (`FLAGSMITH_LAKE_DIR`, a folder or an fsspec URL), dlt's defaults:

    flagsmith_raw/identity_webhooks/<load_id>.<file_id>.parquet
    flagsmith_raw/quarantined_webhooks/<load_id>.<file_id>.parquet
    flagsmith_raw/_dlt_loads/<schema_name>__<load_id>.jsonl    one JSON line per completed load

dlt writes a load's data files first and its `_dlt_loads` line last (`complete_load`), so a load
is complete exactly when that line exists with status 0. A loader killed in between leaves data
files of an incomplete load (possibly one cut short, since a file is copied into place, not
renamed): every reader here takes only files whose load id is complete, chosen by file name, and
never opens the others.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable

import pyarrow as pa

LOADS_TABLE = "_dlt_loads"


def filesystem(lake: str):
    """The fsspec filesystem of the lake and the lake's root path in it."""
    from fsspec.core import url_to_fs

    return url_to_fs(lake)


def _listing(fs, directory: str) -> list[str]:
    try:
        return sorted(fs.ls(directory, detail=False))
    except FileNotFoundError:
        return []


def completed_loads(lake: str, dataset: str) -> dict[str, str]:
    """Every load recorded complete in the lake: load id -> the dlt schema (pipeline) of it."""
    fs, root = filesystem(lake)
    loads: dict[str, str] = {}
    for path in _listing(fs, posixpath.join(root, dataset, LOADS_TABLE)):
        if not path.endswith(".jsonl"):
            continue
        for line in fs.cat_file(path).decode("utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # cut short by a crash while dlt wrote it: not complete
                continue
            if record.get("status") == 0 and record.get("load_id"):
                loads[record["load_id"]] = record.get("schema_name") or ""
    return loads


def load_id_of(file_name: str, load_ids: Iterable[str]) -> str | None:
    """The load id a data file `<load_id>.<file_id>.<ext>` belongs to, if it is in `load_ids`.

    A load id contains a dot (`1764480000.123456`), so the name is matched by prefix: the load
    id and the dot that follows it.
    """
    parts = file_name.split(".")
    known = set(load_ids)
    for end in range(1, len(parts)):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def table_files(lake: str, dataset: str, table: str, load_ids: Iterable[str]) -> list[str]:
    """The parquet files of `table` that belong to the loads `load_ids`."""
    fs, root = filesystem(lake)
    known = set(load_ids)
    return [
        path
        for path in _listing(fs, posixpath.join(root, dataset, table))
        if path.endswith(".parquet") and load_id_of(posixpath.basename(path), known)
    ]


def incomplete_files(lake: str, dataset: str, table: str, load_ids: Iterable[str]) -> list[str]:
    """The files of `table` written by the loads `load_ids` that are not recorded complete."""
    done = completed_loads(lake, dataset)
    fs, root = filesystem(lake)
    pending = set(load_ids) - set(done)
    return [
        path
        for path in _listing(fs, posixpath.join(root, dataset, table))
        if load_id_of(posixpath.basename(path), pending)
    ]


def read_table(
    lake: str, dataset: str, table: str, columns: list[str] | None = None
) -> pa.Table | None:
    """The rows of `table` in complete loads (None when it has no file in any)."""
    import pyarrow.parquet as pq

    files = table_files(lake, dataset, table, completed_loads(lake, dataset))
    if not files:
        return None
    fs, _ = filesystem(lake)
    pieces = [pq.read_table(path, columns=columns, filesystem=fs) for path in files]
    return pa.concat_tables(pieces, promote_options="permissive")
