"""CLI output: tables never cut a value, stderr errors stay one line, ``-h``, a light ``--help``,
units in column headers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from edgeds.cli import app
from edgeds.cli._output import table
from edgeds.compile.report import Attempt, CompileReport

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]

REASON = (
    "int8 top-1 drop 3.75 pts > budget 1.00 pts (quantization of /features/Conv_3 saturates; "
    "see edgeds/compile/sensitivity.py)"
)
HEAVY = (
    "numpy",
    "onnxruntime",
    "openvino",
    "paho",
    "paramiko",
    "cryptography",
    "httpx",
    "torch",
    "pydantic",
    "yaml",
    "onnx",
    "cv2",
    "amqtt",
)


def _render(renderable: object, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, highlight=False).print(renderable)
    return out.getvalue()


def _words(rows: Sequence[Sequence[str]]) -> set[str]:
    return {word for row in rows for value in row for word in value.split()}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def _edgeds(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeds", *args], capture_output=True, text=True, env=_env(**env), check=False
    )


def _report() -> CompileReport:
    report = CompileReport("surface-defect", "0" * 64, "x86-cpu", 400, 128, reference_top1=0.995)
    figures = {"top1": 0.9575, "top1_drop": -3.75, "agreement": 0.9612, "min_cosine": 0.9871}
    report.attempts.append(Attempt("onnxruntime", "int8", "int8", "failed", REASON, figures, 2_812_345, 12.3))
    report.attempts.append(Attempt("openvino", "int8", "int8-mixed", "passed", None, figures, 2_900_000, 20.5))
    report.selected = 1
    return report


# --- tables -------------------------------------------------------------------------------------


def test_a_table_that_fits_is_one_line_a_row() -> None:
    rows = [["x86-cpu", "onnxruntime:int8 → openvino:int8", "16"]]
    text = _render(table("Profiles", ["name", "chain", "max batch"], rows), 120)
    assert any("x86-cpu" in line and "onnxruntime:int8 → openvino:int8" in line for line in text.splitlines())


@pytest.mark.parametrize("width", [100, 80, 60, 40, 24])
def test_the_compile_report_keeps_every_value_whole(width: int) -> None:
    report = _report()
    rows = report.rows()
    text = _render(table("Compile report", report.columns(), rows), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    lines = text.splitlines()
    for word in _words(rows):
        if len(word) < width - 16:  # a word wider than a column folds, all of it still there
            assert any(word in line for line in lines), (word, text)


def test_a_table_too_narrow_for_its_words_turns_vertical() -> None:
    rows = [["onnxruntime", "int8", REASON], ["openvino", "fp32", "passed"]]
    text = _render(table("Attempts", ["backend", "precision", "why"], rows), 24)
    lines = text.splitlines()
    assert lines[0].strip() == "Attempts"
    assert any(line.startswith("backend:") and "onnxruntime" in line for line in lines)
    assert any(line.startswith("precision:") and "fp32" in line for line in lines)
    assert "…" not in text
    assert all(len(line) <= 24 for line in lines)
    assert "why:" + "".join(REASON.split()) in "".join(text.split())  # wrapped under its key, all of it


@pytest.mark.parametrize("cell", ["2", "2" * 60])
def test_a_long_title_wraps_on_a_soft_wrapping_console(cell: str) -> None:
    title = "Compile report: models/surface-defect/model.onnx for x86-cpu"
    out = io.StringIO()
    Console(file=out, width=30, color_system=None, soft_wrap=True).print(table(title, ["a", "b"], [["1", cell]]))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 30 for line in lines)
    assert "".join("".join(lines[:3]).split()).startswith("".join(title.split()))  # wrapped, folded, not cut


def test_markup_in_cells_is_rendered_in_both_layouts() -> None:
    rows = [["tensorrt", "[red]no[/]", "TensorRT not importable → pip install 'edgeds\\[tensorrt]'"]]
    for width in (120, 20):
        text = _render(table(None, ["backend", "available", "reason / install"], rows), width)
        assert "[red]" not in text
        assert "edgeds[tensorrt]" in "".join(text.split())


def test_piped_without_columns_each_row_is_one_line() -> None:
    listed = json.loads(_edgeds("profiles", "list", "--json").stdout)["profiles"]
    proc = _edgeds("profiles", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for row in listed:
        chain = " → ".join(row["chain"])
        assert any(row["name"] in line and chain in line and row["description"] in line for line in lines), row


@pytest.mark.parametrize("command", [["profiles", "list"], ["targets", "list"]])
def test_at_80_columns_every_value_is_whole(command: list[str]) -> None:
    listed = json.loads(_edgeds(*command, "--json").stdout)[command[0]]
    proc = _edgeds(*command, COLUMNS="80")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    words = {w for row in listed for value in (row["name"], row["description"]) for w in str(value).split()}
    for word in words:
        assert word in proc.stdout, word


def test_doctor_at_80_columns_shows_every_install_hint() -> None:
    report = json.loads(_edgeds("doctor", "--json").stdout)
    proc = _edgeds("doctor", COLUMNS="80")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    hints = [b["hint"] for b in report["backends"] + report["toolchains"] if not b["available"] and b["hint"]]
    flat = "".join(proc.stdout.split())
    for hint in hints:
        assert "".join(hint.split()) in flat or all(w in proc.stdout for w in hint.split()), hint


def test_status_shows_a_host_error_whole(tmp_path: Path) -> None:
    target = tmp_path / "t.yaml"
    target.write_text(
        "schema: 1\nname: t\nprofile: x86-cpu\n"
        "hosts:\n  - {name: dev-a-with-a-rather-long-name, address: 127.0.0.1, port: 1}\n"  # nothing listens
        f"ssh: {{user: edgeds, key: {tmp_path / 'no-key'}, known_hosts: {tmp_path / 'known_hosts'}}}\n"
        "install_dir: /opt/edgeds\n"
    )
    error = json.loads(_edgeds("status", "-t", str(target), "--json").stdout)["dev-a-with-a-rather-long-name"]["error"]
    proc = _edgeds("status", "-t", str(target), COLUMNS="60")
    assert proc.returncode == 1 and "…" not in proc.stdout
    assert "".join(error.split()) in "".join(proc.stdout.split()), (error, proc.stdout)


def test_show_piped_prints_the_plain_yaml() -> None:
    data = json.loads(runner.invoke(app, ["profiles", "show", "x86-cpu", "--json"]).stdout)
    result = runner.invoke(app, ["profiles", "show", "x86-cpu"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == data
    assert not any(line != line.rstrip() for line in result.stdout.splitlines())


# --- stderr -------------------------------------------------------------------------------------


def test_a_long_error_stays_one_line_at_40_columns() -> None:
    name = "no-such-profile-" + "x" * 90
    proc = _edgeds("profiles", "show", name, COLUMNS="40")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and name in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["bench", "--duration", "soon"], "'--duration'"),
        (["compile"], "'model'"),
        (["profiles", "nope"], "nope"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help(args: list[str], said: str) -> None:
    proc = _edgeds(*args, COLUMNS="40")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and said in lines[0] and "-h'" in lines[0]
    assert "Traceback" not in proc.stderr


# --- -h -----------------------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    import typer.main

    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, child in (getattr(command, "commands", None) or {}).items():
            walk(child, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "edgeds")
def test_dash_h_is_help_everywhere(path: list[str]) -> None:
    short = runner.invoke(app, [*path, "-h"])
    assert short.exit_code == 0, short.output
    assert "Usage:" in short.stdout
    assert short.stdout == runner.invoke(app, [*path, "--help"]).stdout


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "edgeds")
def test_help_at_80_columns_cuts_no_word(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout, result.stdout


# --- a light --help -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["doctor", "--help"], ["compile", "-h"], ["--version"]])
def test_help_imports_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    dump = tmp_path / "modules.json"
    code = (
        "import atexit, json, runpy, sys\n"
        f"atexit.register(lambda: open({str(dump)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        f"sys.argv = ['edgeds', *{args!r}]\n"
        "runpy.run_module('edgeds', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(dump.read_text()))
    # typer itself converts a command's option values with pydantic: only the root stays without it
    allowed = {"pydantic"} if len(args) > 1 else set()
    heavy = sorted(m for m in loaded if m.split(".")[0] in set(HEAVY) - allowed)
    assert not heavy, f"edgeds {' '.join(args)} imports {heavy}"


# --- units --------------------------------------------------------------------------------------


def test_the_compile_report_puts_units_in_its_header() -> None:
    report = _report()
    columns = report.columns()
    assert columns == [
        "backend",
        "precision",
        "outcome",
        "top-1 %",
        "drop pts",
        "agreement",
        "cosine",
        "size MB",
        "time s",
        "why",
    ]
    row = report.rows()[0]
    assert row[3:9] == ["95.75", "-3.75", "0.9612", "0.9871", "2.81", "12.3"]


def test_the_bench_tables_put_units_in_their_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeds.cli import bench

    run = {"qps": 100.0, "samples_per_s": 100.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "errors": 0}
    report = {
        "transport": "in-process",
        "scenarios": {
            "floor": {"per_batch": [{"batch": 1, "samples_per_s": 900.0, "p50_ms": 1.1, "p99_ms": 1.4}]},
            "single": {**run, "mean_batch_size": 1.0},
        },
    }
    out = io.StringIO()
    monkeypatch.setattr(bench, "console", Console(file=out, width=200, color_system=None))
    bench._human(report)
    headers = [line for line in out.getvalue().splitlines() if "p50" in line]
    assert headers and all("p50 ms" in line for line in headers)
    assert "queries/s" in out.getvalue()
