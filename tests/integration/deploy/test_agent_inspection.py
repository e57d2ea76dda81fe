"""The agent runs the target's ``inspection:`` stations on the device it serves from.

Real path: target YAML with a station -> ``setup_host`` writes it into ``agent-config.json`` ->
deploy over SSH -> the agent starts the station on its served engine once the release serves ->
decisions land in the device's ledger, on ``edgeds/<device>/inspection`` (real mosquitto) and
in ``run/agent.json``; a corrupt frame in the source is counted and skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from edgeds.datasets.surface import generate
from edgeds.sim.broker import Mosquitto
from edgeds.sim.bundles import LABELS
from tests.integration.telemetry.conftest import Consumer, wait_until

from .conftest import Keys, Rig, _make_rig

pytestmark = pytest.mark.integration

FRAMES = 12


@pytest.fixture
def inspecting_rig(keys: Keys, tmp_path: Path, broker: Mosquitto) -> Iterator[Rig]:
    station = {"name": "line-1", "source": "data/frames", "uncertain_below": 0.0, "alarm_consecutive_rejects": 100}
    yield from _make_rig(1, keys, tmp_path, mqtt_url=broker.url, inspection=[station])


def _write_frames(rig: Rig) -> None:
    """PNG frames plus one corrupt file in the device's ``data/frames`` (relative to its install dir)."""
    device = rig.devices[0]
    frames = device.install_dir / "data" / "frames"
    frames.mkdir(parents=True)
    images, _ = generate(5, FRAMES, 160)
    for i, image in enumerate(images):
        Image.fromarray(image).save(frames / f"frame_{i:03d}.png")
    (frames / "frame_006b.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    for path in (frames.parent, frames, *frames.iterdir()):
        os.chown(path, device.uid, device.gid)


def test_agent_runs_the_targets_stations(inspecting_rig: Rig, broker: Mosquitto) -> None:
    rig = inspecting_rig
    device = rig.devices[0]
    config = json.loads((device.install_dir / "agent-config.json").read_text())
    assert [s["name"] for s in config["inspection"]] == ["line-1"]
    _write_frames(rig)
    consumer = Consumer(broker.url, "5").start()
    try:
        result = rig.deploy(rig.bundle())
        assert result.status == "SUCCEEDED", result

        def station() -> dict[str, object]:
            try:
                return dict(rig.agent()["inspection"]["stations"]["line-1"])
            except (KeyError, OSError, ValueError):
                return {}

        assert wait_until(lambda: station().get("processed") == FRAMES, 60), rig.agent()
        stats = station()
        assert stats["corrupt"] == 1 and stats["errors"] == 0
        assert sum(dict(stats["decisions"]).values()) == FRAMES  # type: ignore[call-overload]

        def frame_ids() -> list[object]:
            payloads = [e.payload for e in consumer.stream(device.name) if e.kind == "inspection"]
            return [r["frame_id"] for p in payloads if p.get("type") == "results" for r in p["results"]]

        assert wait_until(lambda: len(frame_ids()) == FRAMES, 30), frame_ids()
        assert len(set(frame_ids())) == FRAMES

        def periodic() -> list[dict[str, object]]:  # the agent's telemetry carries the station figures
            return [e.payload for e in consumer.stream(device.name) if e.kind == "telemetry"]

        assert wait_until(lambda: any("line-1" in str(p.get("inspection")) for p in periodic()), 30), periodic()
    finally:
        consumer.sub.stop()

    def decided() -> list[dict[str, object]]:
        ledgers = sorted((device.install_dir / "inspection" / "ledger").glob("*.jsonl"))
        records = [json.loads(line) for path in ledgers for line in path.read_text().splitlines()]
        return [r for r in records if "decision" in r]

    assert len(decided()) == FRAMES, decided()[:3]
    assert {r["class"] for r in decided()} <= set(LABELS)

    # a release whose labels differ: the station restarts on it (the directory is read again)
    relabelled = ("ok", "dent", "burr", "smear", "chip")
    result = rig.deploy(rig.bundle(labels=relabelled))
    assert result.status == "SUCCEEDED", result
    assert wait_until(lambda: len(decided()) == 2 * FRAMES, 60), len(decided())
    assert {r["class"] for r in decided()[FRAMES:]} <= set(relabelled)
    assert {r["class"] for r in decided()[FRAMES:]} - {"ok"}, "the new labels are used"
