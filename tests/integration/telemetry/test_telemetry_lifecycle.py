"""Publisher process lifecycle against a real mosquitto: kill -9 with an unsent spool then
restart (the spool drains), Last Will on kill -9, ``offline`` on clean shutdown, start-up errors."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeds.sim.broker import free_port
from edgeds.telemetry.spool import Spool

from .conftest import Consumer, PublisherProcess, wait_until

pytestmark = pytest.mark.integration


def test_killed_with_unsent_spool_then_restarted_drains(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Any],
    target_file: Callable[[str, str], Path],
    publishers: Callable[..., PublisherProcess],
    consumers: Callable[..., Consumer],
) -> None:
    broker = mosquitto_factory(start=False)  # port reserved, nobody listening yet
    target = target_file(broker.url, "5")
    spool_path = tmp_path / "dev.db"
    first = publishers(target, "dev-k", spool_path, 20.0)
    assert wait_until(lambda: spool_path.exists() and spool_path.stat().st_size > 0, 10)
    time.sleep(1.5)
    first.kill()  # SIGKILL with everything still spooled
    with Spool(spool_path, 1 << 26, 3600) as spool:  # the dead owner's lock is gone
        unsent = spool.depth
        first_boot = spool.peek(limit=1)[0].boot_id
    assert unsent >= 10

    broker.start()
    watcher = consumers(broker.url, "5")
    second = publishers(target, "dev-k", spool_path, 20.0)
    assert wait_until(lambda: set(range(1, unsent + 1)) <= watcher.seqs("dev-k"), 20)
    stats = second.terminate()
    old = [e for e in watcher.stream("dev-k") if e.seq <= unsent]
    assert all(e.is_historical and e.boot_id == first_boot for e in old)
    new = [e for e in watcher.stream("dev-k") if e.seq > unsent]
    assert new and all(e.boot_id != first_boot for e in new)  # seq continued across the restart
    assert stats["spool_depth"] == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_last_will_on_kill_and_offline_on_clean_shutdown(
    protocol: str,
    tmp_path: Path,
    mosquitto_factory: Callable[..., Any],
    target_file: Callable[[str, str], Path],
    publishers: Callable[..., PublisherProcess],
    consumers: Callable[..., Consumer],
) -> None:
    broker = mosquitto_factory()
    target = target_file(broker.url, protocol)
    watcher = consumers(broker.url, protocol)

    killed = publishers(target, "dev-w", tmp_path / "w.db", 10.0)
    assert wait_until(lambda: ("online", "connected") in [s[1:] for s in watcher.statuses("dev-w")], 10)
    killed.kill()
    assert wait_until(lambda: watcher.statuses("dev-w")[-1][1:] == ("offline", "connection-lost"), 10)
    late = consumers(broker.url, protocol)  # a new subscriber gets the retained Last Will
    assert wait_until(lambda: bool(late.statuses("dev-w")), 5)
    assert late.statuses("dev-w")[-1] == (True, "offline", "connection-lost")

    clean = publishers(target, "dev-w", tmp_path / "w.db", 10.0)
    assert wait_until(lambda: watcher.statuses("dev-w")[-1][1:] == ("online", "connected"), 10)
    clean.terminate()
    assert wait_until(lambda: watcher.statuses("dev-w")[-1][1:] == ("offline", "shutdown"), 10)
    later = consumers(broker.url, protocol)
    assert wait_until(lambda: bool(later.statuses("dev-w")), 5)
    assert later.statuses("dev-w")[-1] == (True, "offline", "shutdown")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeds.telemetry.run", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_startup_errors_are_clear(tmp_path: Path, target_file: Callable[[str, str], Path]) -> None:
    target = target_file(f"mqtt://127.0.0.1:{free_port()}", "5")
    bad_url = _run(
        "--target",
        str(target),
        "--device-id",
        "d",
        "--spool",
        str(tmp_path / "s.db"),
        "--url",
        "mqtt://127.0.0.1:99999",
    )
    assert bad_url.returncode == 2
    assert "malformed broker URL 'mqtt://127.0.0.1:99999'" in bad_url.stderr

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(target.read_text().replace("mqtt://127.0.0.1", "mqtt//127.0.0.1"))
    from_config = _run("--target", str(bad_yaml), "--device-id", "d", "--spool", str(tmp_path / "s.db"))
    assert from_config.returncode == 2
    assert f"{bad_yaml}:6: mqtt.url: must look like mqtt://host:port" in from_config.stderr

    tls_yaml = tmp_path / "tls.yaml"
    tls_yaml.write_text(
        target.read_text().replace("mqtt://", "mqtts://") + f"  tls:\n    ca: {tmp_path / 'missing-ca.crt'}\n"
    )
    missing_ca = _run("--target", str(tls_yaml), "--device-id", "d", "--spool", str(tmp_path / "s.db"))
    assert missing_ca.returncode == 2
    assert f"MQTT TLS CA file not found: {tmp_path / 'missing-ca.crt'}" in missing_ca.stderr
    assert not (tmp_path / "s.db").exists()  # failed before touching anything
