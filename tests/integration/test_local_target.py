"""The local target for real: deploy, status, inference, rollback and logs on this machine, no SSH.

Each test gets its own install dir and agent port through a ``targets/local.yaml`` in a temporary
working directory (a file named ``local`` replaces the built-in target), so the commands run
exactly as a user types them: ``edgeds deploy BUNDLE --target local``. The fixture stops the
agent and its supervisor it started.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeds.bundle import Bundle, generate_keypair
from edgeds.cli import app
from edgeds.deploy.api import deploy_bundle
from edgeds.deploy.device.protocol import REJECTED, SUCCEEDED
from edgeds.deploy.local_agent import stop_local_agent
from edgeds.deploy.options import DeployOptions
from edgeds.deploy.targets import HostPlan, host_plans, resolve_target
from edgeds.errors import DeployError
from edgeds.sim.broker import free_port
from edgeds.sim.bundles import make_bundle

httpclient = pytest.importorskip("tritonclient.http")

runner = CliRunner()


@dataclass
class Local:
    work: Path
    install_dir: Path
    port: int
    private: Path
    public: Path
    plan: HostPlan

    def bundle(self, version: int, seed: int) -> Path:
        return make_bundle(self.work / f"bundle-{version}", version, self.private, seed=seed)

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    def cli_json(self, *args: str) -> tuple[int, Any]:
        code, out, err = self.cli(*args, "--json")
        try:
            return code, json.loads(out)
        except ValueError as exc:
            raise AssertionError(f"no JSON from {args}: {out}\n{err}") from exc

    def agent(self) -> dict[str, Any]:
        return dict(json.loads((self.install_dir / "run" / "agent.json").read_text()))


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Local]:
    """A ``local`` target of this test: its install dir under ``tmp_path``, a free agent port."""
    work = tmp_path / "work"
    (work / "targets").mkdir(parents=True)
    install_dir = tmp_path / "install"
    port = free_port()
    (work / "targets" / "local.yaml").write_text(
        "schema: 1\nname: local\nprofile: auto\nlocal: true\n"
        f"install_dir: {install_dir}\n"
        f"agent: {{http_host: 127.0.0.1, http_port: {port}}}\n"
    )
    monkeypatch.chdir(work)
    monkeypatch.delenv("EDGEDS_LOCAL_DIR", raising=False)
    monkeypatch.delenv("EDGEDS_TARGETS", raising=False)
    private, public = generate_keypair(tmp_path / "keys")
    loaded, path = resolve_target("local")
    (plan,) = host_plans(loaded, path)
    assert plan.local and plan.install_dir == str(install_dir)
    try:
        yield Local(work, install_dir, port, private, public, plan)
    finally:
        assert stop_local_agent(plan), "the local agent did not stop"


def test_deploy_status_infer_rollback_logs_on_this_machine(local: Local) -> None:
    first = local.bundle(1, seed=1)
    code, data = local.cli_json("deploy", str(first), "--target", "local", "--public-key", str(local.public))
    assert code == 0, data
    (host,) = data["hosts"]
    assert host["host"] == "local" and host["status"] == SUCCEEDED, host
    assert host["details"]["health"]["mode"] == "agent"  # checked through the agent it started
    release1 = host["release"]
    assert os.readlink(local.install_dir / "current") == f"releases/{release1}"
    pid = local.agent()["pid"]

    code, status = local.cli_json("status", "--target", "local")
    assert code == 0, status
    assert status["local"]["current"]["id"] == release1
    assert status["local"]["agent"]["ready"] is True and status["local"]["consistent"] is True
    code, out, _ = local.cli("status", "--target", "local")
    assert code == 0 and "local" in out

    # the agent started by deploy answers an inference request on the target's port
    with Bundle.open(first) as opened:
        inputs, outputs = opened.golden()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{local.port}")
    tensor = httpclient.InferInput("input", list(inputs[:1].shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(inputs[:1]))
    answer = client.infer("tiny", [tensor])
    np.testing.assert_allclose(answer.as_numpy("logits"), outputs["logits"][:1], rtol=1e-4, atol=1e-4)

    # a second deploy (the key is trusted now) swaps the release in the same agent
    second = deploy_bundle(local.bundle(2, seed=2), "local", options=DeployOptions(health_requests=5))
    (result,) = second.hosts
    assert result.status == SUCCEEDED, result
    assert result.previous == release1
    assert local.agent()["pid"] == pid and local.agent()["release"] == result.release

    code, rolled = local.cli_json("rollback", "--target", "local")
    assert code == 0, rolled
    assert rolled["local"]["status"] == SUCCEEDED and rolled["local"]["release"] == release1
    code, status = local.cli_json("status", "--target", "local")
    assert status["local"]["current"]["id"] == release1
    assert status["local"]["previous"]["id"] == result.release

    code, out, err = local.cli("logs", "--target", "local", "--lines", "200")
    assert code == 0, err
    assert f"listening on 127.0.0.1:{local.port}" in out
    assert (
        result.release is not None and result.release in out
    )  # the swap to the second release and back is in the agent's log
    code, logs = local.cli_json("logs", "--target", "local", "--host", "local", "--lines", "2")
    assert code == 0 and len(logs["local"]["log"].splitlines()) == 2

    code, stopped = local.cli_json("device", "stop", "--target", "local")
    assert code == 0 and stopped == {"local": True}, stopped
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the agent is gone
    code, status = local.cli_json("status", "--target", "local")
    assert status["local"]["current"]["id"] == release1  # its releases stay installed


def _edgeds(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m edgeds ARGS`` in ``work``: the real entry point, with its error handling."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "edgeds", *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout
    )


def _read_some(stream: IO[bytes], timeout: float = 1.0) -> bytes:
    """What ``stream`` has within ``timeout`` seconds (b"" when nothing came)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return os.read(stream.fileno(), 4096) if ready else b""


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    assert text.startswith("error:"), text
    for word in words:
        assert word in text, text


def test_logs_follow_streams_new_lines_and_ends_cleanly_on_ctrl_c(local: Local) -> None:
    code, data = local.cli_json(
        "deploy", str(local.bundle(1, seed=1)), "--target", "local", "--public-key", str(local.public)
    )
    assert code == 0, data
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeds", "logs", "--target", "local", "--follow", "--lines", "2"],
        cwd=local.work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        while seen.count(b"\n") < 2 and time.monotonic() < deadline:
            seen += _read_some(proc.stdout)
        assert seen.count(b"\n") >= 2, seen
        # what the agent writes after the follow started arrives too: the swap to a second release
        second = deploy_bundle(local.bundle(2, seed=2), "local", options=DeployOptions(health_requests=5))
        assert second.hosts[0].status == SUCCEEDED, second.hosts[0]
        while b"swapped" not in seen and time.monotonic() < deadline:
            seen += _read_some(proc.stdout)
        assert b"swapped" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


def test_without_a_trusted_key_deploy_says_so_in_one_line(local: Local) -> None:
    bundle = local.bundle(1, seed=1)
    _one_line_error(_edgeds(local.work, "deploy", str(bundle), "--target", "local"), "--public-key")
    with pytest.raises(DeployError, match=r"no publisher key is trusted .* --public-key"):
        deploy_bundle(bundle, "local")
    assert not (local.install_dir / "run" / "agent.pid").exists()  # nothing was started


def test_an_unsigned_bundle_is_rejected_by_the_local_install(local: Local) -> None:
    unsigned = make_bundle(local.work / "unsigned", 1, None)
    result = deploy_bundle(
        unsigned, "local", public_key=local.public.read_bytes(), options=DeployOptions(health_requests=5)
    )
    assert result.hosts[0].status == REJECTED and result.hosts[0].reason == "unsigned", result.hosts[0]


def test_status_and_logs_before_anything_was_deployed(local: Local) -> None:
    code, status = local.cli_json("status", "--target", "local")
    assert code == 1
    assert "nothing is installed there yet" in status["local"]["error"]
    _one_line_error(_edgeds(local.work, "logs", "--target", "local"), "no agent log yet", "does not exist")
    _one_line_error(_edgeds(local.work, "logs", "--target", "local", "--host", "nope"), "no host 'nope'")
