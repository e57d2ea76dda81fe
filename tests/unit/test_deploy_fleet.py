"""Fan-out over a target's hosts: the local target is one host reached without SSH (nothing to enroll)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds.deploy.enroll import enroll_hosts
from edgeds.deploy.fleet import each_host, probe_hosts, setup_hosts
from edgeds.deploy.targets import LOCAL_DIR_ENV
from edgeds.errors import ConfigError


@pytest.fixture
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local target's install dir for this test (never the user's)."""
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path / "install"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "install"


def test_each_host_on_the_local_target_before_an_install(local_dir: Path) -> None:
    out = each_host("local", None, "status")
    assert list(out) == ["local"]
    assert out["local"]["status"] == "error"
    assert "nothing is installed there yet" in out["local"]["error"]


def test_probe_hosts_probes_this_machine(local_dir: Path) -> None:
    out = probe_hosts("local")
    assert list(out) == ["local"]
    assert out["local"]["python"]


def test_setup_hosts_on_the_local_target_installs_nothing(local_dir: Path) -> None:
    (result,) = setup_hosts("local", python="python3", start_agent=False)
    assert result.ok, result.message
    assert result.host == "local" and "python3" in (local_dir / "bin" / "edgeds-python").read_text()
    assert (local_dir / "agent-config.json").is_file()
    assert not (local_dir / "venv").exists()


def test_enroll_hosts_refuses_the_local_target(local_dir: Path) -> None:
    with pytest.raises(ConfigError, match="without SSH: nothing to enroll"):
        enroll_hosts("local")
