"""Watch a target's fleet live: an MQTT subscription folded into one row per device.

:class:`FleetWatch` subscribes to every device's ``status``, ``telemetry`` and ``deploy/#``
topics under the target's prefix and keeps a :class:`~edgeds.telemetry.view.FleetView` of them.
This is what ``edgeds monitor`` shows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast, get_args

from ..config import load_target
from ..errors import TelemetryError
from .mqtt import Message, MqttSubscriber, Protocol, resolve_settings
from .view import DeviceRow, FleetView


class FleetWatch:
    """A live view of a target's devices from what they publish.

    Lifecycle: constructing it validates the broker settings (``url`` and ``protocol``, 5 or
    3.1.1, override the target's ``mqtt``; :class:`~edgeds.errors.TelemetryError` otherwise) and
    connects nothing; :meth:`start` subscribes, :meth:`stop` disconnects (idempotent); it is also
    a context manager. :meth:`rows` and :meth:`table_rows` may be called from any thread.
    ``on_row(row)`` runs on the MQTT network thread, under the watch's lock, for each message
    that updated a device's row: it must be quick and must not call back into the watch.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        url: str | None = None,
        protocol: str | None = None,
        on_row: Callable[[DeviceRow], None] | None = None,
    ) -> None:
        if protocol is not None and protocol not in get_args(Protocol):
            raise TelemetryError(f"--protocol must be 5 or 3.1.1, got {protocol!r}")
        cfg = load_target(target).mqtt
        self.settings = resolve_settings(cfg, url=url, protocol=cast(Protocol | None, protocol))
        self.topics = [f"{cfg.prefix}/+/status", f"{cfg.prefix}/+/telemetry", f"{cfg.prefix}/+/deploy/#"]
        self._view = FleetView(cfg.prefix)
        self._lock = threading.Lock()
        self._on_row = on_row
        self._subscriber = MqttSubscriber(self.settings, self.topics, self._message)

    def start(self, wait_s: float | None = 10.0) -> FleetWatch:
        """Connect and subscribe; with ``wait_s``, block until subscribed (TelemetryError on timeout)."""
        self._subscriber.start(wait_s=wait_s)
        return self

    def stop(self) -> None:
        """Disconnect from the broker. Idempotent; the rows stay readable."""
        self._subscriber.stop()

    def __enter__(self) -> FleetWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rows(self) -> list[dict[str, Any]]:
        """Every device seen so far, sorted by device id, as plain dicts (copies)."""
        with self._lock:
            return [r.as_dict() for r in sorted(self._view.rows.values(), key=lambda r: r.device)]

    def table_rows(self, now: float | None = None) -> list[list[Any]]:
        """The rows formatted for :data:`~edgeds.telemetry.view.COLUMNS` (ages relative to ``now``)."""
        with self._lock:
            return self._view.table_rows(now)

    def _message(self, msg: Message) -> None:
        with self._lock:
            row = self._view.update(msg.topic, msg.payload)
            if row is not None and self._on_row is not None:
                self._on_row(row)
