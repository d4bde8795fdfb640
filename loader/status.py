"""`flagsmith-warehouse status`: what waits in the spool and how fresh the warehouse is.

Two sources. The spool is read directly (file names and the first frame of each segment, never
claiming anything), so the receiver and the loader can be running. The warehouse is queried for
its newest delivery in the raw tables and in the marts; a DuckDB file admits no second process
while a load or a transform holds it, so each load and transform also records what it did in a
small file of the node's state folder (beside the spool by default: `last-load.json`,
`last-transform.json`), and `status` falls back on those when the file is busy.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .config import Settings

STEPS = ("load", "transform")
DEFAULT_MAX_BACKLOG_AGE = timedelta(minutes=10)
DEFAULT_MAX_MARTS_LAG = timedelta(hours=1)


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


# --- recording ----------------------------------------------------------------------------------


def record_path(settings: Settings, step: str) -> Path:
    return settings.state_dir / f"last-{step}.json"


def read_record(settings: Settings, step: str) -> dict[str, Any] | None:
    """The recorded state of the last `step`, or None when none was recorded (or unreadable)."""
    try:
        record = json.loads(record_path(settings, step).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(settings: Settings, step: str, record: dict[str, Any]) -> None:
    """Atomically: `status` may read it at any moment."""
    path = record_path(settings, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, path)


@contextlib.contextmanager
def recorded_step(settings: Settings, step: str) -> Iterator[dict[str, Any]]:
    """Record that `step` runs, then how it ended, with the fields the caller adds to the dict
    it is given. The last finished run is kept under `previous` while one runs."""
    earlier = read_record(settings, step) or {}
    previous = earlier.get("previous") if earlier.get("result") == "running" else earlier
    record: dict[str, Any] = {
        "step": step,
        "result": "running",
        "started_at": _iso(_now()),
        "finished_at": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "previous": previous or None,
    }
    _write_record(settings, step, record)
    fields: dict[str, Any] = {}
    result = "success"
    error_text = None
    try:
        yield fields
    except KeyboardInterrupt:
        result = "interrupted"
        raise
    except BaseException as error:
        result = "failed"
        error_text = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise
    finally:
        record.update(fields)
        # a load knows the newest delivery it loaded; the raw tables' newest is the newest of all
        newest = [
            at
            for at in (
                _parse(fields.get("newest_received_at")),
                _parse((previous or {}).get("raw_newest_received_at")),
            )
            if at is not None
        ]
        if step == "load" and newest:
            record["raw_newest_received_at"] = _iso(max(newest))
        if result == "success" and fields.get("result"):
            result = fields["result"]
        record.update(result=result, finished_at=_iso(_now()), previous=None)
        if error_text:
            record["error"] = error_text
        with contextlib.suppress(OSError):
            _write_record(settings, step, record)


# --- the warehouse ------------------------------------------------------------------------------


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read now; the message says why."""

    def __init__(self, message: str, *, busy: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.busy = busy
        self.missing = missing


@dataclass
class WarehouseFigures:
    raw_newest_received_at: datetime | None = None
    marts_newest_received_at: datetime | None = None
    completed_loads: int = 0
    last_load_at: datetime | None = None
    marts_built: bool = False


_TABLES_SQL = (
    "select table_schema, table_name from information_schema.tables"
    " where (table_schema = {raw!r} and table_name in ('identity_webhooks', '_dlt_loads'))"
    " or (table_schema = {marts!r} and table_name = 'flagsmith__identities')"
)


def _query_figures(execute, schema: str) -> WarehouseFigures:
    """The figures through `execute(sql) -> rows`, on any warehouse with information_schema;
    the marts are in `schema`."""
    from .warehouses import DATASET

    present = {tuple(row) for row in execute(_TABLES_SQL.format(raw=DATASET, marts=schema))}
    figures = WarehouseFigures()
    if (DATASET, "identity_webhooks") in present:
        figures.raw_newest_received_at = execute(
            f"select max(received_at) from {DATASET}.identity_webhooks"
        )[0][0]
    if (DATASET, "_dlt_loads") in present:
        count, last = execute(
            f"select count(*), max(inserted_at) from {DATASET}._dlt_loads where status = 0"
        )[0]
        figures.completed_loads, figures.last_load_at = int(count), last
    if (schema, "flagsmith__identities") in present:
        figures.marts_built = True
        figures.marts_newest_received_at = execute(
            f"select max(last_seen_at) from {schema}.flagsmith__identities"
        )[0][0]
    return figures


def warehouse_figures(settings: Settings, *, take_lock: bool = True) -> WarehouseFigures:
    """Query the configured warehouse. On DuckDB the writer lock is taken without waiting (a
    reader would make a starting load or transform fail), so a busy file raises at once;
    `take_lock=False` is for a caller that holds the lock already."""
    if settings.warehouse == "duckdb":
        return _duckdb_figures(settings, take_lock)
    if settings.warehouse == "postgres":
        return _postgres_figures(settings.marts_schema)
    raise WarehouseUnavailable(
        f"status does not query a {settings.warehouse} warehouse (its metastore admits one "
        "process at a time); the figures are those the last load and transform recorded"
    )


def _duckdb_figures(settings: Settings, take_lock: bool) -> WarehouseFigures:
    import duckdb

    from .locks import LockBusy, exclusive, warehouse_writer_lock

    path = settings.duckdb_path
    if not path.exists():
        raise WarehouseUnavailable(
            f"the DuckDB file {path} does not exist: no load has run yet", missing=True
        )
    lock = (
        exclusive(warehouse_writer_lock(path), what="a load or transform", wait=False)
        if take_lock
        else contextlib.nullcontext()
    )
    try:
        with lock:
            try:
                connection = duckdb.connect(str(path), read_only=True)
            except duckdb.IOException as error:
                if "lock" in str(error).lower():
                    raise WarehouseUnavailable(f"another process holds {path}", busy=True) from None
                raise WarehouseUnavailable(f"cannot open {path}: {error}") from None
            except duckdb.Error as error:
                raise WarehouseUnavailable(f"cannot open {path}: {error}") from None
            with connection:
                try:
                    return _query_figures(
                        lambda sql: connection.execute(sql).fetchall(), settings.marts_schema
                    )
                except duckdb.Error as error:
                    raise WarehouseUnavailable(f"cannot read {path}: {error}") from None
    except LockBusy as busy:
        raise WarehouseUnavailable(str(busy), busy=True) from None


def _postgres_figures(marts_schema: str) -> WarehouseFigures:
    import psycopg2

    from .config import postgres_connection_parameters

    parameters = postgres_connection_parameters()
    where = f"{parameters['user']}@{parameters['host']}:{parameters['port']}/{parameters['dbname']}"
    try:
        connection = psycopg2.connect(**parameters, connect_timeout=5)
    except psycopg2.Error as error:
        reason = " ".join(str(error).split())
        raise WarehouseUnavailable(f"cannot connect to Postgres {where}: {reason}") from None
    try:
        with connection.cursor() as cursor:

            def execute(sql: str) -> list[tuple]:
                cursor.execute(sql)
                return cursor.fetchall()

            return _query_figures(execute, marts_schema)
    except psycopg2.Error as error:
        reason = " ".join(str(error).split())
        raise WarehouseUnavailable(f"cannot read Postgres {where}: {reason}") from None
    finally:
        connection.close()


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Status:
    checked_at: str
    warehouse: str
    spool_dir: str
    spool: dict[str, Any]
    last_load: dict[str, Any] | None
    last_transform: dict[str, Any] | None
    warehouse_state: str  # read | busy | missing | unreachable
    warehouse_detail: str | None
    figures_from: str | None  # warehouse | recorded | None
    raw_newest_received_at: str | None
    marts_newest_received_at: str | None
    marts_lag_seconds: float | None
    verdict: str
    exit_code: int
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def _pid_alive(record: dict[str, Any]) -> bool:
    if record.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: cannot tell, take its word
    try:
        os.kill(int(record.get("pid") or 0), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _with_liveness(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A `running` record whose process is gone ended without saying so: `interrupted`."""
    if record and record.get("result") == "running" and not _pid_alive(record):
        return {**record, "result": "interrupted (the process is gone)"}
    return record


def _finished(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last finished run: the record itself, or the one kept while another runs."""
    if record and record.get("result") == "running":
        return record.get("previous")
    return record


def _spool_state(spool_dir: Path, now: datetime) -> dict[str, Any]:
    from .spool import backlog, corrupt_kept, oldest_waiting

    waiting = backlog(spool_dir)
    oldest = oldest_waiting(spool_dir)
    files, size = corrupt_kept(spool_dir)
    return {
        "exists": spool_dir.is_dir(),
        "segments": {s: waiting[f"{s}_segments"] for s in ("open", "ready", "claimed")},
        "bytes": {s: waiting[f"{s}_bytes"] for s in ("open", "ready", "claimed")},
        "oldest_waiting_received_at": _iso(oldest),
        "oldest_waiting_age_seconds": (
            None if oldest is None else round((now - oldest).total_seconds(), 3)
        ),
        "corrupt_files": files,
        "corrupt_bytes": size,
    }


def check(
    settings: Settings,
    *,
    max_backlog_age: timedelta = DEFAULT_MAX_BACKLOG_AGE,
    max_marts_lag: timedelta = DEFAULT_MAX_MARTS_LAG,
    now: datetime | None = None,
) -> Status:
    """Everything `status` shows, and its verdict: exit 0 healthy, 1 a threshold passed or the
    last load or transform failed, 2 the warehouse cannot be read and nothing was recorded."""
    now = now or _now()
    spool = _spool_state(settings.spool_dir, now)
    last_load = _with_liveness(read_record(settings, "load"))
    last_transform = _with_liveness(read_record(settings, "transform"))

    raw_newest = marts_newest = None
    figures_from = None
    detail = None
    try:
        figures = warehouse_figures(settings)
        state, figures_from = "read", "warehouse"
        raw_newest = figures.raw_newest_received_at
        marts_newest = figures.marts_newest_received_at
    except WarehouseUnavailable as unavailable:
        detail = str(unavailable)
        state = "busy" if unavailable.busy else "missing" if unavailable.missing else "unreachable"
        if settings.warehouse == "spark":
            state = "not queried"
        if state in ("busy", "not queried"):
            load_record = _finished(last_load) or {}
            transform_record = _finished(last_transform) or {}
            raw_candidates = [
                at
                for at in (
                    _parse(record.get("raw_newest_received_at"))
                    for record in (load_record, transform_record)
                )
                if at is not None
            ]
            recorded_raw = max(raw_candidates) if raw_candidates else None
            recorded_marts = _parse(transform_record.get("marts_newest_received_at"))
            if recorded_raw or recorded_marts:
                raw_newest, marts_newest, figures_from = recorded_raw, recorded_marts, "recorded"

    problems: list[str] = []
    age = spool["oldest_waiting_age_seconds"]
    if age is not None and age > max_backlog_age.total_seconds():
        problems.append(
            f"the oldest delivery waiting in the spool was received {_duration(age)} ago "
            f"(threshold {_duration(max_backlog_age.total_seconds())})"
        )
    lag = None
    if raw_newest is not None:
        if marts_newest is None:
            problems.append("deliveries are loaded but the marts hold none: run `transform`")
        else:
            lag = max(0.0, (raw_newest - marts_newest).total_seconds())
            if lag > max_marts_lag.total_seconds():
                problems.append(
                    f"the marts lag the raw tables by {_duration(lag)} "
                    f"(threshold {_duration(max_marts_lag.total_seconds())})"
                )
    for step, record in (("load", last_load), ("transform", last_transform)):
        result = (_finished(record) or {}).get("result")
        if result and result not in ("success", "running"):
            problems.append(f"the last {step} did not succeed: {result}")

    if state in ("unreachable",) or (state in ("busy", "not queried") and figures_from is None):
        exit_code = 2
        verdict = f"cannot tell: {detail}"
    elif problems:
        exit_code = 1
        verdict = "unhealthy: " + "; ".join(problems)
    elif state == "missing" and age is None:
        exit_code = 0
        verdict = "healthy: nothing received yet"
    else:
        exit_code = 0
        verdict = "healthy"
        if figures_from == "recorded":
            verdict += f" (as last recorded: {detail})"
    return Status(
        checked_at=_iso(now) or "",
        warehouse=settings.warehouse,
        spool_dir=str(settings.spool_dir),
        spool=spool,
        last_load=last_load,
        last_transform=last_transform,
        warehouse_state=state,
        warehouse_detail=detail,
        figures_from=figures_from,
        raw_newest_received_at=_iso(raw_newest),
        marts_newest_received_at=_iso(marts_newest),
        marts_lag_seconds=lag,
        verdict=verdict,
        exit_code=exit_code,
        problems=problems,
    )


def _duration(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else ""]
    parts += [f"{minutes}m" if minutes else "", f"{secs}s" if secs or not whole else ""]
    return " ".join(part for part in parts if part)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} KB"


def _describe_step(record: dict[str, Any] | None, now: datetime) -> str:
    if not record:
        return "none recorded"
    if record.get("result") == "running":
        started = _parse(record.get("started_at"))
        since = f" for {_duration((now - started).total_seconds())}" if started else ""
        text = f"running{since} (pid {record.get('pid')})"
        previous = record.get("previous")
        return text + ("; before that: " + _describe_step(previous, now) if previous else "")
    finished = _parse(record.get("finished_at"))
    ago = f" ({_duration((now - finished).total_seconds())} ago)" if finished else ""
    text = f"{record.get('result')} at {record.get('finished_at')}{ago}"
    if record.get("step") == "load" and "deliveries" in record:
        text += (
            f", {record['deliveries']} deliveries ({record.get('identity_webhooks', 0)} identity"
            f" webhooks, {record.get('quarantined', 0)} quarantined)"
        )
    if record.get("error"):
        text += f": {record['error']}"
    return text


def render(status: Status) -> str:
    now = datetime.fromisoformat(status.checked_at)
    spool = status.spool
    segments = sum(spool["segments"].values())
    size = sum(spool["bytes"].values())
    by_state = ", ".join(f"{state} {count}" for state, count in spool["segments"].items())
    oldest = spool["oldest_waiting_received_at"]
    lines = [
        f"spool {status.spool_dir}" + ("" if spool["exists"] else " (not created yet)"),
        f"  waiting: {segments} segments, {_megabytes(size)} ({by_state})",
        "  oldest delivery waiting: "
        + (
            f"received {oldest} ({_duration(spool['oldest_waiting_age_seconds'])} ago)"
            if oldest
            else "none"
        ),
        f"  corrupt records kept: {spool['corrupt_files']} files, "
        f"{_megabytes(spool['corrupt_bytes'])}",
        f"last load: {_describe_step(status.last_load, now)}",
        f"last transform: {_describe_step(status.last_transform, now)}",
        f"warehouse ({status.warehouse}): {status.warehouse_state}"
        + (f": {status.warehouse_detail}" if status.warehouse_detail else ""),
    ]
    source = (
        " (as recorded by the last load and transform)" if status.figures_from == "recorded" else ""
    )
    lines += [
        f"newest delivery in the raw tables: {status.raw_newest_received_at or 'none'}{source}",
        f"newest delivery in the marts: {status.marts_newest_received_at or 'none'}"
        + (
            f" (lag {_duration(status.marts_lag_seconds)})"
            if status.marts_lag_seconds is not None
            else ""
        ),
        f"verdict: {status.verdict}",
    ]
    return "\n".join(lines)
