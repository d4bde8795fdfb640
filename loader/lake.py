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

Files are rewritten only by `forget` (`rewrite_file`): the new revision of
`<load_id>.<file_id>.parquet` is `<load_id>.<file_id>.r1.parquet`, then `.r2`, and so on. It is
moved into place complete before the older revision is removed, and readers here take the newest
revision of each file, so none of them ever reads a delivery twice or misses one. Spark's
staging reads through a glob that matches every revision. The dbt runs this package starts
(`transform.run_dbt`: the `transform`, `run` and `docs` commands, the build after `forget`) first
run `finish_rewrites` under the transform lock (`transform._prepare_lake`), which removes any older
revision a killed `forget` left behind; `forget` runs it too before it rewrites. A `dbt run`
started by hand does not: until one of those has run, it would read both revisions of such a
file.

Beside the raw tables the lake holds `flagsmith_raw/erasures/` (the erasures audit, a parquet file
per record: `loader.privacy`), and beside the dataset `_flagsmith_loading/` (a marker per node
while its loader loads, which `forget` waits out: `announce_load`). The erasures folder is not
created before dlt has created the dataset's folder, which dlt's first load insists on doing
itself; the markers' folder is outside it.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

LOADS_TABLE = "_dlt_loads"
ERASURES_TABLE = "erasures"
LOADING = "_flagsmith_loading"
_REVISION = re.compile(r"r([0-9]+)")


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


def _stem_and_revision(path: str) -> tuple[str, int]:
    """(`<folder>/<load_id>.<file_id>`, revision) of a data file: 0 as dlt wrote it, N for the
    `.rN` that `rewrite_file` wrote. A dlt file id is hexadecimal, so it never reads as `rN`."""
    base = path.removesuffix(".parquet")
    head, _, last = base.rpartition(".")
    found = _REVISION.fullmatch(last)
    if found and head:
        return head, int(found.group(1))
    return base, 0


def _newest_revisions(paths: Iterable[str]) -> list[str]:
    newest: dict[str, tuple[int, str]] = {}
    for path in paths:
        stem, revision = _stem_and_revision(path)
        if stem not in newest or revision > newest[stem][0]:
            newest[stem] = (revision, path)
    return sorted(path for _, path in newest.values())


def table_files(lake: str, dataset: str, table: str, load_ids: Iterable[str]) -> list[str]:
    """The parquet files of `table` that belong to the loads `load_ids`, each in its newest
    revision."""
    fs, root = filesystem(lake)
    known = set(load_ids)
    return _newest_revisions(
        path
        for path in _listing(fs, posixpath.join(root, dataset, table))
        if path.endswith(".parquet") and load_id_of(posixpath.basename(path), known)
    )


def rewrite_file(lake: str, path: str, rows: pa.Table) -> str:
    """Replace the data file `path` by its next revision holding `rows` (its schema kept, even
    with no row left: staging's glob needs the first load's file); returns the new path.

    The revision is written under a hidden name, moved into place complete, and only then is
    `path` removed: a crash leaves both revisions, readers here take the newer, and
    `finish_rewrites` removes the older."""
    fs, _ = filesystem(lake)
    stem, revision = _stem_and_revision(path)
    target = f"{stem}.r{revision + 1}.parquet"
    _write_whole(fs, target, rows)
    fs.rm(path)
    return target


def finish_rewrites(lake: str, dataset: str, tables: Iterable[str]) -> list[str]:
    """Remove every revision a newer one replaces (what a `forget` killed between moving a
    revision into place and removing the older left behind), and stray hidden temporary files;
    returns what was removed. Run where nothing rewrites at the same time: under the transform
    lock, which `forget` holds while it rewrites."""
    fs, root = filesystem(lake)
    removed = []
    for table in tables:
        listing = _listing(fs, posixpath.join(root, dataset, table))
        data = [path for path in listing if path.endswith(".parquet")]
        current = set(_newest_revisions(data))
        hidden = [p for p in listing if posixpath.basename(p).startswith(".")]
        for path in [*(p for p in data if p not in current), *hidden]:
            fs.rm(path)
            removed.append(path)
    return removed


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


# --- the erasures audit ----------------------------------------------------------------------


def erasures_schema() -> pa.Schema:
    """flagsmith_raw.erasures as parquet: the columns of the SQL warehouses' table."""
    return pa.schema(
        [
            pa.field("erased_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("identity_hmac", pa.string(), nullable=False),
            pa.field("environment_id", pa.int64()),
            pa.field("action", pa.string(), nullable=False),
            pa.field("node", pa.string()),
            pa.field("deliveries_removed", pa.int64()),
            pa.field("rows_removed", pa.int64()),
        ]
    )


def _erasures_folder(lake: str, dataset: str) -> tuple[Any, str]:
    fs, root = filesystem(lake)
    return fs, posixpath.join(root, dataset, ERASURES_TABLE)


def dataset_exists(lake: str, dataset: str) -> bool:
    fs, root = filesystem(lake)
    return bool(fs.isdir(posixpath.join(root, dataset)))


def ensure_erasures(lake: str, dataset: str) -> None:
    """Give the erasures table a file (`empty.parquet`, no row) if it has none, so Spark can
    read it before anything was erased. Nothing while the dataset has no folder yet."""
    if not dataset_exists(lake, dataset):
        return
    fs, folder = _erasures_folder(lake, dataset)
    if any(path.endswith(".parquet") for path in _listing(fs, folder)):
        return
    fs.makedirs(folder, exist_ok=True)
    _write_whole(fs, posixpath.join(folder, "empty.parquet"), erasures_schema().empty_table())


def write_erasure(lake: str, dataset: str, name: str, record: dict[str, object]) -> None:
    """Write one audit record as the file `<name>.parquet`, replacing a file of that name whole
    (`forget` records a pending erasure, then completes it under the same name)."""
    fs, folder = _erasures_folder(lake, dataset)
    fs.makedirs(folder, exist_ok=True)
    table = pa.Table.from_pylist([record], schema=erasures_schema())
    _write_whole(fs, posixpath.join(folder, f"{name}.parquet"), table)


def audit_name(record: dict[str, object]) -> str:
    """The file name (without `.parquet`) of an audit record in the lake: when, the hash's first
    16 digits, the scope and the action, so a listing reads in time order."""
    at = record["erased_at"]
    assert isinstance(at, datetime)
    scope = "all" if record["environment_id"] is None else f"env{record['environment_id']}"
    return (
        f"{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{str(record['identity_hmac'])[:16]}-{scope}-"
        f"{record['action']}"
    )


def _write_whole(fs, path: str, table: pa.Table) -> None:
    """Write `table` as the file `path`: under a hidden name first, then moved into place
    complete."""
    import pyarrow.parquet as pq

    hidden = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
    pq.write_table(table, hidden, filesystem=fs)
    fs.mv(hidden, path)


def read_erasures(lake: str, dataset: str) -> pa.Table:
    """Every audit record in the lake (none when the table has no file yet)."""
    import pyarrow.parquet as pq

    fs, folder = _erasures_folder(lake, dataset)
    files = [p for p in _listing(fs, folder) if p.endswith(".parquet")]
    if not files:
        return erasures_schema().empty_table()
    tables = [pq.read_table(path, filesystem=fs, schema=erasures_schema()) for path in files]
    return pa.concat_tables(tables)


# --- loads in progress -----------------------------------------------------------------------


@contextlib.contextmanager
def announce_load(lake: str, dataset: str, node: str) -> Iterator[None]:
    """A marker `_flagsmith_loading/<dataset>/<node>.json` while this node's loader loads.

    The loader writes it before it reads the erasures, and `forget` records its erasure before
    it looks at the markers: a load either sees the erasure, or `forget` waits for it
    (`wait_for_loads`). A marker a killed loader left is replaced by the node's next load."""
    fs, root = filesystem(lake)
    folder = posixpath.join(root, LOADING, dataset)
    fs.makedirs(folder, exist_ok=True)
    marker = posixpath.join(folder, f"{node}.json")
    token = uuid.uuid4().hex
    fs.pipe_file(marker, json.dumps({"node": node, "token": token}).encode("utf-8"))
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(fs.cat_file(marker)).get("token") == token:
                fs.rm(marker)


def loads_in_progress(lake: str, dataset: str) -> dict[str, bytes]:
    """The load markers now in the lake: path -> content."""
    fs, root = filesystem(lake)
    found = {}
    for path in _listing(fs, posixpath.join(root, LOADING, dataset)):
        with contextlib.suppress(FileNotFoundError):
            found[path] = fs.cat_file(path)
    return found


def wait_for_loads(
    lake: str, dataset: str, markers: dict[str, bytes], timeout: float, poll: float = 0.5
) -> None:
    """Wait until each of `markers` is gone or replaced (its load has ended, or its node has
    started another, which reads the erasures anew). Raises TimeoutError naming those left."""
    fs, _ = filesystem(lake)
    deadline = time.monotonic() + timeout
    waiting = dict(markers)
    while True:
        for path, content in list(waiting.items()):
            try:
                if fs.cat_file(path) != content:
                    del waiting[path]
            except FileNotFoundError:
                del waiting[path]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(", ".join(sorted(waiting)))
        time.sleep(poll)
