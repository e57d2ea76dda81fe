"""The embedded MQTT broker (``edgeds broker``): amqtt on loopback, MQTT 3.1.1 only.

This is the zero-configuration default of the ``local`` target (a target whose ``mqtt.url``
is unset talks to ``mqtt://127.0.0.1:1883``). It accepts anonymous clients, keeps retained
messages and sessions in memory only (a restart forgets them) and listens on loopback only:
real deployments point at mosquitto or a clustered broker (see docs/telemetry.md).

amqtt is imported only here. :class:`EmbeddedBroker` runs it on its own event loop in a
background thread (tests, the demo); :func:`serve` runs it in the foreground until interrupted
(the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from typing import Any

from ..config import MqttConfig
from ..errors import TelemetryError

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TelemetryError(
            f"the embedded broker listens on loopback only (got {host!r}); for a network-facing broker "
            "use mosquitto with TLS and ACLs (docs/telemetry.md)"
        )


def _config(host: str, port: int) -> dict[str, Any]:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "listeners": {"default": {"type": "tcp", "bind": bind, "max_connections": 0}},
        "timeout_disconnect_delay": 0,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def _import_broker() -> Any:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise TelemetryError(f"the embedded broker needs amqtt: pip install 'amqtt>=0.11' ({exc})") from exc
    return Broker


class EmbeddedBroker:
    """amqtt in a background thread. ``start()`` returns once listening; ``stop()`` shuts it down."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        _check_loopback(host)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        broker_cls = _import_broker()
        self._thread = threading.Thread(target=self._main, args=(broker_cls,), name="edgeds-amqtt", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TelemetryError(f"embedded broker did not start on {self.url} within {timeout:g} s")
        if self._error is not None:
            raise TelemetryError(f"embedded broker cannot listen on {self.url}: {self._error}") from self._error
        return self

    def _main(self, broker_cls: Any) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._broker = broker_cls(_config(self.host, self.port), loop=loop)
            loop.run_until_complete(self._broker.start())
        # amqtt raises its own BrokerError, or OSError on bind; any failure (a cancellation included)
        # must wake start(), which raises TelemetryError from it in the caller's thread
        except BaseException as exc:  # noqa: BLE001 -- re-raised by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        loop, broker, thread = self._loop, self._broker, self._thread
        if loop is None or thread is None or self._error is not None:
            return
        if broker is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                future.result(timeout)
            except Exception:  # a broker that does not shut down cleanly is stopped with its loop
                log.warning("embedded broker on %s did not shut down cleanly", self.url, exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, ready: threading.Event | None = None) -> None:
    """Run the embedded broker in the foreground until KeyboardInterrupt / SIGTERM."""
    _check_loopback(host)
    broker_cls = _import_broker()
    logging.getLogger("amqtt").setLevel(logging.WARNING)

    async def main() -> None:
        broker = broker_cls(_config(host, port))
        try:
            await broker.start()
        except Exception as exc:
            raise TelemetryError(f"embedded broker cannot listen on {host}:{port}: {exc}") from exc
        if ready is not None:
            ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await broker.shutdown()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def ensure_local_broker(cfg: MqttConfig) -> EmbeddedBroker | None:
    """For a target whose ``mqtt.url`` is unset (the ``local`` target): start the embedded broker
    in this process unless something already listens on 127.0.0.1:1883. Returns the broker this
    call started (the caller stops it), or None when none was needed."""
    if cfg.url is not None:
        return None
    import socket

    try:
        with socket.create_connection(("127.0.0.1", DEFAULT_PORT), timeout=0.5):
            return None
    except OSError:
        pass
    return EmbeddedBroker("127.0.0.1", DEFAULT_PORT).start()
