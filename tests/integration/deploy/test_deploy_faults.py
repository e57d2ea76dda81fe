"""The deploy fault matrix (docs/deploy.md, "On the device") on simulated devices."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeds.bundle import generate_keypair, pack_bundle
from edgeds.cli import app
from edgeds.deploy.api import deploy_bundle
from edgeds.deploy.device import admission, steps
from edgeds.deploy.device.protocol import FAILED_NO_STATE_CHANGE, FAILED_ROLLBACK_COMPLETE, REJECTED, SUCCEEDED
from edgeds.deploy.device.store import Store
from edgeds.deploy.options import DeployOptions
from edgeds.deploy.ssh import connect
from edgeds.errors import HostKeyError

from .conftest import Rig


def _live_snapshot(rig: Rig) -> tuple[str | None, str | None, list[str]]:
    state = rig.status()
    return rig.current(), state["committed"], state["releases"]


def _infer_ok(rig: Rig, index: int = 0) -> str:
    """One real request to the device's agent; returns the model version that answered."""
    import urllib.request

    import numpy as np

    device = rig.devices[index]
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 3, 160, 160],
                "datatype": "FP32",
                "data": np.zeros(3 * 160 * 160, dtype=np.float32).tolist(),
            }
        ]
    }
    request = urllib.request.Request(
        f"http://{device.address}:8000/v2/models/tiny/infer", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return str(json.loads(response.read())["model_version"])


def _flip_byte(bundle: Path) -> None:
    path = bundle / "artifacts" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _escaping_tar(bundle: Path, out: Path) -> Path:
    tar_path = pack_bundle(bundle, out)
    with tarfile.open(tar_path, "a") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        payload = b"owned"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return tar_path


def test_bad_bundles_are_rejected_before_activation(rig: Rig, tmp_path: Path) -> None:
    good = rig.deploy(rig.bundle())
    assert good.status == SUCCEEDED
    before = _live_snapshot(rig)
    version_before = _infer_ok(rig)

    flipped = rig.bundle()
    _flip_byte(flipped)
    unsigned = rig.bundle(private_key=None)
    other_private, _ = generate_keypair(tmp_path / "other")
    wrong_key = rig.bundle(private_key=other_private)
    older = rig.bundle(version=1)
    expired = rig.bundle(expires_at="2020-01-01T00:00:00Z")
    cases: dict[str, tuple[Any, str]] = {
        "flipped byte": (rig.deploy(flipped), "checksum_mismatch"),
        "unsigned": (rig.deploy(unsigned), "unsigned"),
        "wrong key": (rig.deploy(wrong_key), "bad_signature"),
        "older version": (rig.deploy(older), "downgrade"),
        "expired": (rig.deploy(expired), "expired"),
    }
    escaping = _escaping_tar(rig.bundle(), tmp_path / "evil.tar")
    tar_result = deploy_bundle(escaping, rig.target_path)
    cases["escaping tar member"] = (tar_result.hosts[0], "unsafe_archive")

    for name, (result, reason) in cases.items():
        assert result.status == REJECTED, (name, result)
        assert result.reason == reason, (name, result)
        assert _live_snapshot(rig) == before, name
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped.txt").exists()
    assert _infer_ok(rig) == version_before
    assert rig.agent()["release"] == good.release
    incoming = rig.devices[0].install_dir / "incoming"
    assert not any(incoming.iterdir()), "a rejected upload must not stay in incoming/"


@pytest.mark.parametrize(
    ("variant", "kwargs"),
    [
        ("model fails to load", {"broken_model": True}),
        ("golden outputs differ", {"wrong_golden": True}),
        ("p99 over the bound", {"p99_ms": 0.001}),
    ],
)
def test_failed_activation_rolls_back_and_old_model_keeps_serving(
    rig: Rig, variant: str, kwargs: dict[str, Any]
) -> None:
    good = rig.deploy(rig.bundle())
    assert good.status == SUCCEEDED
    bad = rig.deploy(rig.bundle(**kwargs))
    assert bad.status == FAILED_ROLLBACK_COMPLETE, (variant, bad)
    assert rig.current() == good.release
    status = rig.status()
    assert status["committed"] == good.release and status["consistent"]
    assert bad.release in status["failed"]
    agent = rig.wait_agent(release=good.release)
    assert agent["release"] == good.release
    assert good.release is not None
    manifest = json.loads((rig.devices[0].install_dir / "releases" / good.release / "manifest.json").read_text())
    assert _infer_ok(rig) == manifest["model"]["version"]  # the card's version answers, not the bad bundle's


def test_sshd_killed_mid_upload_leaves_current_untouched_and_retry_completes(rig: Rig) -> None:
    good = rig.deploy(rig.bundle())
    assert good.status == SUCCEEDED
    before = _live_snapshot(rig)
    big = rig.bundle(padding_bytes=24 * 1024 * 1024)
    device = rig.devices[0]
    killed: list[int] = []

    def progress(host: str, event: str, data: dict[str, Any]) -> None:
        if event == "upload_bytes" and data["done"] > 6 * 1024 * 1024 and not killed:
            killed.append(data["done"])
            device.kill()

    failed = rig.deploy(big, progress=progress)
    assert killed, "the upload finished before sshd could be killed"
    assert failed.status == FAILED_NO_STATE_CHANGE, failed
    assert rig.current() == before[0]
    assert _infer_ok(rig)  # the agent kept serving through the outage
    parts = list((device.install_dir / "incoming").glob("*.part"))
    assert parts, "the partial upload should be kept for resuming"
    # what the device holds, not what the client had sent: pipelined writes still in flight at the
    # kill are lost, and how many depends on the machine's speed
    kept = sum(p.stat().st_size for p in parts)
    assert kept >= 1024 * 1024, f"only {kept} bytes of the partial upload were kept"

    device.start()
    assert _live_snapshot(rig) == before
    retried = rig.deploy(big)
    assert retried.status == SUCCEEDED, retried
    total = sum(p.stat().st_size for p in (big / "artifacts").iterdir())
    assert retried.uploaded_bytes <= total - kept, "the retry should resume from the kept bytes, not start over"
    assert rig.current() == retried.release


def test_agent_killed_during_activation_converges_to_a_committed_release(rig: Rig) -> None:
    good = rig.deploy(rig.bundle())
    assert good.status == SUCCEEDED
    device = rig.devices[0]

    def kill_agent(host: str, event: str, data: dict[str, Any]) -> None:
        if event == "reload_sent":
            os.kill(int(data["pid"]), signal.SIGKILL)

    old_pid = device.agent_pid()
    result = rig.deploy(rig.bundle(), progress=kill_agent)
    assert result.status == FAILED_ROLLBACK_COMPLETE, result
    agent = rig.wait_agent(release=good.release, not_pid=old_pid)  # the supervisor restarted it
    assert agent["release"] == good.release
    assert rig.status()["consistent"]

    # Power-cut variant: the deploy step dies right after the flip, then the agent is killed too.
    crashed = rig.deploy(rig.bundle(), options=DeployOptions(device_hooks={"crash_after_flip": True}))
    assert crashed.status in (FAILED_ROLLBACK_COMPLETE, FAILED_NO_STATE_CHANGE), crashed
    old_pid = device.agent_pid()
    assert device.kill_agent()
    agent = rig.wait_agent(release=good.release, not_pid=old_pid)
    status = rig.status()
    assert status["committed"] == good.release and status["consistent"], status
    assert rig.current() == good.release
    assert _infer_ok(rig)


def test_uncommitted_flip_is_rolled_back_by_a_restarted_agent(rig: Rig) -> None:
    good = rig.deploy(rig.bundle())
    assert good.status == SUCCEEDED
    device = rig.devices[0]
    # Leave the device exactly as a power cut after the flip would: new release live, pending, uncommitted.
    store = Store(device.install_dir)
    candidate_dir = rig.bundle()
    from edgeds.bundle import Bundle
    from edgeds.deploy.host import offer

    local = Bundle.open(candidate_dir, verify=False)
    planned = admission.plan(store, offer(local))
    for obj in planned["missing"]:
        (store.incoming / obj["sha256"]).write_bytes(local.objects()[obj["sha256"]].read_bytes())
    manifest = admission.verify_candidate(store, admission.Candidate.from_request(offer(local)))
    steps.ingest(store, manifest)
    steps.stage(store, admission.Candidate.from_request(offer(local)), manifest, planned["release"])
    state = store.load_state()
    state.pending = {"id": planned["release"], "from": good.release, "ts": time.time()}
    store.save_state(state)
    store.flip(planned["release"])
    local.close()
    for path in device.install_dir.rglob("*"):
        os.lchown(path, device.uid, device.gid)

    old_pid = device.agent_pid()
    assert device.kill_agent()
    rig.wait_agent(release=good.release, not_pid=old_pid)
    assert rig.current() == good.release
    assert rig.status()["consistent"]


def test_a_failing_progress_callback_is_that_hosts_result_not_the_rollouts(rig: Rig) -> None:
    """A bug outside edgeds (here the caller's progress callback) fails the host, logged; nothing changes."""
    good = rig.deploy(rig.bundle())
    assert good.status == SUCCEEDED, good

    def progress(host: str, event: str, data: dict[str, Any]) -> None:
        if event == "uploading":
            raise RuntimeError("the caller's progress bar broke")

    failed = rig.deploy(rig.bundle(), progress=progress)
    assert failed.status == FAILED_NO_STATE_CHANGE, failed
    assert "RuntimeError" in failed.message and "progress bar broke" in failed.message
    assert rig.status()["committed"] == good.release and rig.current() == good.release


def test_unknown_or_changed_host_key_is_refused(rig: Rig) -> None:
    known_hosts = rig.fleet.known_hosts
    pinned = known_hosts.read_text()
    endpoint = rig.plans[0].endpoint
    known_hosts.write_text("")
    with pytest.raises(HostKeyError, match="not pinned"):
        connect(endpoint)
    result = rig.deploy(rig.bundle())
    assert result.status == FAILED_NO_STATE_CHANGE and result.reason == "host_key"

    other = rig.fleet.base_dir / "impostor"
    from edgeds.sim.devices import _keypair

    impostor = _keypair(other)
    host_id = pinned.split()[0]
    known_hosts.write_text(f"{host_id} {impostor}\n")
    with pytest.raises(HostKeyError, match="CHANGED"):
        connect(endpoint)
    assert rig.current() is None

    # `edgeds enroll` refuses to re-pin a changed key, and pins an unknown one after --yes.
    runner = CliRunner()
    changed = runner.invoke(app, ["enroll", "--target", str(rig.target_path), "--yes", "--json"])
    assert isinstance(changed.exception, HostKeyError) and "CHANGED" in str(changed.exception)
    assert impostor.split()[1] in known_hosts.read_text()  # never replaced silently
    known_hosts.write_text("")
    enrolled = runner.invoke(app, ["enroll", "--target", str(rig.target_path), "--yes", "--json"])
    assert enrolled.exit_code == 0, enrolled.stdout
    rows = json.loads(enrolled.stdout)
    assert rows[0]["result"] == "pinned" and rows[0]["fingerprint"].startswith("SHA256:")
    assert known_hosts.read_text().split() == pinned.split()
    again = runner.invoke(app, ["enroll", "--target", str(rig.target_path), "--yes", "--json"])
    assert json.loads(again.stdout)[0]["result"] == "already pinned"
    assert rig.deploy(rig.bundle()).status == SUCCEEDED


def test_not_enough_disk_fails_at_precheck_without_change(rig: Rig) -> None:
    good = rig.deploy(rig.bundle())
    before = _live_snapshot(rig)
    result = rig.deploy(rig.bundle(min_disk_mb=1 << 30))
    assert result.status == FAILED_NO_STATE_CHANGE and result.reason == "insufficient_disk", result
    assert result.uploaded_bytes == 0
    assert _live_snapshot(rig) == before
    assert rig.agent()["release"] == good.release


def test_canary_failure_aborts_and_a_hung_host_cannot_stall_the_rollout(rig3: Rig) -> None:
    from edgeds.config import RolloutPolicy

    policy = RolloutPolicy(canary=1, batch="1", max_failures="0", host_timeout_s=120)
    result = deploy_bundle(rig3.bundle(broken_model=True), rig3.target_path, policy=policy)
    statuses = [h.status for h in result.hosts]
    assert result.aborted
    assert statuses == [FAILED_ROLLBACK_COMPLETE, FAILED_NO_STATE_CHANGE, FAILED_NO_STATE_CHANGE]
    assert [h.reason for h in result.hosts[1:]] == ["not_attempted", "not_attempted"]
    assert all(rig3.current(i) is None for i in range(3))

    # A hung device (sshd frozen: TCP accepts, no SSH banner) fails on its own deadline; the others finish.
    hung = rig3.devices[1]
    frozen = hung._session_processes()
    for proc in frozen:
        proc.suspend()
    try:
        policy = RolloutPolicy(canary=0, batch="100%", max_failures="1", host_timeout_s=20)
        started = time.monotonic()
        result = deploy_bundle(rig3.bundle(), rig3.target_path, policy=policy)
        elapsed = time.monotonic() - started
    finally:
        for proc in frozen:
            proc.resume()
    by_host = {h.host: h.status for h in result.hosts}
    assert by_host == {"sim-1": SUCCEEDED, "sim-2": FAILED_NO_STATE_CHANGE, "sim-3": SUCCEEDED}
    assert elapsed < 20, elapsed
    assert rig3.current(1) is None
