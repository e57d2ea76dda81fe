"""Read the agents' log lines from the broker (what :mod:`.log_forward` publishes).

:class:`LogWatch` subscribes to ``<prefix>/<device>/log`` of a target's devices (all, or the
hosts named) and hands each line to ``on_line(device, line)`` on the MQTT network thread, in the
order each device published them (messages are deduplicated on their envelope key, so a line
redelivered after a reconnect is shown once). This is ``edgeds logs --mqtt``: lines published
from now on; the device's log file (over SSH) holds what came before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast, get_args

from ..config import load_target
from ..errors import TelemetryError
from .envelope import check_segment, decode, split_topic
from .mqtt import Message, MqttSubscriber, Protocol, resolve_settings
from .view import Deduper


class LogWatch:
    """Lifecycle: construction validates the broker settings and connects nothing; :meth:`start`
    subscribes (blocks until subscribed, :class:`TelemetryError` on timeout), :meth:`stop`
    disconnects (idempotent). ``on_line`` must be quick and must not call back into the watch."""

    def __init__(
        self,
        target: str | Path,
        on_line: Callable[[str, str], None],
        *,
        hosts: Sequence[str] = (),
        url: str | None = None,
        protocol: str | None = None,
    ) -> None:
        if protocol is not None and protocol not in get_args(Protocol):
            raise TelemetryError(f"--protocol must be 5 or 3.1.1, got {protocol!r}")
        cfg = load_target(target).mqtt
        self.settings = resolve_settings(cfg, url=url, protocol=cast(Protocol | None, protocol))
        self.prefix = cfg.prefix
        devices = [check_segment("host", h) for h in hosts] or ["+"]
        self.topics = [f"{cfg.prefix}/{device}/log" for device in devices]
        self._on_line = on_line
        self._dedupe = Deduper()
        self.dropped = 0  # lines the devices could not keep between two of their messages
        self._subscriber = MqttSubscriber(self.settings, self.topics, self._message)

    def start(self, wait_s: float = 10.0) -> LogWatch:
        self._subscriber.start(wait_s=wait_s)
        return self

    def stop(self) -> None:
        self._subscriber.stop()

    def _message(self, message: Message) -> None:
        where = split_topic(self.prefix, message.topic)
        if where is None or where[1] != "log":
            return
        try:
            env = decode(message.payload)
        except TelemetryError:
            return  # not an edgeds message: nothing to show
        if not self._dedupe.first(env):
            return
        self.dropped += int(env.payload.get("dropped") or 0)
        for line in env.payload.get("lines") or ():
            self._on_line(where[0], str(line))
