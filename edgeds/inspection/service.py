"""The agent's inspection feature: the target's ``inspection:`` stations, run next to the server.

Lifecycle: construction is free (nothing opened). :meth:`StationService.ensure` is called by the
agent after every activation; the first call opens the sources and starts the stations, later
calls restart the shared stations only when the served model's input or labels changed (a plain
model swap is followed without a restart: shared stations resubmit to whatever engine the
agent's callable returns now, while the old engine drains). For such a change the agent calls
:meth:`StationService.before_swap` first, which stops them before the new engine takes traffic.
A restart reopens the sources: a file or directory source is read again from its start (its
decisions are recorded again, counters start from zero); cameras and streams simply continue.
:meth:`StationService.stop` stops every station, closes their ledgers and the engines the
service opened itself. Idempotent.

Which engine a station uses:

* no ``model:`` — the agent's served release (micro-batched together with the HTTP traffic and
  every other such station: one engine per device);
* ``model: <release id>`` — that release from the device's store (already verified at deploy);
* ``model: <path>`` — a bundle directory or ``.tar`` on the device, verified under the store's
  trusted publisher keys before it is loaded.

A station that cannot start (bad source, unverifiable bundle) is logged and reported in
:meth:`errors`; the agent keeps serving and the other stations keep running. Ledgers and
rejected frames live under ``<install dir>/inspection``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import InspectionStation
from ..errors import BundleError, EdgedsError
from ..modelcard import ModelCard
from .pipeline import InspectionPipeline, Publisher
from .sources import source_kind

if TYPE_CHECKING:
    from ..deploy.device.store import Store
    from ..runtime.engine import Engine
    from .runner import LoadedModel

log = logging.getLogger("edgeds.agent.inspection")


class StationService:
    """Runs a target's stations inside the agent (see the module docstring for the lifecycle)."""

    def __init__(
        self,
        stations: Sequence[InspectionStation],
        engine: Callable[[], Engine | None],
        store: Store,
        *,
        publisher: Publisher | None = None,
        stats_interval_s: float = 5.0,
    ) -> None:
        self.stations = tuple(self._resolve_source(s, store.root) for s in stations)
        self._engine = engine
        self._store = store
        self._publisher = publisher
        self._stats_interval_s = stats_interval_s
        self._shared: InspectionPipeline | None = None
        self._shared_key: tuple[Any, ...] | None = None
        self._own: list[tuple[InspectionPipeline, LoadedModel]] = []
        self._own_started = False
        self._errors: dict[str, str] = {}

    @staticmethod
    def _resolve_source(station: InspectionStation, root: Path) -> InspectionStation:
        """Relative file and directory sources are relative to the install dir (the agent's home)."""
        if source_kind(station.source) in ("directory", "video"):
            path = Path(station.source).expanduser()
            if not path.is_absolute():
                return station.model_copy(update={"source": str(root / path)})
        return station

    # -- lifecycle ------------------------------------------------------------------------------

    def before_swap(self, card: ModelCard, layout: str) -> None:
        """Call before the agent points its traffic at a new engine: shared stations whose model
        input or labels change are stopped now (restarted by :meth:`ensure`), so no frame prepared
        for the old model reaches the new one and no decision carries the old labels."""
        if self._shared is not None and (card.input, card.labels, layout) != self._shared_key:
            self._shared.stop()
            self._shared = None
            self._shared_key = None

    def ensure(self, card: ModelCard, layout: str) -> None:
        """Start what is not running yet; restart shared stations if the served model's interface changed."""
        shared = [s for s in self.stations if s.model is None]
        key = (card.input, card.labels, layout)
        if shared and key != self._shared_key:
            if self._shared is not None:
                log.info("served model's input or labels changed: restarting %d shared station(s)", len(shared))
                self._shared.stop()
                self._shared = None
            self._shared = self._start(shared, self._engine, card, layout, "shared")
            self._shared_key = key if self._shared is not None else None
        if not self._own_started:
            self._own_started = True
            for station in self.stations:
                if station.model is not None:
                    self._start_own(station)

    def _start(
        self,
        stations: Sequence[InspectionStation],
        engine: Engine | Callable[[], Engine | None],
        card: ModelCard,
        layout: str,
        what: str,
    ) -> InspectionPipeline | None:
        try:
            pipeline = InspectionPipeline(
                stations,
                engine,  # type: ignore[arg-type]  # a callable may return None while nothing serves
                card,
                layout=layout,
                state_dir=self._store.root / "inspection",
                publisher=self._publisher,
                stats_interval_s=self._stats_interval_s,
            ).start()
        except Exception as exc:  # a station that cannot start is reported; the others and the agent go on
            for station in stations:
                self._errors[station.name] = f"{type(exc).__name__}: {exc}"
            log.error(
                "inspection stations %s (%s) did not start: %s", [s.name for s in stations], what, exc, exc_info=True
            )
            return None
        for station in stations:
            self._errors.pop(station.name, None)
        log.info("inspection: started %s on %s", ", ".join(s.name for s in stations), what)
        return pipeline

    def _start_own(self, station: InspectionStation) -> None:
        try:
            loaded = self._open_model(str(station.model))
        except Exception as exc:  # reported in errors(); the other stations and the agent go on
            self._errors[station.name] = f"{type(exc).__name__}: {exc}"
            log.error(
                "inspection station %s: model %s did not load: %s", station.name, station.model, exc, exc_info=True
            )
            return
        pipeline = self._start([station], loaded.engine, loaded.card, loaded.layout, loaded.description)
        if pipeline is None:
            loaded.close()
            return
        self._own.append((pipeline, loaded))

    def _open_model(self, model: str) -> LoadedModel:
        """A release id of the store (verified at deploy) or a bundle path verified under the trusted keys."""
        from .runner import open_engine

        release = self._store.releases / model
        if "/" not in model and release.is_dir():
            return open_engine(bundle=release, verify=False)
        keys = self._store.trusted_keys()
        if not keys:
            raise BundleError(f"{model}: no trusted publisher key on this device to verify it with")
        last: Exception | None = None
        for key in keys:
            try:
                return open_engine(bundle=Path(model).expanduser(), public_key=key)
            except BundleError as exc:
                last = exc
        raise BundleError(f"{model}: does not verify under any trusted key: {last}") from last

    def stop(self) -> None:
        """Stop every pipeline and close the engines opened here; one failure does not stop the rest."""
        shared, self._shared, self._shared_key = self._shared, None, None
        own, self._own = self._own, []
        for pipeline in [shared] if shared is not None else []:
            try:
                pipeline.stop()
            except Exception as exc:  # one failure does not stop the rest (see the docstring)
                log.warning("inspection: stopping the shared stations failed: %s", exc, exc_info=True)
        for pipeline, loaded in own:
            try:
                pipeline.stop()
            except Exception as exc:  # one failure does not stop the rest (see the docstring)
                log.warning("inspection: stopping a station failed: %s", exc, exc_info=True)
            with contextlib.suppress(EdgedsError, OSError):
                loaded.close()

    # -- reporting ------------------------------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        """Every running station's :meth:`~.pipeline.Station.stats` (fps, drops, decisions, latency)."""
        out: list[dict[str, Any]] = []
        if self._shared is not None:
            out += self._shared.stats()
        for pipeline, _ in self._own:
            out += pipeline.stats()
        return out

    def errors(self) -> dict[str, str]:
        """Stations that failed to start: name -> reason."""
        return dict(self._errors)
