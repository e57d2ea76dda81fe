"""The local record of every decision: an append-only JSONL ledger and the rejected-frame images.

Ledger (:class:`Ledger`), one per station, in ``<dir>/<station>.jsonl``:

* **Writes.** One ``os.write`` of one whole line per record on an ``O_APPEND`` descriptor, so a
  crash can at worst tear the last line. On open, a torn last line (no trailing newline) is cut
  off and counted (``torn_repaired``); readers skip lines that do not parse.
* **fsync policy** (``fsync``): ``"interval"`` (default): a syncer thread fsyncs every
  ``fsync_interval_s`` (1 s) when there is something new, and *at once* when a durable record
  (reject, alarm, source event: what a person must find after a power cut) was written — group
  commit: one fsync covers every record written before it, and the station never waits for the
  disk. A power cut loses at most the last second of accepted frames and the last few
  milliseconds (one fsync) of rejects. ``"always"`` fsyncs every write before returning;
  ``"never"`` leaves it to the OS (tests, tmpfs). Rotation and :meth:`Ledger.close` always
  fsync the file and its directory.
* **Rotation and bound.** When the active file reaches ``max_file_bytes`` it is fsynced and
  renamed to ``<station>.<n>.jsonl`` (``n`` increasing); then, while all of the station's
  files exceed ``max_total_bytes``, the oldest rotated file is deleted and counted
  (``evicted_files``, ``evicted_bytes``). The newest records are never the ones evicted.

Rejected frames (:class:`RejectStore`) are saved as JPEG (quality 95; ~8 KB for a 160x160
frame, so ten times more evidence fits the budget, and ~0.1 ms to encode) or lossless PNG (~1.6
ms, ~50 KB), ``<ms>-<station>-<frame>-<class>.jpg``, by a writer thread (temp name, then rename), within
``budget_bytes``: the oldest images are deleted first to make room (``evicted``). Images are
evidence, best effort: not fsynced, skipped (and counted) when the writer falls behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InspectionError

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class LedgerStats:
    records: int = 0
    bytes_written: int = 0
    fsyncs: int = 0
    rotations: int = 0
    evicted_files: int = 0
    evicted_bytes: int = 0
    torn_repaired: int = 0
    write_errors: int = 0


class Ledger:
    """Append-only JSONL ledger of one station (see the module docstring). Thread-safe."""

    def __init__(
        self,
        directory: str | Path,
        station: str,
        *,
        max_file_bytes: int = 8 * 1024 * 1024,
        max_total_bytes: int = 256 * 1024 * 1024,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
    ) -> None:
        if max_file_bytes < 1024 or max_total_bytes < max_file_bytes:
            raise InspectionError("ledger bounds: need max_file_bytes >= 1024 and max_total_bytes >= max_file_bytes")
        self.directory = Path(directory)
        self.station = station
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.fsync_policy: FsyncPolicy = fsync
        self.fsync_interval_s = fsync_interval_s
        self.stats = LedgerStats()
        self._lock = threading.Lock()
        self._pattern = re.compile(rf"^{re.escape(station)}\.(\d+)\.jsonl$")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = self._open_active()
        except OSError as exc:
            raise InspectionError(f"cannot open the ledger in {self.directory}: {exc}") from exc
        self._size = os.fstat(self._fd).st_size
        self._dirty = False
        self._closed = False
        self._cond = threading.Condition(self._lock)
        self._written = 0  # records written to the file
        self._synced = 0  # records known to be on disk
        self._want_sync = False
        self._sync_busy = False
        self._syncer: threading.Thread | None = None
        if fsync == "interval":
            self._syncer = threading.Thread(target=self._sync_loop, name=f"ledger-{station}", daemon=True)
            self._syncer.start()

    @property
    def path(self) -> Path:
        """The active file."""
        return self.directory / f"{self.station}.jsonl"

    def rotated(self) -> list[Path]:
        """Rotated files, oldest first."""
        found = []
        for entry in self.directory.iterdir():
            match = self._pattern.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return [path for _, path in sorted(found)]

    def files(self) -> list[Path]:
        """Every file of this station's ledger, oldest first."""
        return [*self.rotated(), self.path]

    def _open_active(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                if cut < 0 and size > len(tail):
                    os.write(fd, b"\n")  # no line start in reach: terminate the torn line instead
                else:
                    os.ftruncate(fd, size - len(tail) + cut + 1)
                os.fsync(fd)
                self.stats.torn_repaired += 1
                log.warning("ledger %s: repaired a torn last record", self.path)
        _fsync_dir(self.directory)
        return fd

    def append(self, record: Mapping[str, Any], durable: bool = False) -> None:
        """Append one record; see :meth:`append_many`."""
        self.append_many((record,), durable)

    def append_many(self, records: Sequence[Mapping[str, Any]], durable: bool = False) -> None:
        """Append records (one JSON line each) with one write. ``durable`` asks for an fsync now.

        Under ``interval`` the fsync runs on the ledger's syncer thread, so a station never
        waits for the disk (:meth:`wait_durable` waits for it); under ``always`` it runs here.
        A write error (disk full) is logged and counted (``write_errors``) after one attempt to
        make room by evicting the oldest rotated file; it never raises into the inspection loop.
        Raises :class:`InspectionError` only after :meth:`close`.
        """
        if not records:
            return
        data = b"".join((json.dumps(r, separators=(",", ":"), default=_json_default) + "\n").encode() for r in records)
        with self._cond:
            if self._closed:
                raise InspectionError("ledger is closed")
            try:
                if self._fd < 0:  # a failed rotation left no active file: try again
                    self._fd = self._open_active()
                    self._size = os.fstat(self._fd).st_size
                self._append(data)
            except OSError as exc:
                self.stats.write_errors += 1
                log.error("ledger %s: write failed: %s", self.path, exc)
                return
            self.stats.records += len(records)
            self._written += len(records)
            try:
                if self.fsync_policy == "always":
                    self._sync_locked()
                elif self.fsync_policy == "interval" and durable:
                    self._want_sync = True
                    self._cond.notify_all()
                if self._size >= self.max_file_bytes:
                    self._rotate()
            except OSError as exc:
                self.stats.write_errors += 1
                log.error("ledger %s: fsync or rotation failed: %s", self.path, exc)

    def _sync_loop(self) -> None:
        """``interval`` policy: fsync when asked (durable records) or every ``fsync_interval_s``."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._want_sync or self._closed, self.fsync_interval_s)
                self._want_sync = False
                if self._closed:
                    return
                if self._fd < 0 or not self._dirty:
                    self._synced = self._written
                    self._cond.notify_all()
                    continue
                fd, target = self._fd, self._written
                self._dirty = False
                self._sync_busy = True
            ok = False
            try:
                os.fsync(fd)  # outside the lock: appends go on meanwhile
                ok = True
            except OSError as exc:
                log.error("ledger %s: fsync failed: %s", self.path, exc)
            with self._cond:
                self._sync_busy = False
                if ok:
                    self.stats.fsyncs += 1
                    self._synced = max(self._synced, target)
                else:
                    self.stats.write_errors += 1
                    self._dirty = True
                self._cond.notify_all()

    def _sync_locked(self) -> None:
        self._cond.wait_for(lambda: not self._sync_busy)
        if self._dirty and self._fd >= 0:
            os.fsync(self._fd)
            self.stats.fsyncs += 1
            self._dirty = False
        self._synced = self._written

    def wait_durable(self, timeout: float | None = 10.0) -> bool:
        """Wait until every record appended so far is fsynced (``never``: returns True at once)."""
        with self._cond:
            if self.fsync_policy != "interval":
                return True
            target = self._written
            self._want_sync = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._synced >= target or self._closed, timeout)

    def _append(self, data: bytes) -> None:
        """Write one line; on failure cut what was written (no torn line) and retry once after
        evicting the oldest rotated file (the disk may be full)."""
        for attempt in (0, 1):
            start = self._size
            try:
                self._write(data)
                self._dirty = True
                return
            except OSError:
                if self._size != start:
                    os.ftruncate(self._fd, start)
                    self.stats.bytes_written -= self._size - start
                    self._size = start
                if attempt == 1 or not self._evict_oldest():
                    raise

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written
            self.stats.bytes_written += written

    def flush(self) -> None:
        """fsync now, here, whatever the policy."""
        with self._cond:
            if self._fd >= 0:
                self._dirty = True
                try:
                    self._sync_locked()
                except OSError as exc:
                    self.stats.write_errors += 1
                    log.error("ledger %s: fsync failed: %s", self.path, exc)

    def _rotate(self) -> None:
        self._cond.wait_for(lambda: not self._sync_busy)  # the syncer must not hold the old fd
        os.fsync(self._fd)
        self._synced = self._written
        os.close(self._fd)
        self._fd = -1
        existing = self.rotated()
        last = int(self._pattern.match(existing[-1].name).group(1)) if existing else 0  # type: ignore[union-attr]
        os.replace(self.path, self.directory / f"{self.station}.{last + 1:06d}.jsonl")
        self._fd = self._open_active()
        self._size = 0
        self._dirty = False
        self.stats.rotations += 1
        total = sum(p.stat().st_size for p in self.rotated())
        while total > self.max_total_bytes - self.max_file_bytes:
            freed = self._evict_oldest()
            if not freed:
                break
            total -= freed

    def _evict_oldest(self) -> int:
        rotated = self.rotated()
        if not rotated:
            return 0
        oldest = rotated[0]
        size = oldest.stat().st_size
        oldest.unlink()
        self.stats.evicted_files += 1
        self.stats.evicted_bytes += size
        log.warning(
            "ledger %s: over its %d-byte bound, deleted the oldest file %s",
            self.path,
            self.max_total_bytes,
            oldest.name,
        )
        return size

    def close(self) -> None:
        """fsync and close. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._sync_busy)
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
                self._synced = self._written
                _fsync_dir(self.directory)
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join(10.0)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_ledger(directory: str | Path, station: str) -> Iterator[dict[str, Any]]:
    """Every parseable record of a station's ledger, oldest first (torn lines skipped)."""
    directory = Path(directory)
    pattern = re.compile(rf"^{re.escape(station)}\.(\d+)\.jsonl$")
    rotated = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := pattern.match(p.name)))
    for path in [*(p for _, p in rotated), directory / f"{station}.jsonl"]:
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class RejectStore:
    """Rejected frames as image files within a disk budget (oldest deleted first).

    :meth:`save` copies the frame into a pooled buffer and returns the file name at once; a
    writer thread encodes (PNG, compression 1, or JPEG quality 95) and writes it (temp name,
    then rename), so encoding never stalls the station's thread. The writer runs at nice +10
    (Linux), so it takes idle CPU, not the engine's. When ``max_pending`` images wait already,
    the image is skipped and counted (``skipped``): evidence is best effort, the ledger record
    is what must not be lost. :meth:`close` writes what is pending.
    """

    def __init__(
        self,
        directory: str | Path,
        budget_bytes: int = 512 * 1024 * 1024,
        *,
        image_format: Literal["png", "jpg"] = "jpg",
        max_pending: int = 32,
    ) -> None:
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self.image_format = image_format
        self.max_pending = max_pending
        self.saved = 0
        self.evicted = 0
        self.skipped = 0
        self.failed = 0
        self._cond = threading.Condition()
        self._pending: deque[tuple[str, np.ndarray]] = deque()
        self._buffers: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._reserved = 0  # buffers being filled outside the lock
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InspectionError(f"cannot create {self.directory}: {exc}") from exc
        self._files: deque[tuple[Path, int]] = deque(
            (p, p.stat().st_size) for p in sorted(self.directory.iterdir()) if p.suffix in (".png", ".jpg")
        )
        self.total_bytes = sum(size for _, size in self._files)
        self._dir = str(self.directory)
        self._encode = _encoder(image_format)
        self._thread = threading.Thread(target=self._run, name="inspect-rejects", daemon=True)
        self._thread.start()

    def save(self, image: np.ndarray, station: str, frame_id: int, label: str) -> str | None:
        """Queue RGB uint8 ``image`` for writing; its file name, or None when skipped.

        The store keeps a BGR copy (what the encoder takes): a frame that is a reversed view of
        a BGR buffer (what OpenCV sources yield) is copied with one memcpy.
        """
        name = f"{int(time.time() * 1000):013d}-{station}-{frame_id:08d}-{label}.{self.image_format}"
        with self._cond:
            if self._closed or len(self._pending) >= self.max_pending:
                self.skipped += 1
                return None
            free = self._buffers.get(image.shape)
            buffer = free.pop() if free else np.empty(image.shape, dtype=np.uint8)
            self._reserved += 1
        bgr = image[..., ::-1]
        np.copyto(buffer, bgr)  # contiguous when image is a reversed BGR buffer: a plain memcpy
        with self._cond:
            self._reserved -= 1
            self._pending.append((name, buffer))
            self._cond.notify_all()
        return name

    def _run(self) -> None:
        # evidence takes idle CPU only: below the engine and the stations (Linux: per-thread nice)
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending:
                    if self._reserved:  # closing while a save() is copying: let it finish
                        self._cond.wait_for(lambda: bool(self._pending) or not self._reserved, 1.0)
                        continue
                    return
                name, buffer = self._pending[0]
            self._write(name, buffer)
            with self._cond:
                self._pending.popleft()
                self._buffers.setdefault(buffer.shape, []).append(buffer)
                self._cond.notify_all()

    def _write(self, name: str, image: np.ndarray) -> None:
        try:
            data = self._encode(image)
        except Exception as exc:  # an encoder failure must not stop inspection: counted in ``failed``
            log.error("cannot encode rejected frame %s: %s", name, exc, exc_info=True)
            self.failed += 1
            return
        if len(data) > self.budget_bytes:
            self.skipped += 1
            return
        while self._files and self.total_bytes + len(data) > self.budget_bytes:
            old, size = self._files.popleft()
            with contextlib.suppress(OSError):
                old.unlink()
            self.total_bytes -= size
            self.evicted += 1
        path = os.path.join(self._dir, name)
        tmp = os.path.join(self._dir, f".{name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("cannot save rejected frame %s: %s", path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.failed += 1
            return
        self._files.append((Path(path), len(data)))
        self.total_bytes += len(data)
        self.saved += 1

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every queued image is written. False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        """Write what is pending, stop the writer. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(60.0)


def _encoder(image_format: Literal["png", "jpg"]) -> Any:
    """BGR uint8 -> PNG (compression 1) or JPEG (quality 95) bytes: OpenCV when installed, else Pillow."""
    cv2: Any
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        ext = ".png" if image_format == "png" else ".jpg"
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if image_format == "png" else [cv2.IMWRITE_JPEG_QUALITY, 95]

        def encode_cv2(bgr: np.ndarray) -> bytes:
            ok, buf = cv2.imencode(ext, bgr, params)
            if not ok:
                raise ValueError("cv2.imencode failed")
            return bytes(buf)

        return encode_cv2

    import io

    from PIL import Image

    def encode_pil(bgr: np.ndarray) -> bytes:
        out = io.BytesIO()
        rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
        if image_format == "png":
            rgb.save(out, format="PNG", compress_level=1)
        else:
            rgb.save(out, format="JPEG", quality=95)
        return out.getvalue()

    return encode_pil
