"""``edgeds doctor`` says which hardware paths this build was not verified on, and how to check them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgeds.cli import app
from edgeds.doctor import diagnose

runner = CliRunner()


def test_tensorrt_and_npu_delegates_are_reported_unverified() -> None:
    hardware = {h.name: h for h in diagnose().hardware}
    assert set(hardware) == {"tensorrt", "openvino-gpu", "energy", "litert-delegates"}
    assert all(not h.verified and "not verified on hardware" in h.note for h in hardware.values())
    trt = hardware["tensorrt"]
    assert not trt.verified and "not verified on hardware" in trt.note and "hil/gpu-check.sh" in trt.check
    delegates = hardware["litert-delegates"]
    assert not delegates.verified and "NNAPI" in delegates.note and "QNN" in delegates.note


def test_doctor_json_and_table_carry_the_hardware_lines() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    rows = {h["name"]: h for h in json.loads(result.stdout)["hardware"]}
    assert rows["tensorrt"]["verified"] is False and "hil/gpu-check.sh" in rows["tensorrt"]["check"]
    human = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert human.exit_code == 0
    assert "Verified on hardware" in human.stdout and "hil/gpu-check.sh" in human.stdout


def test_doctor_names_the_power_source_or_why_there_is_none() -> None:
    from edgeds.power import open_source

    source, why = open_source(tegrastats=None)
    power = diagnose().power
    if source is None:
        assert power == f"n/a ({why})"
    else:
        source.close()
        assert power == source.name
