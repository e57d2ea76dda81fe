"""Engine = backend + buffer pool + dynamic batcher + statistics.

Lifecycle: ``Engine(...)`` is free; :meth:`Engine.start` opens the backend, allocates the pool
(one input set per bucket), runs one warm-up batch per bucket and starts the batcher's worker.
``start(inline=True)`` starts no worker: each instance's batches then run on the thread that
drives it with :meth:`Engine.run_ready` (an :class:`~edgeds.runtime.server.InferenceServer` event
loop per instance), and requests name their instance in :meth:`Engine.submit`.
With ``batching.instances = N`` (Triton's ``instance_group`` count) it opens N backends, each
with its own pool, a worker each and ``threads // N`` of the CPU threads (see
:func:`instance_options`): N batches execute at once, so no instance waits on another's threads.
:meth:`Engine.drain` stops accepting (``submit`` raises :class:`EngineDraining`), lets every
queued and in-flight request finish, then closes. :meth:`Engine.close` rejects what is queued.

Request path: :meth:`Engine.submit` validates the inputs (names, dtype, non-batch shape, batch
size; :class:`~edgeds.errors.RequestError` otherwise) and queues them *without copying*: the
caller must not modify its arrays until the request completes. The worker copies each request's
rows straight into the bucket's pooled input (a batch that is one request filling its bucket
goes to the backend as the request's own arrays, which it binds in place or copies), runs the
backend, copies the used output rows into a pooled :class:`~edgeds.runtime.buffers.OutputSlot`
and gives every request a view of its rows.
``InferRequest.outputs`` are those views: call :meth:`InferRequest.release` once they have been
serialized (or use :meth:`Engine.infer`, which returns copies). An unreleased request is
released when it is garbage-collected.

Zero-downtime swap (used by the server and the agent): start the new engine, point new traffic at
it, then ``old.drain()``; requests already submitted to the old engine finish there. See
:meth:`edgeds.runtime.server.InferenceServer.swap_model`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..backends.base import Backend, BackendOptions, IOSpec, TensorSpec
from ..config import Batching
from ..errors import EdgedsError, InferenceError, QueueFull, RequestError, ServiceUnavailable
from ..manifest import fixed_batching
from .batcher import DynamicBatcher, InlineBatcher, Pending, QueueTimeout
from .buffers import BufferPool, OutputSlot, StagingBackend
from .selection import (
    OPEN_ERRORS,
    THREAD_OPTION,
    ArtifactChoice,
    RequiredArtifactFailed,
    Selection,
    Skipped,
    choices_from_bundle,
    no_artifact_opens,
    thread_options,
)

if TYPE_CHECKING:
    from ..bundle import Bundle


log = logging.getLogger(__name__)


def instance_options(backend: Backend, instances: int) -> list[BackendOptions]:
    """Per-instance options: the backend's thread count (None = one per core) split among ``instances``.

    Every instance gets at least one thread; a remainder goes to the first instances. Backends
    without a CPU thread option (TensorRT) get the same options for every instance.
    """
    options = backend.options
    key = THREAD_OPTION.get(backend.name)
    if instances == 1 or key is None or not hasattr(options, key):
        return [options] * instances
    total = getattr(options, key) or len(os.sched_getaffinity(0)) or 1
    share, extra = divmod(total, instances)
    return [options.model_copy(update={key: max(1, share + (1 if i < extra else 0))}) for i in range(instances)]


class EngineDraining(ServiceUnavailable):
    """The engine is draining or closed: the caller should use the engine that replaced it."""


class InferRequest:
    """One request in flight. ``outputs`` are views into a pooled slot until :meth:`release`."""

    __slots__ = (
        "__weakref__",
        "_callback",
        "_event",
        "_released",
        "_slot",
        "batch",
        "error",
        "inputs",
        "outputs",
        "seq",
    )

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        batch: int,
        callback: Callable[[InferRequest], None] | None,
    ) -> None:
        self.inputs = inputs
        self.batch = batch
        self.outputs: dict[str, np.ndarray] = {}
        self.error: Exception | None = None
        self.seq = -1
        self._slot: OutputSlot | None = None
        self._released = False
        self._callback = callback
        # a bare lock held until completion: cheaper than an Event (no Condition per wait)
        self._event: Any = None
        if callback is None:
            self._event = _allocate_lock()
            self._event.acquire()

    def _finish(self) -> None:
        if self._callback is not None:
            self._callback(self)
        elif self._event is not None:
            self._event.release()

    def wait(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Block until done (once); the output views, or raise the request's error."""
        if self._event is None:
            raise RuntimeError("wait() on a request submitted with a callback")
        if not self._event.acquire(timeout=-1 if timeout is None else timeout):
            raise ServiceUnavailable("timed out waiting for the engine")
        self._event.release()
        if self.error is not None:
            raise self.error
        return self.outputs

    def release(self) -> None:
        """Give the output views back to the pool. Idempotent."""
        if not self._released:
            self._released = True
            slot, self._slot = self._slot, None
            self.outputs = {}
            if slot is not None:
                slot.release()

    def __del__(self) -> None:
        if not self._released and self._slot is not None:
            self.release()


@dataclass
class EngineStats:
    """Cumulative counters (Triton's): request-level times summed per request, in µs."""

    success: int = 0
    failure: int = 0
    inference_count: int = 0  # samples
    execution_count: int = 0  # batches
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0
    last_inference_ms: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # samples per execution -> executions
    buckets: dict[int, int] = field(default_factory=dict)  # bucket used -> executions
    instance_executions: dict[int, int] = field(default_factory=dict)  # instance index -> executions
    rejected_queue_full: int = 0
    rejected_timeout: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.inference_count / self.execution_count if self.execution_count else 0.0


class LatencyRecorder(Protocol):
    """Receives per-request latencies (seconds, arrival to outputs ready) of each executed batch.

    Called on the engine's worker thread: it must not block (e.g.
    :class:`edgeds.telemetry.metrics.InferenceRecorder`, which only appends to a deque).
    """

    def record(self, latencies_s: list[float], batch_size: int) -> None: ...

    def record_error(self, count: int = 1) -> None: ...


class Engine:
    """A served model. Construct from (backend, artifact, options, batching) or :meth:`from_bundle`."""

    def __init__(
        self,
        backend: str | Backend | None,
        artifact: Path | str | None = None,
        *,
        options: BackendOptions | Mapping[str, Any] | None = None,
        batching: Batching | None = None,
        name: str = "model",
        version: str = "1",
        release: str = "",
        labels: tuple[str, ...] = (),
        warmup: bool = True,
        choices: Sequence[ArtifactChoice] = (),
    ) -> None:
        """``backend`` (a name or a constructed backend) runs ``artifact``; or, with ``backend=None``,
        ``choices`` lists artifacts in order and :meth:`start` opens the first that opens here
        (:mod:`edgeds.runtime.selection`; :meth:`from_bundle` builds them from a manifest)."""
        if backend is not None:
            if isinstance(backend, str):
                from .. import backends

                backend = backends.create(backend, dict(options) if isinstance(options, Mapping) else options)
            if artifact is None:
                raise EdgedsError("an engine built from a backend needs the artifact it opens")
            choices = [ArtifactChoice(backend.name, Path(artifact), backend=backend)]
            self.backend = backend
        elif not choices:
            raise EdgedsError("an engine needs a backend and artifact, or artifact choices")
        self._choices = list(choices)
        self.artifact = self._choices[0].path  # the file opened, once started
        self.selection: Selection | None = None  # what start() opened and passed over
        self.batching = batching or Batching()
        self.name = name
        self.version = version  # what clients address (/versions/{v}, model_version): the card's
        self.release = release  # which build serves it (the bundle's monotonic version); "" when not a bundle
        self.labels = labels
        self._warmup = warmup
        self._state = "new"  # new -> ready -> draining -> closed
        self._lock = threading.Lock()
        self._admit = threading.Lock()
        self._stats = EngineStats()
        self.recorder: LatencyRecorder | None = None  # set by the agent for telemetry
        self._order_lock = threading.Lock()
        self._ordered: dict[int, InferRequest] = {}
        self._next_seq = 0
        self.io: IOSpec | None = None
        self.backends: list[Backend] = [backend] if backend is not None else []  # one per instance once started
        self.pools: list[BufferPool] = []  # one per instance, parallel to backends
        self._batcher: DynamicBatcher[InferRequest] | InlineBatcher[InferRequest] | None = None
        # the batcher, when started inline; kept after close (unlike _batcher), so that run_ready keeps
        # answering None to the loops that still call it
        self._inline: InlineBatcher[InferRequest] | None = None
        self._inputs: dict[str, TensorSpec] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self.first_inference_s: float | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        batching: Batching | None = None,
        options: Mapping[str, Any] | None = None,
        threads: int | None = None,
        engine_resolver: Callable[[Path], tuple[Path, str]] | None = None,
        **kwargs: Any,
    ) -> Engine:
        """An engine for a loaded bundle: its artifacts, options and batching from its manifest.

        :meth:`start` opens the first of the manifest's artifacts that opens on this device and
        records the choice in :attr:`selection` (see :mod:`edgeds.runtime.selection`); the bundle's
        files must stay in place until then. ``options`` are merged over each artifact's options
        where its runtime takes them; ``threads`` (None = the runtime's default) sets each runtime's
        CPU thread option; ``engine_resolver`` finds a TensorRT artifact's engine (default: build it
        into the default engine cache when missing, see
        :func:`~edgeds.runtime.selection.tensorrt_resolver`);
        ``batching`` replaces the manifest's batching; a bundle whose model has a fixed batch N
        (``manifest.fixed_batch``) runs with at most N rows per execution, padded to N, whatever
        batching is asked for. The engine is not started. Name, version,
        release and labels default to the manifest's model name, model card version
        (``manifest.model.version``: what clients address), bundle version (``manifest.version``,
        monotonic: which build serves it) and labels.
        """
        manifest = bundle.manifest
        if batching is None:
            batching = Batching.from_manifest(manifest.batching)
        if manifest.fixed_batch is not None:
            # the artifact runs only at its fixed batch, whatever batching the caller asked for
            batching = Batching.model_validate(fixed_batching(batching.model_dump(), manifest.fixed_batch))
        kwargs.setdefault("name", manifest.model.name)
        kwargs.setdefault("version", manifest.model.version)
        kwargs.setdefault("release", str(manifest.version))
        kwargs.setdefault("labels", tuple(manifest.labels or ()))
        return cls(
            None,
            batching=batching,
            choices=choices_from_bundle(bundle, options, engine_resolver, threads=threads),
            **kwargs,
        )

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def state(self) -> str:
        return self._state

    @property
    def inline(self) -> bool:
        """Started with ``inline=True``: its instances run on the threads that call :meth:`run_ready`."""
        return self._inline is not None

    def start(self, inline: bool = False) -> Engine:
        """Open the backend, allocate the pool, warm every bucket, start the batcher.

        ``inline=True``: no worker threads; instance ``i``'s queue is run by whoever calls
        :meth:`run_ready` ``(i)``, and :meth:`submit` needs ``instance``. Not with
        ``preserve_ordering`` (the instances' queues are independent: nothing orders them).
        """
        if self._state != "new":
            raise EdgedsError(f"engine already {self._state}")
        if inline and self.batching.preserve_ordering:
            raise EdgedsError("preserve_ordering needs the batcher's workers: start the engine without inline")
        buckets = self.batching.bucket_sizes()
        started = time.perf_counter()
        skipped: list[Skipped] = []
        for choice in self._choices:
            try:
                template, artifact, resolved = choice.prepare()
                backends, ios, pools = self._open_instances(template, artifact, buckets)
                if choice.check is not None:
                    try:
                        choice.check(backends[0], ios[0], buckets)
                    except BaseException:
                        for backend in backends:
                            backend.close()
                        raise
            except OPEN_ERRORS as exc:
                passed = choice.skipped(exc)
                if choice.require:
                    raise RequiredArtifactFailed(f"{passed.reason} (the profile requires it: require: true)") from exc
                if len(self._choices) == 1:
                    raise
                log.warning("engine %s: artifact %d passed over: %s", self.name, choice.index, passed.reason)
                skipped.append(passed)
                continue
            opened = backends[0].opened()
            if resolved.engine and not opened.engine:
                opened = replace(opened, engine=resolved.engine)
            if choice.require and opened.fallback:
                for backend in backends:
                    backend.close()
                raise RequiredArtifactFailed(f"{opened.fallback} (the profile requires {choice.runtime} as asked)")
            self.artifact = artifact
            self.selection = Selection(
                choice.index,
                choice.runtime,
                choice.precision,
                opened,
                tuple(skipped),
                template.options.model_dump(mode="json"),
            )
            if skipped or opened.fallback:
                log.warning("engine %s serves %s", self.name, self.selection.summary())
            break
        else:
            raise no_artifact_opens(skipped)
        self.backends, self.backend, self.pools = backends, backends[0], pools
        self.io = ios[0]
        self._inputs = {spec.name: spec for spec in self.io.inputs}
        self._dtypes = {spec.name: np.dtype(spec.dtype) for spec in self.io.inputs}
        # open + the first inference of every bucket, for every instance (seconds)
        self.first_inference_s = time.perf_counter() - started
        if inline:
            self._batcher = self._inline = InlineBatcher(
                self.batching, self._execute, self._reject, self.batching.instances
            )
        else:
            self._batcher = DynamicBatcher(
                self.batching, self._execute, self._reject, name=f"engine-{self.name}", workers=self.batching.instances
            )
        self._state = "ready"
        return self

    def _open_instances(
        self, template: Backend, artifact: Path, buckets: Sequence[int]
    ) -> tuple[list[Backend], list[IOSpec], list[BufferPool]]:
        """Open ``template`` (and one more backend per further instance) on ``artifact`` for every
        bucket, allocate each instance's pool and warm every bucket; on failure close them all."""
        instances = self.batching.instances
        backends = [template]
        if instances > 1:
            backends = [type(template)(options) for options in instance_options(template, instances)]
        pools: list[BufferPool] = []
        try:
            ios = [backend.open(artifact, buckets) for backend in backends]
            for backend, io in zip(backends, ios, strict=True):
                staging = backend if isinstance(backend, StagingBackend) else None
                pool = BufferPool(io.inputs, buckets, staging)
                pools.append(pool)
                if self._warmup:
                    for bucket in pool.buckets:
                        backend.infer(pool.inputs(bucket))
        except BaseException:
            for backend in backends:
                backend.close()
            raise
        return backends, ios, pools

    def __enter__(self) -> Engine:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting, finish queued and in-flight requests, then close. False if it timed out."""
        with self._admit, self._lock:
            if self._state in ("closed", "new"):
                self._state = "closed"
                return True
            self._state = "draining"
        assert self._batcher is not None
        finished = self._batcher.wait_idle(timeout)
        self.close()
        return finished

    def close(self) -> None:
        """Reject what is queued, stop the worker, release the backend. Idempotent."""
        with self._lock:
            if self._state == "closed" and self._batcher is None:
                return
            self._state = "closed"
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()
        for backend in self.backends:
            backend.close()

    # ------------------------------------------------------------------ requests

    def validate(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Check ``inputs`` against the model; return the batch size. Raises RequestError."""
        if self.io is None:
            raise ServiceUnavailable("engine not started")
        specs = self._inputs
        if len(inputs) != len(specs) or any(name not in specs for name in inputs):
            unknown = sorted(set(inputs) - set(specs))
            missing = sorted(set(specs) - set(inputs))
            what = f"unknown input(s) {unknown}" if unknown else f"missing input(s) {missing}"
            raise RequestError(f"{what}; the model takes {sorted(specs)}")
        batch = -1
        for name, array in inputs.items():
            spec = specs[name]
            if not isinstance(array, np.ndarray):
                raise RequestError(f"input {name!r} is not an array")
            if array.dtype != self._dtypes[name]:
                raise RequestError(f"input {name!r} has dtype {array.dtype}, the model takes {spec.dtype}")
            if array.ndim != len(spec.shape) or any(
                want >= 0 and got != want for got, want in zip(array.shape[1:], spec.shape[1:], strict=True)
            ):
                raise RequestError(
                    f"input {name!r} has shape {list(array.shape)}, the model takes "
                    f"{[d if d >= 0 else -1 for d in spec.shape]}"
                )
            if batch not in (-1, array.shape[0]):
                raise RequestError("inputs disagree on the batch size")
            batch = array.shape[0]
        if batch < 1 or batch > self.batching.max_batch_size:
            raise RequestError(f"batch size {batch} is outside 1..{self.batching.max_batch_size}")
        return batch

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        priority: int = 0,
        timeout_us: int | None = None,
        callback: Callable[[InferRequest], None] | None = None,
        instance: int | None = None,
        checked_batch: int | None = None,
    ) -> InferRequest:
        """Validate and queue one request (arrays are read later, not copied now).

        ``callback(request)`` runs on the engine's worker thread when it completes (on an inline
        engine: on the thread that runs ``instance``); without one, use :meth:`InferRequest.wait`.
        ``instance`` is for inline engines only (which need it). ``checked_batch`` is what
        :meth:`validate` returned for arrays with these very names, dtypes and shapes (the server
        passes it for a request laid out like one already checked): the check is then skipped.
        Raises RequestError (400),
        QueueFull / EngineDraining (503), EdgedsError for a missing or needless ``instance``.
        """
        if self._state != "ready":
            raise EngineDraining(f"model {self.name!r} is {self._state}")
        inline = self._inline
        if (instance is None) != (inline is None) or (
            instance is not None and not 0 <= instance < self.batching.instances
        ):
            what = f"takes instance 0..{self.batching.instances - 1}" if inline else "takes no instance"
            raise EdgedsError(f"engine {self.name!r} {what} (got {instance!r})")
        batch = checked_batch
        if batch is None:
            try:
                batch = self.validate(inputs)
            except RequestError:
                with self._lock:
                    self._stats.failure += 1
                raise
        request = InferRequest(inputs, batch, callback)
        try:
            # admission and the draining flag are ordered: a request is either refused with
            # EngineDraining (the caller retries on the replacement) or queued before drain waits
            with self._admit:
                batcher = self._batcher
                if self._state != "ready" or batcher is None:
                    raise EngineDraining(f"model {self.name!r} is {self._state}")
                if inline is not None:
                    pending = inline.submit(request, batch, None, priority, timeout_us, instance or 0)
                else:
                    pending = batcher.submit(request, batch, None, priority, timeout_us)
        except EngineDraining:
            raise
        except ServiceUnavailable as exc:
            with self._lock:
                self._stats.failure += 1
                if isinstance(exc, QueueFull):
                    self._stats.rejected_queue_full += 1
            if not isinstance(exc, QueueFull):  # the batcher is closing
                raise EngineDraining(str(exc)) from exc
            raise
        except RequestError:
            with self._lock:
                self._stats.failure += 1
            raise
        request.seq = pending.seq
        return request

    def run_ready(self, instance: int) -> int | None:
        """Inline engines, on the thread that owns ``instance``: run at most one batch the batcher
        releases now (see :meth:`InlineBatcher.run_ready`: 0 = call again at once, a
        ``time.monotonic_ns()`` time, or None = wait for the next submit)."""
        inline = self._inline
        if inline is None:
            raise EdgedsError(f"engine {self.name!r} runs its batches on its own workers (started without inline)")
        return inline.run_ready(instance)

    def infer(
        self, inputs: Mapping[str, np.ndarray], *, priority: int = 0, timeout_us: int | None = None
    ) -> dict[str, np.ndarray]:
        """Submit, wait, and return *copies* of the outputs (convenience; allocates). Not on an
        inline engine, whose batches run only when its instances' threads call :meth:`run_ready`."""
        if self._inline is not None:
            raise EdgedsError(f"engine {self.name!r} runs inline: submit with an instance and drive run_ready")
        request = self.submit(inputs, priority=priority, timeout_us=timeout_us)
        try:
            views = request.wait()
            return {name: np.array(view) for name, view in views.items()}
        finally:
            request.release()

    # ------------------------------------------------------------------ worker

    def _execute(self, batch: list[Pending[InferRequest]], instance: int) -> None:
        """Run one batch on ``instance`` and complete its requests. Whatever fails before they are
        completed (the backend, or an output the pool cannot hold) fails this batch's requests, never
        the caller: the worker or event loop that runs it goes on."""
        try:
            self._run_batch(batch, instance)
        except EdgedsError as exc:
            self._fail_batch(batch, exc)
            return
        except Exception as exc:  # a backend or pool bug fails this batch only: the worker goes on
            log.exception("batch of %d request(s) on instance %d failed", len(batch), instance)
            self._fail_batch(batch, InferenceError(f"{type(exc).__name__}: {exc}"))
            return
        for pending in batch:
            self._publish(pending)

    def _fail_batch(self, batch: list[Pending[InferRequest]], error: EdgedsError) -> None:
        """Complete every request of ``batch`` with ``error`` and count them as failures."""
        with self._lock:
            self._stats.failure += len(batch)
        if self.recorder is not None:
            self.recorder.record_error(len(batch))
        for pending in batch:
            request = pending.item
            request.error, request.inputs, request.outputs = error, {}, {}
            self._publish(pending)

    def _run_batch(self, batch: list[Pending[InferRequest]], instance: int) -> None:
        """Copy the batch in, run the backend, give every request its output views and count it."""
        pool, backend = self.pools[instance], self.backends[instance]
        t0 = time.monotonic_ns()
        rows = 0
        for pending in batch:
            rows += pending.size
        bucket = pool.bucket_for(rows)
        if len(batch) == 1 and rows == bucket:
            # one request that fills its bucket: the backend reads the request's own arrays (ONNX
            # Runtime binds aligned ones in place, the others copy them into their staging inputs)
            buffers = batch[0].item.inputs
        else:
            buffers = pool.inputs(bucket)
            offset = 0
            for pending in batch:
                request = pending.item
                end = offset + pending.size
                for name, array in request.inputs.items():
                    buffers[name][offset:end] = array
                offset = end
        t1 = time.monotonic_ns()
        outputs = backend.infer(buffers)
        t2 = time.monotonic_ns()
        slot = pool.acquire(bucket, outputs)
        for name, array in outputs.items():
            slot.outputs[name][:rows] = array[:rows]
        slot.lease(len(batch))
        offset = 0
        for pending in batch:
            request = pending.item
            end = offset + pending.size
            request.outputs = {name: array[offset:end] for name, array in slot.outputs.items()}
            request._slot = slot
            request.inputs = {}
            offset = end
        t3 = time.monotonic_ns()
        n = len(batch)
        with self._lock:
            stats = self._stats
            stats.success += n
            stats.inference_count += rows
            stats.execution_count += 1
            for pending in batch:
                stats.queue_us += (t0 - pending.arrival_ns) / 1000.0 if pending.arrival_ns else 0.0
            stats.compute_input_us += n * (t1 - t0) / 1000.0
            stats.compute_infer_us += n * (t2 - t1) / 1000.0
            stats.compute_output_us += n * (t3 - t2) / 1000.0
            stats.last_inference_ms = int(time.time() * 1000)
            stats.batch_sizes[rows] = stats.batch_sizes.get(rows, 0) + 1
            stats.buckets[bucket] = stats.buckets.get(bucket, 0) + 1
            stats.instance_executions[instance] = stats.instance_executions.get(instance, 0) + 1
        recorder = self.recorder
        if recorder is not None:
            try:
                recorder.record([(t3 - p.arrival_ns) / 1e9 for p in batch if p.arrival_ns], rows)
            except Exception:  # telemetry must never fail a batch that ran
                log.exception("the latency recorder failed (the batch's answers go out)")

    def _reject(self, pending: Pending[InferRequest], error: Exception) -> None:
        with self._lock:
            self._stats.failure += 1
            if isinstance(error, QueueTimeout):
                self._stats.rejected_timeout += 1
        pending.item.error = error
        pending.item.inputs = {}
        self._publish(pending)

    def _publish(self, pending: Pending[InferRequest]) -> None:
        """Complete a request (in arrival order with ``preserve_ordering``). The sequence number comes
        from the batcher's record: the submitting thread may not have copied it onto the request yet."""
        request = pending.item
        request.seq = pending.seq
        if not self.batching.preserve_ordering:
            self._finish(request)
            return
        ready: list[InferRequest] = []
        with self._order_lock:
            self._ordered[pending.seq] = request
            while self._next_seq in self._ordered:
                ready.append(self._ordered.pop(self._next_seq))
                self._next_seq += 1
        for item in ready:
            self._finish(item)

    @staticmethod
    def _finish(request: InferRequest) -> None:
        """Wake the waiter or run the callback; a failing callback is logged and never stops the worker."""
        try:
            request._finish()
        except Exception:
            log.exception("a completion callback failed (the engine goes on)")

    # ------------------------------------------------------------------ introspection

    def stats(self) -> EngineStats:
        """A snapshot of the cumulative statistics."""
        with self._lock:
            s = self._stats
            return EngineStats(
                s.success,
                s.failure,
                s.inference_count,
                s.execution_count,
                s.queue_us,
                s.compute_input_us,
                s.compute_infer_us,
                s.compute_output_us,
                s.last_inference_ms,
                dict(s.batch_sizes),
                dict(s.buckets),
                dict(s.instance_executions),
                s.rejected_queue_full,
                s.rejected_timeout,
            )

    def queue_depth(self) -> int:
        batcher = self._batcher
        return batcher.depth() if batcher is not None else 0


__all__ = ["Engine", "EngineDraining", "EngineStats", "InferRequest", "instance_options", "thread_options"]
