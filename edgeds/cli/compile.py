"""``edgeds compile``: ONNX model or causal-lm checkpoint + profile -> gated, signed bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._output import JSON_OPTION, CardOption, console, console_err, emit, table


def compile_command(
    model: Annotated[
        Path,
        typer.Argument(
            help="ONNX model file (its card: --card, <model>.yaml or the one card naming it), "
            "or a model directory / card: "
            "a causal-lm card compiles its checkpoint for the profile's LM runtimes."
        ),
    ],
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Profile name or path (shipped, ./profiles, $EDGEDS_PROFILES).")
    ],
    card: CardOption = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="fp32, fp16, int8 (int4: causal-lm); overrides the profile."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Bundle directory to write (default dist/...).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Bypass the compile cache (neither read nor write).")
    ] = False,
    key: Annotated[Path | None, typer.Option("--key", help="ed25519 private key to sign the bundle with.")] = None,
    valid_days: Annotated[
        float | None, typer.Option("--valid-days", min=0, help="Devices refuse the bundle this many days from now.")
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Walk the profile's backend (or LM runtime) chain, quantize behind the task's quality gate, write a bundle
    and show the report."""
    from ..compile import compile_model
    from ..errors import AccuracyGateFailed, UnsupportedPrecision
    from ._progress import progress_callback

    if precision is not None and precision not in ("fp32", "fp16", "int8", "int4"):
        raise UnsupportedPrecision(f"unknown precision {precision!r} (fp32, fp16, int8 or int4)")
    with progress_callback(console_err.is_terminal) as progress:
        try:
            result = compile_model(
                model,
                profile,
                precision=precision,
                out=out,
                use_cache=not no_cache,
                progress=progress,
                key=key,
                valid_days=valid_days,
                card=card,
            )
        except AccuracyGateFailed as exc:
            report = getattr(exc, "report", None)
            if report is not None:
                emit(
                    report.as_dict(),
                    as_json,
                    lambda: console.print(
                        table(
                            "Compile report (no candidate passed)",
                            report.columns(),
                            [[escape(c) for c in r] for r in report.rows()],
                        )
                    ),
                )
            raise

    def human() -> None:
        rows: list[list[Any]] = [[escape(c) for c in r] for r in result.report.rows()]
        title = f"Compile report: {result.report.model} for {result.report.profile}"
        console.print(table(title, result.report.columns(), rows))
        for note in result.report.notes:
            console.print(f"note: {escape(note)}")
        if len(result.report.shipped) > 1 or any(
            result.report.attempts[i].resolved_on_device for i in result.report.shipped
        ):
            console.print("artifacts, in the order the device tries them:")
            for line in result.report.shipped_lines():
                console.print(f"  {escape(line)}")
        if result.report.first_choice:
            console.print(f"[yellow]warning:[/] {escape(result.report.first_choice)}")
        signed = "signed" if result.signed else "unsigned (pass --key to sign)"
        console.print(
            f"bundle: [bold]{result.bundle}[/] ({result.backend} {result.precision}, {signed}) "
            f"in {result.report.seconds:.1f} s"
        )

    emit(result.as_dict(), as_json, human)


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_command)
