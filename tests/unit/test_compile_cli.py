"""The compile-related commands: keys generate, compile, bundle verify/show, toolchain, engine build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeds.cli import app

from . import _compile_fixtures as fx

cache_env, tiny, profiles = fx.cache_env, fx.tiny, fx.profiles
pytestmark = pytest.mark.usefixtures("cache_env")
runner = CliRunner()


def _ok(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_keys_compile_verify_show(tiny: Path, profiles: Path, tmp_path: Path) -> None:
    keys = _ok("keys", "generate", "--dir", str(tmp_path / "keys"))
    out = tmp_path / "bundle"
    result = _ok(
        "compile",
        str(tiny),
        "--profile",
        str(profiles / "tiny-ort.yaml"),
        "-o",
        str(out),
        "--key",
        str(keys["private_key"]),
        "--no-cache",
    )
    assert result["backend"] == "onnxruntime" and result["signed"] is True
    report = result["report"]
    assert isinstance(report, dict) and report["attempts"][0]["cached"] is False
    verified = _ok("bundle", "verify", str(out), "--key", str(keys["public_key"]))
    assert verified["ok"] is True and verified["signature"] == "verified"
    shown = _ok("bundle", "show", str(out))
    artifacts = shown["artifacts"]
    assert isinstance(artifacts, list)
    primary = artifacts[0]  # --json shows the manifest (schema 2): the first artifact is the primary
    assert shown["schema_version"] == 2 and primary["runtime"] == "onnxruntime" and primary["precision"] == "int8"


def test_verify_reports_the_reason(tiny: Path, profiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    _ok("compile", str(tiny), "--profile", str(profiles / "tiny-ort.yaml"), "-o", str(out), "--precision", "fp32")
    (out / "extra.txt").write_text("not listed")
    result = runner.invoke(app, ["bundle", "verify", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "unlisted_file" in str(result.exception)


def test_compile_errors_are_edgeds_errors(tmp_path: Path) -> None:
    from edgeds.errors import InvalidModel, UnsupportedPrecision

    bogus = tmp_path / "x.onnx"
    bogus.write_text("hello")
    result = runner.invoke(app, ["compile", str(bogus), "--profile", "x86-cpu"])
    assert isinstance(result.exception, InvalidModel)
    result = runner.invoke(app, ["compile", str(bogus), "--profile", "x86-cpu", "--precision", "int4"])
    assert isinstance(result.exception, UnsupportedPrecision)


def test_toolchain_status_and_unknown(tmp_path: Path) -> None:
    rows = json.loads(runner.invoke(app, ["toolchain", "status", "--json"]).stdout)
    assert rows[0]["toolchain"] == "litert" and "installed" in rows[0]
    result = runner.invoke(app, ["toolchain", "install", "caffe"])
    assert result.exit_code != 0 and "unknown toolchain" in str(result.exception)


def test_engine_build_refuses_a_non_tensorrt_bundle(tiny: Path, profiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    _ok("compile", str(tiny), "--profile", str(profiles / "tiny-ort.yaml"), "-o", str(out), "--precision", "fp32")
    result = runner.invoke(app, ["engine", "build", str(out)])
    assert result.exit_code != 0 and "without a TensorRT recipe" in str(result.exception)


@pytest.mark.parametrize("command", ["compile", "bundle", "keys", "toolchain", "engine"])
def test_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.stdout
