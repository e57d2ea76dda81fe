"""The telemetry envelope and topic layout (no MQTT library here).

Every message edgeds publishes is one JSON object::

    {"schema": "edgeds.telemetry/1", "kind": "telemetry", "device_id": "orin-a",
     "boot_id": "<uuid4 of the publisher start that created it>", "seq": 42, "ts": 1764000000.123,
     "is_historical": false, "agent_version": "0.1.0", "spool_depth": 0, "dropped_total": 0,
     "payload": {...}}

* ``seq`` numbers the spooled stream of one device (telemetry, deploy, inspection, log); it is
  persisted, so it keeps growing across restarts. Consumers dedupe on ``(device_id, boot_id,
  seq)``. ``boot_id`` is the one of the publisher start that *created* the message (a message
  spooled before a restart keeps its old boot_id).
* ``status`` messages (birth, Last Will, clean-shutdown ``offline``) are connection state, not
  part of the stream: their ``seq`` is the last seq assigned when they were made.
* ``ts`` is the creation time (Unix seconds); ``is_historical`` is true when the message was
  created before the connection that delivered it (spooled while offline, or in a previous run);
  it is decided by seq and boot_id, not by clocks, so a clock step at boot cannot flip it.
* ``spool_depth`` and ``dropped_total`` are the spool's figures when the message was sent.

Topics (``<prefix>/<device>/...``): ``telemetry`` (QoS 1), ``status`` (retained), ``deploy/<id>``
(retained), ``inspection`` (QoS 1), ``log`` (QoS 1: the agent's log lines, ``{"lines": [...]}``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import TelemetryError

SCHEMA = "edgeds.telemetry/1"
Kind = Literal["telemetry", "status", "deploy", "inspection", "log"]
KINDS: tuple[str, ...] = ("telemetry", "status", "deploy", "inspection", "log")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class Envelope(BaseModel):
    """A parsed message as a consumer sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(alias="schema")
    kind: Kind
    device_id: str
    boot_id: str
    seq: int = Field(ge=0)
    ts: float
    is_historical: bool
    agent_version: str
    spool_depth: int = Field(ge=0)
    dropped_total: int = Field(ge=0)
    payload: dict[str, Any]

    @field_validator("schema_")
    @classmethod
    def _our_schema(cls, value: str) -> str:
        if not value.startswith("edgeds.telemetry/"):
            raise ValueError(f"schema {value!r} is not edgeds.telemetry/<n>")
        return value

    @property
    def key(self) -> tuple[str, str, int]:
        """The dedupe key ``(device_id, boot_id, seq)``."""
        return (self.device_id, self.boot_id, self.seq)


def check_segment(what: str, value: str) -> str:
    """A topic segment (prefix part, device id, deploy id): no wildcards, slashes or spaces."""
    if not value or not _SEGMENT.match(value):
        raise TelemetryError(f"{what} {value!r} is not a valid MQTT topic segment (use letters, digits, . _ -)")
    return value


def check_prefix(prefix: str) -> str:
    for part in prefix.split("/"):
        check_segment("topic prefix part", part)
    return prefix


def topic(prefix: str, device_id: str, suffix: str) -> str:
    """``<prefix>/<device>/<suffix>``."""
    return f"{prefix}/{device_id}/{suffix}"


def encode(
    *,
    kind: str,
    device_id: str,
    boot_id: str,
    seq: int,
    ts: float,
    is_historical: bool,
    agent_version: str,
    spool_depth: int,
    dropped_total: int,
    payload_json: bytes,
) -> bytes:
    """The wire bytes. ``payload_json`` is already-serialised JSON (as stored in the spool) and
    is spliced in without re-parsing."""
    head = json.dumps(
        {
            "schema": SCHEMA,
            "kind": kind,
            "device_id": device_id,
            "boot_id": boot_id,
            "seq": seq,
            "ts": round(ts, 6),
            "is_historical": is_historical,
            "agent_version": agent_version,
            "spool_depth": spool_depth,
            "dropped_total": dropped_total,
        },
        separators=(",", ":"),
    )
    return head[:-1].encode() + b',"payload":' + payload_json + b"}"


def dumps_payload(payload: Any) -> bytes:
    """Serialise a payload mapping to compact JSON; :class:`TelemetryError` if it cannot be."""
    if not isinstance(payload, dict):
        raise TelemetryError(f"a telemetry payload must be a mapping, got {type(payload).__name__}")
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=_default).encode()
    except (TypeError, ValueError) as exc:
        raise TelemetryError(f"telemetry payload is not JSON-serialisable: {exc}") from exc


def _default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def decode(data: bytes | str) -> Envelope:
    """Parse wire bytes into an :class:`Envelope`; :class:`TelemetryError` when malformed."""
    try:
        return Envelope.model_validate_json(data)
    except ValidationError as exc:
        raise TelemetryError(f"not an edgeds telemetry message: {exc.errors()[0]['msg']}") from exc


def split_topic(prefix: str, full: str) -> tuple[str, str] | None:
    """``(device_id, suffix)`` for a topic under ``prefix``, else None."""
    head = prefix + "/"
    if not full.startswith(head):
        return None
    rest = full[len(head) :]
    device, _, suffix = rest.partition("/")
    return (device, suffix) if device and suffix else None
