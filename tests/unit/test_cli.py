"""The CLI runs, every command has --help, and --json output parses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgeds import __version__
from edgeds.cli import app

runner = CliRunner()


def _json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"edgeds {__version__}"


def test_profiles_list_json() -> None:
    data = _json("profiles", "list")
    assert isinstance(data, dict) and data["errors"] == []
    by_name = {row["name"]: row for row in data["profiles"]}
    assert by_name["x86-cpu"]["chain"][0] == "onnxruntime:int8"
    assert by_name["intel-nuc-12"]["chain"][0] == "openvino:int8"


def test_profiles_show_json_resolves_extends() -> None:
    data = _json("profiles", "show", "jetson-agx-orin")
    assert isinstance(data, dict)
    assert data["batching"]["max_batch_size"] == 32
    assert data["batching"]["max_queue_delay_us"] == 2000


def test_targets_list_and_show_json() -> None:
    data = _json("targets", "list")
    assert isinstance(data, dict) and data["errors"] == []
    names = {row["name"] for row in data["targets"]}
    assert {"local", "jetson-orin", "intel-nuc", "snapdragon"} <= names
    local = _json("targets", "show", "local")
    assert isinstance(local, dict)
    assert local["local"] is True
    assert local["resolved_profile"] in ("x86-cpu", "raspberry-pi-5", "jetson-orin-nx")


def test_doctor_json_lists_every_backend() -> None:
    report = _json("doctor")
    assert isinstance(report, dict)
    backends = {b["name"]: b for b in report["backends"]}
    assert set(backends) == {"onnxruntime", "openvino", "litert", "tensorrt"}
    assert backends["onnxruntime"]["available"] is True
    assert backends["onnxruntime"]["version"]
    for b in backends.values():
        if not b["available"]:
            assert b["reason"] and b["hint"], b


def test_doctor_json_lists_the_installable_toolchains() -> None:
    report = _json("doctor")
    assert isinstance(report, dict)
    toolchains = {t["name"]: t for t in report["toolchains"]}
    assert set(toolchains) == {"litert", "llm"}
    for t in toolchains.values():
        assert t["available"] or t["hint"] == f"edgeds toolchain install {t['name']}", t


def test_doctor_json_lists_the_lm_runtimes_and_how_they_batch() -> None:
    report = _json("doctor")
    assert isinstance(report, dict)
    runtimes = {r["name"]: r for r in report["lm_runtimes"]}
    assert set(runtimes) == {"openvino-genai", "onnxruntime-genai"}
    for r in runtimes.values():
        assert r["available"] or (r["reason"] and r["hint"]), r
    if runtimes["onnxruntime-genai"]["available"]:
        assert "static batching" in runtimes["onnxruntime-genai"]["devices"][0]
    if runtimes["openvino-genai"]["available"]:
        assert "continuous batching" in runtimes["openvino-genai"]["devices"][0]


def test_doctor_human_output() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "onnxruntime" in result.stdout and "tensorrt" in result.stdout
    assert "Toolchains" in result.stdout and "llm" in result.stdout
    assert "LM runtimes" in result.stdout and "openvino-genai" in result.stdout


def _leaf_commands() -> list[list[str]]:
    import typer.main

    click_app = typer.main.get_command(app)
    leaves: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        sub = getattr(command, "commands", None)
        if not sub:
            leaves.append(path)
            return
        for name, child in sub.items():
            walk(child, [*path, name])

    walk(click_app, [])
    return leaves


@pytest.mark.parametrize("command", _leaf_commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_and_json(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout
    assert "--json" in result.stdout, f"edgeds {' '.join(command)} has no --json"


def test_error_is_one_line_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeds", "profiles", "show", "no-such-profile"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "no profile named 'no-such-profile'" in proc.stderr
    assert "Traceback" not in proc.stderr
