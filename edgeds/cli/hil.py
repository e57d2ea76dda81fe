"""``edgeds hil``: hardware-in-the-loop rigs (``sim up|down``, ``run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._output import JSON_OPTION, console, console_err, emit, table

hil_app = typer.Typer(
    help="Hardware-in-the-loop rigs: gate a release on real or simulated devices.", no_args_is_help=True
)
sim_app = typer.Typer(
    help="A simulated rig on this machine (sshd devices on loopback + mosquitto).", no_args_is_help=True
)

StateOption = Annotated[
    Path | None, typer.Option("--state", help="State file (default: <tmp>/edgeds-hil-sim/state.json).")
]


@sim_app.command("up")
def sim_up(
    devices: int = typer.Option(2, "--devices", "-n", min=1, max=16, help="Number of simulated devices."),
    state: StateOption = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Start N simulated devices and mosquitto in the background; write their state file and target YAML."""
    from ..hil import sim

    data = sim.sim_up(devices, state or sim.DEFAULT_STATE)

    def human() -> None:
        console.print(
            table(
                "Simulated rig",
                ["device", "address", "port"],
                [[d["name"], d["address"], d["port"]] for d in data["devices"]],
            )
        )
        console.print(f"broker {data['broker']['url']} · target {data['target']} · `edgeds hil sim down` stops it")

    emit(data, as_json, human)


@sim_app.command("down")
def sim_down(state: StateOption = None, as_json: bool = JSON_OPTION) -> None:
    """Stop the simulated rig named by the state file and remove its files."""
    from ..hil import sim

    data = sim.sim_down(state or sim.DEFAULT_STATE)
    emit(
        data,
        as_json,
        lambda: console.print(f"stopped {len(data['stopped_pids'])} process(es), removed {data['base_dir']}"),
    )


@hil_app.command("run")
def run(
    rig: str = typer.Option(..., "--rig", "-r", help="Rig name (hil/rigs/<name>.yaml) or YAML path."),
    suite: str = typer.Option(
        "conformance,perf,reliability",
        "--suite",
        help="Comma-separated: conformance, perf, reliability, soak.",
        show_default="conformance, perf, reliability",
    ),
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="Signed bundle to gate (default: a tiny test bundle).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default: a new temp dir).")] = None,
    perf_seconds: float = typer.Option(1.5, "--perf-seconds", min=0.2, help="Closed-loop perf duration per device."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Set up -> deploy -> conformance -> perf -> reliability -> telemetry -> report.

    Exit status 1 when any expectation or check fails; the report (JSON, Markdown, PNG plots)
    names each one with its bound and the measured value.
    """
    from ..hil.gate import gate
    from ..hil.report import to_dict
    from ..hil.rig import load_rig

    loaded = load_rig(rig)
    suites = [s.strip() for s in suite.split(",") if s.strip()]

    def progress(message: str) -> None:
        (console_err if as_json else console).print(f"[dim]{escape(message)}[/]")

    result, files = gate(loaded, suites, bundle=bundle, report_dir=out, perf_seconds=perf_seconds, progress=progress)
    data = to_dict(result)
    data["report_files"] = {k: str(v) for k, v in files.items()}
    for key in ("latencies_ms", "throughput", "temperature"):
        data.pop(key, None)

    def human() -> None:
        rows = [
            [
                c.name,
                c.device,
                c.bound,
                escape(str(c.measured)),
                "PASS" if c.passed else ("n/a" if c.passed is None else "[red]FAIL[/]"),
            ]
            for c in result.checks
        ]
        console.print(table(f"HIL rig {loaded.name}", ["check", "device", "bound", "measured", "result"], rows))
        console.print(f"report: {files['markdown']} ({'PASS' if result.passed else 'FAIL'})")

    emit(data, as_json, human)
    if not result.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    hil_app.add_typer(sim_app, name="sim")
    app.add_typer(hil_app, name="hil")
