"""Field types the YAML schemas share, each one check with a one-line reason: host addresses,
MQTT broker URLs, and rollout amounts (a host count or a percentage of the fleet).

Each type is an annotated ``str`` that pydantic validates; a failed check raises ``ValueError``,
which the loaders report as ``file:line: field: message``. Ports are plain ``int`` fields with
bounds (1..65535) in the schemas themselves.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_AMOUNT = re.compile(r"^(\d+)(%?)$")


def check_host(value: str) -> str:
    """``value`` when it is an IPv4 or IPv6 address or a host name (RFC 1123 labels, at most
    253 characters, not all digits in its last label); else ``ValueError`` saying why."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    if value.startswith("[") and value.endswith("]"):
        raise ValueError(f"write an IPv6 address without brackets, got {value!r}")
    labels = value.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"not a valid IP address (IPv4 is four numbers 0..255), got {value!r}")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"must be an IP address or a host name (letters, digits, '-', '.'), got {value!r}")
    return value


def check_mqtt_url(value: str) -> str:
    """``value`` when it reads ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (port 1..65535,
    no credentials, path, query or fragment); else ``ValueError`` saying why."""
    form = f"must look like mqtt://host:port or mqtts://host:port, got {value!r}"
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.netloc:
        raise ValueError(form)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(form)
    if "@" in parts.netloc:
        raise ValueError("credentials do not belong in the URL: use mqtt.username and mqtt.password_env/password_file")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port must be a number 1..65535, got {value!r}") from None
    if port == 0:
        raise ValueError(f"the port must be a number 1..65535, got {value!r}")
    if not parts.hostname:
        raise ValueError(form)
    check_host(parts.hostname)
    return value


def _numbers_as_text(value: Any) -> Any:
    """YAML reads ``batch: 2`` as an int; the amount fields hold text (``2`` or ``25%``)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _amount(value: str, minimum: int) -> str:
    match = _AMOUNT.match(value)
    if match is None:
        raise ValueError(
            f"must be a host count N (>= {minimum}) or a percentage P% ({minimum}..100) of the fleet, got {value!r}"
        )
    number, percent = int(match.group(1)), bool(match.group(2))
    if percent and not minimum <= number <= 100:
        raise ValueError(f"a percentage of the fleet must be {minimum}..100 %, got {value!r}")
    if not percent and number < minimum:
        raise ValueError(f"a host count must be >= {minimum}, got {value!r}")
    return value


def check_batch(value: str) -> str:
    """A rollout batch: ``N`` hosts (N >= 1) or ``P%`` of the fleet (1..100)."""
    return _amount(value, 1)


def check_failures(value: str) -> str:
    """A failure threshold: ``N`` hosts (N >= 0) or ``P%`` of the fleet (0..100)."""
    return _amount(value, 0)


HostAddress = Annotated[str, AfterValidator(check_host)]
"""An IPv4/IPv6 address or a host name."""

MqttUrl = Annotated[str, AfterValidator(check_mqtt_url)]
"""``mqtt://host[:port]`` or ``mqtts://host[:port]``."""

BatchAmount = Annotated[str, BeforeValidator(_numbers_as_text), AfterValidator(check_batch)]
"""Hosts per rollout batch: ``N`` (>= 1) or ``P%`` (1..100)."""

FailureAmount = Annotated[str, BeforeValidator(_numbers_as_text), AfterValidator(check_failures)]
"""Failures a rollout tolerates: ``N`` (>= 0) or ``P%`` (0..100)."""
