"""Deploy, redeploy (already installed), upload only what is missing, status/rollback/prune via the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgeds.cli import app
from edgeds.deploy.device.protocol import SUCCEEDED

from .conftest import Rig

runner = CliRunner()


def _cli(*args: str) -> tuple[int, object]:
    result = runner.invoke(app, [*args, "--json"])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON from {args}: {result.stdout}\n{result.stderr}") from exc


def test_deploy_redeploy_upload_only_missing_then_rollback_and_prune(rig: Rig) -> None:
    first = rig.bundle(seed=7)
    result = rig.deploy(first)
    assert result.status == SUCCEEDED, result
    assert rig.current() == result.release
    assert result.details["health"]["mode"] == "agent"
    assert rig.wait_agent(release=result.release)["release"] == result.release

    again = rig.deploy(first)
    assert again.status == SUCCEEDED and again.already_installed
    assert again.uploaded_bytes == 0

    # A new version with the same weights: the artifact is already on the device, only small files move.
    second = rig.bundle(seed=7)
    model_size = (second / "artifacts" / "model.onnx").stat().st_size
    upgraded = rig.deploy(second)
    assert upgraded.status == SUCCEEDED, upgraded
    assert upgraded.uploaded_bytes < model_size
    assert upgraded.previous == result.release

    code, status = _cli("status", "--target", str(rig.target_path))
    assert code == 0
    host = status["sim-1"]  # type: ignore[index]
    assert host["current"]["id"] == upgraded.release
    assert host["previous"]["id"] == result.release
    assert host["agent"]["ready"] is True and host["consistent"] is True

    code, rolled = _cli("rollback", "--target", str(rig.target_path))
    assert code == 0, rolled
    assert rolled["sim-1"]["status"] == SUCCEEDED  # type: ignore[index]
    assert rig.current() == result.release
    rig.wait_agent(release=result.release)

    third = rig.deploy(rig.bundle(seed=8))
    assert third.status == SUCCEEDED
    code, pruned = _cli("releases", "prune", "--target", str(rig.target_path), "--keep", "1")
    assert code == 0
    assert set(pruned["sim-1"]["kept"]) == {third.release, result.release}  # type: ignore[index]
    assert upgraded.release in pruned["sim-1"]["removed"]  # type: ignore[index]


def test_cli_deploy_fleet_reports_every_host(rig3: Rig) -> None:
    bundle = rig3.bundle()
    result = runner.invoke(app, ["deploy", str(bundle), "--target", str(rig3.target_path), "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert [h["host"] for h in data["hosts"]] == ["sim-1", "sim-2", "sim-3"]
    assert all(h["status"] == SUCCEEDED for h in data["hosts"])
    assert data["waves"][0] == ["sim-1"]  # canary first
    for index in range(3):
        assert rig3.current(index) == data["hosts"][index]["release"]
