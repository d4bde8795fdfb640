"""Advisory file locks that keep writers apart.

DuckDB allows one writing process per file and dlt one process per pipeline, so the loader and
dbt take turns through these locks instead of failing on `Could not set lock on file`. The locks
are flock(2) locks: the kernel drops them when the holder dies, even on kill -9.
"""

from __future__ import annotations

import contextlib
import fcntl
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
