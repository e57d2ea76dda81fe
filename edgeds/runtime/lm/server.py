"""The LM server: the OpenAI API, the KServe generate extension, the v2 health and metadata routes
and vLLM-named metrics over the hardened HTTP layer, in front of started :class:`LMEngine` objects.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (``stream``: Server-Sent Events
ending in ``data: [DONE]``), ``GET /v1/models``, ``GET /v1/models/{m}``;
``POST /v2/models/{m}[/versions/{v}]/generate`` and ``/generate_stream``; ``GET /v2/health/live``,
``/v2/health/ready``, ``/v2``, ``/v2/models/{m}[/versions/{v}]``, ``/v2/models/{m}/ready``;
``GET /metrics`` (:mod:`edgeds.runtime.lm.metrics`). Bodies and answers: :mod:`.openai_api`,
:mod:`.generate_api`. Errors under ``/v1`` are OpenAI-shaped, elsewhere KServe's ``{"error": ...}``:
400 a bad body, a prompt that can never fit (prompt + ``max_tokens`` over the context); 401 a
missing or wrong API key; 404 an unknown path (and an unknown model under ``/v1``); 405 with
``Allow`` a wrong method; 429 with ``Retry-After`` a full queue; 503 an engine closing.
``/v2/health/live`` answers 503 once an engine's runtime has failed (:attr:`LMEngine.failed`:
it never serves again), so a supervisor's liveness probe restarts the process.

The HTTP layer is the vision server's (:mod:`edgeds.runtime.http1`, :mod:`.loops`, :mod:`.streams`):
the same :class:`~edgeds.config.ServerLimits`, API keys checked on the request head before the
body (health open, ``/metrics`` open with ``metrics_public``) and TLS.

Threads: the dispatch callback runs on an event loop and never waits for the engine: it submits
and returns. The engine calls each generation's event callback on its step-loop thread; the
callback only queues the event on that connection's loop (one ``call_soon_threadsafe`` wake-up for
all events queued meanwhile), where it is rendered and sent. A client that goes away mid-stream
cancels its generation (the stream's ``on_cancel``), which frees its sequence in the runtime.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from ..._version import __version__
from ...config import ServerLimits
from ...errors import EdgedsError, QueueFull, RequestError, RequestTooLarge, ServiceUnavailable
from ..auth import HEALTH_PATHS, ApiKeys
from ..counters import StatusCounts
from ..http1 import Dispatch, Request
from ..http_syntax import HttpError, Response, json_response
from ..http_syntax import error_response as kserve_error
from ..loops import RESERVED_TARGETS, EventLoop, EventLoops
from ..streams import Stream, StreamError
from .engine import Event, Generation, GenerationDefaults, LMEngine, SamplingParams
from .generate_api import DeltaFormat, GenerateRequest, generate_answer, parse_generate
from .metrics import prometheus_text
from .openai_api import (
    ApiError,
    ChunkFormat,
    chat_completion,
    model_card,
    model_list,
    parse_chat,
    parse_completion,
    text_completion,
)
from .openai_api import error_response as openai_error
from .sampling import Sampling

log = logging.getLogger(__name__)

_NO_KEY_MESSAGE = "this server needs an API key (Authorization: Bearer <key>)"
_BAD_KEY_MESSAGE = "the API key is not valid"
_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="edgeds"'),)
_BAD_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="edgeds", error="invalid_token"'),)
_NO_KEY_OPENAI = openai_error(401, _NO_KEY_MESSAGE, code="missing_api_key", fields=_CHALLENGE)
_BAD_KEY_OPENAI = openai_error(401, _BAD_KEY_MESSAGE, code="invalid_api_key", fields=_BAD_CHALLENGE)
_NO_KEY_KSERVE = kserve_error(401, _NO_KEY_MESSAGE, _CHALLENGE)
_BAD_KEY_KSERVE = kserve_error(401, _BAD_KEY_MESSAGE, _BAD_CHALLENGE)
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_GET_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/v1/models"})
_POST_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class _Inbox:
    """Engine events bound for one event loop: queued from the engine's step-loop thread, handled
    on the loop, one wake-up for all that queue meanwhile."""

    def __init__(self, lp: EventLoop) -> None:
        self.lp = lp
        self._items: list[tuple[_Answer, Event]] = []
        self._lock = threading.Lock()
        self._wake = False

    def put(self, answer: _Answer, event: Event) -> None:
        """Any thread (the step loop): queue ``event`` of ``answer`` for the loop; never blocks on I/O."""
        with self._lock:
            self._items.append((answer, event))
            if self._wake:
                return
            self._wake = True
        if not self.lp.call(self._drain):  # the loop is gone: nobody is left to answer
            with self._lock:
                items, self._items = self._items, []
                self._wake = False
            for item, _ in items:
                item.cancel()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._wake = False
        for answer, event in items:
            try:
                answer.on_event(event)
            except Exception:  # a bug rendering one answer must not stop the loop or the others
                log.exception("answering an LM request failed; its stream is cut")
                answer.fail()


class _Answer:
    """One request being generated: where its events go (a stream, or one answer at the end).

    ``kind``: ``chat``, ``completion`` or ``generate``. Used on its connection's loop thread.
    """

    __slots__ = (
        "chunks",
        "created",
        "deltas",
        "engine",
        "generate",
        "generation",
        "ident",
        "kind",
        "model",
        "pieces",
        "prompt_tokens",
        "request",
        "sent",
        "stream",
    )

    def __init__(self, kind: str, engine: LMEngine, request: Request, ident: str) -> None:
        self.kind = kind
        self.engine = engine
        self.model = engine.name
        self.request = request
        self.ident = ident
        self.created = int(time.time())
        self.generation: Generation | None = None
        self.stream: Stream | None = None
        self.chunks: ChunkFormat | None = None
        self.deltas: DeltaFormat | None = None
        self.generate: GenerateRequest | None = None
        self.pieces: list[str] = []
        self.prompt_tokens = 0
        self.sent = False

    def cancel(self) -> None:
        generation = self.generation
        if generation is not None:
            generation.cancel()

    def fail(self) -> None:
        self.cancel()
        if self.stream is not None:
            self.stream.abort()
        elif not self.sent:
            self.sent = True
            self.request.on_lost(None)
            message = "the answer could not be rendered (logged by the server)"
            error = kserve_error(500, message) if self.kind == "generate" else openai_error(500, message)
            self.request.respond(error)

    def on_event(self, event: Event) -> None:
        """Loop thread: send what ``event`` adds; answer when it is the last (an error event as
        the protocol's error: a 500 answer, or an error event ending the stream)."""
        if self.sent:
            return
        stream = self.stream
        text = event.text
        if stream is None:
            if text:
                self.pieces.append(text)
            if event.finished:
                self.sent = True
                self.request.on_lost(None)
                if event.error is not None:
                    generate = self.kind == "generate"
                    self.request.respond(kserve_error(500, event.error) if generate else openai_error(500, event.error))
                else:
                    self.request.respond(json_response(200, self._whole(event)))
            return
        if stream.closed:
            return
        try:
            if self.chunks is not None:
                data = self.chunks.delta(text)
                if event.error is not None:
                    data += self.chunks.error(event.error)
                elif event.finished:
                    prompt, new = _usage(event, self.prompt_tokens)
                    data += self.chunks.closing(event.finish_reason, prompt, new)
            else:
                assert self.deltas is not None
                data = self.deltas.delta(text)
                if event.error is not None:
                    data += self.deltas.error(event.error)
                elif event.finished:
                    prompt, new = _usage(event, self.prompt_tokens)
                    data += self.deltas.closing(event.finish_reason, prompt, new)
            stream.send(data)
            if event.finished:
                self.sent = True
                stream.close()
        except StreamError:  # the client went away: on_cancel has cancelled the generation
            self.sent = True

    def _whole(self, event: Event) -> dict[str, Any]:
        text = "".join(self.pieces)
        prompt, new = _usage(event, self.prompt_tokens)
        finish = event.finish_reason
        if self.kind == "chat":
            return chat_completion(self.ident, self.created, self.model, text, finish, prompt, new)
        if self.kind == "completion":
            return text_completion(self.ident, self.created, self.model, text, finish, prompt, new)
        assert self.generate is not None
        return generate_answer(self.generate, self.model, self.engine.version, text, finish, prompt, new)


def _usage(event: Event, prompt_tokens: int) -> tuple[int, int]:
    usage = event.usage
    if usage is None:
        return prompt_tokens, 0
    return usage.prompt_tokens, usage.completion_tokens


class LMServer:
    """Serves started :class:`LMEngine` objects, keyed by ``engine.name``, over HTTP/1.1.

    Run it with :meth:`start` (background threads; returns once listening) or
    :meth:`serve_forever` (blocks until SIGINT/SIGTERM or :meth:`stop`). It does not own the
    engines unless :meth:`stop` is told to close them. ``api_keys``, ``metrics_public``, ``tls``
    and ``limits`` as :class:`~edgeds.runtime.server.InferenceServer`'s. ``loops``: event-loop
    threads (one is plenty: the engine's step loop does the work). A request's absent sampling
    fields take the engine's ``generation`` defaults (a bundle's); ``default_max_tokens``, when
    given, replaces their ``max_tokens`` (an answer is at most what the context leaves).
    """

    def __init__(
        self,
        engines: LMEngine | Iterable[LMEngine],
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        limits: ServerLimits | None = None,
        api_keys: ApiKeys | Iterable[str] = (),
        metrics_public: bool = False,
        tls: ssl.SSLContext | None = None,
        loops: int = 1,
        name: str = "edgeds",
        default_max_tokens: int | None = None,
    ) -> None:
        engines = [engines] if isinstance(engines, LMEngine) else list(engines)
        if not engines:
            raise EdgedsError("an LM server needs at least one engine")
        self._models: dict[str, LMEngine] = {e.name: e for e in engines}
        self.host = host
        self.port = port
        self.limits = limits if limits is not None else ServerLimits()
        keys = api_keys if isinstance(api_keys, ApiKeys) else ApiKeys(api_keys)
        self._keys: ApiKeys | None = keys or None
        self._open_paths = HEALTH_PATHS | ({"/metrics"} if metrics_public else set())
        self.tls = tls
        self.name = name
        self._loop_count = loops
        self._loops: EventLoops | None = None
        self._failures = StatusCounts()
        self._started_at = time.time()
        self._ids = itertools.count(1)
        self.default_max_tokens = default_max_tokens

    @property
    def models(self) -> Mapping[str, LMEngine]:
        return self._models

    @property
    def failures(self) -> StatusCounts:
        """Requests answered 4xx or 5xx since the server was made, by status code."""
        return self._failures

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LMServer:
        """Listen and start the event-loop threads; returns once the sockets are bound (``port`` set)."""
        if self._loops is not None:
            raise EdgedsError("the server is already started")

        def dispatch(lp: EventLoop) -> Dispatch:
            return partial(self._handle, _Inbox(lp))

        loops = EventLoops(
            self._loop_count,
            dispatch,
            limits=self.limits,
            reserved_targets=RESERVED_TARGETS,
            alignment=1,
            tls=self.tls,
            admit=self._admit,
            name="lm-server",
        )
        for lp in loops.loops:
            lp.http.failures = self._failures
        self.port = loops.bind(self.host, self.port)
        self._loops = loops
        try:
            loops.start()
        except EdgedsError:
            self._loops = None
            raise
        return self

    def serve_forever(self, close_engines: bool = False) -> None:
        """Serve (starting when not started) until SIGINT/SIGTERM or :meth:`stop`, then stop."""
        if self._loops is None:
            self.start()
        if self._loops is not None:
            self._loops.wait()
        self.stop(close_engines)

    def stop(self, close_engines: bool = False) -> None:
        """Stop listening and close the connections (streams in flight are cut and their
        generations cancelled); with ``close_engines`` close the engines too."""
        loops, self._loops = self._loops, None
        if loops is not None:
            loops.stop()
        if close_engines:
            for engine in self._models.values():
                engine.close()

    # ------------------------------------------------------------------ routing

    def _admit(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        """401 for a request without one of the keys, unless its path is open (on the head, before the body)."""
        keys = self._keys
        if keys is None:
            return None
        authorization = headers.get("authorization")
        if keys.accepts(authorization):
            return None
        path = target.split("?", 1)[0].rstrip("/")
        if path in self._open_paths:
            return None
        if path.startswith("/v1/"):
            return _NO_KEY_OPENAI if authorization is None else _BAD_KEY_OPENAI
        return _NO_KEY_KSERVE if authorization is None else _BAD_KEY_KSERVE

    def _handle(self, inbox: _Inbox, request: Request) -> Response | None:
        """The dispatch callback: route, submit, answer now or later. Errors are answered in the
        shape of the path's protocol; anything else escapes to the HTTP layer (logged, 500)."""
        path = request.target.split("?", 1)[0].rstrip("/") or "/"
        openai = path.startswith("/v1/")
        try:
            return self._route(inbox, request, path)
        except ApiError as exc:
            return exc.response() if openai else kserve_error(exc.status, str(exc), exc.fields)
        except (HttpError, EdgedsError) as exc:
            status, fields = _status(exc)
            if openai:
                return openai_error(status, str(exc), code=_code(exc), fields=fields)
            return kserve_error(status, str(exc), fields)

    def _route(self, inbox: _Inbox, request: Request, path: str) -> Response | None:
        method = request.method
        parts = path.split("/")[1:]
        if path in _POST_PATHS:
            if method != "POST":
                raise HttpError(405, f"use POST for {path}", (("Allow", "POST"),))
            if path == "/v1/chat/completions":
                chat = parse_chat(request.body)
                engine = self._openai_engine(chat.model)
                prompt: str | tuple[int, ...] = engine.chat_prompt(list(chat.messages))
                answer = _Answer("chat", engine, request, f"chatcmpl-{next(self._ids)}")
                if chat.stream:
                    answer.chunks = ChunkFormat(answer.ident, answer.created, engine.name, True, chat.include_usage)
                self._submit(inbox, answer, prompt, chat.sampling, chat.stream)
                return None
            completion = parse_completion(request.body)
            engine = self._openai_engine(completion.model)
            answer = _Answer("completion", engine, request, f"cmpl-{next(self._ids)}")
            if completion.stream:
                answer.chunks = ChunkFormat(answer.ident, answer.created, engine.name, False, completion.include_usage)
            self._submit(inbox, answer, completion.prompt, completion.sampling, completion.stream)
            return None
        if parts[:2] == ["v1", "models"] and len(parts) == 3:
            if method != "GET":
                raise HttpError(405, f"use GET for {path}", (("Allow", "GET"),))
            engine = self._openai_engine(parts[2])
            return json_response(200, model_card(engine.name, int(self._started_at), engine.spec.context_length))
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            return self._v2_model(inbox, request, parts[2], parts[3:], path)
        if path not in _GET_PATHS:
            raise HttpError(404, f"not found: {path}")
        if method != "GET":
            raise HttpError(405, f"use GET for {path}", (("Allow", "GET"),))
        if path == "/v1/models":
            created = int(self._started_at)
            return json_response(
                200, model_list([(e.name, created, e.spec.context_length) for e in self._models.values()])
            )
        if path == "/v2/health/live":  # a failed engine never recovers: a supervisor should restart
            live = not any(e.failed for e in self._models.values())
            return json_response(200 if live else 503, {"live": live})
        if path == "/v2/health/ready":
            ready = all(e.ready for e in self._models.values())
            return json_response(200 if ready else 400, {"ready": ready})
        if path == "/v2":
            extensions = ["generate", "generate_stream"]
            return json_response(200, {"name": self.name, "version": __version__, "extensions": extensions})
        text = prometheus_text(
            [(e.name, e.stats()) for e in self._models.values()], self._failures.snapshot(), self._started_at
        )
        return Response(200, text.encode(), _METRICS_TYPE)

    def _v2_model(self, inbox: _Inbox, request: Request, name: str, rest: list[str], path: str) -> Response | None:
        version = None
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        allowed = {"": "GET", "ready": "GET", "generate": "POST", "generate_stream": "POST"}.get(action)
        if len(rest) > 1 or allowed is None:
            raise HttpError(404, f"not found: {path}")
        if request.method != allowed:
            raise HttpError(405, f"use {allowed} for {path}", (("Allow", allowed),))
        engine = self._models.get(name)
        if engine is None:
            raise HttpError(400, f"unknown model {name!r} (served: {sorted(self._models)})")
        if version not in (None, "", engine.version):
            raise HttpError(400, f"unknown version {version!r} of model {name!r} (served: {engine.version!r})")
        if action == "":
            return json_response(200, _metadata(engine))
        if action == "ready":
            ready = engine.ready
            return json_response(200 if ready else 400, {"ready": ready})
        generate = parse_generate(request.body)
        answer = _Answer("generate", engine, request, generate.id or f"gen-{next(self._ids)}")
        answer.generate = generate
        stream = action == "generate_stream"
        if stream:
            answer.deltas = DeltaFormat(generate, engine.name, engine.version)
        self._submit(inbox, answer, generate.text_input, generate.sampling, stream)
        return None

    def _openai_engine(self, name: str) -> LMEngine:
        engine = self._models.get(name)
        if engine is None:
            raise ApiError(
                404, f"the model {name!r} does not exist (served: {sorted(self._models)})", code="model_not_found"
            )
        return engine

    def _submit(
        self, inbox: _Inbox, answer: _Answer, prompt: str | tuple[int, ...], sampling: Sampling, stream: bool
    ) -> None:
        """Submit to the engine (QueueFull, RequestTooLarge, EngineClosed raise before anything is
        sent); a stream's head goes out at once, the rest as events arrive on the loop."""
        engine = answer.engine
        ids = engine.encode(prompt) if isinstance(prompt, str) else prompt
        defaults = engine.generation
        if self.default_max_tokens is not None:
            defaults = replace(defaults, max_tokens=self.default_max_tokens)
        params = sampling_params(sampling, len(ids), engine.spec.context_length, defaults)
        generation = engine.submit(ids, params, partial(inbox.put, answer))
        answer.generation = generation
        answer.prompt_tokens = generation.prompt_tokens
        if not stream:  # a client gone before its answer: the generation is cancelled
            answer.request.on_lost(generation.cancel)
        else:
            answer.stream = stream_ = answer.request.stream(200, "text/event-stream", on_cancel=generation.cancel)
            if answer.chunks is not None:
                opening = answer.chunks.opening()
                if opening:
                    stream_.send(opening)


def sampling_params(
    sampling: Sampling, prompt_tokens: int, context_length: int, defaults: GenerationDefaults
) -> SamplingParams:
    """The engine's sampling parameters for what a request asked; what it did not ask comes from
    ``defaults``. ``max_tokens`` not asked: the default, at most what the context leaves after
    the prompt (at least 1: a prompt that fills the context is then refused by the engine with
    the reason)."""
    max_tokens = sampling.max_tokens
    if max_tokens is None:
        max_tokens = max(1, min(defaults.max_tokens, context_length - prompt_tokens))
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=sampling.temperature if sampling.temperature is not None else defaults.temperature,
        top_p=sampling.top_p if sampling.top_p is not None else defaults.top_p,
        top_k=sampling.top_k if sampling.top_k is not None else defaults.top_k,
        seed=sampling.seed,
        stop=sampling.stop,
        ignore_eos=sampling.ignore_eos,
    )


def _metadata(engine: LMEngine) -> dict[str, Any]:
    """``GET /v2/models/{m}``: the generate extension's text tensors."""
    return {
        "name": engine.name,
        "versions": [engine.version],
        "platform": f"edgeds_{engine.runtime}",
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
        "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}],
        "context_length": engine.spec.context_length,
    }


def _status(exc: Exception) -> tuple[int, tuple[tuple[str, str], ...]]:
    """The status and extra fields of an error: HttpError its own; QueueFull 429 with Retry-After;
    RequestError 400; ServiceUnavailable 503; any other EdgedsError 500."""
    if isinstance(exc, HttpError):
        return exc.status, exc.fields
    if isinstance(exc, QueueFull):
        retry = exc.retry_after_s
        return 429, (("Retry-After", str(max(1, round(retry if retry is not None else 1)))),)
    if isinstance(exc, RequestError):
        return 400, ()
    if isinstance(exc, ServiceUnavailable):
        return 503, ()
    return 500, ()


def _code(exc: Exception) -> str | None:
    if isinstance(exc, QueueFull):
        return "queue_full"
    if isinstance(exc, RequestTooLarge):
        return "context_length_exceeded"
    return None


__all__ = ["LMServer", "sampling_params"]
