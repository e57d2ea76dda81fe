"""The systemd unit ``edgeds device setup`` writes: an unprivileged user, hardening, and what systemd says of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgeds.deploy.setup import DROPPING_WRAPPER, render_unit

CPU_PROBE = {"backends": {"onnxruntime": True, "openvino": False, "tensorrt": False}, "gpu": None}
GPU_PROBE = {"backends": {"onnxruntime": True, "tensorrt": True}, "gpu": "NVRM version: 540"}


def _fields(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))


def test_the_agent_runs_as_its_own_user_with_only_its_install_dir_writable() -> None:
    fields = _fields(render_unit("/opt/edgeds", "edgeds", CPU_PROBE))
    assert fields["User"] == fields["Group"] == "edgeds"
    assert fields["ExecStart"] == "/opt/edgeds/bin/python -m edgeds agent --root /opt/edgeds"
    assert fields["ReadWritePaths"] == "/opt/edgeds"
    for name, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",  # ONNX Runtime's CPU provider generates no code
        "CapabilityBoundingSet": "",
    }.items():
        assert fields[name] == value, name


def test_home_read_only_under_a_home_and_no_mdwe_with_a_jit_backend() -> None:
    fields = _fields(render_unit("/root/edgeds", "edgeds", GPU_PROBE))
    assert fields["ProtectHome"] == "read-only"  # ReadWritePaths reopens the install dir inside it
    assert "MemoryDenyWriteExecute" not in fields  # CUDA / TensorRT need writable executable memory
    assert _fields(render_unit("/home/pi/edgeds", "edgeds", CPU_PROBE))["ProtectHome"] == "read-only"
    assert _fields(render_unit("/homework/edgeds", "edgeds", CPU_PROBE))["ProtectHome"] == "yes"


def test_root_steps_drop_to_the_agent_user() -> None:
    wrapper = DROPPING_WRAPPER.format(user="edgeds", python="/opt/edgeds/venv/bin/python")
    assert 'exec runuser -u edgeds -- env PYTHONSAFEPATH=1 /opt/edgeds/venv/bin/python "$@"' in wrapper
    assert wrapper.rstrip().endswith('PYTHONSAFEPATH=1 exec /opt/edgeds/venv/bin/python "$@"')


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("probe", [CPU_PROBE, GPU_PROBE], ids=["cpu", "gpu"])
def test_systemd_verifies_the_unit_and_rates_it_ok(tmp_path: Path, probe: dict[str, object]) -> None:
    root = tmp_path / "edgeds"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    unit = tmp_path / "edgeds-agent.service"
    unit.write_text(render_unit(str(root), "edgeds", probe))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    # exposure 0.0 (locked down) .. 10.0 (unprotected); 2.5 and below is what systemd calls OK
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=25", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-2000:]
    assert "Overall exposure level for edgeds-agent.service" in security.stdout
