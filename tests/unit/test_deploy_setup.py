"""The agent configuration ``device setup`` writes, built here without a device: the target's
profile is resolved against the target file's directory, and one that cannot be loaded is a
one-line DeployError (the host's failure result), never a ConfigError escaping setup."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds.config import load_target
from edgeds.deploy.setup import agent_config
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
