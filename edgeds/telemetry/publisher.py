"""TelemetryPublisher: what the agent embeds to report over MQTT.

Usage (the whole API)::

    pub = TelemetryPublisher(target.mqtt, device_id, spool_path, agent_version,
                             metrics_source=lambda: {"inference": recorder.snapshot()})
    pub.start()                                   # TelemetryError here for bad URL / TLS / creds
    pub.publish("deploy", {...}, deploy_id="r42")  # or "inspection"; returns the seq
    pub.stop()                                    # drains briefly, publishes `offline`, disconnects

Threads and blocking: :meth:`publish` only appends to the on-disk spool (one short SQLite
transaction, no network) and wakes the sender; it never waits for the broker. One background
thread (``edgeds-telemetry``) samples ``metrics_source`` every ``interval_s``, spools the sample,
and sends spooled messages in seq order while connected, at most ``max_inflight`` unacknowledged
at a time. A row is deleted from the spool only on the broker's acknowledgement (QoS 1), so
everything is delivered at least once across broker outages and publisher restarts; paho's own
network thread handles (re)connection.

Status: on every connection the publisher publishes a retained ``online`` on
``<prefix>/<device>/status``; the connection carries a retained Last Will ``offline`` (reason
``connection-lost``), and :meth:`stop` publishes ``offline`` (reason ``shutdown``) itself before a
clean disconnect.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import MqttConfig
from ..errors import TelemetryError
from ..power import DeviceMeter
from . import envelope
from .metrics import HostSampler, TegrastatsReader
from .mqtt import BrokerSettings, MqttLink, Protocol, resolve_settings
from .spool import Spool, SpoolRecord

log = logging.getLogger("edgeds.telemetry")

MetricsSource = Callable[[], Mapping[str, Any]]

_RESEND_AFTER_S = 60.0  # an in-flight message unacknowledged this long on a live connection is re-sent


class TelemetryPublisher:
    """Spooled, at-least-once MQTT publisher of one device. See the module docstring.

    ``metrics_source`` returns extra sections merged into every periodic ``telemetry`` payload
    (e.g. ``{"inference": ..., "deploy": ...}``); ``host_metrics`` adds the ``host`` section and,
    where the ``tegrastats`` program (``tegrastats_binary``: a name on PATH or a path; None for
    none) runs, the ``jetson`` section: its latest line, read by a child process that
    :meth:`start` starts and :meth:`stop` ends, at the telemetry interval (at most every second);
    and the ``power`` section (:class:`edgeds.power.DeviceMeter`: the source, average watts over
    the interval, joules since start, temperatures; tegrastats when it runs, else RAPL, else the
    reason there is no source).
    ``url``/``protocol`` override the config's. ``interval_s`` overrides
    ``mqtt_config.telemetry_interval_s``; ``interval_s=0`` disables periodic samples.
    """

    def __init__(
        self,
        mqtt_config: MqttConfig,
        device_id: str,
        spool_path: str | Path,
        agent_version: str = __version__,
        metrics_source: MetricsSource | None = None,
        *,
        url: str | None = None,
        protocol: Protocol | None = None,
        interval_s: float | None = None,
        host_metrics: bool = True,
        max_inflight: int = 100,
        reconnect_max_s: float = 10.0,
        drain_timeout_s: float = 3.0,
        tegrastats_binary: str | None = "tegrastats",
    ) -> None:
        self.config = mqtt_config
        self.device_id = envelope.check_segment("device id", device_id)
        self.prefix = envelope.check_prefix(mqtt_config.prefix)
        self.settings: BrokerSettings = resolve_settings(mqtt_config, url=url, protocol=protocol, device_id=device_id)
        self.spool_path = Path(spool_path).expanduser()
        self.agent_version = agent_version
        self.metrics_source = metrics_source
        self.last_payload: dict[str, Any] | None = None  # the latest periodic sample (for /metrics)
        self.interval_s = mqtt_config.telemetry_interval_s if interval_s is None else interval_s
        self.boot_id = str(uuid.uuid4())
        self.max_inflight = max_inflight
        self.reconnect_max_s = reconnect_max_s
        self.drain_timeout_s = drain_timeout_s
        self._host = HostSampler(disk_path=self.spool_path.parent) if host_metrics else None
        self._tegrastats: TegrastatsReader | None = None
        if host_metrics and tegrastats_binary and self.interval_s > 0:  # nothing samples it otherwise
            interval_ms = int(1000 * min(max(self.interval_s, 1.0), 60.0))
            self._tegrastats = TegrastatsReader(interval_ms, tegrastats_binary, history=4096)
        self._host_metrics = host_metrics
        self._power: DeviceMeter | None = None
        self._spool: Spool | None = None
        self._link: MqttLink | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, monotonic sent)
        self._cursor = 0
        self._connected_at = 0.0
        self._historical_upto = 0  # seqs up to this one were made before the current connection
        self._need_birth = False
        self.sent_total = 0
        self.acked_total = 0
        self.rejected_total = 0
        self.connections_total = 0

    # ------------------------------------------------------------------ public API

    def start(self) -> TelemetryPublisher:
        """Open the spool and start connecting (in the background). Raises TelemetryError when the
        spool cannot be opened or is owned by another process."""
        if self._thread is not None:
            raise TelemetryError("telemetry publisher already started")
        spool = Spool(self.spool_path, self.config.spool.max_bytes, self.config.spool.max_age_s)
        self._spool = spool
        will = self._status_body("offline", "connection-lost")
        self._link = MqttLink(
            self.settings,
            client_id=f"edgeds-{self.device_id}-{self.boot_id[:8]}",
            will=(self.topic("status"), will),
            on_connect=self._on_connect,
            on_disconnect=self._wake.set,
            on_ack=self._on_ack,
            max_inflight=self.max_inflight,
            reconnect_max_s=self.reconnect_max_s,
        )
        log.info(
            "telemetry: device %s -> %s (MQTT %s), spool %s (%d queued)",
            self.device_id,
            self.settings.url,
            self.settings.protocol,
            self.spool_path,
            spool.depth,
        )
        tegrastats = self._tegrastats is not None and self._tegrastats.start()
        if tegrastats:
            assert self._tegrastats is not None
            log.info("telemetry: reading %s every %d ms", self._tegrastats.binary, self._tegrastats.interval_ms)
        if self._host_metrics and self.interval_s > 0:
            self._power = DeviceMeter(reader=self._tegrastats if tegrastats else None)
            log.info("telemetry: power from %s", self._power.source.name if self._power.source else self._power.reason)
        try:
            self._link.start()
        except BaseException:
            self._stop_readers()
            raise
        self._thread = threading.Thread(target=self._run, name="edgeds-telemetry", daemon=True)
        self._thread.start()
        return self

    def publish(self, kind: str, payload: Mapping[str, Any], *, deploy_id: str | None = None) -> int:
        """Spool one message and return its seq; never waits for the network.

        ``kind``: ``telemetry``, ``inspection``, ``log`` (QoS 1) or ``deploy`` (retained, on
        ``deploy/<deploy_id>``; ``deploy_id`` required).
        """
        spool = self._spool
        if spool is None or self._stop.is_set():
            raise TelemetryError("telemetry publisher is not running")
        if kind == "deploy":
            if deploy_id is None:
                raise TelemetryError("a deploy result needs deploy_id")
            suffix, retain = f"deploy/{envelope.check_segment('deploy id', deploy_id)}", True
        elif kind in ("telemetry", "inspection", "log"):
            suffix, retain = kind, False
        else:
            raise TelemetryError(f"unknown telemetry kind {kind!r} (telemetry, deploy, inspection, log)")
        seq = spool.append(kind, suffix, envelope.dumps_payload(dict(payload)), boot_id=self.boot_id, retain=retain)
        self._wake.set()
        return seq

    def stop(self, timeout: float | None = None) -> None:
        """Drain for up to ``drain_timeout_s`` while connected, publish ``offline``, disconnect
        cleanly, close the spool. Whatever is not delivered stays spooled for the next start."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout if timeout is not None else self.drain_timeout_s + 10)
        self._thread = None
        self._stop_readers()

    def _stop_readers(self) -> None:
        if self._power is not None:
            self._power.close()
            self._power = None
        if self._tegrastats is not None:
            self._tegrastats.stop()

    def __enter__(self) -> TelemetryPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def topic(self, suffix: str) -> str:
        return envelope.topic(self.prefix, self.device_id, suffix)

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    def native_thread_ids(self) -> list[int]:
        """OS ids of the threads telemetry runs on (sender, paho network), for CPU accounting."""
        ids = [self._thread.native_id if self._thread is not None else None]
        ids.append(self._link.network_thread_id if self._link is not None else None)
        return [i for i in ids if i is not None]

    def wait_connected(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for the broker connection (publishing never needs this)."""
        return self._link is not None and self._link.wait_connected(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters of this publisher (also sent in each telemetry payload as ``telemetry``)."""
        spool = self._spool
        return {
            "connected": self.connected,
            "broker": self.settings.url,
            "protocol": self.settings.protocol,
            "spool_depth": spool.depth if spool else None,
            "spool_bytes": spool.bytes if spool else None,
            "dropped_total": spool.dropped_total if spool else None,
            "last_seq": spool.last_seq if spool else None,
            "sent_total": self.sent_total,
            "acked_total": self.acked_total,
            "rejected_total": self.rejected_total,
            "connections_total": self.connections_total,
            "inflight": len(self._inflight),
        }

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self) -> None:
        self._connected_at = time.monotonic()
        spool = self._spool
        self._historical_upto = spool.last_seq if spool is not None else 0
        self.connections_total += 1
        self._need_birth = True
        self._wake.set()

    def _on_ack(self, mid: int, ok: bool) -> None:
        self._acks.put((mid, ok))
        self._wake.set()

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        spool, link = self._spool, self._link
        if spool is None or link is None:
            return
        next_tick = time.monotonic()
        next_expire = time.monotonic() + 10
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self.interval_s > 0 and now >= next_tick:
                    self._sample(spool)
                    next_tick += self.interval_s
                    if next_tick < now:  # fell behind (suspend, slow disk): do not burst
                        next_tick = now + self.interval_s
                if now >= next_expire:
                    spool.expire()
                    next_expire = now + 10
                self._pump(spool, link)
                wait = 0.5 if self.interval_s <= 0 else max(0.0, min(0.5, next_tick - time.monotonic()))
                self._wake.wait(wait)
                self._wake.clear()
            self._shutdown(spool, link)
        except Exception:  # the thread must not die silently: log, keep the spool consistent
            log.exception("telemetry sender failed")
            link.stop()
            spool.close()

    def _sample(self, spool: Spool) -> None:
        payload: dict[str, Any] = {}
        if self._host is not None:
            payload["host"] = self._host.sample()
        jetson = self._tegrastats.latest() if self._tegrastats is not None else None
        if jetson is not None:
            payload["jetson"] = jetson.as_dict()
        power = self._power
        if power is not None:
            payload["power"] = power.sample()
        if self.metrics_source is not None:
            try:
                payload.update(self.metrics_source())
            except Exception as exc:  # the host sample still goes out; the message says what failed
                log.warning("telemetry: the metrics source failed", exc_info=True)
                payload["metrics_error"] = f"{type(exc).__name__}: {exc}"
        payload["telemetry"] = self.stats()
        self.last_payload = payload
        try:
            spool.append("telemetry", "telemetry", envelope.dumps_payload(payload), boot_id=self.boot_id)
        except TelemetryError as exc:
            log.warning("telemetry sample not spooled: %s", exc)

    def _pump(self, spool: Spool, link: MqttLink) -> None:
        self._collect_acks(spool)
        if not link.connected:
            return
        if self._need_birth:
            self._need_birth = False
            link.publish(self.topic("status"), self._status_body("online", "connected"), qos=1, retain=True)
        self._rewind_stale()
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for record in spool.peek(self._cursor, room):
            mid = link.publish(self.topic(record.topic), self._wire(record, spool), record.qos, record.retain)
            if mid is None:
                break
            self._inflight[mid] = (record.seq, time.monotonic())
            self._cursor = record.seq
            self.sent_total += 1

    def _collect_acks(self, spool: Spool) -> None:
        acked: list[int] = []
        while True:
            try:
                mid, ok = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue
            acked.append(entry[0])
            if ok:
                self.acked_total += 1
            else:
                self.rejected_total += 1
                log.warning("broker refused telemetry message seq %d (not authorised?); dropped", entry[0])
        spool.ack(acked)

    def _rewind_stale(self) -> None:
        if not self._inflight or time.monotonic() - self._connected_at < _RESEND_AFTER_S:
            return
        oldest = min(sent for _, sent in self._inflight.values())
        if time.monotonic() - oldest < _RESEND_AFTER_S:
            return
        self._cursor = min(seq for seq, _ in self._inflight.values()) - 1
        self._inflight.clear()

    def _shutdown(self, spool: Spool, link: MqttLink) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while link.connected and (spool.depth > 0 or self._inflight) and time.monotonic() < deadline:
            self._pump(spool, link)
            self._wake.wait(0.05)
            self._wake.clear()
        self._collect_acks(spool)
        if link.connected:
            ok = link.publish_and_wait(
                self.topic("status"), self._status_body("offline", "shutdown"), retain=True, timeout=2.0
            )
            if not ok:
                log.warning("telemetry: could not publish offline status before shutdown")
        link.stop()
        self._collect_acks(spool)
        log.info("telemetry stopped: %d message(s) left in the spool", spool.depth)
        spool.close()

    # ------------------------------------------------------------------ encoding

    def _wire(self, record: SpoolRecord, spool: Spool) -> bytes:
        return envelope.encode(
            kind=record.kind,
            device_id=self.device_id,
            boot_id=record.boot_id,
            seq=record.seq,
            ts=record.ts,
            is_historical=record.seq <= self._historical_upto or record.boot_id != self.boot_id,
            agent_version=self.agent_version,
            spool_depth=spool.depth,
            dropped_total=spool.dropped_total,
            payload_json=record.body,
        )

    def _status_body(self, state: str, reason: str) -> bytes:
        spool = self._spool
        payload = {"state": state, "reason": reason, "pid": os.getpid(), "broker": self.settings.url}
        return envelope.encode(
            kind="status",
            device_id=self.device_id,
            boot_id=self.boot_id,
            seq=spool.last_seq if spool else 0,
            ts=time.time(),
            is_historical=False,
            agent_version=self.agent_version,
            spool_depth=spool.depth if spool else 0,
            dropped_total=spool.dropped_total if spool else 0,
            payload_json=envelope.dumps_payload(payload),
        )
