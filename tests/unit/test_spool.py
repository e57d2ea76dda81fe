"""The telemetry spool: persisted seq, ack, bounds (bytes, age), dropped_total, owner lock, kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeds.errors import TelemetryError
from edgeds.telemetry.spool import RECORD_OVERHEAD, Spool

BOOT = "boot-1"


def _fill(spool: Spool, count: int, size: int = 100) -> list[int]:
    return [spool.append("telemetry", "telemetry", b"x" * size, boot_id=BOOT) for _ in range(count)]


def test_seq_is_monotonic_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, 1 << 20, 3600) as spool:
        assert _fill(spool, 5) == [1, 2, 3, 4, 5]
        assert spool.ack([1, 2]) == 2
        assert spool.ack([2]) == 0  # already gone
    with Spool(path, 1 << 20, 3600) as spool:
        assert [r.seq for r in spool.peek()] == [3, 4, 5]
        assert spool.depth == 3
        spool.ack([3, 4, 5])
    # Even with nothing left in the table, the counter keeps going.
    with Spool(path, 1 << 20, 3600) as spool:
        assert spool.depth == 0
        assert _fill(spool, 1) == [6]
        assert spool.last_seq == 6


def test_peek_is_ordered_and_keeps_fields(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 1 << 20, 3600) as spool:
        spool.append("deploy", "deploy/r1", b'{"a":1}', boot_id="b0", retain=True, ts=100.0)
        spool.append("inspection", "inspection", b'{"b":2}', boot_id="b0", ts=101.0)
        records = spool.peek(limit=10)
        assert [(r.kind, r.topic, r.retain, r.body, r.ts) for r in records] == [
            ("deploy", "deploy/r1", True, b'{"a":1}', 100.0),
            ("inspection", "inspection", False, b'{"b":2}', 101.0),
        ]
        assert [r.seq for r in spool.peek(after_seq=1)] == [2]


def test_byte_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    record = 100 + len("telemetry") * 2 + RECORD_OVERHEAD
    path = tmp_path / "s.db"
    with Spool(path, 10 * record, 3600) as spool:
        _fill(spool, 25)
        assert spool.depth == 10
        assert spool.bytes <= 10 * record
        assert spool.dropped_total == 15
        assert [r.seq for r in spool.peek(limit=100)] == list(range(16, 26))
    with Spool(path, 10 * record, 3600) as spool:  # dropped_total is persisted
        assert spool.dropped_total == 15
        assert spool.bytes == 10 * record


def test_age_bound_drops_and_counts(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 1 << 20, max_age_s=60) as spool:
        now = time.time()
        spool.append("telemetry", "telemetry", b"{}", boot_id=BOOT, ts=now - 120)
        spool.append("telemetry", "telemetry", b"{}", boot_id=BOOT, ts=now - 90)
        spool.append("telemetry", "telemetry", b"{}", boot_id=BOOT, ts=now)  # append enforces the bound
        assert spool.dropped_total == 2
        assert [r.seq for r in spool.peek()] == [3]
        assert spool.expire(now + 61) == 1
        assert spool.depth == 0 and spool.dropped_total == 3


def test_oversized_record_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 2048, 3600) as spool, pytest.raises(TelemetryError, match="exceeds"):
        spool.append("telemetry", "telemetry", b"x" * 4096, boot_id=BOOT)


def test_second_owner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, 1 << 20, 3600), pytest.raises(TelemetryError, match="in use by another process"):
        Spool(path, 1 << 20, 3600)
    Spool(path, 1 << 20, 3600).close()  # released on close


def test_closed_spool_raises_telemetry_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", 1 << 20, 3600)
    spool.close()
    with pytest.raises(TelemetryError, match="closed"):
        _fill(spool, 1)


def test_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    code = (
        "import os, signal, sys\n"
        "from edgeds.telemetry.spool import Spool\n"
        f"s = Spool({str(path)!r}, 1 << 20, 3600)\n"
        "for i in range(50): s.append('telemetry', 'telemetry', b'{}', boot_id='b')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert proc.returncode == -9
    with Spool(path, 1 << 20, 3600) as spool:  # the kernel released the dead owner's lock
        assert spool.depth == 50
        assert spool.append("telemetry", "telemetry", b"{}", boot_id="b2") == 51


def test_file_size_stays_flat_over_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, 256 * 1024, 3600) as spool:
        _fill(spool, 4000, size=400)
        db_early = os.path.getsize(path)
        _fill(spool, 12000, size=400)
        db_late = os.path.getsize(path)
        assert spool.dropped_total == 16000 - spool.depth
        assert spool.bytes <= 256 * 1024
        wal = spool.file_bytes() - db_late
    assert db_late <= db_early * 1.1 + 64 * 1024, (db_early, db_late)
    assert wal <= 5 * 1024 * 1024
