"""The agent's log lines over MQTT: a logging handler that batches records into ``log`` messages.

:class:`LogForwarder` is attached to the agent's root logger once its telemetry publisher runs.
Records at ``level`` or above are formatted as the agent's log file writes them and published,
at most every ``interval_s`` seconds, as one ``log`` message ``{"lines": [...], "dropped": n}``
through the publisher, so they are spooled like telemetry and a broker outage loses none of them
(within the spool's cap). Records of the telemetry and MQTT code itself are not forwarded: the
forwarder must never feed on its own traffic. Between flushes at most ``max_lines`` lines are
kept and at most ``max_bytes`` of them published (the oldest first); the rest are counted in
``dropped``, so a storm of warnings cannot crowd deploy and inspection messages out of the spool.
A failing spool never reaches the agent: the lines stay in its log file and count as dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Protocol

_OWN = ("edgeds.telemetry", "paho")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Publisher(Protocol):
    def publish(self, kind: str, payload: dict[str, object], *, deploy_id: str | None = None) -> int: ...


class LogForwarder(logging.Handler):
    """Batches log records and publishes them as ``log`` messages (see the module docstring).

    Lifecycle: construct, :meth:`start` (its flush thread), attach to a logger; :meth:`close`
    flushes what is left and stops the thread (idempotent)."""

    def __init__(
        self,
        publisher: _Publisher,
        level: int = logging.INFO,
        interval_s: float = 1.0,
        max_lines: int = 200,
        max_bytes: int = 32 * 1024,
    ) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(FORMAT))
        self._publisher = publisher
        self._interval_s = interval_s
        self._max_bytes = max_bytes
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LogForwarder:
        self._thread = threading.Thread(target=self._run, name="edgeds-log-forward", daemon=True)
        self._thread.start()
        return self

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_OWN) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except (TypeError, ValueError):  # a record whose message does not format: logging's own fallback
            self.handleError(record)
            return
        with self._lock:
            if len(self._lines) == self._lines.maxlen:
                self._dropped += 1
            self._lines.append(line)

    def flush(self) -> None:
        """Publish the lines collected since the last flush (nothing when there are none)."""
        with self._lock:
            lines, dropped = list(self._lines), self._dropped
            self._lines.clear()
            self._dropped = 0
        if not lines and not dropped:
            return
        kept: list[str] = []
        size = 0
        for line in lines:  # a storm of long lines must not fill the telemetry spool
            size += len(line)
            if size > self._max_bytes:
                break
            kept.append(line)
        dropped += len(lines) - len(kept)
        try:
            self._publisher.publish("log", {"lines": kept, "dropped": dropped})
        except Exception:  # noqa: BLE001 - the spool or publisher failed: the lines are in the log file still
            with self._lock:
                self._dropped += len(kept)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval_s + 5)
            self._thread = None
        self.flush()
        super().close()
