"""Deploy, redeploy (already installed), upload only what is missing, status/rollback/prune via the CLI."""

from __future__ import annotations

import json
import os
import ssl
import stat
import urllib.error
import urllib.request

import psutil
import pytest
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


def _call(url: str, path: str, context: ssl.SSLContext, key: str | None = None) -> int:
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_deploy_to_an_agent_with_api_key_and_tls(secure_rig: Rig) -> None:
    """Setup installs the key and certificate (0600, the agent's user); the deploy's health check
    calls the agent over HTTPS with the key; callers without it get 401, health stays open."""
    device = secure_rig.devices[0]
    secrets = device.install_dir / "secrets"
    for name in ("api-keys", "tls.crt", "tls.key"):
        info = (secrets / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == device.uid, name
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700

    result = secure_rig.deploy(secure_rig.bundle(seed=3))
    assert result.status == SUCCEEDED, result
    assert result.details["health"]["mode"] == "agent"
    agent = secure_rig.wait_agent(release=result.release)
    assert agent["scheme"] == "https"
    url = f"https://{agent['http']}"
    assert secure_rig.ca is not None and secure_rig.api_key is not None
    ca = ssl.create_default_context(cafile=str(secure_rig.ca))
    model = "tiny"
    assert _call(url, "/v2/health/ready", ca) == 200
    assert _call(url, f"/v2/models/{model}", ca) == 401
    assert _call(url, f"/v2/models/{model}", ca, "not-the-key") == 401
    assert _call(url, "/metrics", ca) == 401
    assert _call(url, f"/v2/models/{model}", ca, secure_rig.api_key) == 200
    with pytest.raises(urllib.error.URLError):  # the system's CAs do not vouch for the device
        _call(url, "/v2/health/ready", ssl.create_default_context())

    code, status = _cli("status", "--target", str(secure_rig.target_path))
    assert code == 0
    assert status["sim-1"]["agent"]["ready"] is True  # type: ignore[index]


def test_agent_runs_as_the_device_user(rig: Rig) -> None:
    """The supervised agent runs as the device's own unprivileged user, never root."""
    device = rig.devices[0]
    pid = device.agent_pid()
    assert pid is not None
    uid = psutil.Process(pid).uids().real
    assert uid == device.uid
    if rig.fleet.dedicated_users or os.geteuid() != 0:
        assert uid != 0
    else:  # pragma: no cover - root without dedicated device users: the sim device is root's
        pytest.skip("the simulated device logs in as root here (no dedicated device users)")
