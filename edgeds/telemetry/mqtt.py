"""The MQTT boundary: the only module of edgeds that imports paho (paho-mqtt 2).

* :func:`resolve_settings` turns a target's :class:`~edgeds.config.MqttConfig` into
  :class:`BrokerSettings`, checking everything that can be checked before connecting (URL form,
  TLS files, credentials) and raising :class:`TelemetryError` with a clear message.
* :class:`MqttLink` is the publisher's connection: asynchronous connect with automatic
  reconnection on paho's network thread, a retained Last Will, and a callback per broker
  acknowledgement. It keeps nothing on disk: durability is the spool's job.
* :class:`MqttSubscriber` is the consumer side used by ``edgeds monitor``, ``edgeds telemetry
  export``, tests and the demo; it re-subscribes on every (re)connect and can keep a persistent
  session so that QoS 1 messages published while it was away are delivered later.

Passwords are held in :class:`Secret`, whose ``repr``/``str`` never show the value; nothing here
logs credentials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import MqttConfig
from ..errors import TelemetryError

log = logging.getLogger(__name__)

EMBEDDED_URL = "mqtt://127.0.0.1:1883"
"""Where the embedded broker (``edgeds broker``) listens; used when a target sets no ``url``."""

Protocol = Literal["5", "3.1.1"]


class Secret:
    """A password that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class BrokerSettings:
    """A validated broker connection. ``tls`` is ``None`` for plain ``mqtt://``."""

    host: str
    port: int
    protocol: Protocol
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: Secret | None = None
    keepalive_s: int = 30

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> tuple[bool, str, int]:
    """``(tls, host, port)`` from ``mqtt://host[:port]`` or ``mqtts://host[:port]``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TelemetryError(f"malformed broker URL {url!r}: {exc}") from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        raise TelemetryError(f"malformed broker URL {url!r}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise TelemetryError(f"malformed broker URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TelemetryError(f"malformed broker URL {url!r}: only mqtt(s)://host:port is accepted")
    if parts.username or parts.password:
        raise TelemetryError(
            "malformed broker URL: credentials do not belong in the URL; use mqtt.username and "
            "mqtt.password_env / mqtt.password_file"
        )
    tls = parts.scheme == "mqtts"
    if port == 0:
        raise TelemetryError(f"malformed broker URL {url!r}: port 0")
    return tls, parts.hostname, port or (8883 if tls else 1883)


def _existing(what: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise TelemetryError(f"MQTT TLS {what} file not found: {path}")
    if not os.access(path, os.R_OK):
        raise TelemetryError(f"MQTT TLS {what} file is not readable: {path}")
    return path


def _password(cfg: MqttConfig) -> Secret | None:
    if cfg.password_env and cfg.password_file:
        raise TelemetryError("set only one of mqtt.password_env and mqtt.password_file")
    if cfg.password_env:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise TelemetryError(f"MQTT password: environment variable {cfg.password_env} is not set")
        return Secret(value)
    if cfg.password_file:
        path = Path(cfg.password_file).expanduser()
        try:
            return Secret(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise TelemetryError(f"MQTT password file {path} cannot be read: {exc.strerror}") from exc
    return None


def resolve_settings(
    cfg: MqttConfig, *, url: str | None = None, protocol: Protocol | None = None, device_id: str | None = None
) -> BrokerSettings:
    """Validate a target's MQTT settings (``url``/``protocol`` override them). Raises
    :class:`TelemetryError` for a malformed URL, a missing TLS file or missing credentials.

    With no URL at all the embedded broker is meant, and the protocol defaults to 3.1.1 (the only
    one it speaks); asking for MQTT 5 from it explicitly is an error.

    ``{device}`` in ``mqtt.username`` becomes ``device_id``, so one target can give every device
    its own broker user (what the ACL ``pattern write edgeds/%u/#`` needs)."""
    embedded = url is None and cfg.url is None
    tls, host, port = parse_url(url or cfg.url or EMBEDDED_URL)
    effective: Protocol = protocol or cfg.protocol
    if embedded and effective == "5":
        if protocol is not None or "protocol" in cfg.model_fields_set:
            raise TelemetryError(
                "mqtt.url is unset, so telemetry goes to the embedded broker, which speaks MQTT 3.1.1 only: "
                'set mqtt.protocol: "3.1.1" or point mqtt.url at an MQTT 5 broker'
            )
        effective = "3.1.1"
    ca = cert = key = None
    if cfg.tls is not None:
        if not tls:
            raise TelemetryError("mqtt.tls is set but the broker URL is mqtt://; use mqtts://host:port")
        ca = _existing("CA", cfg.tls.ca)
        cert = _existing("client certificate", cfg.tls.cert)
        key = _existing("client key", cfg.tls.key)
        if (cert is None) != (key is None):
            raise TelemetryError("MQTT TLS: a client certificate needs its key and the key its certificate")
    password = _password(cfg)
    username = cfg.username
    if username is not None and "{device}" in username:
        if device_id is None:
            raise TelemetryError("mqtt.username contains {device} but no device id is known here")
        username = username.replace("{device}", device_id)
    if password is not None and not username:
        raise TelemetryError("an MQTT password is configured but mqtt.username is not")
    return BrokerSettings(
        host=host,
        port=port,
        protocol=effective,
        tls=tls,
        ca=ca,
        cert=cert,
        key=key,
        username=username,
        password=password,
    )


def _client(settings: BrokerSettings, client_id: str, clean: bool) -> paho.Client:
    v5 = settings.protocol == "5"
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else clean,
    )
    if settings.tls:
        try:
            client.tls_set(
                ca_certs=str(settings.ca) if settings.ca else None,
                certfile=str(settings.cert) if settings.cert else None,
                keyfile=str(settings.key) if settings.key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TelemetryError(f"MQTT TLS setup failed: {exc}") from exc
    if settings.username:
        client.username_pw_set(settings.username, settings.password.reveal() if settings.password else None)
    return client


def _connect_properties(settings: BrokerSettings, session_expiry_s: int) -> Properties | None:
    if settings.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    return props


class MqttLink:
    """One publishing connection to a broker.

    Lifecycle: construct (validates TLS, nothing connects) -> :meth:`start` (connects in the
    background, reconnects forever with ``reconnect_min_s``..``reconnect_max_s`` backoff) ->
    :meth:`publish` any number of times -> :meth:`stop`. Callbacks run on paho's network thread
    and must be quick: ``on_connect()``, ``on_disconnect()``, ``on_ack(mid, ok)`` (``ok`` false when
    an MQTT 5 broker refused the message).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_ack: Callable[[int, bool], None] | None = None,
        max_inflight: int = 100,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self._connected = threading.Event()
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._on_ack_cb = on_ack
        self._client = _client(settings, client_id, clean=True)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(
            min_delay=max(1, round(reconnect_min_s)), max_delay=max(1, round(reconnect_max_s))
        )
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self.last_error: str | None = None
        self._started = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def network_thread_id(self) -> int | None:
        """OS id of paho's network thread (for CPU accounting), None when not started."""
        thread = getattr(self._client, "_thread", None)
        return thread.native_id if isinstance(thread, threading.Thread) else None

    def start(self) -> None:
        """Begin connecting in the background. A DNS/refused failure is retried, not raised."""
        try:
            self._client.connect_async(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=True,
                properties=_connect_properties(self.settings, 0),
            )
        except (OSError, ValueError) as exc:
            raise TelemetryError(f"cannot connect to MQTT broker {self.settings.url}: {exc}") from exc
        self._client.loop_start()
        self._started = True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Hand one message to paho; returns its mid, or None when not connected (nothing queued)."""
        if not self._connected.is_set():
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.last_error = paho.error_string(info.rc)
            return None
        return int(info.mid)

    def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool, timeout: float) -> bool:
        """Publish at QoS 1 and wait up to ``timeout`` seconds for the broker's acknowledgement."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout)
        return bool(info.is_published())

    def stop(self) -> None:
        """Disconnect cleanly (so the broker does not send the Last Will) and stop the network thread."""
        if not self._started:
            return
        self._started = False
        try:
            self._client.disconnect()
        except OSError as exc:  # the socket is gone already: the broker publishes the Last Will
            log.info("MQTT %s: no clean disconnect: %s", self.settings.url, exc)
        self._client.loop_stop()
        self._connected.clear()

    # paho callbacks (network thread)
    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"connection refused: {reason}"
            return
        self.last_error = None
        self._connected.set()
        if self._on_connect_cb is not None:
            self._on_connect_cb()

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        if self._on_disconnect_cb is not None:
            self._on_disconnect_cb()

    def _handle_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if self._on_ack_cb is not None:
            self._on_ack_cb(int(mid), not reason.is_failure)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class MqttSubscriber:
    """A consumer connection subscribed (QoS 1) to ``topics``; ``on_message`` runs on paho's thread.

    ``client_id`` + ``persistent=True`` keep the session on the broker between connections (MQTT
    3.1.1 ``clean_session=False``; MQTT 5 ``clean_start=False`` with a one-hour session expiry), so
    QoS 1 messages published while this subscriber is disconnected are delivered when it returns.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topics: Sequence[str],
        on_message: Callable[[Message], None],
        *,
        client_id: str = "",
        persistent: bool = False,
    ) -> None:
        if persistent and not client_id:
            raise TelemetryError("a persistent subscriber needs a client_id")
        self.settings = settings
        self.topics = list(topics)
        self._persistent = persistent
        self._on_message = on_message
        self._subscribed = threading.Event()
        self._client = _client(settings, client_id, clean=not persistent)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_subscribe = self._handle_subscribe
        self._started = False

    def start(self, wait_s: float | None = 10.0) -> MqttSubscriber:
        """Connect in the background; with ``wait_s``, block until subscribed (TelemetryError on timeout)."""
        try:
            self._client.connect_async(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=not self._persistent,
                properties=_connect_properties(self.settings, 3600 if self._persistent else 0),
            )
        except (OSError, ValueError) as exc:
            raise TelemetryError(f"cannot connect to MQTT broker {self.settings.url}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        if wait_s is not None and not self._subscribed.wait(wait_s):
            self.stop()
            raise TelemetryError(f"could not subscribe at MQTT broker {self.settings.url} within {wait_s:g} s")
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._client.disconnect()
        except OSError as exc:  # the socket is gone already; nothing is left to close cleanly
            log.info("MQTT %s: no clean disconnect: %s", self.settings.url, exc)
        self._client.loop_stop()

    def __enter__(self) -> MqttSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._subscribed.clear()

    def _handle_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._subscribed.set()

    def _handle_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._on_message(Message(message.topic, bytes(message.payload), bool(message.retain)))
