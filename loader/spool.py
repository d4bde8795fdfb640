"""The spool: where accepted deliveries wait, durably, for the loader.

Layout under the spool directory:

    open/      segments a receiver process is appending to (it holds an exclusive flock on each)
    ready/     sealed segments, complete and fsynced, waiting for the loader
    claimed/   segments the loader has taken; removed only after their load is committed
    corrupt/   byte ranges of a segment that failed their checksum, and records cut short by a
               writer's death, kept for an operator

A segment is a file of framed records. Each record is one delivery:

    b"FSW1" | length: u32 | crc32: u32 | meta_length: u32 | meta (JSON) | body (raw bytes)

`length` counts everything after the crc; the crc covers the same bytes. A process killed while
writing leaves at most one incomplete record at the end of its open segment; the reader leaves it
out of the load (it was never acknowledged: the receiver answers only after the record is fsynced)
and keeps its bytes in `corrupt/` as `*.cut-short.bin`, since a damaged last record looks the same.
A checksum failure in the middle of a file is corruption: the reader keeps those bytes in
`corrupt/`, finds the next frame and goes on, so one bad record never blocks the ones behind it.

Appends from many request threads share flushes (group commit): each thread writes its record
and then waits until some `fdatasync` that started after its write has finished. Under load one
flush makes a whole group of requests durable, which is what lets the receiver keep up.

An open segment grows ahead of its records in zero-filled, flushed steps of `PREALLOCATE_BYTES`,
and records are written into that space in place. A flush then only writes the new data: the file's
size and block map are already on disk, so `fdatasync` has no metadata to write (on the
journal-less ext4 this was measured on, an append cost each flush a synchronous inode write and
more CPU; see docs/performance.md). Sealing cuts the file back to its records. An open segment left
by a killed writer ends in zeros; the reader takes an all-zero tail as unused space, and a record
whose bytes run into that zero tail as one that was being written when the writer died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

MAGIC = b"FSW1"
_FRAME = struct.Struct(">4sII")  # magic, length, crc32
_META_LENGTH = struct.Struct(">I")
OPEN, READY, CLAIMED, CORRUPT = "open", "ready", "claimed", "corrupt"
SEGMENT_SUFFIX = ".seg"
UNSEALED_SUFFIX = ".unsealed.seg"  # a segment claimed from open/: its writer died before sealing

# A segment is sealed (handed to the loader) once it is this big or this old, whichever first.
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
DEFAULT_SEGMENT_SECONDS = 1.0
# An open segment is extended this much at a time, zero-filled and flushed (about 220 deliveries
# of 4.4 KB), so the flush that follows each group of records writes data only.
PREALLOCATE_BYTES = 1024 * 1024
_ZEROS = bytes(PREALLOCATE_BYTES)


class SpoolWriteError(OSError):
    """A delivery could not be made durable; the receiver must not acknowledge it."""


@dataclass(frozen=True)
class Delivery:
    """One accepted request, as stored: the body byte for byte, and what the receiver knew."""

    delivery_id: str
    received_at: datetime
    body: bytes
    environment_key: str | None = None
    signature_status: str = "verified"  # or "unsigned"
    secret_fingerprint: str | None = None  # which secret verified it (never the secret)
    kind: str = "identity"  # or "quarantine"
    reason: str | None = None  # why it is quarantined

    def encode(self) -> bytes:
        meta = orjson.dumps(
            {
                "delivery_id": self.delivery_id,
                "received_at": self.received_at.isoformat(),
                "environment_key": self.environment_key,
                "signature_status": self.signature_status,
                "secret_fingerprint": self.secret_fingerprint,
                "kind": self.kind,
                "reason": self.reason,
            }
        )
        rest = _META_LENGTH.pack(len(meta)) + meta + self.body
        return _FRAME.pack(MAGIC, len(rest), zlib.crc32(rest)) + rest

    @classmethod
    def decode(cls, rest: bytes | memoryview) -> Delivery:
        (meta_length,) = _META_LENGTH.unpack_from(rest)
        meta = orjson.loads(rest[4 : 4 + meta_length])
        return cls(
            delivery_id=meta["delivery_id"],
            received_at=datetime.fromisoformat(meta["received_at"]),
            body=bytes(rest[4 + meta_length :]),
            environment_key=meta.get("environment_key"),
            signature_status=meta.get("signature_status", "verified"),
            secret_fingerprint=meta.get("secret_fingerprint"),
            kind=meta.get("kind", "identity"),
            reason=meta.get("reason"),
        )


class _Entropy:
    """Random bytes from the OS, fetched 4 KB at a time.

    Each `getrandom` call lets go of the GIL, and under load every let-go costs thread switches;
    one call per 400 delivery ids instead of two per id. A forked child starts with an empty
    buffer, so two processes never hand out the same bytes.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()  # the parent's lock may have been held at the fork
        self._buffer, self._position = b"", 0

    def take(self, count: int) -> int:
        with self._lock:
            if self._position + count > len(self._buffer):
                self._buffer, self._position = os.urandom(self._size), 0
            start = self._position
            self._position += count
            return int.from_bytes(self._buffer[start : start + count], "big")


_entropy = _Entropy()


def new_delivery_id(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Sorting ids sorts deliveries by receipt time to the millisecond, which makes them a stable
    tie-breaker for deliveries of one identity received in the same microsecond.
    """
    milliseconds = int(now.timestamp() * 1000)
    random = _entropy.take(10)  # 80 bits: 12 for rand_a, 62 for rand_b, 6 unused
    value = (milliseconds & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (random >> 68) << 64
    value |= 0b10 << 62
    value |= random & ((1 << 62) - 1)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def ensure_layout(spool_dir: Path) -> None:
    for name in (OPEN, READY, CLAIMED, CORRUPT):
        (spool_dir / name).mkdir(parents=True, exist_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _OpenSegment:
    def __init__(self, directory: Path, name: str, fd: int) -> None:
        self.directory = directory
        self.name = name
        self.fd = fd
        self.created = time.monotonic()
        self.written = 0  # bytes of records (protected by the writer's append lock)
        self.allocated = 0  # zero-filled, flushed bytes reserved for records (same lock)
        self.synced = 0  # bytes of records known durable (protected by sync_lock)
        self.sync_lock = threading.Lock()
        self.closed = False
        self.broken = False

    @property
    def path(self) -> Path:
        return self.directory / OPEN / self.name


class SpoolWriter:
    """Appends deliveries to this process's open segment; one instance per process.

    `append` returns only when the record is on disk (fdatasync) and raises `SpoolWriteError`
    otherwise. A background thread seals segments that are old enough, so an idle receiver
    still hands its last deliveries to the loader within about `segment_seconds`.
    """

    def __init__(
        self,
        spool_dir: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self._lock = threading.Lock()
        self._segment: _OpenSegment | None = None
        self._pid = os.getpid()
        self._closing = threading.Event()
        self._sealer: threading.Thread | None = None

    # -- appending -------------------------------------------------------------------------

    def append(self, delivery: Delivery) -> None:
        record = delivery.encode()
        with self._lock:
            self._check_process()
            segment = self._segment
            if segment is None or segment.broken or segment.written >= self.segment_bytes:
                if segment is not None:
                    self._seal(segment)
                segment = self._segment = self._open_segment()
            start = segment.written
            end = start + len(record)
            try:
                if end > segment.allocated:
                    _preallocate(segment, end)
                _pwrite_all(segment.fd, record, start)
            except OSError as error:
                segment.broken = True
                _truncate_quietly(segment.fd, start)
                raise SpoolWriteError(
                    error.errno, f"spool write failed: {error.strerror}"
                ) from error
            segment.written = end
        self._sync(segment, end)

    def _sync(self, segment: _OpenSegment, target: int) -> None:
        with segment.sync_lock:
            if segment.synced >= target:
                return  # a flush that started after our write already covered it
            if segment.closed:
                raise SpoolWriteError(errno.EIO, "spool segment closed before its flush")
            if segment.broken:  # a flush failed after our write (see `_flush`)
                raise SpoolWriteError(errno.EIO, "an earlier flush of this spool segment failed")
            try:
                _flush(segment)
            except OSError as error:
                raise SpoolWriteError(
                    error.errno, f"spool flush failed: {error.strerror}"
                ) from error

    def _open_segment(self) -> _OpenSegment:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}{SEGMENT_SUFFIX}"
        open_dir = self.spool_dir / OPEN
        temporary = open_dir / f".{name}.tmp"
        try:
            open_dir.mkdir(parents=True, exist_ok=True)
            (self.spool_dir / READY).mkdir(exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as error:
            raise SpoolWriteError(
                error.errno, f"spool segment not created: {error.strerror}"
            ) from error
        try:
            # Lock before the segment gets its visible name: the loader takes an open segment only
            # when it can lock it, which proves the writer is gone.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, open_dir / name)
            _fsync_dir(open_dir)
        except OSError as error:
            os.close(fd)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise SpoolWriteError(
                error.errno, f"spool segment not created: {error.strerror}"
            ) from error
        self._start_sealer()
        return _OpenSegment(self.spool_dir, name, fd)

    # -- sealing ---------------------------------------------------------------------------

    def _seal(self, segment: _OpenSegment) -> None:
        """Flush, move to ready/, unlock. Called with the append lock held."""
        with segment.sync_lock:
            if segment.closed:
                return
            try:
                if segment.written:
                    os.ftruncate(segment.fd, segment.written)  # the unused preallocation
                    _flush(segment)
                    os.rename(segment.path, self.spool_dir / READY / segment.name)
                else:
                    os.unlink(segment.path)
            except OSError as error:
                # Left in open/: once this process lets go of the lock the loader takes it there.
                log.warning("spool segment %s not sealed: %s", segment.name, error)
            finally:
                segment.closed = True
                os.close(segment.fd)

    def seal_if_due(self) -> None:
        with self._lock:
            segment = self._segment
            if segment is None or os.getpid() != self._pid:
                return
            if segment.broken or time.monotonic() - segment.created >= self.segment_seconds:
                self._seal(segment)
                self._segment = None

    def close(self) -> None:
        """Seal what is open; called at graceful shutdown."""
        self._closing.set()
        with self._lock:
            if self._segment is not None and os.getpid() == self._pid:
                self._seal(self._segment)
            self._segment = None

    def _start_sealer(self) -> None:
        if self._sealer is not None and self._sealer.is_alive():
            return
        self._sealer = threading.Thread(target=self._seal_loop, name="spool-sealer", daemon=True)
        self._sealer.start()

    def _seal_loop(self) -> None:
        interval = max(self.segment_seconds / 4, 0.05)
        while not self._closing.wait(interval):
            try:
                self.seal_if_due()
            except Exception:  # the sealer must outlive any one bad moment
                log.exception("spool sealer failed")

    def _check_process(self) -> None:
        """After a fork the child must not touch the parent's segment."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._segment = None
            self._sealer = None
            self._closing = threading.Event()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _preallocate(segment: _OpenSegment, end: int) -> None:
    """Extend `segment` with flushed zeros to at least `end` bytes (append lock held).

    A full disk (or a file size limit) gets a second try with just the room `end` needs, so a
    delivery that fits is not refused for want of a whole step. The flush also covers records
    of threads still waiting in `_sync`, so it is made like theirs, under the sync lock.
    """
    needed = end - segment.allocated
    size = max(PREALLOCATE_BYTES, needed)
    try:
        _pwrite_all(
            segment.fd, _ZEROS if size == PREALLOCATE_BYTES else bytes(size), segment.allocated
        )
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or size == needed:
            raise
        os.ftruncate(segment.fd, segment.allocated)
        size = needed
        _pwrite_all(segment.fd, bytes(size), segment.allocated)
    with segment.sync_lock:
        _flush(segment)
    segment.allocated += size


def _flush(segment: _OpenSegment) -> None:
    """fdatasync `segment` (its sync lock held): every record written so far is then durable.

    `written` only grows and is read without the append lock, so the lock order stays one-way
    (append lock, then sync lock). A failure breaks the segment for good: Linux reports a
    writeback error to one fdatasync of a file only, so a later one could return 0 with records
    lost, and no record still waiting on this file may be acknowledged.
    """
    covered = segment.written
    try:
        os.fdatasync(segment.fd)
    except OSError:
        segment.broken = True
        raise
    segment.synced = covered


def _truncate_quietly(fd: int, length: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, length)


def is_writable(spool_dir: Path) -> bool:
    """Whether a new file can be created and flushed in the spool (for /readyz)."""
    probe = Path(spool_dir) / OPEN / f".ready-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
            os.fdatasync(fd)
        finally:
            os.close(fd)
            probe.unlink()
    except OSError:
        return False
    return True


# -- reading (the loader's side) ----------------------------------------------------------------


@dataclass
class SegmentReport:
    deliveries: int = 0
    torn_tail_bytes: int = 0
    corrupt_ranges: int = 0


def is_sealed(path: Path) -> bool:
    """Whether `path` is a segment its writer sealed (flushed whole and cut back to its records),
    as opposed to one it left open when it died (in open/, or claimed from there)."""
    return path.parent.name != OPEN and not path.name.endswith(UNSEALED_SUFFIX)


def read_segment(
    path: Path, corrupt_dir: Path | None = None
) -> tuple[list[Delivery], SegmentReport]:
    """Every whole, checksummed record of a segment, in order.

    A record whose checksum or metadata fails is saved to `corrupt_dir` and skipped. In a segment
    its writer left open (told from its path: `is_sealed`), an all-zero tail is the
    space reserved for records to come, and a last record cut short is one whose writer died
    before acknowledging it: it is left out of the load, and its bytes are kept in `corrupt_dir`
    too (`*.cut-short.bin`), since a damaged last record looks the same. A sealed segment holds
    whole records only, so anything else in it is corruption.
    """
    sealed = is_sealed(path)
    data = path.read_bytes()
    view = memoryview(data)  # records are sliced without copying; each body is copied once
    deliveries: list[Delivery] = []
    report = SegmentReport()
    position = 0
    size = len(data)
    bad_start: int | None = None

    def keep_aside(start: int, end: int, suffix: str = "") -> None:
        if corrupt_dir is not None:
            corrupt_dir.mkdir(parents=True, exist_ok=True)
            (corrupt_dir / f"{path.name}.{start}{suffix}.bin").write_bytes(data[start:end])

    def keep_corrupt(start: int, end: int) -> None:
        report.corrupt_ranges += 1
        log.warning(
            "spool segment %s: %d corrupt bytes at %d skipped", path.name, end - start, start
        )
        keep_aside(start, end)

    while position < size:
        if not sealed and _zeros_from(data, position):
            break  # the zero-filled space an open segment had reserved for records to come
        whole = False
        if size - position >= _FRAME.size:
            magic, length, crc = _FRAME.unpack_from(data, position)
            end = position + _FRAME.size + length
            whole = magic == MAGIC and length >= _META_LENGTH.size and end <= size
        if whole:
            rest = view[position + _FRAME.size : end]
            if zlib.crc32(rest) == crc:
                try:
                    delivery = Delivery.decode(rest)
                except (ValueError, KeyError, TypeError, struct.error):
                    delivery = None
                if delivery is not None:
                    if bad_start is not None:
                        keep_corrupt(bad_start, position)
                        bad_start = None
                    deliveries.append(delivery)
                    report.deliveries += 1
                    position = end
                    continue
        if not sealed and bad_start is None and _cut_short(data, position):
            # The last record was cut short: its writer died before it could be acknowledged.
            written = len(data.rstrip(b"\0"))  # up to the zeros of the preallocation, if any
            report.torn_tail_bytes = written - position
            log.warning(
                "spool segment %s: last record cut short (%d bytes at %d), its writer died"
                " before acknowledging it; left out of the load and kept in corrupt/",
                path.name,
                written - position,
                position,
            )
            keep_aside(position, written, ".cut-short")
            break
        if bad_start is None:
            bad_start = position
        following = data.find(MAGIC, position + 1)
        if following < 0:
            keep_corrupt(bad_start, size)
            bad_start = None
            break
        position = following
    if bad_start is not None:
        keep_corrupt(bad_start, size)
    return deliveries, report


def _cut_short(data: bytes, position: int) -> bool:
    """Whether the record at `position` is the last one, cut short because its writer died.

    Either the file ends inside it (a segment written by appending), or the record's own bytes
    run out into the zeros of the segment's preallocated space: its header is zeros after a
    piece of the magic, or its last byte and everything after it are zeros. A whole record that
    fails its checksum with something after it, or at the very end of a sealed (cut back)
    segment, is corruption and is kept instead.
    """
    size = len(data)
    if data.find(MAGIC, position + 1) >= 0:
        return False
    header = data[position : position + _FRAME.size]
    if len(header) < _FRAME.size:  # the file ends inside the header
        return header[: len(MAGIC)] == MAGIC[: len(header)]
    written = header.rstrip(b"\0")
    if len(written) < len(MAGIC):  # the zeros begin inside the magic
        return MAGIC.startswith(written) and _zeros_from(data, position + len(written))
    magic, length, _ = _FRAME.unpack_from(data, position)
    if magic != MAGIC:
        return False
    end = position + _FRAME.size + length
    if end > size:
        return True
    return end < size and data[end - 1] == 0 and _zeros_from(data, end)


def _zeros_from(data: bytes, start: int) -> bool:
    """Whether `data` holds only zero bytes from `start` to its end."""
    return data.count(0, start) == len(data) - start


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock on `path`, or None when its writer still holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class SpoolReader:
    """The loader's view: claim segments, read them, release them once loaded."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = Path(spool_dir)
        ensure_layout(self.spool_dir)

    def claimed(self) -> list[Path]:
        """Segments taken by an earlier load that did not finish; they are loaded again."""
        return sorted((self.spool_dir / CLAIMED).glob(f"*{SEGMENT_SUFFIX}"))

    def claim(self, limit: int | None = None) -> list[Path]:
        """Move waiting segments to claimed/ (oldest first) and return their new paths.

        Sealed segments come from ready/; an open segment is taken only when its writer is gone
        (its lock can be had), which is how a receiver killed mid-burst loses nothing it answered.
        """
        taken: list[Path] = []
        for path in sorted((self.spool_dir / READY).glob(f"*{SEGMENT_SUFFIX}")):
            if limit is not None and len(taken) >= limit:
                break
            target = self.spool_dir / CLAIMED / path.name
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, target)
                taken.append(target)
        for path in sorted((self.spool_dir / OPEN).glob(f"*{SEGMENT_SUFFIX}")):
            if limit is not None and len(taken) >= limit:
                break
            fd = _try_lock(path)
            if fd is None:
                continue
            try:
                target = (
                    self.spool_dir / CLAIMED / (path.name[: -len(SEGMENT_SUFFIX)] + UNSEALED_SUFFIX)
                )
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, target)
                    taken.append(target)
            finally:
                os.close(fd)
        self._remove_abandoned_temporaries()
        if taken:  # durable before any is read: the loader takes a claimed one as maybe loaded
            _fsync_dir(self.spool_dir / CLAIMED)
        return taken

    def _remove_abandoned_temporaries(self) -> None:
        for path in (self.spool_dir / OPEN).glob(".*.tmp"):
            fd = _try_lock(path)
            if fd is not None:
                try:
                    path.unlink(missing_ok=True)
                finally:
                    os.close(fd)

    def read(self, path: Path) -> tuple[list[Delivery], SegmentReport]:
        return read_segment(path, self.spool_dir / CORRUPT)

    def release(self, paths: list[Path]) -> None:
        """Forget segments whose deliveries are committed in the warehouse."""
        for path in paths:
            path.unlink(missing_ok=True)
        if paths:
            _fsync_dir(self.spool_dir / CLAIMED)

    def backlog(self) -> dict[str, int]:
        return backlog(self.spool_dir)


def backlog(spool_dir: Path) -> dict[str, int]:
    """Segments and bytes waiting, by state (for metrics and the progress line)."""
    result: dict[str, int] = {}
    for state in (OPEN, READY, CLAIMED):
        files = 0
        size = 0
        for path in (Path(spool_dir) / state).glob(f"*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                size += path.stat().st_size
                files += 1
        result[f"{state}_segments"] = files
        result[f"{state}_bytes"] = size
    return result


def iter_all_deliveries(spool_dir: Path) -> Iterator[Delivery]:
    """Every delivery in the spool, without claiming anything (for inspection and tests)."""
    for state in (CLAIMED, READY, OPEN):
        for path in sorted((Path(spool_dir) / state).glob(f"*{SEGMENT_SUFFIX}")):
            yield from read_segment(path)[0]


def first_received_at(path: Path) -> datetime | None:
    """The receipt time of a segment's first record, from its frame's metadata alone; None for
    a segment with no whole first record yet (just opened, or zero-filled ahead of its records)."""
    try:
        with open(path, "rb") as segment:
            header = segment.read(_FRAME.size + _META_LENGTH.size)
            if len(header) < _FRAME.size + _META_LENGTH.size:
                return None
            magic, _length, _crc = _FRAME.unpack_from(header)
            if magic != MAGIC:
                return None
            (meta_length,) = _META_LENGTH.unpack_from(header, _FRAME.size)
            meta = orjson.loads(segment.read(meta_length))
        return datetime.fromisoformat(meta["received_at"])
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def oldest_waiting(spool_dir: Path) -> datetime | None:
    """The receipt time of the oldest delivery waiting in the spool (open, ready or claimed)."""
    oldest = None
    for state in (OPEN, READY, CLAIMED):
        for path in (Path(spool_dir) / state).glob(f"*{SEGMENT_SUFFIX}"):
            at = first_received_at(path)
            if at is not None and (oldest is None or at < oldest):
                oldest = at
    return oldest


def corrupt_kept(spool_dir: Path) -> tuple[int, int]:
    """Files and bytes kept aside in corrupt/ for an operator."""
    files = size = 0
    for path in (Path(spool_dir) / CORRUPT).glob("*.bin"):
        with contextlib.suppress(FileNotFoundError):
            size += path.stat().st_size
            files += 1
    return files, size
