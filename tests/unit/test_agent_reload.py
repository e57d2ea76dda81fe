"""The agent's reload bookkeeping without a model or a network: a release that fails to load in
unload-first mode, with the previous release restored or not."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from edgeds.agent import Agent
from edgeds.errors import BundleError


class _Engine:
    def __init__(self, release: str) -> None:
        self.name = "model"
        self.release = release
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Server:
    def __init__(self) -> None:
        self.models: dict[str, _Engine] = {}

    def add_model(self, engine: _Engine) -> None:
        self.models[engine.name] = engine

    def remove_model(self, name: str) -> None:
        self.models.pop(name)


class _Publisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, kind: str, payload: dict[str, Any], *, deploy_id: str | None = None) -> int:
        self.events.append((kind, payload))
        return len(self.events)


def _agent(tmp_path: Path, broken: set[str]) -> Agent:
    """An unload-first agent serving ``r1`` whose ``current`` points at ``r2``."""
    agent = Agent(tmp_path / "device", http_port=0)
    agent.unload_first = True
    agent.store.ensure()
    agent.store.releases.mkdir(parents=True, exist_ok=True)
    for release in ("r1", "r2"):
        (agent.store.releases / release).mkdir()
    os.symlink("releases/r2", agent.store.current)
    server = _Server()
    agent._server = server
    agent._publisher = _Publisher()
    engine = _Engine("r1")
    server.add_model(engine)
    agent._engine, agent._serving = engine, "r1"
    agent._write_status(state="serving", release="r1")

    def load(release: str) -> _Engine:
        if release in broken:
            raise BundleError(f"releases/{release}: manifest.json is missing")
        return _Engine(release)

    agent._load = load  # type: ignore[method-assign]
    return agent


def _status(agent: Agent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((agent.store.run_dir / "agent.json").read_text())
    return data


def test_unload_first_restores_the_previous_release(tmp_path: Path) -> None:
    agent = _agent(tmp_path, broken={"r2"})
    agent._activate_current()
    status = _status(agent)
    assert status["state"] == "failed" and status["attempted"] == "r2"
    assert status["release"] == "r1" and "restore_error" not in status
    assert "BundleError" in status["error"]
    assert agent._serving == "r1" and agent._server.models["model"].release == "r1"


def test_unload_first_failed_restore_serves_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = _agent(tmp_path, broken={"r1", "r2"})
    with caplog.at_level(logging.ERROR, logger="edgeds.agent"):
        agent._activate_current()
    status = _status(agent)
    assert status["state"] == "failed" and status["release"] is None and status["attempted"] == "r2"
    assert "r1 could not be restored" in status["error"] and "BundleError" in status["restore_error"]
    assert agent._serving is None and agent._engine is None and agent._server.models == {}
    metrics = agent._metrics()
    assert metrics["agent"]["release"] is None and metrics["deploy"] == {
        "release": None,
        "model_version": None,
        "opened": None,
    }
    assert (
        "deploy",
        {"event": "not_serving", "release": "r2", "restored": "r1", "error": status["error"].split(";")[0]},
    ) in agent._publisher.events
    restore_logs = [r for r in caplog.records if "serves nothing" in r.getMessage()]
    assert restore_logs and restore_logs[0].exc_info is not None  # with the traceback

    # the deploy's rollback points current back at r1: it is loaded afresh, not taken as served
    os.remove(agent.store.current)
    os.symlink("releases/r1", agent.store.current)
    agent._load = lambda release: _Engine(release)  # type: ignore[method-assign]
    agent._activate_current()
    status = _status(agent)
    assert status["state"] == "serving" and status["release"] == "r1" and "restore_error" not in status
    assert agent._server.models["model"].release == "r1"
