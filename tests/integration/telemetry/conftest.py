"""Fixtures for the telemetry integration tests: a real mosquitto on loopback (edgeds.sim.broker),
a target YAML pointing at it, a collecting consumer, and publisher processes
(``python -m edgeds.telemetry.run``) that tests may SIGTERM or SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from edgeds.config import MqttConfig
from edgeds.sim.broker import Mosquitto, mosquitto_binary
from edgeds.telemetry import envelope
from edgeds.telemetry.mqtt import Message, MqttSubscriber, Protocol, resolve_settings

pytestmark = pytest.mark.integration


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Consumer:
    """Subscribes to ``edgeds/#`` and keeps every decoded message, in arrival order."""

    def __init__(self, url: str, protocol: str, client_id: str = "", persistent: bool = False) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bool, envelope.Envelope]] = []
        settings = resolve_settings(MqttConfig(url=url, protocol=cast(Protocol, protocol)))
        self.sub = MqttSubscriber(settings, ["edgeds/#"], self._on, client_id=client_id, persistent=persistent)

    def _on(self, msg: Message) -> None:
        env = envelope.decode(msg.payload)
        with self.lock:
            self.messages.append((msg.topic, msg.retain, env))

    def start(self) -> Consumer:
        self.sub.start(wait_s=10)
        return self

    def stream(self, device: str) -> list[envelope.Envelope]:
        with self.lock:
            return [e for _, _, e in self.messages if e.device_id == device and e.kind != "status"]

    def seqs(self, device: str) -> set[int]:
        return {e.seq for e in self.stream(device)}

    def statuses(self, device: str) -> list[tuple[bool, str, str]]:
        with self.lock:
            return [
                (retain, str(e.payload["state"]), str(e.payload["reason"]))
                for _, retain, e in self.messages
                if e.device_id == device and e.kind == "status"
            ]


class PublisherProcess:
    """``python -m edgeds.telemetry.run`` in a child process."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeds.telemetry.run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"publisher did not start: {err}")
        self.started: dict[str, Any] = json.loads(line)

    def terminate(self, timeout: float = 20) -> dict[str, Any]:
        """SIGTERM (clean shutdown) and return its final stats line."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=timeout)
        return cast(dict[str, Any], json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def mosquitto_factory() -> Iterator[Callable[..., Mosquitto]]:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (make system-deps)")
    made: list[Mosquitto] = []

    def make(persistence: bool = False, start: bool = True) -> Mosquitto:
        broker = Mosquitto(persistence=persistence)
        made.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def target_file(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(url: str, protocol: str = "5") -> Path:
        path = tmp_path / f"target-{protocol.replace('.', '')}.yaml"
        path.write_text(
            "schema: 1\nname: telemetry-test\nprofile: x86-cpu\nlocal: true\n"
            f'mqtt:\n  url: {url}\n  protocol: "{protocol}"\n  prefix: edgeds\n'
        )
        return path

    return write


@pytest.fixture
def publishers() -> Iterator[Callable[..., PublisherProcess]]:
    started: list[PublisherProcess] = []

    def spawn(target: Path, device: str, spool: Path, rate: float = 10.0, *extra: str) -> PublisherProcess:
        args = ["--target", str(target), "--device-id", device, "--spool", str(spool), "--rate", str(rate)]
        pub = PublisherProcess([*args, "--reconnect-max", "2", *extra])
        started.append(pub)
        return pub

    yield spawn
    for pub in started:
        if pub.proc.poll() is None:
            pub.kill()


@pytest.fixture
def consumers() -> Iterator[Callable[..., Consumer]]:
    made: list[Consumer] = []

    def make(url: str, protocol: str = "5", client_id: str = "", persistent: bool = False) -> Consumer:
        consumer = Consumer(url, protocol, client_id, persistent).start()
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.sub.stop()
