"""The example production broker setup of docs/mosquitto/ actually works: TLS with a client
certificate, per-device users with the password from the environment, no anonymous access,
and the ACL ``pattern write edgeds/%u/#`` stopping one device from writing as another."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeds.config import MqttConfig, TlsConfig
from edgeds.errors import TelemetryError
from edgeds.sim.broker import Mosquitto, free_port, mosquitto_binary
from edgeds.telemetry import envelope
from edgeds.telemetry.mqtt import Message, MqttSubscriber, resolve_settings
from edgeds.telemetry.publisher import TelemetryPublisher

from .conftest import wait_until

pytestmark = pytest.mark.integration
DOCS = Path(__file__).resolve().parents[3] / "docs" / "mosquitto"


def _cert(
    tmp: Path, name: str, issuer: tuple[Any, x509.Name] | None, *, ca: bool = False, ip: str | None = None
) -> tuple[Any, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, issuer_name = issuer if issuer else (key, subject)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    cert = builder.sign(signer_key, hashes.SHA256())
    (tmp / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key, subject


@pytest.fixture
def secure_broker(tmp_path: Path) -> Any:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (make system-deps)")
    ca = _cert(tmp_path, "ca", None, ca=True)
    _cert(tmp_path, "broker", ca, ip="127.0.0.1")
    _cert(tmp_path, "dev-a", ca)
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate([("dev-a", "pw-a"), ("dev-b", "pw-b"), ("edgeds-monitor", "pw-m")]):
        flags = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(passwd), user, password], check=True)
    port = free_port()
    conf = (DOCS / "mosquitto.conf").read_text()
    conf = conf.replace("listener 8883", f"listener {port} 127.0.0.1")
    conf = conf.replace("require_certificate false", "require_certificate true")
    conf = conf.replace("/etc/mosquitto/edgeds.passwd", str(passwd))
    conf = conf.replace("/etc/mosquitto/edgeds.acl", str(DOCS / "acl"))
    conf = conf.replace("/etc/mosquitto/certs/", f"{tmp_path}/").replace("/var/lib/mosquitto/", f"{tmp_path}/")
    conf = "\n".join(line for line in conf.splitlines() if not line.startswith("log_dest"))
    broker = Mosquitto(port, base_config=conf, directory=tmp_path / "broker").start()
    yield broker, tmp_path
    broker.close()


def _cfg(url: str, tmp: Path, user: str, env: str, client_cert: bool = True) -> MqttConfig:
    cert = TlsConfig(ca=str(tmp / "ca.crt"), cert=str(tmp / "dev-a.crt"), key=str(tmp / "dev-a.key"))
    return MqttConfig(
        url=url,
        protocol="5",
        username=user,
        password_env=env,
        tls=cert if client_cert else TlsConfig(ca=str(tmp / "ca.crt")),
    )


def test_tls_credentials_and_acl(secure_broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, certs = secure_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    monkeypatch.setenv("T_PW_A", "pw-a")
    monkeypatch.setenv("T_PW_M", "pw-m")
    monkeypatch.setenv("T_PW_WRONG", "nope")
    got: list[Message] = []
    monitor = MqttSubscriber(resolve_settings(_cfg(url, certs, "edgeds-monitor", "T_PW_M")), ["edgeds/#"], got.append)
    monitor.start(wait_s=10)
    try:
        # dev-a, user "{device}" -> "dev-a": may write edgeds/dev-a/#.
        cfg = _cfg(url, certs, "{device}", "T_PW_A")
        with TelemetryPublisher(cfg, "dev-a", tmp_path / "a.db", interval_s=0.1, host_metrics=False) as pub:
            assert wait_until(lambda: any(m.topic == "edgeds/dev-a/telemetry" for m in got), 10)
        assert pub.stats()["rejected_total"] == 0

        # The same credentials publishing as dev-b: the broker refuses (MQTT 5 PUBACK 0x87).
        spoof = TelemetryPublisher(
            _cfg(url, certs, "dev-a", "T_PW_A"), "dev-b", tmp_path / "b.db", interval_s=0.1, host_metrics=False
        ).start()
        assert wait_until(lambda: spoof.stats()["rejected_total"] >= 3, 10)
        spoof.stop()
        assert not any(m.topic.startswith("edgeds/dev-b/") for m in got)

        # Wrong password: never connects, nothing delivered, and the password is nowhere in the stats.
        bad = TelemetryPublisher(
            _cfg(url, certs, "dev-a", "T_PW_WRONG"), "dev-a", tmp_path / "c.db", interval_s=0.1, host_metrics=False
        ).start()
        assert not bad.wait_connected(2.5)
        assert "nope" not in repr(bad.stats()) + repr(bad.settings)
        bad.stop()
    finally:
        monitor.stop()
    payloads = [envelope.decode(m.payload) for m in got if m.topic == "edgeds/dev-a/telemetry"]
    assert payloads and all(e.device_id == "dev-a" for e in payloads)


def test_anonymous_and_plaintext_are_refused(secure_broker: Any) -> None:
    broker, certs = secure_broker
    anonymous = MqttSubscriber(
        resolve_settings(
            MqttConfig(
                url=f"mqtts://127.0.0.1:{broker.port}",
                protocol="5",
                tls=TlsConfig(ca=str(certs / "ca.crt"), cert=str(certs / "dev-a.crt"), key=str(certs / "dev-a.key")),
            )
        ),
        ["edgeds/#"],
        lambda m: None,
    )
    with pytest.raises(TelemetryError, match="could not subscribe"):
        anonymous.start(wait_s=2)
    plaintext = MqttSubscriber(
        resolve_settings(MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}")), ["#"], lambda m: None
    )
    with pytest.raises(TelemetryError, match="could not subscribe"):
        plaintext.start(wait_s=2)
