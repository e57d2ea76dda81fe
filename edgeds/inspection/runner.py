"""Entry points: run inspection on one source and summarize it; start the agent's stations.

* :func:`run_inspection` — the one call the CLI and the demo make: open an engine for a bundle
  (or an ONNX model through ONNX Runtime FP32), inspect one source to its end, return an
  :class:`InspectionSummary` (confusion matrix when the truth is known, fps, drops, corrupt
  frames, latency percentiles, the engine's mean batch size).
* :func:`inspect_source` — the same on an engine the caller owns (started, shared).
* :func:`start_stations` — what the agent calls for a target's ``inspection:`` stations: a
  started :class:`~.pipeline.InspectionPipeline` on the agent's engine (or a callable returning
  the current one, so a model swap is followed), publishing through the agent's publisher.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..config import InspectionStation, Profile
from ..errors import ConfigError
from ..modelcard import ModelCard
from .pipeline import InspectionPipeline, Publisher, QueuePolicy, require_classifier
from .sources import Frame, FrameSource, open_source

if TYPE_CHECKING:
    from ..bundle import PublicKeyLike
    from ..runtime.engine import Engine


@dataclass(frozen=True)
class InspectionSummary:
    """The outcome of one run. ``confusion[true][predicted]`` over frames whose truth is known."""

    station: str
    source: str
    labels: tuple[str, ...]
    frames_read: int
    processed: int
    corrupt: int
    dropped: int
    errors: int
    reconnects: int
    elapsed_s: float
    fps: float
    decisions: dict[str, int]
    alarms: int
    latency_ms: dict[str, float]
    accuracy: float | None
    confusion: list[list[int]] | None
    engine: dict[str, Any]
    ledger: str | None
    rejects_saved: int
    rejects_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, console: Any = None) -> None:
        """Print the summary (counts, fps, decisions, latency, confusion matrix) with rich."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console(highlight=False)
        lat = self.latency_ms
        console.print(
            f"[bold]{self.station}[/] {self.source}: {self.processed} decided of {self.frames_read} read, "
            f"{self.corrupt} corrupt, {self.dropped} dropped, {self.errors} errors in {self.elapsed_s:.2f} s "
            f"-> [bold]{self.fps:.1f} fps[/] (engine mean batch {self.engine['mean_batch_size']:.2f})"
        )
        console.print(
            f"decisions: {self.decisions} | alarms: {self.alarms} | latency ms p50 {lat['p50']:.1f} "
            f"p99 {lat['p99']:.1f} max {lat['max']:.1f}"
        )
        if self.confusion is not None and self.accuracy is not None:
            # the title on its own line: a table's title is cropped by a soft-wrapping console
            console.print(f"Confusion matrix (rows: truth, columns: predicted) | accuracy {100 * self.accuracy:.2f}%")
            table = Table()
            table.add_column("", overflow="fold")
            for label in self.labels:
                table.add_column(label, justify="right", overflow="fold")
            for label, row in zip(self.labels, self.confusion, strict=True):
                table.add_row(label, *(str(v) for v in row))
            console.print(table)
        console.print(
            f"ledger: {self.ledger} | rejected frames saved: {self.rejects_saved}, skipped: {self.rejects_skipped}"
        )


@dataclass
class LoadedModel:
    """An engine started for a bundle or a model, with the card and input layout it needs."""

    engine: Engine
    card: ModelCard
    layout: str
    description: str
    _closers: tuple[Callable[[], None], ...] = ()

    def close(self) -> None:
        self.engine.close()
        for closer in self._closers:
            closer()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_engine(
    *,
    bundle: str | Path | None = None,
    model: str | Path | None = None,
    profile: Profile | None = None,
    public_key: PublicKeyLike | None = None,
    verify: bool = True,
    card: str | Path | None = None,
) -> LoadedModel:
    """Start an engine for ``bundle`` (verified against ``public_key``) or ``model``.

    A model runs through ONNX Runtime FP32 with the profile's ONNX Runtime options and batching
    (the profile's batching is also used for a bundle when given; otherwise the manifest's).
    ``model`` is an ONNX file (its card found beside it, or ``card`` when given: then that card
    describes the given ONNX file whatever its ``model:`` says), a card or a card's directory.
    """
    from ..runtime.engine import Engine

    if (bundle is None) == (model is None):
        raise ConfigError.single(None, None, "inspect", "give exactly one of a bundle or a model")
    batching = profile.batching if profile is not None else None
    if bundle is not None:
        from ..bundle import load_bundle

        loaded = load_bundle(bundle, public_key, verify=verify)
        try:
            require_classifier(loaded.card)
            engine = Engine.from_bundle(loaded, batching=batching).start()
        except BaseException:
            loaded.close()
            raise
        m = loaded.manifest
        opened = engine.selection
        index = opened.index if opened is not None else 0
        layout = m.layout_for(index)  # the artifact the engine opened on this machine
        runs = f"{opened.runtime}:{opened.precision}" if opened is not None else f"{m.backend}:{m.precision}"
        described = f"bundle {m.model.name} v{m.version} ({runs}, {layout})"
        return LoadedModel(engine, loaded.card, layout, described, (loaded.close,))
    from ..modelcard import load_model_card, model_card_for

    given = Path(str(model))
    if given.suffix == ".onnx":
        model_card, _ = model_card_for(given, card)
        onnx = given
    elif card is not None:
        raise ConfigError.single(
            None,
            None,
            "--card",
            f"{given} is a card or model directory already: pass the ONNX file with --card, or drop --card",
        )
    else:
        model_card = load_model_card(given)
        onnx = model_card.model_path
    require_classifier(model_card)
    options: Any = None
    if profile is not None:
        options = next((opts for name, _, opts in profile.chain() if name == "onnxruntime"), None)
    engine = Engine(
        "onnxruntime",
        onnx,
        options=options,
        batching=batching,
        name=model_card.name,
        version=model_card.version,
        labels=model_card.labels,
    ).start()
    return LoadedModel(
        engine, model_card, model_card.input.layout, f"model {model_card.name} {model_card.version} (onnxruntime:fp32)"
    )


def _truth_lookup(card: ModelCard, truth: Sequence[int] | np.ndarray | None) -> Callable[[Frame], int | None]:
    """Ground truth of a frame: ``truth[frame_id]`` when given, else the file-name label."""
    index = {label: i for i, label in enumerate(card.labels)}
    if truth is not None:
        values = np.asarray(truth, dtype=np.int64)

        def by_id(frame: Frame) -> int | None:
            return int(values[frame.frame_id]) if 0 <= frame.frame_id < len(values) else None

        return by_id

    def by_label(frame: Frame) -> int | None:
        return index.get(frame.label) if frame.label is not None else None

    return by_label


def inspect_source(
    source: str | FrameSource,
    engine: Engine,
    card: ModelCard,
    *,
    layout: str | None = None,
    station: InspectionStation | None = None,
    truth: Sequence[int] | np.ndarray | None = None,
    state_dir: str | Path | None = None,
    publisher: Publisher | None = None,
    fps: float | None = None,
    queue_size: int | None = None,
    queue_policy: QueuePolicy | None = None,
    fsync: Literal["always", "interval", "never"] = "interval",
    timeout_s: float | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> InspectionSummary:
    """Inspect ``source`` to its end (or ``timeout_s``) on a started ``engine``; summarize."""
    spec = source if isinstance(source, str) else source.spec
    config = station or InspectionStation(name="station-1", source=spec)
    updates: dict[str, Any] = {}
    if fps is not None:
        updates["fps"] = fps
    if queue_size is not None:
        updates["queue_size"] = queue_size
    if queue_policy is not None:
        updates["queue_policy"] = queue_policy
    if updates:
        config = config.model_copy(update=updates)
    frame_source = source if isinstance(source, FrameSource) else open_source(spec, fps=config.fps)
    before = engine.stats()
    pipeline = InspectionPipeline(
        [config],
        engine,
        card,
        layout=layout,
        state_dir=state_dir,
        publisher=publisher,
        sources={config.name: frame_source},
        truth={config.name: _truth_lookup(card, truth)},
        fsync=fsync,
    )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        pipeline.start()
        while not pipeline.wait(0.5):
            if on_progress is not None:
                on_progress(pipeline.stations[0].stats())
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        pipeline.stop()
    return summarize(pipeline, engine, before)


def summarize(pipeline: InspectionPipeline, engine: Engine, before: Any = None) -> InspectionSummary:
    """The summary of the pipeline's first station (call after it finished or stopped)."""
    station = pipeline.stations[0]
    stats = station.stats()
    after = engine.stats()
    executions = after.execution_count - (before.execution_count if before else 0)
    samples = after.inference_count - (before.inference_count if before else 0)
    confusion = station.confusion
    known = int(confusion.sum())
    accuracy = float(np.trace(confusion) / known) if known else None
    return InspectionSummary(
        station=station.name,
        source=station.source.spec,
        labels=tuple(station.card.labels),
        frames_read=stats["frames_read"],
        processed=stats["processed"],
        corrupt=stats["corrupt"],
        dropped=stats["dropped"],
        errors=stats["errors"],
        reconnects=stats["reconnects"],
        elapsed_s=stats["elapsed_s"],
        fps=stats["fps"],
        decisions=stats["decisions"],
        alarms=stats["alarms"],
        latency_ms=stats["latency_ms"],
        accuracy=accuracy,
        confusion=confusion.tolist() if known else None,
        engine={
            "executions": executions,
            "samples": samples,
            "mean_batch_size": samples / executions if executions else 0.0,
        },
        ledger=str(station.ledger.path) if station.ledger is not None else None,
        rejects_saved=station.rejects.saved if station.rejects is not None else 0,
        rejects_skipped=station.rejects.skipped + station.rejects.failed if station.rejects is not None else 0,
    )


def run_inspection(
    source: str | FrameSource,
    *,
    bundle: str | Path | None = None,
    model: str | Path | None = None,
    profile: Profile | None = None,
    public_key: str | Path | None = None,
    verify: bool = True,
    **kwargs: Any,
) -> InspectionSummary:
    """Open an engine for ``bundle`` or ``model``, :func:`inspect_source`, close it.

    ``kwargs`` go to :func:`inspect_source` (``truth``, ``station``, ``state_dir``,
    ``publisher``, ``fps``, ``queue_size``, ``queue_policy``, ``timeout_s``, ...).
    """
    with open_engine(bundle=bundle, model=model, profile=profile, public_key=public_key, verify=verify) as loaded:
        kwargs.setdefault("layout", loaded.layout)
        return inspect_source(source, loaded.engine, loaded.card, **kwargs)


def start_stations(
    stations: Sequence[InspectionStation],
    engine: Engine | Callable[[], Engine],
    card: ModelCard,
    *,
    layout: str | None,
    state_dir: str | Path,
    publisher: Publisher | None = None,
    stats_interval_s: float = 5.0,
    sources: Mapping[str, FrameSource] | None = None,
) -> InspectionPipeline:
    """The agent's inspection feature: start ``stations`` (a target's ``inspection:``) on its engine.

    Live sources run until :meth:`InspectionPipeline.stop` (call it at agent shutdown); each
    station's ledger and rejected frames live under ``state_dir``; results, alarms, source
    events and periodic stats go to ``publisher`` as ``inspection`` messages.
    """
    return InspectionPipeline(
        stations,
        engine,
        card,
        layout=layout,
        state_dir=state_dir,
        publisher=publisher,
        stats_interval_s=stats_interval_s,
        sources=sources,
    ).start()
