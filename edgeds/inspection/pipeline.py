"""Stations: frames -> preprocessing -> the shared engine's batcher -> decisions -> ledger + MQTT.

Threads of one :class:`Station`: a *reader* pulls frames from its source into a bounded
:class:`FrameQueue`; a *worker* takes what is queued (1 frame when frames trickle in, up to the
engine's smallest preferred batch size, else its max batch, when the source is ahead),
preprocesses each into one row of a slot of a preallocated input array (2 slots: one request
in flight while the next is prepared), submits the rows as one request, and decides the oldest in-flight request when it
completes (so decisions, the ledger and the line alarm follow frame order). Several stations
submit to *one* :class:`~edgeds.runtime.engine.Engine`: its dynamic batcher micro-batches the
requests of every station together (a request is never split). Steady state allocates no
tensors: frame buffers are pooled by the source, input rows by the station, outputs by the
engine (released after the decision).

Back-pressure (:class:`FrameQueue`, ``queue_size`` frames):

* ``drop_oldest`` (default for cameras, streams and paced files): a new frame evicts the oldest
  queued one — a live line wants the freshest part decided; the evicted frame is counted in
  ``dropped`` (and its buffer returned).
* ``drop_newest``: the new frame is discarded and counted.
* ``block``: the reader waits (default for an unpaced file or directory, which cannot be outrun:
  nothing is lost, the file is read as fast as the engine decides).

Results: every decided frame is appended to the station's :class:`~.ledger.Ledger` and published
(``publisher.publish("inspection", payload)``, topic ``<prefix>/<device>/inspection``) as
``{"type": "results", "station", "results": [record, ...]}`` grouped every
``publish_interval_s`` (or 64 records), so each frame's id, timestamp, class, score, latency and
decision reach the broker at a bounded message rate. Alarms and source events (corrupt frame,
camera lost/back) are published at once (``type`` ``alarm`` / ``source``). :meth:`Station.stats`
(``fps``, ``dropped``, ``corrupt``, latency percentiles, ...) is what telemetry publishes as
``type: stats``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ..errors import EdgedsError, ServiceUnavailable
from .decisions import VERDICTS, Decision, DecisionPolicy
from .ledger import Ledger, RejectStore
from .prep import FramePreprocessor
from .sources import Frame, FrameSource, SourceEvent

if TYPE_CHECKING:
    from ..config import InspectionStation
    from ..modelcard import ModelCard
    from ..runtime.engine import Engine, InferRequest

log = logging.getLogger(__name__)

QueuePolicy = Literal["drop_oldest", "drop_newest", "block"]


class Publisher(Protocol):
    """What the pipeline publishes through (``edgeds.telemetry`` 's TelemetryPublisher fits)."""

    def publish(self, kind: str, payload: dict[str, Any]) -> Any: ...


class FrameQueue:
    """Bounded FIFO of frames between a reader and a worker, with a full-queue policy."""

    def __init__(self, maxsize: int, policy: QueuePolicy = "drop_oldest") -> None:
        if maxsize < 1:
            raise ValueError("queue size must be >= 1")
        self.maxsize = maxsize
        self.policy: QueuePolicy = policy
        self.dropped = 0
        self.high_water = 0
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Frame) -> bool:
        """Queue ``frame`` by the policy; False when it (or nothing, on close) was dropped."""
        evicted: Frame | None = None
        with self._cond:
            if self._closed:
                frame.release()
                return False
            if len(self._items) >= self.maxsize:
                if self.policy == "drop_newest":
                    self.dropped += 1
                    frame.release()
                    return False
                if self.policy == "drop_oldest":
                    evicted = self._items.popleft()
                    self.dropped += 1
                else:
                    while len(self._items) >= self.maxsize and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        frame.release()
                        return False
            self._items.append(frame)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
        if evicted is not None:
            evicted.release()
        return True

    def get(self, timeout: float | None) -> Frame | None:
        """The oldest frame, or None after ``timeout`` (0 = don't wait) or when closed and empty."""
        with self._cond:
            if not self._items and not self._closed and timeout != 0:
                self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout)
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        """No more frames: a blocked ``put`` returns, ``get`` drains what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and drained."""
        return self._closed and not self._items

    def discard(self) -> None:
        """Release every queued frame (on stop)."""
        with self._cond:
            items, self._items = list(self._items), deque()
        for frame in items:
            frame.release()


@dataclass
class StationStats:
    """Counters of one station (see :meth:`Station.stats` for the published snapshot)."""

    processed: int = 0
    errors: int = 0
    alarms: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    started: float = 0.0
    first_decision: float | None = None
    last_decision: float | None = None


class Station:
    """One source through the shared engine to decisions. Lifecycle: start -> (wait | stop)."""

    def __init__(
        self,
        config: InspectionStation,
        source: FrameSource,
        engine: Engine | Callable[[], Engine],
        card: ModelCard,
        *,
        layout: str | None = None,
        ledger: Ledger | None = None,
        rejects: RejectStore | None = None,
        publisher: Publisher | None = None,
        depth: int | None = None,
        truth: Callable[[Frame], int | None] | None = None,
        publish_interval_s: float = 0.5,
        latency_window: int = 2048,
    ) -> None:
        self.config = config
        self.name = config.name
        self.source = source
        self._engine_ref = engine
        self.card = card
        self.ledger = ledger
        self.rejects = rejects
        self.publisher = publisher
        self.truth = truth
        self.policy = DecisionPolicy(
            card.labels,
            config.thresholds,
            config.uncertain_below,
            config.accept_classes,
            config.alarm_consecutive_rejects,
            outputs_are_logits=card.output.kind == "logits",
        )
        policy: QueuePolicy = config.queue_policy or ("drop_oldest" if source.live or source.fps else "block")
        self.queue = FrameQueue(config.queue_size, policy)
        self.prep = FramePreprocessor(card.input, layout)
        engine_now = self.engine
        # rows per request: up to the engine's smallest preferred batch size (what the profile
        # says runs best; the batcher still joins requests up to its max), else its max batch
        batching = engine_now.batching if engine_now is not None else None
        preferred = batching.preferred_batch_sizes if batching is not None else ()
        self.chunk = min(preferred) if preferred else (batching.max_batch_size if batching is not None else 8)
        # requests in flight: 2, so the next chunk is preprocessed while the engine runs one
        self.depth = depth or 2
        self._inputs = self.prep.buffer(self.depth * self.chunk)
        self._input_name = card.input.name
        self._output_name = card.output.name
        self.stats_ = StationStats()
        self.confusion = np.zeros((len(card.labels), len(card.labels)), dtype=np.int64)
        self._latency = np.zeros(latency_window, dtype=np.float64)
        self._latency_n = 0
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)  # (time, processed) for recent fps
        self._pending: list[dict[str, Any]] = []
        self._publish_interval = publish_interval_s
        self._last_publish = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._done = threading.Event()
        self._lock = threading.Lock()
        source.on_event(self._source_event)

    # ------------------------------------------------------------------ lifecycle

    @property
    def engine(self) -> Engine | None:
        """The engine to submit to now (None while the agent has no model loaded)."""
        ref = self._engine_ref
        return ref if hasattr(ref, "submit") else ref()  # type: ignore[return-value]

    def start(self) -> Station:
        self.stats_.started = time.monotonic()
        self._recent.append((self.stats_.started, 0))
        reader = threading.Thread(target=self._read_loop, name=f"inspect-{self.name}-reader", daemon=True)
        worker = threading.Thread(target=self._work_loop, name=f"inspect-{self.name}-worker", daemon=True)
        self._threads = [reader, worker]
        reader.start()
        worker.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Until the source ended and every frame was decided. False on timeout."""
        return self._done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, decide what is in flight, drop what is queued, flush the ledger."""
        self._stop.set()
        self.queue.close()
        self.queue.discard()
        for thread in self._threads:
            thread.join(timeout)
        self.source.close()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # ------------------------------------------------------------------ threads

    def _read_loop(self) -> None:
        try:
            for frame in self.source.frames(self._stop):
                self.queue.put(frame)
        except EdgedsError as exc:
            log.error("station %s: source failed: %s", self.name, exc)
            self._record_event({"type": "source", "event": "failed", "detail": str(exc)}, durable=True)
        except Exception as exc:  # a source bug must not hang the station
            log.exception("station %s: source crashed", self.name)
            self._record_event({"type": "source", "event": "failed", "detail": repr(exc)}, durable=True)
        finally:
            self.queue.close()

    def _work_loop(self) -> None:
        inflight: deque[tuple[list[Frame], InferRequest, int]] = deque()
        free = list(range(self.depth - 1, -1, -1))
        try:
            while True:
                while free:
                    first = self.queue.get(0 if inflight else 0.2)
                    if first is None:
                        break
                    frames = [first]
                    while len(frames) < self.chunk and (more := self.queue.get(0)) is not None:
                        frames.append(more)
                    slot = free.pop()
                    submitted = self._submit(frames, slot)
                    if submitted is None:
                        free.append(slot)
                        continue
                    inflight.append((*submitted, slot))
                if inflight:
                    frames, request, slot = inflight.popleft()
                    self._complete(frames, request)
                    free.append(slot)
                elif self.queue.finished or (self._stop.is_set() and not len(self.queue)):
                    break
        except Exception as exc:  # a bug must not leave the station hanging: report, stop reading
            log.exception("station %s: worker crashed", self.name)
            self._record_event({"type": "error", "detail": f"worker crashed: {exc!r}"}, durable=True)
            self._stop.set()
            self.queue.close()
            self.queue.discard()
        finally:
            try:
                for frames, request, _ in inflight:
                    self._complete(frames, request)
                self._flush_results(force=True)
                if self.ledger is not None:
                    self.ledger.flush()
            finally:
                self._done.set()

    def _submit(self, frames: list[Frame], slot: int) -> tuple[list[Frame], InferRequest] | None:
        """Preprocess ``frames`` into the slot's rows and submit them as one request."""
        from ..runtime.engine import EngineDraining

        base = slot * self.chunk
        kept: list[Frame] = []
        for frame in frames:
            try:
                self.prep.into(frame.image, self._inputs[base + len(kept)])
            except (ValueError, EdgedsError) as exc:
                self.source._corrupt(frame.frame_id, f"cannot preprocess: {exc}")
                frame.release()
                continue
            kept.append(frame)
        if not kept:
            return None
        rows = self._inputs[base : base + len(kept)]
        error: Exception = ServiceUnavailable("engine unavailable")
        for attempt in range(200):
            try:
                engine = self.engine
                if engine is None:
                    raise EngineDraining("no model loaded")
                return kept, engine.submit({self._input_name: rows})
            except EngineDraining as exc:
                error = exc
                if attempt >= 100:
                    break
                time.sleep(0.05)  # the agent is swapping models: the provider returns the new engine
            except ServiceUnavailable as exc:
                error = exc
                time.sleep(0.002)  # the engine's queue is full: wait for room (our queue absorbs frames)
            except EdgedsError as exc:
                error = exc
                break
        for frame in kept:
            self._engine_error(frame, error)
            frame.release()
        return None

    def _engine_error(self, frame: Frame, exc: Exception) -> None:
        with self._lock:
            self.stats_.errors += 1
        log.error("station %s: frame %d: %s", self.name, frame.frame_id, exc)
        self._record_event(
            {"type": "error", "frame_id": frame.frame_id, "ts": frame.timestamp, "detail": str(exc)}, durable=True
        )

    def _fail_request(self, frames: list[Frame], request: InferRequest, exc: Exception) -> None:
        request.release()
        for frame in frames:
            self._engine_error(frame, exc)
            frame.release()

    def _complete(self, frames: list[Frame], request: InferRequest) -> None:
        """Decide every frame of a completed request, in order; ledger, publish, release."""
        try:
            outputs = request.wait(60.0)[self._output_name]
            decisions = [self.policy.decide(outputs[row]) for row in range(len(frames))]
        except EdgedsError as exc:  # the engine failed or timed out: these frames are errors, the station goes on
            self._fail_request(frames, request, exc)
            return
        except Exception as exc:  # a bug reading the outputs or deciding: the same, with the traceback
            log.exception("station %s: deciding %d frame(s) failed", self.name, len(frames))
            self._fail_request(frames, request, exc)
            return
        request.release()
        now_ns = time.monotonic_ns()
        records: list[dict[str, Any]] = []
        durable = False
        for frame, decision in zip(frames, decisions, strict=True):
            latency_ms = (now_ns - frame.captured_ns) / 1e6
            record: dict[str, Any] = {
                "type": "frame",
                "station": self.name,
                "frame_id": frame.frame_id,
                "ts": round(frame.timestamp, 6),
                "class": decision.label,
                "score": round(decision.score, 6),
                "decision": decision.verdict,
                "latency_ms": round(latency_ms, 3),
            }
            if decision.verdict == "reject":
                durable = True
                record["defect"] = decision.defect
                if self.rejects is not None and self.config.save_rejects:
                    saved = self.rejects.save(frame.image, self.name, frame.frame_id, decision.defect or decision.label)
                    if saved is not None:
                        record["image"] = saved
            truth = self.truth(frame) if self.truth is not None else None
            frame.release()
            self._account(decision, latency_ms, truth)
            if decision.alarm:
                record["alarm"] = True
                log.warning("station %s: line alarm after %d rejects in a row", self.name, decision.consecutive_rejects)
                self._publish(
                    {
                        "type": "alarm",
                        "station": self.name,
                        "frame_id": frame.frame_id,
                        "ts": record["ts"],
                        "consecutive_rejects": decision.consecutive_rejects,
                        "defect": decision.defect,
                    }
                )
            records.append(record)
        if self.ledger is not None:
            self.ledger.append_many(records, durable=durable)
        self._pending.extend(records)
        self._flush_results()

    def _account(self, decision: Decision, latency_ms: float, truth: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            stats = self.stats_
            stats.processed += 1
            stats.decisions[decision.verdict] += 1
            stats.alarms += int(decision.alarm)
            if stats.first_decision is None:
                stats.first_decision = now
            stats.last_decision = now
            self._latency[self._latency_n % len(self._latency)] = latency_ms
            self._latency_n += 1
            if truth is not None and 0 <= truth < len(self.confusion):
                self.confusion[truth, decision.predicted] += 1
            if not self._recent or now - self._recent[-1][0] >= 0.25:
                self._recent.append((now, stats.processed))

    # ------------------------------------------------------------------ reporting

    def _source_event(self, event: SourceEvent) -> None:
        # the first retry is durable; repeated retries of a lost camera only need to be published
        durable = event.kind not in ("opened", "retry") or self.source.stats.failed_opens <= 1
        payload: dict[str, Any] = {"type": "source", "event": event.kind, "ts": round(time.time(), 6)}
        if event.frame_id is not None:
            payload["frame_id"] = event.frame_id
        if event.detail:
            payload["detail"] = event.detail
        if event.retry_in_s is not None:
            payload["retry_in_s"] = event.retry_in_s
        self._record_event(payload, durable=durable)

    def _record_event(self, payload: dict[str, Any], durable: bool) -> None:
        payload = {**payload, "station": self.name}
        payload.setdefault("ts", round(time.time(), 6))
        if self.ledger is not None:
            try:
                self.ledger.append(payload, durable=durable)
            except EdgedsError as exc:
                log.error("station %s: ledger: %s", self.name, exc)
        self._publish(payload)

    def _publish(self, payload: dict[str, Any]) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.publish("inspection", payload)
        except Exception as exc:  # telemetry trouble never stops inspection (the ledger has it)
            log.warning("station %s: publish failed: %s", self.name, exc, exc_info=True)

    def _flush_results(self, force: bool = False) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        if not force and len(self._pending) < 64 and now - self._last_publish < self._publish_interval:
            return
        results, self._pending = self._pending, []
        self._last_publish = now
        self._publish({"type": "results", "station": self.name, "results": results})

    def latencies(self) -> np.ndarray:
        """The latest latencies in ms (up to the window), a copy."""
        with self._lock:
            n = min(self._latency_n, len(self._latency))
            return np.array(self._latency[:n])

    def stats(self) -> dict[str, Any]:
        """Snapshot for telemetry: counters, fps (overall and recent), drops, latency percentiles."""
        now = time.monotonic()
        with self._lock:
            s = self.stats_
            processed = s.processed
            decisions = dict(s.decisions)
            recent = list(self._recent)
            first, last = s.first_decision, s.last_decision
            errors, alarms = s.errors, s.alarms
        lat = self.latencies()
        src = self.source.stats
        end = last if self.done and last is not None else now
        elapsed = max(1e-9, end - s.started) if s.started else 0.0
        if len(recent) >= 2:
            t0, n0 = recent[0]
            t1, n1 = (now, processed) if not self.done else recent[-1]
            recent_fps = (n1 - n0) / max(1e-9, t1 - t0)
        else:
            recent_fps = 0.0
        steady = (processed - 1) / (last - first) if first is not None and last is not None and last > first else 0.0
        return {
            "type": "stats",
            "station": self.name,
            "source": self.source.spec,
            "source_kind": self.source.kind,
            "connected": src.connected,
            "frames_read": src.frames,
            "processed": processed,
            "dropped": self.queue.dropped,
            "corrupt": src.corrupt,
            "errors": errors,
            "disconnects": src.disconnects,
            "reconnects": src.reconnects,
            "queue_depth": len(self.queue),
            "queue_policy": self.queue.policy,
            "fps": processed / elapsed if elapsed else 0.0,
            "fps_recent": recent_fps,
            "fps_steady": steady,
            "elapsed_s": elapsed,
            "decisions": decisions,
            "alarms": alarms,
            "latency_ms": _percentiles(lat),
        }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def require_classifier(card: ModelCard) -> None:
    """Inspection decides on class scores: :class:`~edgeds.errors.ConfigError` (one line) for a card
    of another task (object detection, generic tensors)."""
    from ..errors import ConfigError

    if card.task != "image-classification":
        raise ConfigError.single(
            None, None, "model", f"inspection needs an image-classification model; {card.name} is {card.task}"
        )


class InspectionPipeline:
    """Stations sharing one engine, plus a thread that publishes their stats periodically.

    ``engine`` is an :class:`Engine` or a callable returning the current one (the agent swaps
    models: stations resubmit to the new engine while the old one drains; None = no model now,
    frames wait up to 5 s for one, then count as errors). ``state_dir`` holds
    ``ledger/`` and ``rejects/``; None keeps no ledger (benchmarks).
    """

    def __init__(
        self,
        stations: Sequence[InspectionStation],
        engine: Engine | Callable[[], Engine],
        card: ModelCard,
        *,
        layout: str | None = None,
        state_dir: str | Path | None = None,
        publisher: Publisher | None = None,
        stats_interval_s: float = 5.0,
        sources: Mapping[str, FrameSource] | None = None,
        truth: Mapping[str, Callable[[Frame], int | None]] | None = None,
        fsync: Literal["always", "interval", "never"] = "interval",
    ) -> None:
        from .sources import open_source

        require_classifier(card)
        names = [s.name for s in stations]
        if len(set(names)) != len(names):
            raise EdgedsError(f"station names must be unique, got {names}")
        self.publisher = publisher
        self.stats_interval_s = stats_interval_s
        self.stations: list[Station] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        state = Path(state_dir) if state_dir is not None else None
        try:
            for cfg in stations:
                source = (sources or {}).get(cfg.name) or open_source(cfg.source, fps=cfg.fps)
                ledger = rejects = None
                if state is not None:
                    max_total = cfg.ledger_max_mb * 1024 * 1024
                    ledger = Ledger(
                        state / "ledger",
                        cfg.name,
                        max_file_bytes=max(1024, min(8 * 1024 * 1024, max_total // 4)),
                        max_total_bytes=max_total,
                        fsync=fsync,
                    )
                    if cfg.save_rejects:
                        rejects = RejectStore(
                            state / "rejects" / cfg.name,
                            cfg.rejects_budget_mb * 1024 * 1024,
                            image_format=cfg.rejects_format,
                        )
                self.stations.append(
                    Station(
                        cfg,
                        source,
                        engine,
                        card,
                        layout=layout,
                        ledger=ledger,
                        rejects=rejects,
                        publisher=publisher,
                        truth=(truth or {}).get(cfg.name),
                    )
                )
        except BaseException:
            self._close_ledgers()
            raise

    def start(self) -> InspectionPipeline:
        for station in self.stations:
            station.start()
        if self.publisher is not None:
            self._thread = threading.Thread(target=self._stats_loop, name="inspect-stats", daemon=True)
            self._thread.start()
        return self

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.stats_interval_s):
            self.publish_stats()

    def publish_stats(self) -> None:
        """Publish every station's :meth:`Station.stats` (``type: stats``) now."""
        if self.publisher is None:
            return
        for station in self.stations:
            try:
                self.publisher.publish("inspection", station.stats())
            except Exception as exc:  # telemetry trouble never stops inspection: next interval retries
                log.warning("inspection stats publish failed: %s", exc, exc_info=True)

    def stats(self) -> list[dict[str, Any]]:
        return [station.stats() for station in self.stations]

    def wait(self, timeout: float | None = None) -> bool:
        """Until every station's source ended and its frames were decided. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for station in self.stations:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not station.wait(left):
                return False
        return True

    def stop(self) -> None:
        """Stop every station, publish final stats, close ledgers. Idempotent."""
        self._stop.set()
        for station in self.stations:
            station.stop()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
            self.publish_stats()
        self._close_ledgers()

    def _close_ledgers(self) -> None:
        for station in self.stations:
            if station.ledger is not None:
                station.ledger.close()
            if station.rejects is not None:
                station.rejects.close()

    def __enter__(self) -> InspectionPipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
