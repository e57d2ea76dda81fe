"""What ``device setup`` computes without a device: the agent configuration (the target's profile
resolved against the target file's directory, one that cannot be loaded a one-line DeployError,
the host's failure result) and the script that reads back the agent's user (run here with sh)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeds.config import load_target
from edgeds.deploy.setup import agent_config, agent_user_script, parse_agent_user
from edgeds.deploy.targets import HostPlan, host_plans
from edgeds.errors import DeployError


def _plan(tmp_path: Path, profile: str) -> tuple[HostPlan, Path]:
    directory = tmp_path / "fleet"
    directory.mkdir(exist_ok=True)
    path = directory / "plant.yaml"
    path.write_text(
        f"schema: 1\nname: plant\nprofile: {profile}\n"
        "hosts:\n  - {name: a, address: 127.0.0.1, port: 9}\n"
        "ssh: {user: edgeds, known_hosts: known_hosts}\n"
    )
    return host_plans(load_target(path), path)[0], path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory other than the target's: a path resolved against it would miss."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_a_relative_profile_path_starts_at_the_target_file(tmp_path: Path, elsewhere: Path) -> None:
    plan, path = _plan(tmp_path, "profiles/small.yaml")
    (path.parent / "profiles").mkdir()
    (path.parent / "profiles" / "small.yaml").write_text(
        "schema: 1\nname: small\ndescription: a small one\nextends: x86-cpu\nserver: {max_connections: 7}\n"
    )
    config = agent_config(load_target(path), plan)
    assert config["server"]["max_connections"] == 7
    assert config["device_id"] == "a"


def test_a_named_profile_and_auto(tmp_path: Path, elsewhere: Path) -> None:
    plan, path = _plan(tmp_path, "x86-cpu")
    assert agent_config(load_target(path), plan)["server"]["max_connections"] > 0
    plan, path = _plan(tmp_path, "auto")
    assert agent_config(load_target(path), plan)["server"] is None  # the agent's defaults


@pytest.mark.parametrize(
    ("profile", "content", "says"),
    [
        ("no-such-profile", None, "no profile named 'no-such-profile'"),
        ("missing.yaml", None, "missing.yaml"),
        ("bad.yaml", "schema: 1\nname: bad\nextends: x86-cpu\nserver: {max_connections: -1, nope: 1}\n", "bad.yaml"),
    ],
)
def test_a_profile_that_does_not_load_is_a_one_line_deploy_error(
    tmp_path: Path, elsewhere: Path, profile: str, content: str | None, says: str
) -> None:
    plan, path = _plan(tmp_path, profile)
    if content is not None:
        (path.parent / profile).write_text(content)
    with pytest.raises(DeployError) as caught:
        agent_config(load_target(path), plan)
    message = str(caught.value)
    assert "\n" not in message and says in message and profile in message


@pytest.fixture
def agent_install(tmp_path: Path) -> Iterator[Path]:
    """An install dir whose ``run/agent.pid`` names a live process of this user."""
    root = tmp_path / "install"
    (root / "run").mkdir(parents=True)
    (root / "bin").mkdir()
    with subprocess.Popen(["sleep", "30"]) as child:
        (root / "run" / "agent.pid").write_text(f"{child.pid}\n")
        try:
            yield root
        finally:
            child.kill()


def _run_agent_user_script(root: Path, tools: list[str] | None = None) -> str:
    """The script as setup runs it on a device, here; ``tools``: the only commands on its PATH."""
    env = dict(os.environ)
    if tools is not None:
        bin_dir = root / "tools"
        shutil.rmtree(bin_dir, ignore_errors=True)
        bin_dir.mkdir()
        for tool in tools:
            found = shutil.which(tool)
            assert found is not None, tool
            (bin_dir / tool).symlink_to(found)
        env["PATH"] = str(bin_dir)
    done = subprocess.run(
        ["/bin/sh", "-c", agent_user_script(str(root))], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return parse_agent_user(done.stdout)


def test_the_agent_user_is_read_from_proc_without_ps(agent_install: Path) -> None:
    """No ``ps`` on the PATH (busybox's has no ``-o user``): the uid from /proc/PID/status, the name
    from getent, else from Python's pwd with the install's interpreter, else the uid alone."""
    uid = os.geteuid()
    name = pwd.getpwuid(uid).pw_name
    assert _run_agent_user_script(agent_install) == f"{name} (uid {uid})"
    assert _run_agent_user_script(agent_install, ["cat", "sed", "cut"]) == f"uid {uid}"  # no getent, no python
    (agent_install / "bin" / "python").symlink_to(sys.executable)
    assert _run_agent_user_script(agent_install, ["cat", "sed", "cut"]) == f"{name} (uid {uid})"


def test_an_unreadable_agent_pid_gives_no_user(agent_install: Path) -> None:
    (agent_install / "run" / "agent.pid").unlink()
    assert _run_agent_user_script(agent_install) == ""
    (agent_install / "run" / "agent.pid").write_text("999999999\n")  # no such process
    assert _run_agent_user_script(agent_install) == ""
