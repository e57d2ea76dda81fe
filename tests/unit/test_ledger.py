"""The inspection ledger (JSONL, fsync policy, rotation, bound) and the rejected-frame store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeds.inspection.ledger import Ledger, RejectStore, read_ledger


def record(i: int, **extra: object) -> dict[str, object]:
    return {"type": "frame", "station": "s1", "frame_id": i, "decision": "accept", "pad": "x" * 40, **extra}


def test_records_read_back_in_order(tmp_path: Path) -> None:
    with Ledger(tmp_path, "s1", fsync="never") as ledger:
        for i in range(100):
            ledger.append(record(i))
    assert [r["frame_id"] for r in read_ledger(tmp_path, "s1")] == list(range(100))
    assert ledger.stats.records == 100


def test_fsync_policies(tmp_path: Path) -> None:
    with Ledger(tmp_path, "always", fsync="always") as always:
        for i in range(10):
            always.append(record(i))
        assert always.stats.fsyncs == 10  # before each append returned
    with Ledger(tmp_path, "interval", fsync="interval", fsync_interval_s=3600) as interval:
        interval.append_many([record(i) for i in range(10)])
        time.sleep(0.05)
        assert interval.stats.fsyncs == 0  # accepted frames wait for the interval
        interval.append(record(10, decision="reject"), durable=True)
        assert interval.wait_durable(5)  # a reject is fsynced at once, by the syncer thread
        assert interval.stats.fsyncs == 1  # one fsync covered all 11 records (group commit)
    with Ledger(tmp_path, "never", fsync="never") as never:
        never.append(record(0), durable=True)
        assert never.stats.fsyncs == 0


def test_interval_policy_syncs_in_the_background(tmp_path: Path) -> None:
    with Ledger(tmp_path, "s1", fsync="interval", fsync_interval_s=0.05) as ledger:
        ledger.append(record(0))
        deadline = time.monotonic() + 5
        while ledger.stats.fsyncs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ledger.stats.fsyncs == 1
        time.sleep(0.2)
        assert ledger.stats.fsyncs == 1  # nothing new: no further fsync


@pytest.mark.parametrize("fsync", ["never", "interval"])
def test_rotation_keeps_the_total_bounded_and_evicts_oldest_first(tmp_path: Path, fsync: str) -> None:
    ledger = Ledger(
        tmp_path,
        "s1",
        max_file_bytes=2048,
        max_total_bytes=8192,
        fsync=fsync,  # type: ignore[arg-type]
        fsync_interval_s=0.001,
    )
    for i in range(1000):
        ledger.append(record(i), durable=i % 7 == 0)  # the syncer races the rotations
    ledger.close()
    files = ledger.files()
    assert ledger.stats.rotations > 4 and ledger.stats.evicted_files > 0
    assert sum(p.stat().st_size for p in files if p.exists()) <= 8192
    ids = [r["frame_id"] for r in read_ledger(tmp_path, "s1")]
    assert ids[-1] == 999 and ids == list(range(ids[0], 1000))  # the newest, contiguous, in order
    assert ledger.stats.evicted_bytes > 0


def test_torn_last_line_is_repaired_on_open(tmp_path: Path) -> None:
    with Ledger(tmp_path, "s1", fsync="never") as ledger:
        ledger.append(record(0))
        ledger.append(record(1))
    with (tmp_path / "s1.jsonl").open("ab") as handle:
        handle.write(b'{"type":"frame","frame_id":2,"deci')  # a crash in the middle of a write
    with Ledger(tmp_path, "s1", fsync="never") as ledger:
        assert ledger.stats.torn_repaired == 1
        ledger.append(record(3))
    lines = (tmp_path / "s1.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["frame_id"] for line in lines] == [0, 1, 3]


_WRITER = """
import sys
from edgeds.inspection.ledger import Ledger
ledger = Ledger(sys.argv[1], "s1", fsync="never")
i = 0
while True:
    ledger.append({"frame_id": i})
    print(i, flush=True)
    i += 1
"""


def test_every_acknowledged_record_survives_a_killed_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ids = [r["frame_id"] for r in read_ledger(tmp_path, "s1")]
    assert ids[: acknowledged + 1] == list(range(acknowledged + 1))


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_reject_store_respects_its_disk_budget(tmp_path: Path, image_format: str) -> None:
    budget = 40_000
    store = RejectStore(tmp_path, budget, image_format=image_format, max_pending=1000)  # type: ignore[arg-type]
    names = [store.save(_noise(i), "s1", i, "pit") for i in range(30)]
    assert all(names)
    store.close()
    files = sorted(tmp_path.iterdir())
    assert sum(p.stat().st_size for p in files) <= budget
    assert store.evicted > 0 and store.saved == 30
    assert files[-1].name == names[-1]  # the newest is kept, the oldest went first
    assert all(p.suffix == f".{image_format}" for p in files)


def test_reject_store_writes_the_frame_it_was_given(tmp_path: Path) -> None:
    from PIL import Image

    store = RejectStore(tmp_path, image_format="png")  # lossless: the pixels can be compared
    image = _noise(7)
    name = store.save(image, "s1", 7, "crack")
    buffer_reused = image.copy()
    image[...] = 0  # the caller may reuse its buffer at once: save() copied it
    store.close()
    assert name is not None
    with Image.open(tmp_path / name) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), buffer_reused)


_FULL_DISK = """
import resource, signal, sys
from edgeds.inspection.ledger import Ledger
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))  # writes past 4000 bytes fail with EFBIG
ledger = Ledger(sys.argv[1], "s1", fsync="never")
for i in range(100):
    ledger.append({"frame_id": i, "pad": "x" * 60})
ledger.close()
print(ledger.stats.records, ledger.stats.write_errors)
"""


def test_a_full_disk_is_counted_without_tearing_or_crashing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    records, errors = map(int, out.stdout.split())
    assert errors > 0 and records + errors == 100
    lines = (tmp_path / "s1.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["frame_id"] for line in lines] == list(range(records))  # whole lines only
