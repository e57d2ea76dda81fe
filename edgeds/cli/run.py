"""``edgeds run BUNDLE --input FILE``: one-off inference on an image or a .npy, labels and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import JSON_OPTION, console, emit, table


def run(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Image (png/jpg/...) or .npy.")],
    top: Annotated[int, typer.Option(help="How many labels to show per sample.")] = 3,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="ed25519 public key: verify the bundle first.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the backend.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run BUNDLE once on an image or .npy with the model card's preprocessing; print labels and scores."""
    from ..runtime.classify import classify_file

    result = classify_file(bundle, input_file, top=top, key=key, threads=threads)
    data = {
        "bundle": str(bundle),
        "model": result.model,
        "backend": result.backend,
        "precision": result.precision,
        "input": str(input_file),
        "seconds": round(result.seconds, 4),
        "predictions": result.predictions,
    }

    def human() -> None:
        rows = [[n, p.label, f"{p.score:.4f}"] for n, preds in enumerate(result.predictions) for p in preds]
        console.print(
            table(
                f"{result.model} ({result.backend} {result.precision}) on {input_file.name}",
                ["sample", "label", "score"],
                rows,
            )
        )

    emit(data, as_json, human)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
