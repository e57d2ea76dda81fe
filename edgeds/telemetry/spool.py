"""The on-device telemetry spool: SQLite in WAL mode, bounded, at-least-once.

Contract:

* Every message is first appended here (:meth:`Spool.append`), which assigns it the next
  value of a **persisted monotonic sequence** (``seq``). The counter lives in the same
  database and is updated in the same transaction as the row, so a restart never reuses a
  seq that a committed row carries.
* A row leaves the spool only when the broker acknowledged it (:meth:`Spool.ack`) or when a
  bound drops it. Bounds: the sum of record sizes (``max_bytes``) and the age of a record
  (``max_age_s``). The oldest rows go first; every dropped row adds one to the persisted
  ``dropped_total``.
* Durability: WAL with ``synchronous=NORMAL`` — a committed append survives the process being
  killed (``kill -9``); an OS crash or power loss may lose the last few commits but never
  corrupts the database.
* One process owns a spool at a time (an ``flock`` on ``<path>.lock``, released by the kernel
  when the owner dies). Inside the process, one :class:`Spool` may be shared by threads: every
  method holds an internal lock for one short transaction.
* The database file does not shrink when rows are deleted; SQLite reuses the freed pages, so
  its size stays near ``max_bytes`` plus page overhead once the spool has been full. The WAL
  is checkpointed and truncated to ``journal_size_limit``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import TelemetryError

# Bytes a record costs beyond its topic and body (row header, index entry): an estimate used so
# that many tiny records still count against max_bytes.
RECORD_OVERHEAD = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq     INTEGER PRIMARY KEY,
    boot_id TEXT    NOT NULL,
    ts      REAL    NOT NULL,
    kind    TEXT    NOT NULL,
    topic   TEXT    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    body    BLOB    NOT NULL,
    size    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
"""


@dataclass(frozen=True)
class SpoolRecord:
    """One spooled message. ``topic`` is relative to ``<prefix>/<device>/``; ``body`` is the JSON
    payload (the envelope is added when it is sent, so depth and counters are current)."""

    seq: int
    boot_id: str
    ts: float
    kind: str
    topic: str
    qos: int
    retain: bool
    body: bytes


@dataclass(frozen=True)
class SpoolStats:
    depth: int
    bytes: int
    dropped_total: int
    next_seq: int


class Spool:
    """A bounded, persistent FIFO of messages keyed by a monotonic ``seq``.

    Lifecycle: ``Spool(path, ...)`` opens (creating) the database and takes the owner lock;
    :meth:`close` releases both. Use as a context manager. Raises :class:`TelemetryError`
    when the file cannot be opened or another process owns it.
    """

    def __init__(self, path: str | Path, max_bytes: int, max_age_s: float) -> None:
        if max_bytes < 1024:
            raise TelemetryError(f"spool max_bytes must be >= 1024, got {max_bytes}")
        if max_age_s <= 0:
            raise TelemetryError(f"spool max_age_s must be > 0, got {max_age_s}")
        self.path = Path(path).expanduser()
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        self._lockfile: IO[bytes] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lockfile = open(f"{self.path}.lock", "ab")  # noqa: SIM115 - held for the spool's life
        except OSError as exc:
            raise TelemetryError(f"cannot open telemetry spool {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lockfile.close()
            raise TelemetryError(f"telemetry spool {self.path} is in use by another process") from exc
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
            self._db.execute("PRAGMA cache_size=-2048")  # KiB: keep the page cache (and RSS) small
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped_total', 0)")
            row = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()
            self._bytes, self._depth = int(row[0]), int(row[1])
            self._dropped = self._meta("dropped_total")
            self._next_seq = max(self._meta("next_seq"), self._max_seq() + 1)
        except sqlite3.Error as exc:
            self._release_lock()
            raise TelemetryError(f"telemetry spool {self.path} is unusable: {exc}") from exc

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Checkpoint, close the database and release the owner lock. Idempotent."""
        with self._lock:
            if self._lockfile is None:
                return
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
            self._lockfile.close()
            self._lockfile = None

    # ------------------------------------------------------------------ writes

    def append(
        self,
        kind: str,
        topic: str,
        body: bytes,
        *,
        boot_id: str,
        qos: int = 1,
        retain: bool = False,
        ts: float | None = None,
    ) -> int:
        """Store one message and return its seq. Enforces the bounds (dropping the oldest).

        A record larger than ``max_bytes`` on its own is refused with :class:`TelemetryError`.
        """
        size = len(body) + len(topic) + len(kind) + RECORD_OVERHEAD
        if size > self.max_bytes:
            raise TelemetryError(f"telemetry message of {size} bytes exceeds the spool cap of {self.max_bytes}")
        now = time.time() if ts is None else ts
        with self._lock, self._transaction():
            seq = self._next_seq
            self._db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, boot_id, now, kind, topic, qos, int(retain), body, size),
            )
            self._next_seq = seq + 1
            self._bytes += size
            self._depth += 1
            self._set_meta("next_seq", self._next_seq)
            self._enforce_bounds(now)
            return seq

    def ack(self, seqs: list[int] | tuple[int, ...] | set[int]) -> int:
        """Remove delivered messages; returns how many were still present."""
        if not seqs:
            return 0
        removed = 0
        with self._lock, self._transaction():
            for seq in seqs:
                row = self._db.execute("DELETE FROM messages WHERE seq = ? RETURNING size", (seq,)).fetchone()
                if row is not None:
                    removed += 1
                    self._bytes -= int(row[0])
            self._depth -= removed
        return removed

    def expire(self, now: float | None = None) -> int:
        """Apply the age bound now (append also does); returns rows dropped."""
        with self._lock, self._transaction():
            before = self._dropped
            self._enforce_bounds(time.time() if now is None else now)
            return self._dropped - before

    # ------------------------------------------------------------------ reads

    def peek(self, after_seq: int = 0, limit: int = 100) -> list[SpoolRecord]:
        """Up to ``limit`` oldest records with ``seq > after_seq``, in seq order. Nothing is removed."""
        with self._lock:
            if self._lockfile is None:
                raise TelemetryError(f"telemetry spool {self.path} is closed")
            rows = self._db.execute(
                "SELECT seq, boot_id, ts, kind, topic, qos, retain, body FROM messages "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [
            SpoolRecord(int(r[0]), str(r[1]), float(r[2]), str(r[3]), str(r[4]), int(r[5]), bool(r[6]), bytes(r[7]))
            for r in rows
        ]

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def bytes(self) -> int:
        """Sum of record sizes (what ``max_bytes`` bounds), not the file size."""
        return self._bytes

    @property
    def dropped_total(self) -> int:
        return self._dropped

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned (0 when none)."""
        return self._next_seq - 1

    def stats(self) -> SpoolStats:
        return SpoolStats(self._depth, self._bytes, self._dropped, self._next_seq)

    def file_bytes(self) -> int:
        """Size on disk of the database plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._lockfile is None:
            raise TelemetryError(f"telemetry spool {self.path} is closed")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise TelemetryError(f"telemetry spool {self.path}: {exc}") from exc
        try:
            yield None
        except BaseException:
            self._db.execute("ROLLBACK")
            # The in-memory mirrors may now disagree with the database: reload them.
            row = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()
            self._bytes, self._depth = int(row[0]), int(row[1])
            self._dropped = self._meta("dropped_total")
            self._next_seq = max(self._meta("next_seq"), self._max_seq() + 1)
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise TelemetryError(f"telemetry spool {self.path}: {exc}") from exc

    def _enforce_bounds(self, now: float) -> None:
        dropped = 0
        cutoff = now - self.max_age_s
        rows = self._db.execute("DELETE FROM messages WHERE ts < ? RETURNING size", (cutoff,)).fetchall()
        if rows:
            dropped += len(rows)
            self._bytes -= sum(int(r[0]) for r in rows)
            self._depth -= len(rows)
        excess = self._bytes - self.max_bytes
        if excess > 0:
            victims: list[int] = []
            freed = 0
            cursor = self._db.execute("SELECT seq, size FROM messages ORDER BY seq")
            try:
                for seq, size in cursor:
                    victims.append(int(seq))
                    freed += int(size)
                    if freed >= excess:
                        break
            finally:
                cursor.close()
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(v,) for v in victims])
            dropped += len(victims)
            self._bytes -= freed
            self._depth -= len(victims)
        if dropped:
            self._dropped += dropped
            self._set_meta("dropped_total", self._dropped)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _max_seq(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()
        return int(row[0])
