"""Advisory locks that keep writers apart.

DuckDB allows one writing process per file and dlt one process per pipeline, so the loader and
dbt take turns through these locks instead of failing on `Could not set lock on file`. The file
locks are flock(2) locks: the kernel drops them when the holder dies, even on kill -9. On
Postgres, where several nodes write into one database, the locks that must span nodes are the
server's advisory locks, which the server drops when the holder's connection ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class LockBusy(RuntimeError):
    """Another process holds the lock and the caller chose not to wait."""


@contextlib.contextmanager
def exclusive(
    path: Path, *, what: str, wait: bool = True, timeout: float | None = None
) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise LockBusy(f"{what} is already running{holder} (lock {path})") from None
            print(
                f"waiting for {what} to finish{holder} (lock {path})", file=sys.stderr, flush=True
            )
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise LockBusy(
                            f"gave up waiting for {what}{holder} (lock {path})"
                        ) from None
                    time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" in process {pid}" if pid.isdigit() else ""


def warehouse_writer_lock(duckdb_path: Path) -> Path:
    """The lock every writer of one DuckDB file takes: the loader and dbt."""
    return Path(f"{duckdb_path}.writer.lock")


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock from a lock's name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def postgres_advisory_lock(
    name: str, *, what: str, environ=None, shared: bool = False
) -> Iterator[None]:
    """A session-level advisory lock in the Postgres warehouse, waited for.

    Advisory locks are per database, so the loaders and transforms of every node that writes
    into one database see each other's. The lock is held by its own connection and released
    when it closes, or by the server when the holder dies (kill -9 included). `shared`: any
    number of holders at once, none while the lock is held exclusively.
    """
    import psycopg2

    from .config import postgres_connection_parameters

    connection = psycopg2.connect(**postgres_connection_parameters(environ))
    try:
        connection.autocommit = True
        key = _advisory_key(name)
        with connection.cursor() as cursor:
            mode = "_shared" if shared else ""
            cursor.execute(f"select pg_try_advisory_lock{mode}(%s)", (key,))
            if not cursor.fetchone()[0]:
                print(
                    f"waiting for {what} to finish (Postgres advisory lock {name})",
                    file=sys.stderr,
                    flush=True,
                )
                cursor.execute(f"select pg_advisory_lock{mode}(%s)", (key,))
        yield
    finally:
        connection.close()
