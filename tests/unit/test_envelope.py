"""The envelope on the wire, topic rules, and start-up validation of broker settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgeds.config import MqttConfig, TlsConfig
from edgeds.errors import TelemetryError
from edgeds.telemetry import envelope
from edgeds.telemetry.mqtt import EMBEDDED_URL, Secret, parse_url, resolve_settings

FIELDS = {
    "schema",
    "kind",
    "device_id",
    "boot_id",
    "seq",
    "ts",
    "is_historical",
    "agent_version",
    "spool_depth",
    "dropped_total",
    "payload",
}


def _wire(**over: object) -> bytes:
    args: dict[str, object] = dict(
        kind="telemetry",
        device_id="orin-a",
        boot_id="b-1",
        seq=7,
        ts=1700000000.5,
        is_historical=True,
        agent_version="0.1.0",
        spool_depth=3,
        dropped_total=2,
        payload_json=b'{"host":{"cpu_percent":1.5}}',
    )
    args.update(over)
    return envelope.encode(**args)  # type: ignore[arg-type]


def test_wire_format_has_every_envelope_field() -> None:
    raw = json.loads(_wire())
    assert set(raw) == FIELDS
    assert raw["schema"] == envelope.SCHEMA == "edgeds.telemetry/1"
    assert raw["payload"] == {"host": {"cpu_percent": 1.5}}
    env = envelope.decode(_wire())
    assert env.key == ("orin-a", "b-1", 7)
    assert (env.is_historical, env.spool_depth, env.dropped_total) == (True, 3, 2)


@pytest.mark.parametrize(
    "bad",
    [b"not json", b'{"schema":"edgeds.telemetry/1"}', json.dumps({"kind": "nope"}).encode()],
)
def test_decode_rejects_foreign_messages(bad: bytes) -> None:
    with pytest.raises(TelemetryError, match="not an edgeds telemetry message"):
        envelope.decode(bad)


def test_payload_serialisation_is_strict() -> None:
    assert envelope.dumps_payload({"a": [1, 2]}) == b'{"a":[1,2]}'
    with pytest.raises(TelemetryError, match="JSON"):
        envelope.dumps_payload({"x": math.nan})
    with pytest.raises(TelemetryError, match="mapping"):
        envelope.dumps_payload([1, 2])


@pytest.mark.parametrize("bad", ["", "a/b", "dev+", "dev#", "has space"])
def test_topic_segments_reject_wildcards_and_slashes(bad: str) -> None:
    with pytest.raises(TelemetryError, match="not a valid MQTT topic segment"):
        envelope.check_segment("device id", bad)


def test_topics() -> None:
    assert envelope.topic("edgeds", "d1", "deploy/r1") == "edgeds/d1/deploy/r1"
    assert envelope.split_topic("edgeds", "edgeds/d1/deploy/r1") == ("d1", "deploy/r1")
    assert envelope.split_topic("edgeds", "other/d1/status") is None
    envelope.check_prefix("plant-3/edgeds")
    with pytest.raises(TelemetryError):
        envelope.check_prefix("plant/#")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker:1883", "scheme"),
        ("mqtt://:1883", "no host"),
        ("mqtt://broker:99999", "malformed"),
        ("mqtt://broker:1883/topic", "only mqtt"),
        ("mqtt://user:pw@broker:1883", "credentials do not belong"),
        ("broker:1883", "scheme"),
    ],
)
def test_malformed_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(TelemetryError, match=message):
        parse_url(url)


def test_url_defaults() -> None:
    assert parse_url("mqtt://b") == (False, "b", 1883)
    assert parse_url("mqtts://b") == (True, "b", 8883)
    embedded = resolve_settings(MqttConfig())
    assert (embedded.url, embedded.protocol) == (EMBEDDED_URL, "3.1.1")  # all the embedded broker speaks
    assert resolve_settings(MqttConfig(url="mqtt://b")).protocol == "5"
    with pytest.raises(TelemetryError, match=r"MQTT 3\.1\.1 only"):
        resolve_settings(MqttConfig(protocol="5"))


def test_missing_tls_files_are_clear_errors(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    with pytest.raises(TelemetryError, match="CA file not found"):
        resolve_settings(MqttConfig(url="mqtts://b:8883", tls=TlsConfig(ca=str(ca))))
    ca.write_text("pem")
    cfg = MqttConfig(url="mqtts://b:8883", tls=TlsConfig(ca=str(ca), cert=str(tmp_path / "dev.crt")))
    with pytest.raises(TelemetryError, match="client certificate file not found"):
        resolve_settings(cfg)
    with pytest.raises(TelemetryError, match="use mqtts://"):
        resolve_settings(MqttConfig(url="mqtt://b:1883", tls=TlsConfig(ca=str(ca))))


def test_password_from_env_and_file_is_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDS_TEST_MQTT_PW", "s3cret-env")
    settings = resolve_settings(MqttConfig(url="mqtt://b", username="dev", password_env="EDGEDS_TEST_MQTT_PW"))
    assert settings.password is not None and settings.password.reveal() == "s3cret-env"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.password)
    pw = tmp_path / "pw"
    pw.write_text("s3cret-file\n")
    settings = resolve_settings(MqttConfig(url="mqtt://b", username="dev", password_file=str(pw)))
    assert isinstance(settings.password, Secret) and settings.password.reveal() == "s3cret-file"
    with pytest.raises(TelemetryError, match="EDGEDS_TEST_MQTT_MISSING is not set"):
        resolve_settings(MqttConfig(url="mqtt://b", username="dev", password_env="EDGEDS_TEST_MQTT_MISSING"))
    with pytest.raises(TelemetryError, match="cannot be read"):
        resolve_settings(MqttConfig(url="mqtt://b", username="dev", password_file=str(tmp_path / "nope")))
