"""LM engine = LM backend + admission against the KV plan + one step-loop thread + statistics.

Lifecycle: ``LMEngine(...)`` (or :meth:`LMEngine.from_bundle`, :meth:`LMEngine.from_dir`) is
free; :meth:`LMEngine.start` starts the step-loop thread, which opens the backend with the plan's
KV cache (and raises what opening raised); then :attr:`LMEngine.ready` holds until
:meth:`LMEngine.close` (or a runtime failure under ``step()``, which fails every request with an error event and
sets :attr:`LMEngine.failed`; a request the runtime refuses when it is added fails alone)
finishes every queued and running request with ``abort``, stops the loop and closes the
backend (idempotent) and a bundle the engine opened itself.

Threads: :meth:`LMEngine.submit`, :meth:`Generation.cancel`, :meth:`LMEngine.stats` and the
tokenizer methods may be called from any thread and never wait on the runtime. One step-loop
thread owns the backend: it admits queued requests into the runtime, runs ``step()`` while any
sequence is unfinished, reads new tokens, detokenizes them, applies stop strings and timeouts,
and delivers :class:`Event`\\ s. When nothing is queued or running it sleeps on a condition
(no busy polling) until a submit, a cancel, a queued request's deadline or close.

Admission: at most ``spec.max_num_seqs`` sequences are in the runtime (the KV plan sized its
cache for that many full contexts, so the runtime never swaps); the rest wait in a bounded FIFO
of ``max_queue`` (:class:`~edgeds.errors.QueueFull` with a Retry-After hint when full); a
request whose prompt + ``max_tokens`` exceeds the context is refused at once with
:class:`~edgeds.errors.RequestTooLarge`. Batching is the runtime's own scheduler's.

Events: ``on_event`` runs on the step-loop thread and must not block (a server hands the event
to its own loop). Without ``on_event``, iterate the :class:`Generation` (a blocking iterator
for synchronous callers) or wait on :meth:`Generation.result`.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ...backends.base import BackendOptions
from ...backends.lm import GenParams, LMBackend, LMHandle, LMSpec, lm_create
from ...backends.lm.base import FinishReason, model_weights_bytes
from ...backends.lm.chat import ChatTemplate
from ...backends.lm.kv import Architecture, KVPlan, plan
from ...errors import BackendError, EngineClosed, InferenceError, QueueFull, RequestError, RequestTooLarge
from .admission import Admission, check_fits
from .detokenizer import Detokenizer
from .sampling import MAX_SEED
from .stats import EngineCounters, LMStats
from .stops import StopMatcher

if TYPE_CHECKING:
    from ...bundle import Bundle, PublicKeyLike

log = logging.getLogger(__name__)

_CONTEXT_IDS = 4  # prompt ids that seed each detokenizer's window


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of an error's message (runtimes' messages can be long dumps)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class SamplingParams:
    """One request's generation settings: :class:`GenParams` plus what the engine handles.

    ``stop`` strings are matched on the decoded text: the text is cut before the first one and
    the sequence ends (finish reason ``stop``). ``timeout_s`` bounds the request from submit to
    its last token (None: the engine's default); past it, it finishes with ``timeout``.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    timeout_s: float | None = None

    def validate(self) -> None:
        """Raise :class:`~edgeds.errors.RequestError` for a value out of range."""
        if self.max_tokens < 1:
            raise RequestError(f"max_tokens must be >= 1, not {self.max_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise RequestError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0, not {self.top_k}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise RequestError(f"seed must be in [0, {MAX_SEED}], not {self.seed}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise RequestError(f"timeout_s must be > 0, not {self.timeout_s}")

    def gen_params(self) -> GenParams:
        return GenParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop_token_ids=self.stop_token_ids,
            ignore_eos=self.ignore_eos,
        )


@dataclass(frozen=True)
class GenerationDefaults:
    """What a request that names no sampling field gets: a bundle's ``llm.generation`` (the card's
    ``generation:``); ``max_tokens`` is then at most what the context leaves after the prompt."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    @classmethod
    def from_manifest(cls, generation: Mapping[str, Any]) -> GenerationDefaults:
        """From a manifest's ``llm.generation`` (the card's ``max_new_tokens`` is ``max_tokens``);
        absent fields keep the defaults above."""
        base = cls()
        return cls(
            max_tokens=int(generation.get("max_new_tokens") or base.max_tokens),
            temperature=float(generation.get("temperature", base.temperature)),
            top_p=float(generation.get("top_p", base.top_p)),
            top_k=int(generation.get("top_k", base.top_k) or 0),
        )


@dataclass(frozen=True)
class Usage:
    """Token counts of one request (OpenAI's ``usage``)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Event:
    """New output of one request: a text delta and the token ids behind it; the last event has
    ``finished``, the ``finish_reason`` and the ``usage``. ``error`` (on the last event only) says
    why the runtime failed the request (its finish reason is then ``abort``): a server sends it
    as an error, not as an ordinary end."""

    text: str
    token_ids: tuple[int, ...]
    finished: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: str | None = None


@dataclass(frozen=True)
class Completion:
    """The whole output of a finished request."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage


@dataclass(eq=False)
class Generation:
    """One submitted request. ``cancel`` from any thread; ``result``/iteration wait for it."""

    id: int
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    _engine: LMEngine = field(repr=False)
    _on_event: Callable[[Event], None] | None = field(repr=False)
    submitted: float = 0.0
    deadline: float | None = None
    _handle: LMHandle | None = field(default=None, repr=False)
    _detok: Detokenizer | None = field(default=None, repr=False)
    _stops: StopMatcher | None = field(default=None, repr=False)
    _text: list[str] = field(default_factory=list, repr=False)
    _ids: list[int] = field(default_factory=list, repr=False)
    _last_token_at: float = 0.0
    _queue: queue.SimpleQueue[Event] | None = field(default=None, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _completion: Completion | None = None
    _error: BaseException | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """End the request (finish reason ``abort``); frees its sequence in the runtime at the next
        step. Idempotent; a no-op once finished."""
        if not self._done.is_set():
            self._engine._cancel(self)

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the request to finish. TimeoutError if it has not within ``timeout`` seconds;
        :class:`~edgeds.errors.InferenceError` when the runtime failed it."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} not finished within {timeout} s")
        if self._error is not None:
            raise InferenceError(f"request {self.id} failed: {_one_line(self._error)}") from self._error
        assert self._completion is not None
        return self._completion

    def __iter__(self) -> Iterator[Event]:
        """The request's events as they come (blocking); only when submitted without ``on_event``."""
        if self._queue is None:
            raise RequestError("this generation delivers its events to on_event")
        while True:
            event = self._queue.get()
            yield event
            if event.finished:
                return


class LMEngine:
    """See the module docstring for the lifecycle, threads and admission.

    ``version`` is the model card's version (what clients address), ``release`` the bundle's
    monotonic version (which build serves it; None for a bare model directory), ``generation``
    the defaults of a request that names no sampling field. ``artifact`` names the bundle's
    artifact served (its index in the manifest: ``artifact_index``) and ``skipped`` says, one
    line each, why earlier artifacts were not. ``owns``: closed with the engine (a bundle it
    opened itself).
    """

    def __init__(
        self,
        backend: LMBackend,
        model_dir: Path,
        kv_plan: KVPlan,
        *,
        name: str | None = None,
        version: str = "1",
        release: str | None = None,
        max_queue: int = 64,
        default_timeout_s: float | None = None,
        chat_template: ChatTemplate | None = None,
        generation: GenerationDefaults | None = None,
        artifact: str | None = None,
        artifact_index: int | None = None,
        skipped: Sequence[str] = (),
        owns: Closeable | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.model_dir = model_dir
        self.plan = kv_plan
        self.name = name or model_dir.name
        self.version = version
        self.release = release
        self.runtime = backend.name
        self.max_queue = max_queue
        self.default_timeout_s = default_timeout_s
        self.chat_template = chat_template if chat_template is not None else ChatTemplate.from_dir(model_dir)
        self.generation = generation if generation is not None else GenerationDefaults()
        self.artifact = artifact
        self.artifact_index = artifact_index
        self.skipped = tuple(skipped)
        self.owns = owns
        self._clock = clock
        self._spec: LMSpec | None = None
        self._cond = threading.Condition()
        self._admission: Admission[Generation] = Admission(max(kv_plan.max_num_seqs, 1), max_queue)
        self._cancels: list[Generation] = []
        self._active: dict[int, Generation] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._closed = False
        self._failed = False
        self._thread: threading.Thread | None = None
        self._counters = EngineCounters()
        # kv_usage, kv_bytes, preemptions: written by the step thread, read by stats()
        self._metrics: tuple[float, int, int | None] = (0.0, kv_plan.kv_bytes, None)

    @classmethod
    def from_dir(
        cls,
        model_dir: Path,
        runtime: str = "openvino-genai",
        *,
        budget_mb: float,
        kv_overhead_mb: float = 96.0,
        context_length: int | None = None,
        max_num_seqs: int | None = None,
        max_queue: int = 64,
        options: BackendOptions | Mapping[str, Any] | None = None,
        name: str | None = None,
        version: str = "1",
        default_timeout_s: float | None = None,
    ) -> LMEngine:
        """An engine (not started) for an exported model directory, its KV plan computed from
        ``config.json``/``genai_config.json``, the weight files' size and ``budget_mb``.
        Raises :class:`~edgeds.errors.ConfigError` when the budget has no room for the KV cache,
        :class:`~edgeds.errors.BackendUnavailable` when the runtime is not installed."""
        backend = lm_create(runtime, options)
        kv_plan = plan(
            Architecture.from_dir(model_dir),
            budget_mb=budget_mb,
            weights_bytes=model_weights_bytes(model_dir),
            kv_precision=backend.kv_precision(),
            context_length=context_length,
            max_num_seqs=max_num_seqs,
            overhead_mb=kv_overhead_mb,
            block_size=backend.block_size,
        )
        return cls(
            backend,
            model_dir,
            kv_plan,
            name=name,
            version=version,
            max_queue=max_queue,
            default_timeout_s=default_timeout_s,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle | str | Path,
        *,
        public_key: PublicKeyLike | None = None,
        runtime: str | None = None,
        budget_mb: float | None = None,
        kv_overhead_mb: float | None = None,
        context_length: int | None = None,
        max_num_seqs: int | None = None,
        max_queue: int | None = None,
        options: Mapping[str, Any] | None = None,
        default_timeout_s: float | None = None,
        exclude: Mapping[int, str] | None = None,
    ) -> LMEngine:
        """An engine (not started) for a causal-lm bundle (an opened :class:`Bundle`, or a path the
        engine opens, verifying it when ``public_key`` is given, and closes with itself): the first
        artifact whose runtime can run here, with the profile's ``llm:`` settings the manifest
        records; the keyword arguments override them. See :func:`edgeds.runtime.lm.loading.engine_from_bundle`."""
        from .loading import engine_from_bundle

        return engine_from_bundle(
            bundle,
            public_key=public_key,
            runtime=runtime,
            budget_mb=budget_mb,
            kv_overhead_mb=kv_overhead_mb,
            context_length=context_length,
            max_num_seqs=max_num_seqs,
            max_queue=max_queue,
            options=options,
            default_timeout_s=default_timeout_s,
            exclude=exclude,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started and taking requests: false before :meth:`start`, after :meth:`close` and once
        the runtime has failed."""
        return self._spec is not None and not self._closing

    @property
    def closed(self) -> bool:
        """Closed or closing (by :meth:`close`, or because the runtime failed): no new request."""
        return self._closing

    @property
    def failed(self) -> bool:
        """The runtime failed under the step loop (the engine closed itself): only a new process
        (or a new engine) serves again. A liveness probe reports it."""
        return self._failed

    @property
    def spec(self) -> LMSpec:
        """What the opened model serves (after :meth:`start`)."""
        if self._spec is None:
            raise EngineClosed(f"LM engine {self.name!r} is not started")
        return self._spec

    def start(self) -> LMEngine:
        """Open the backend with the plan's KV cache and start the step loop."""
        if self._thread is not None:
            return self
        opened = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(opened, failure), name=f"lm-engine-{self.name}", daemon=True
        )
        self._thread.start()
        opened.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        log.info("LM engine %s on %s: %s", self.name, self.runtime, self.plan.describe())
        return self

    def close(self) -> None:
        """Abort what is queued and running, stop the loop, close the backend. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = self._closing = True  # _closing alone: the runtime failed, still to join
            self._cond.notify_all()
        try:
            if self._thread is not None:
                self._thread.join()
            else:
                self.backend.close()
        finally:
            owned, self.owns = self.owns, None
            if owned is not None:
                owned.close()

    def __enter__(self) -> LMEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokenizer -----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """The prompt ids of ``text``; :class:`EngineClosed` once the engine is closed or failed."""
        if self._closing:
            raise EngineClosed(f"LM engine {self.name!r} is closed")
        return self.backend.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; :class:`EngineClosed` once the engine is closed or failed."""
        if self._closing:
            raise EngineClosed(f"LM engine {self.name!r} is closed")
        return self.backend.decode(ids)

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text of chat ``messages`` through the model's chat template."""
        if self.chat_template is None:
            raise RequestError(f"model {self.name!r} has no chat template")
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    # -- requests ------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        on_event: Callable[[Event], None] | None = None,
    ) -> Generation:
        """Queue a request; never waits on the runtime.

        Raises :class:`RequestError` (bad parameters, empty prompt, a token id outside the
        vocabulary), :class:`RequestTooLarge` (prompt + ``max_tokens`` over the context),
        :class:`QueueFull` (with ``retry_after_s``), :class:`EngineClosed`. A ``top_k`` at or over
        the vocabulary size filters nothing and is passed on as 0 (off).
        """
        params.validate()
        if self._closing:
            raise EngineClosed(f"LM engine {self.name!r} is closed")
        spec = self.spec
        ids = tuple(self.backend.encode(prompt) if isinstance(prompt, str) else (int(i) for i in prompt))
        if not ids:
            raise RequestError("the prompt is empty")
        if not isinstance(prompt, str):
            vocab = spec.vocab_size
            bad = next((i for i in ids if not 0 <= i < vocab), None)
            if bad is not None:
                raise RequestError(f"prompt token id {bad} is outside the vocabulary (0 to {vocab - 1})")
        if params.top_k >= spec.vocab_size:
            params = replace(params, top_k=0)
        now = self._clock()
        timeout = params.timeout_s if params.timeout_s is not None else self.default_timeout_s
        generation = Generation(
            id=next(self._ids),
            prompt_ids=ids,
            params=params,
            _engine=self,
            _on_event=on_event,
            submitted=now,
            deadline=now + timeout if timeout is not None else None,
            _queue=queue.SimpleQueue() if on_event is None else None,
        )
        with self._cond:
            if self._closing:
                raise EngineClosed(f"LM engine {self.name!r} is closing")
            try:
                check_fits(len(ids), params.max_tokens, spec.context_length)
                self._admission.offer(generation, now, generation.deadline, self._retry_after())
            except RequestTooLarge:
                self._counters.rejected["too_large"] += 1
                raise
            except QueueFull:
                self._counters.rejected["queue_full"] += 1
                raise
            self._cond.notify()
        return generation

    def _retry_after(self) -> float:
        """Seconds until a queue slot is likely free: the mean request time × queued / sequences."""
        mean = self._counters.e2e.snapshot().mean or 1.0
        return max(1.0, math.ceil(mean * (len(self._admission) + 1) / self._admission.max_running))

    def _cancel(self, generation: Generation) -> None:
        with self._cond:
            self._cancels.append(generation)
            self._cond.notify()

    def stats(self) -> LMStats:
        """A snapshot (any thread)."""
        kv_usage, kv_bytes, preemptions = self._metrics
        return self._counters.snapshot(
            running=self._admission.running,
            waiting=len(self._admission),
            kv_usage=kv_usage,
            kv_bytes=kv_bytes,
            preemptions=preemptions,
        )

    # -- the step loop -------------------------------------------------------------------------

    def _run(self, opened: threading.Event, failure: list[BaseException]) -> None:
        """The step-loop thread: opens the backend (some runtimes, e.g. ONNX Runtime GenAI's
        Engine, must be driven by the thread that created them), loops, closes it."""
        try:
            spec = self.backend.open(self.model_dir, self.plan)
        except BaseException as exc:  # noqa: BLE001 - start() re-raises it on the caller's thread
            failure.append(exc)
            opened.set()
            return
        self._spec = spec
        self.plan = spec.plan  # refitted when the runtime's cache measured larger than planned
        self._admission = Admission(spec.max_num_seqs, self.max_queue)
        self._metrics = (0.0, spec.kv_bytes, None)
        opened.set()
        try:
            self._loop()
        finally:
            self.backend.close()

    def _loop(self) -> None:
        backend = self.backend
        active = self._active
        cond = self._cond
        admission = self._admission
        clock = self._clock
        admitted: list[Generation] = []
        try:
            while True:
                with cond:
                    while not (self._closing or self._cancels or active or admission.ready()):
                        wake = admission.next_deadline()
                        if wake is not None and wake <= clock():
                            break
                        cond.wait(None if wake is None else wake - clock())
                    if self._closing:
                        break
                    now = clock()
                    expired = admission.expire(now)
                    cancels, self._cancels = self._cancels, []
                    unqueued = [g for g in cancels if admission.remove(g)]
                    admitted = admission.admit(now)
                for generation in expired:
                    self._finish(generation, "timeout")
                for generation in cancels:
                    if generation.id in active:
                        self._drop(generation, "abort")
                for generation in unqueued:
                    self._finish(generation, "abort")
                for generation in admitted:
                    self._add(generation, now)
                if backend.has_unfinished():
                    backend.step()
                if active:
                    self._collect(clock())
                metrics = backend.metrics()
                self._metrics = (metrics.kv_usage, metrics.kv_bytes, metrics.preemptions)
        except Exception as exc:  # the runtime failed: every request fails with it, the loop ends
            log.exception("LM engine %s: step loop failed", self.name)
            with cond:
                self._closing = self._failed = True
                pending = admission.drain()
                admission.running = 0  # nothing runs any more: stats and /metrics say so
            for generation in [*active.values(), *pending, *admitted]:  # admitted: some not added yet
                if not generation.done:
                    generation._error = exc
                    self._finish(generation, "abort")
            active.clear()
            return
        self._abort_all()

    def _abort_all(self) -> None:
        with self._cond:
            queued = self._admission.drain()
            cancels, self._cancels = self._cancels, []
        for generation in list(self._active.values()):
            self._drop(generation, "abort")
        for generation in [*queued, *cancels]:
            self._finish(generation, "abort")

    def _add(self, generation: Generation, now: float) -> None:
        self._counters.queue_time.observe(now - generation.submitted)
        self._counters.prompt_tokens += generation.prompt_tokens
        decode = self.backend.decode
        generation._detok = Detokenizer(decode, generation.prompt_ids[-_CONTEXT_IDS:])
        if generation.params.stop:
            generation._stops = StopMatcher(generation.params.stop)
        try:
            generation._handle = self.backend.add(generation.id, generation.prompt_ids, generation.params.gen_params())
        except Exception as exc:  # one request the runtime refuses fails alone; the engine serves on
            if isinstance(exc, BackendError) and not isinstance(exc, InferenceError):
                raise  # the backend itself is unusable (closed, never opened): the step loop fails
            if isinstance(exc, InferenceError):
                log.warning("LM engine %s: request %d refused by the runtime: %s", self.name, generation.id, exc)
            else:
                log.exception("LM engine %s: adding request %d failed", self.name, generation.id)
            generation._error = exc
            with self._cond:
                self._admission.release()
            self._finish(generation, "abort")
            return
        self._active[generation.id] = generation

    def _collect(self, now: float) -> None:
        """Read every running request's new tokens, decode them in one batched call, deliver them
        (the hot path: per step, one read per sequence and one decode call)."""
        reads: list[tuple[Generation, list[int], int, int]] = []
        windows: list[list[int]] = []
        for generation in list(self._active.values()):
            handle, detok = generation._handle, generation._detok
            assert handle is not None and detok is not None
            ids = handle.read()
            if ids:
                named = detok.windows(ids)
                reads.append((generation, ids, len(windows), len(named)))
                windows += named
            else:
                reads.append((generation, ids, 0, 0))
        texts = self.backend.decode_batch(windows) if windows else []
        for generation, ids, at, count in reads:
            assert generation._detok is not None
            text = generation._detok.accept(texts[at : at + count]) if count else ""
            self._advance(generation, ids, text, now)

    def _advance(self, generation: Generation, ids: list[int], text: str, now: float) -> None:
        """Apply one step's tokens and text to a request: statistics, stop strings, end, events."""
        handle = generation._handle
        assert handle is not None
        if ids:
            counters = self._counters
            counters.generation_tokens += len(ids)
            if generation._ids:
                counters.inter_token.observe((now - generation._last_token_at) / len(ids))
            else:
                counters.ttft.observe(now - generation.submitted)
            generation._last_token_at = now
            generation._ids.extend(ids)
            stops = generation._stops
            if stops is not None:
                text = stops.feed(text)
                if stops.stopped:
                    self._emit(generation, text, ids)
                    self._drop(generation, "stop")
                    return
        if handle.finished:
            self._emit(generation, text, ids)
            self._release(generation)
            self._finish(generation, handle.finish_reason or "stop")
        elif generation.deadline is not None and now >= generation.deadline:
            self._emit(generation, text, ids)
            self._drop(generation, "timeout")
        elif text or ids:
            self._emit(generation, text, ids)

    def _emit(self, generation: Generation, text: str, ids: Sequence[int]) -> None:
        if text:
            generation._text.append(text)
        if text or ids:
            self._deliver(generation, Event(text, tuple(ids)))

    def _deliver(self, generation: Generation, event: Event) -> None:
        if generation._on_event is not None:
            try:
                generation._on_event(event)
            except Exception:  # a consumer's bug must not stop the step loop serving the others
                log.exception("LM engine %s: on_event of request %d raised", self.name, generation.id)
        elif generation._queue is not None:
            generation._queue.put(event)

    def _drop(self, generation: Generation, reason: FinishReason) -> None:
        """End a running request in the runtime (cancel frees its KV blocks at the next step)."""
        if generation._handle is not None:
            generation._handle.cancel()
        self._release(generation)
        self._finish(generation, reason)

    def _release(self, generation: Generation) -> None:
        if self._active.pop(generation.id, None) is not None:
            with self._cond:
                self._admission.release()

    def _finish(self, generation: Generation, reason: FinishReason) -> None:
        if generation._done.is_set():
            return
        # a failed request's held-back tail is not decoded: the runtime (its tokenizer) may be gone
        failed = generation._error is not None
        tail = generation._detok.flush() if generation._detok is not None and not failed else ""
        stops = generation._stops
        if stops is not None:  # nothing once a stop string has ended the text
            tail = stops.feed(tail) + stops.flush()
        if tail:
            generation._text.append(tail)
        usage = Usage(generation.prompt_tokens, len(generation._ids))
        generation._completion = Completion("".join(generation._text), tuple(generation._ids), reason, usage)
        counters = self._counters
        counters.requests[reason] = counters.requests.get(reason, 0) + 1
        counters.e2e.observe(self._clock() - generation.submitted)
        failure = generation._error
        error = None if failure is None else f"the runtime failed this request: {_one_line(failure)}"
        self._deliver(generation, Event(tail, (), finished=True, finish_reason=reason, usage=usage, error=error))
        generation._done.set()
