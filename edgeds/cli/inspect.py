"""``edgeds inspect``: run the factory inspection pipeline on one source, here, and summarize it.

The run is in-process on this machine with the target's profile (batching, ONNX Runtime
options). On a device the same pipeline runs inside ``edgeds agent`` for the stations listed in
the target's ``inspection:`` (see :func:`edgeds.inspection.start_stations`); ``--station`` reuses
one of those stations' thresholds here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from ._output import JSON_OPTION, CardOption, console, console_err, emit

if TYPE_CHECKING:
    from ..inspection.pipeline import QueuePolicy


def _parse_thresholds(values: list[str]) -> dict[str, float]:
    from ..errors import ConfigError

    out: dict[str, float] = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError.single(None, None, "--threshold", f"expected CLASS=PROBABILITY, got {value!r}")
    return out


def inspect_command(
    source: Annotated[
        str,
        typer.Option("--source", "-s", help="Directory of images, video file, camera index (V4L2) or rtsp:// URL."),
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="Target name or path (its profile is used).")] = "local",
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="Bundle directory or .tar to run.")] = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="ONNX model (card beside it), run through ONNX Runtime FP32.")
    ] = None,
    card: CardOption = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Require the bundle's signature under this key.")
    ] = None,
    station: Annotated[
        str | None, typer.Option("--station", help="Use this station's settings from the target's inspection:.")
    ] = None,
    threshold: Annotated[
        list[str] | None, typer.Option("--threshold", help="Per-class reject/accept threshold CLASS=P (repeatable).")
    ] = None,
    uncertain_below: Annotated[
        float | None, typer.Option("--uncertain-below", help="Default threshold: below it a frame is uncertain.")
    ] = None,
    alarm: Annotated[
        int | None, typer.Option("--alarm", help="Raise the line alarm after N consecutive rejects.")
    ] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Pace a file source at this rate, like a camera.")] = None,
    queue_size: Annotated[int | None, typer.Option("--queue-size", help="Frames buffered before the engine.")] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Full-queue policy: drop_oldest, drop_newest or block.")
    ] = None,
    truth: Annotated[
        str | None,
        typer.Option("--truth", help="Ground truth per frame: 'validation' (the card's split) or a labels .npy."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Ledger and rejected frames (default ./inspection).")
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop after this many seconds.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Frames -> preprocessing -> engine (dynamic batcher) -> accept/reject/uncertain -> ledger; print a summary."""
    from ..config import load_target, resolve_target_profile
    from ..errors import ConfigError
    from ..inspection.runner import inspect_source as run
    from ..inspection.runner import open_engine
    from ..inspection.station import load_truth, station_for_run

    if policy is not None and policy not in ("drop_oldest", "drop_newest", "block"):
        raise ConfigError.single(None, None, "--policy", f"must be drop_oldest, drop_newest or block, got {policy!r}")
    tgt = load_target(target)
    profile = resolve_target_profile(tgt)
    config = station_for_run(
        tgt,
        source,
        station=station,
        thresholds=_parse_thresholds(threshold) if threshold else None,
        uncertain_below=uncertain_below,
        alarm=alarm,
    )

    with open_engine(bundle=bundle, model=model, profile=profile, public_key=public_key, card=card) as loaded:
        labels = load_truth(truth, loaded.card)
        if not as_json:
            console_err.print(f"inspecting [bold]{source}[/] with {loaded.description} (profile {profile.name})")

        def progress(stats: dict[str, Any]) -> None:
            if not as_json and console_err.is_terminal:
                console_err.print(
                    f"  {stats['processed']} frames, {stats['fps_recent']:.0f} fps, {stats['dropped']} dropped",
                    end="\r",
                )

        summary = run(
            source,
            loaded.engine,
            loaded.card,
            layout=loaded.layout,
            station=config,
            truth=labels,
            state_dir=state_dir or Path("inspection"),
            fps=fps,
            queue_size=queue_size,
            queue_policy=cast("QueuePolicy | None", policy),  # checked against the three names above
            timeout_s=timeout,
            on_progress=progress,
        )

    emit(summary, as_json, lambda: summary.render(console))


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
