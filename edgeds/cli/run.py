"""``edgeds run BUNDLE``: one-off inference. ``--input FILE``: an image or a .npy through an image
classifier (labels and scores) or an object detector (boxes in image pixels), an .npz of input
tensors through a generic model (output shapes and first values; --json: the arrays); ``--prompt
TEXT``: a language model's answer, streamed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._output import JSON_OPTION, console, console_err, emit, table


def run(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle directory or .tar (a language model: also a runtime's model dir).")
    ],
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Image (png/jpg/...) or .npy; .npz of every input (multi-input, generic)."),
    ] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Text to answer (language models).")] = None,
    top: Annotated[int, typer.Option(help="How many labels to show per sample.")] = 3,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="ed25519 public key: verify the bundle first.")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the backend.")] = None,
    system: Annotated[str | None, typer.Option(help="System message before --prompt.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest answer in tokens (default: the model's).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="0 = greedy (default: the model's).")
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Sampling seed.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="Only this LM runtime's artifact (default: the bundle's first that opens here)."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run BUNDLE once: an image classifier on --input (labels and scores), an object detector on
    --input (class, score and box x1 y1 x2 y2 in image pixels), or a language model on --prompt
    (the answer streamed to the terminal; --json prints the OpenAI completion object), or a generic
    model on an .npz of its inputs (each output's shape and first values; --json: the arrays)."""
    if (input_file is None) == (prompt is None):
        raise typer.BadParameter("give --input (an image classifier) or --prompt (a language model), one of them")
    if prompt is not None:
        _answer(bundle, key, prompt, system, max_tokens, temperature, seed, runtime, threads, as_json)
        return
    assert input_file is not None
    from ..runtime.classify import classify_file
    from ..runtime.detect import bundle_task

    task = bundle_task(bundle)
    if task == "object-detection":
        _detect(bundle, input_file, key, threads, as_json)
        return
    if task == "generic":
        _tensors(bundle, input_file, key, threads, as_json)
        return

    result = classify_file(bundle, input_file, top=top, key=key, threads=threads)
    data = {
        **_about(bundle, input_file, result),
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


def _about(bundle: Path, input_file: Path, result: Any) -> dict[str, Any]:
    """What every one-off run's JSON starts with: the bundle, model, runtime and precision that ran,
    the input and the seconds it took."""
    return {
        "bundle": str(bundle),
        "model": result.model,
        "backend": result.backend,
        "precision": result.precision,
        "input": str(input_file),
        "seconds": round(result.seconds, 4),
    }


def _detect(bundle: Path, input_file: Path, key: Path | None, threads: int | None, as_json: bool) -> None:
    from ..runtime.detect import detect_file

    result = detect_file(bundle, input_file, key=key, threads=threads)
    data = {
        **_about(bundle, input_file, result),
        "detections": result.detections,
    }

    def human() -> None:
        rows = [
            [n, d.label, f"{d.score:.4f}", *(f"{v:.1f}" for v in d.box)]
            for n, found in enumerate(result.detections)
            for d in found
        ]
        title = f"{result.model} ({result.backend} {result.precision}) on {input_file.name}: {len(rows)} boxes"
        console.print(table(title, ["sample", "label", "score", "x1 px", "y1 px", "x2 px", "y2 px"], rows))

    emit(data, as_json, human)


def _tensors(bundle: Path, input_file: Path, key: Path | None, threads: int | None, as_json: bool) -> None:
    from ..runtime.tensors import run_tensors

    result = run_tensors(bundle, input_file, key=key, threads=threads)
    data = {
        **_about(bundle, input_file, result),
        "outputs": {
            name: {"shape": list(v.shape), "dtype": str(v.dtype), "data": v.tolist()}
            for name, v in result.outputs.items()
        },
    }

    def human() -> None:
        rows = [
            [name, str(v.dtype), "[" + ", ".join(map(str, v.shape)) + "]", _first_values(v)]
            for name, v in result.outputs.items()
        ]
        title = f"{result.model} ({result.backend} {result.precision}) on {input_file.name}"
        console.print(table(title, ["output", "dtype", "shape", "first values"], rows))

    emit(data, as_json, human)


def _first_values(array: object, count: int = 6) -> str:
    import numpy as np

    flat = np.asarray(array).reshape(-1)
    shown = ", ".join(f"{v:.4g}" if flat.dtype.kind == "f" else str(v) for v in flat[:count].tolist())
    return shown + (", ..." if flat.size > count else "")


def _answer(
    bundle: Path,
    key: Path | None,
    prompt: str,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    runtime: str | None,
    threads: int | None,
    as_json: bool,
) -> None:
    from ..runtime.lm.client import complete
    from ..runtime.lm.loading import open_engine
    from ..runtime.lm.sampling import Sampling

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    sampling = Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed)
    with console_err.status("opening the model..."):
        engine = open_engine(bundle, public_key=key, runtime=runtime, threads=threads)
    try:

        def show(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        completion = complete(engine, messages, sampling, None if as_json else show)
    finally:
        engine.close()
    if as_json:
        emit(completion, True, lambda: None)
    else:
        sys.stdout.write("\n")
        usage = completion["usage"]
        console_err.print(
            f"[dim]{usage['prompt_tokens']} prompt + {usage['completion_tokens']} generated tokens, "
            f"finish: {completion['choices'][0]['finish_reason']}[/]"
        )


def register(app: typer.Typer) -> None:
    app.command("run")(run)
