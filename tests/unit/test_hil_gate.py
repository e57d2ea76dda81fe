"""``edgeds hil run``'s library side: the scratch work directory never outlives the run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from edgeds.errors import HilError
from edgeds.hil.gate import gate
from edgeds.hil.rig import load_rig


def test_a_failed_run_removes_its_work_dir_and_writes_no_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rig = load_rig("sim")
    with pytest.raises(HilError, match="unknown suite"):
        gate(rig, ["conformance", "fuzz"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 1 and left[0].startswith(f"edgeds-hil-{rig.name}-")  # the (empty) default report dir
    assert not any((tmp_path / left[0]).iterdir())


def test_real_rig_needs_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(HilError, match="give the bundle to gate"):
        gate(load_rig("orin-line3"), report_dir=tmp_path / "report")
    assert not (tmp_path / "report").exists()
