"""Frame sources: a directory of images, a video file, a camera (V4L2), an RTSP/HTTP stream.

:func:`open_source` picks the kind from the spec: digits or ``/dev/video*`` -> camera; a
``rtsp://``, ``rtsps://``, ``http(s)://`` URL -> stream; an existing directory -> images (read
with Pillow, so it works without OpenCV); an existing file -> video (OpenCV's FFmpeg backend).
OpenCV (``opencv-python-headless``, the ``inspection`` extra) is imported only here and in
:mod:`edgeds.inspection.video`, lazily.

Contract of :meth:`FrameSource.frames`: a generator of good :class:`Frame` s, ending when the
source is exhausted, gives up, or ``stop`` is set. A frame that cannot be decoded is *counted*
(``stats.corrupt``), logged, reported as a ``corrupt`` :class:`SourceEvent` and skipped; its
frame id is consumed, so ids keep matching positions in the source. Never fatal.

Live sources (camera, stream) that stop delivering (``max_read_failures`` failed reads in a
row, or open failing) are released and reopened with exponential back-off
(``backoff_s`` doubling up to ``max_backoff_s``), reporting ``disconnected``, ``retry`` and
``reconnected`` events; after ``max_retries`` failed opens in a row (None = forever) they report
``gave_up`` and end. A video file is not retried: failures before its known frame count are
corrupt frames; missing frames at its end (a truncated file) are counted as corrupt too.

Buffers: OpenCV sources decode into pooled frame buffers (``cap.read(buf)``), so a steady
stream allocates nothing per frame. A frame holds its buffer until :meth:`Frame.release`; the
pipeline releases it after the decision (or when the frame is dropped). ``Frame.image`` is an
RGB view (OpenCV's BGR buffer viewed reversed, no copy).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import BackendUnavailable, ConfigError, InspectionError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SourceKind = Literal["directory", "video", "camera", "stream"]
EventKind = Literal["opened", "corrupt", "disconnected", "retry", "reconnected", "gave_up", "end"]
_STREAM_URL = re.compile(r"^(rtsps?|rtmp|https?|udp|tcp)://", re.IGNORECASE)


def cv2_module() -> Any:
    """``cv2``, or :class:`BackendUnavailable` with the install hint."""
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailable("opencv", str(exc), "pip install 'edgeds[inspection]'") from exc
    if "OPENCV_LOG_LEVEL" not in os.environ:  # our own log reports failed opens and reads, once
        with contextlib.suppress(AttributeError):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2


@dataclass(frozen=True)
class SourceEvent:
    """Something the source wants reported (telemetry, ledger, log)."""

    kind: EventKind
    source: str
    frame_id: int | None = None
    detail: str = ""
    retry_in_s: float | None = None


@dataclass
class SourceStats:
    """Counters of one source. Written by the reader thread; read anywhere (ints, no lock)."""

    frames: int = 0
    corrupt: int = 0
    disconnects: int = 0
    reconnects: int = 0
    failed_opens: int = 0
    connected: bool = False
    gave_up: bool = False
    last_error: str | None = None


class FramePool:
    """Free lists of uint8 ``[H, W, 3]`` buffers by shape; thread-safe."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.allocated = 0

    def acquire(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            free = self._free.get(shape)
            if free:
                return free.pop()
            self.allocated += 1
        return np.empty(shape, dtype=np.uint8)

    def give(self, buffer: np.ndarray) -> None:
        with self._lock:
            self._free.setdefault(buffer.shape, []).append(buffer)


@dataclass(eq=False)
class Frame:
    """One decoded frame. ``image`` is RGB uint8 ``[H, W, 3]`` (possibly a view of a pooled buffer).

    ``timestamp`` is wall-clock seconds (``time.time()``) at capture, ``captured_ns`` the
    ``time.monotonic_ns()`` at capture (latency is measured from it). ``label`` is the ground
    truth when the source knows it (an image file named ``<label>_<n>.png``).
    """

    frame_id: int
    timestamp: float
    captured_ns: int
    image: np.ndarray
    origin: str
    label: str | None = None
    _buffer: np.ndarray | None = field(default=None, repr=False)
    _pool: FramePool | None = field(default=None, repr=False)

    def release(self) -> None:
        """Return the pooled buffer (idempotent). ``image`` must not be used afterwards."""
        buffer, pool = self._buffer, self._pool
        self._buffer = None
        if buffer is not None and pool is not None:
            pool.give(buffer)


EventCallback = Callable[[SourceEvent], None]


class FrameSource(abc.ABC):
    """Base of every source; see the module docstring for the contract."""

    kind: ClassVar[SourceKind]
    live: ClassVar[bool] = False

    def __init__(self, spec: str, *, fps: float | None = None, on_event: EventCallback | None = None) -> None:
        self.spec = spec
        self.fps = fps
        self.stats = SourceStats()
        self.pool = FramePool()
        self._on_event = on_event
        self._next_due: float | None = None

    @property
    def name(self) -> str:
        return self.spec

    def on_event(self, callback: EventCallback | None) -> None:
        self._on_event = callback

    def _emit(self, event: SourceEvent) -> None:
        if event.kind in ("corrupt", "disconnected", "gave_up", "retry"):
            log.warning("source %s: %s %s %s", self.spec, event.kind, event.frame_id or "", event.detail)
        else:
            log.info("source %s: %s %s", self.spec, event.kind, event.detail)
        if self._on_event is not None:
            self._on_event(event)

    def _corrupt(self, frame_id: int, detail: str) -> None:
        self.stats.corrupt += 1
        self.stats.last_error = detail
        self._emit(SourceEvent("corrupt", self.spec, frame_id, detail))

    def _pace(self, stop: threading.Event) -> None:
        """Hold frames to ``fps`` (a file played back as a camera would deliver it)."""
        if not self.fps:
            return
        now = time.monotonic()
        if self._next_due is None or self._next_due < now - 1.0:
            self._next_due = now
        delay = self._next_due - now
        if delay > 0:
            stop.wait(delay)
        self._next_due += 1.0 / self.fps

    @abc.abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Good frames until the end, give-up or ``stop``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device or file. Idempotent."""


class DirectorySource(FrameSource):
    """Image files of a directory in name order, decoded with Pillow."""

    kind = "directory"

    def __init__(
        self, spec: str, *, fps: float | None = None, on_event: EventCallback | None = None, loop: bool = False
    ) -> None:
        super().__init__(spec, fps=fps, on_event=on_event)
        self.path = Path(spec)
        self.loop = loop
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise InspectionError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.path}")

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        from PIL import Image, UnidentifiedImageError

        frame_id = 0
        self.stats.connected = True
        while not stop.is_set():
            for path in self.files:
                if stop.is_set():
                    break
                self._pace(stop)
                try:
                    with Image.open(path) as img:
                        img.load()
                        image = np.asarray(img.convert("RGB"))
                except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                    self._corrupt(frame_id, f"{path.name}: {exc}")
                    frame_id += 1
                    continue
                now_ns = time.monotonic_ns()
                self.stats.frames += 1
                label = path.stem.rsplit("_", 1)[0] if "_" in path.stem else None
                yield Frame(frame_id, time.time(), now_ns, image, path.name, label)
                frame_id += 1
            if not self.loop:
                break
        self.stats.connected = False
        self._emit(SourceEvent("end", self.spec, frame_id))


class _CaptureSource(FrameSource):
    """Shared OpenCV reading: pooled buffers, BGR->RGB views."""

    api_name: ClassVar[str] = "CAP_FFMPEG"

    def __init__(
        self,
        spec: str,
        *,
        fps: float | None = None,
        on_event: EventCallback | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(spec, fps=fps, on_event=on_event)
        self._cv2 = cv2_module()
        self._cap: Any = None
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._shape: tuple[int, ...] | None = None

    def _target(self) -> str | int:
        return self.spec

    def _params(self) -> list[int]:
        """Open parameters: FFmpeg's open/read timeouts (V4L2 has its own select() timeout)."""
        cv2 = self._cv2
        return [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout_s * 1000),
        ]

    def _open(self) -> bool:
        cv2 = self._cv2
        try:
            cap = cv2.VideoCapture(self._target(), getattr(cv2, self.api_name), self._params())
        except cv2.error as exc:
            self.stats.last_error = str(exc)
            return False
        if not cap.isOpened():
            cap.release()
            self.stats.last_error = f"cannot open {self.spec}"
            return False
        self._cap = cap
        self.stats.connected = True
        return True

    def _release_cap(self) -> None:
        cap, self._cap = self._cap, None
        self.stats.connected = False
        if cap is not None:
            cap.release()

    def _read(self, frame_id: int) -> Frame | None:
        """One frame into a pooled buffer, or None when the read failed."""
        buffer = self.pool.acquire(self._shape) if self._shape is not None else None
        try:
            ok, image = self._cap.read(buffer) if buffer is not None else self._cap.read()
        except self._cv2.error as exc:
            ok, image = False, None
            self.stats.last_error = str(exc)
        if not ok or image is None or image.ndim != 3 or image.shape[2] != 3:
            if buffer is not None:
                self.pool.give(buffer)
            return None
        if buffer is not None and image is not buffer:
            self.pool.give(buffer)  # resolution changed: the new array becomes a pooled buffer
        self._shape = image.shape
        now_ns = time.monotonic_ns()
        self.stats.frames += 1
        return Frame(frame_id, time.time(), now_ns, image[..., ::-1], f"frame {frame_id}", None, image, self.pool)

    def close(self) -> None:
        self._release_cap()


class VideoFileSource(_CaptureSource):
    """A video file through OpenCV's FFmpeg backend; read once, as fast as consumed (or at ``fps``)."""

    kind = "video"

    def __init__(self, spec: str, *, max_read_failures: int = 16, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.max_read_failures = max_read_failures
        if not self._open():
            raise InspectionError(f"cannot open video {spec} (not a video OpenCV's FFmpeg can read?)")
        count = int(self._cap.get(self._cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = count if count > 0 else None
        self.native_fps = float(self._cap.get(self._cv2.CAP_PROP_FPS) or 0.0) or None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        frame_id = 0
        failures = 0
        self._emit(SourceEvent("opened", self.spec, detail=f"{self.frame_count or '?'} frames"))
        while not stop.is_set() and self._cap is not None:
            self._pace(stop)
            frame = self._read(frame_id + failures)
            if frame is None:
                failures += 1
                if failures >= self.max_read_failures:
                    break
                continue
            for missing in range(failures):  # failed reads followed by a good one: corrupt frames
                self._corrupt(frame_id + missing, "undecodable frame")
            frame_id += failures + 1
            failures = 0
            yield frame
        if self.frame_count is not None and not stop.is_set():
            for missing in range(frame_id, self.frame_count):  # a truncated file: unreadable tail
                self._corrupt(missing, "unreadable (truncated file?)")
            frame_id = max(frame_id, self.frame_count)
        self._release_cap()
        self._emit(SourceEvent("end", self.spec, frame_id))


class LiveSource(_CaptureSource):
    """A device or stream that may disappear: reopened with exponential back-off.

    ``spec`` is anything ``cv2.VideoCapture`` takes with this class's API (a URL, a file used
    as a stand-in in tests). Subclasses pick the API and the target.
    """

    kind: ClassVar[SourceKind] = "stream"
    live = True

    def __init__(
        self,
        spec: str,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_retries: int | None = None,
        max_read_failures: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(spec, **kwargs)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retries = max_retries
        self.max_read_failures = max_read_failures

    def _connect(self, stop: threading.Event, frame_id: int, reconnect: bool) -> bool:
        """Open, retrying with back-off; False when it gave up or ``stop`` was set."""
        delay = self.backoff_s
        attempts = 0
        while not stop.is_set():
            if self._open():
                self._emit(SourceEvent("reconnected" if reconnect else "opened", self.spec, frame_id))
                if reconnect:
                    self.stats.reconnects += 1
                return True
            attempts += 1
            self.stats.failed_opens += 1
            if self.max_retries is not None and attempts > self.max_retries:
                self.stats.gave_up = True
                self._emit(SourceEvent("gave_up", self.spec, frame_id, f"{attempts} failed opens"))
                return False
            self._emit(SourceEvent("retry", self.spec, frame_id, self.stats.last_error or "", retry_in_s=delay))
            stop.wait(delay)
            delay = min(delay * 2, self.max_backoff_s)
        return False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        frame_id = 0
        if not self._connect(stop, frame_id, reconnect=False):
            return
        failures = 0
        while not stop.is_set():
            self._pace(stop)
            frame = self._read(frame_id)
            if frame is not None:
                if failures:  # isolated bad reads between good frames were corrupt frames
                    for missing in range(failures):
                        self._corrupt(frame.frame_id - failures + missing, "undecodable frame")
                failures = 0
                frame_id += 1
                yield frame
                continue
            failures += 1
            frame_id += 1
            if failures < self.max_read_failures:
                continue
            self.stats.disconnects += 1
            self._emit(SourceEvent("disconnected", self.spec, frame_id, f"{failures} failed reads in a row"))
            self._release_cap()
            failures = 0
            if not self._connect(stop, frame_id, reconnect=True):
                break
        self._release_cap()
        self._emit(SourceEvent("end", self.spec, frame_id))


class CameraSource(LiveSource):
    """A local camera by index or ``/dev/videoN``, through V4L2."""

    kind: ClassVar[SourceKind] = "camera"
    api_name = "CAP_V4L2"

    def _target(self) -> str | int:
        return int(self.spec) if self.spec.isdigit() else self.spec

    def _params(self) -> list[int]:
        return []  # the V4L2 backend refuses to open with parameters it does not know


class StreamSource(LiveSource):
    """An RTSP (or HTTP/RTMP/UDP) stream through FFmpeg."""

    kind = "stream"


def source_kind(spec: str) -> SourceKind:
    """What :func:`open_source` would open for ``spec``."""
    if spec.isdigit() or spec.startswith("/dev/video"):
        return "camera"
    if _STREAM_URL.match(spec):
        return "stream"
    path = Path(spec).expanduser()
    if path.is_dir():
        return "directory"
    if path.is_file():
        return "video"
    raise ConfigError.single(
        None, None, "source", f"{spec!r} is not a camera index, a stream URL, a directory or a video file"
    )


def open_source(
    spec: str, *, fps: float | None = None, on_event: EventCallback | None = None, **kwargs: Any
) -> FrameSource:
    """Open ``spec`` as the right :class:`FrameSource` (see the module docstring)."""
    kind = source_kind(spec)
    if kind == "directory":
        return DirectorySource(str(Path(spec).expanduser()), fps=fps, on_event=on_event, **kwargs)
    if kind == "video":
        return VideoFileSource(str(Path(spec).expanduser()), fps=fps, on_event=on_event, **kwargs)
    if kind == "camera":
        return CameraSource(spec, fps=fps, on_event=on_event, **kwargs)
    return StreamSource(spec, fps=fps, on_event=on_event, **kwargs)
