"""Telemetry export: captures read back with dedupe, records written as JSONL and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from edgeds.errors import TelemetryError
from edgeds.telemetry.envelope import decode, encode
from edgeds.telemetry.export import read_capture, write_records
from edgeds.telemetry.view import record
from edgeds.telemetry.watch import FleetWatch


def _line(seq: int, boot: str = "b1", kind: str = "telemetry") -> str:
    wire = encode(
        kind=kind,
        device_id="dev-1",
        boot_id=boot,
        seq=seq,
        ts=1000.0 + seq,
        is_historical=False,
        agent_version="0.1.0",
        spool_depth=0,
        dropped_total=0,
        payload_json=json.dumps({"host": {"cpu_percent": 10 + seq}, "tags": [seq]}).encode(),
    )
    return json.dumps(record(f"edgeds/dev-1/{kind}", decode(wire)))


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "capture.jsonl"
    lines = [_line(1), _line(2), _line(2), "", "{not json", '{"topic": "x", "kind": "nope"}', _line(2, boot="b2")]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_capture_drops_repeats_and_counts_malformed(capture: Path) -> None:
    got = read_capture(capture)
    assert [(r["boot_id"], r["seq"]) for r in got.records] == [("b1", 1), ("b1", 2), ("b2", 2)]
    assert got.duplicates == 1 and got.malformed == 2
    assert got.records[0]["topic"] == "edgeds/dev-1/telemetry"
    every = read_capture(capture, dedupe=False)
    assert len(every.records) == 4 and every.duplicates == 0


def test_an_unreadable_capture_is_a_telemetry_error(tmp_path: Path) -> None:
    with pytest.raises(TelemetryError, match="cannot read capture"):
        read_capture(tmp_path / "missing.jsonl")


def test_write_jsonl_and_csv(capture: Path) -> None:
    records = read_capture(capture).records
    out = io.StringIO()
    write_records(records, "jsonl", out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == records
    out = io.StringIO()
    write_records(records, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 3
    assert list(rows[0])[:3] == ["topic", "schema", "kind"]
    assert rows[1]["payload.host.cpu_percent"] == "12" and rows[1]["payload.tags"] == "[2]"


def test_fleet_watch_refuses_an_unknown_protocol() -> None:
    with pytest.raises(TelemetryError, match=r"--protocol must be 5 or 3\.1\.1, got '4'"):
        FleetWatch("local", protocol="4")
