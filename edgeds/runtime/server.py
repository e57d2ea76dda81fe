"""Open Inference Protocol (KServe v2) over HTTP/1.1, plus Triton's config/stats and Prometheus.

asyncio + numpy: event-loop threads receive and parse requests and queue them on the engines.
An engine started with ``inline=True`` (what ``edgeds serve`` does) gets one event loop per
instance: loop ``i`` owns its connections and runs instance ``i``'s batches itself, between its
polls, so a request is received, batched, run and answered on one thread (no hand-off between
threads or cores). Other engines' workers run the batches and write the responses (the loop
writes the rest). New connections go to the loop with the fewest.
Loopback (127.0.0.1) by default. HTTP framing, compression and keep-alive: :mod:`edgeds.runtime.http1`.

Who may call (:mod:`edgeds.runtime.auth`): with ``api_keys`` every request needs
``Authorization: Bearer <key>`` (401 with ``WWW-Authenticate: Bearer`` otherwise) except the
health routes ``/v2/health/live`` and ``/v2/health/ready``, and ``/metrics`` when
``metrics_public``. Keyed: infer, model metadata / ready / config / stats, server metadata
(``/v2``) and any unknown path (so a caller without the key learns nothing of what is served).
With ``tls`` the sockets speak TLS (:mod:`edgeds.runtime.loops`).

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}``,
``/v2/models/{m}/ready``, ``/v2/models/{m}/config``, ``/v2/models/{m}/stats``, ``/v2/models/stats``,
``/metrics``; ``POST /v2/models/{m}/infer`` (``/versions/{v}/`` accepted everywhere; ``v`` is the
model card's version, :attr:`Engine.version`), JSON or the binary tensor extension
(``Inference-Header-Content-Length``, ``binary_data_size``, binary outputs with ``binary_data`` /
``binary_data_output``); ``POST /v2/repository/index`` (Triton's model repository extension: the
served models, ``{"ready": true}`` for the ready ones only).

Errors are non-200 with ``{"error": "..."}``: 400 for a bad request (unknown model / version /
input / output, wrong shape or dtype, malformed JSON or binary header), 413 for a body over
``max_body_bytes``, 503 when the queue is full, a request times out or the model is being replaced,
404 for an unknown path (whatever the method), 405 with ``Allow`` for a wrong method on a known path,
500 when the model fails or for a bug (an exception outside the edgeds error tree, logged with its
traceback). Every answer of 400 or more, framing errors included, is counted by status code
(:class:`~edgeds.runtime.counters.StatusCounts`, in ``/metrics``).

Responses are serialized straight from the engine's output views, which are released right
after. Model replacement without downtime: :meth:`InferenceServer.swap_model`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .._version import __version__
from ..backends.base import IN_PLACE_ALIGNMENT
from ..config import ServerLimits
from ..errors import EdgedsError, RequestError, ServiceUnavailable
from .auth import HEALTH_PATHS, ApiKeys
from .counters import StatusCounts
from .engine import Engine, EngineDraining, InferRequest
from .http1 import Dispatch, Request
from .http_syntax import HttpError, Response, error_response, json_response, keep_alive_head
from .loops import RESERVED_TARGETS, EventLoop, EventLoops
from .memo import remember
from .oip import InferPlan, PlanCache
from .views import model_config, model_metadata, model_stats, prometheus_text

log = logging.getLogger(__name__)

_ROUTE_MEMO_SIZE = 256  # infer routes kept per loop by request path; the oldest goes first
_GET_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/stats", "/metrics"})
_MODEL_ACTIONS = {"": "GET", "ready": "GET", "config": "GET", "stats": "GET", "infer": "POST"}  # -> method
# What a connection past the connection cap may ask for (see edgeds.runtime.loops).
_NO_KEY = Response(
    401,
    b'{"error":"this server needs an API key (Authorization: Bearer <key>)"}',
    fields=(("WWW-Authenticate", 'Bearer realm="edgeds"'),),
)
_BAD_KEY = Response(
    401,
    b'{"error":"the API key is not valid"}',
    fields=(("WWW-Authenticate", 'Bearer realm="edgeds", error="invalid_token"'),),
)


@dataclass(frozen=True)
class SwapReport:
    """Outcome of :meth:`InferenceServer.swap_model` (times in seconds). Versions are the card's
    (what clients address, equal when two builds share one); releases name the builds."""

    model: str
    old_version: str | None
    new_version: str
    drained: bool
    drain_s: float
    old_release: str | None = None
    new_release: str = ""


class _Lane:
    """The server's side of one event loop: the infer plans and routes its requests reuse, and its
    instance of each inline engine, whose batches it runs between its polls (:meth:`InferenceServer._run_inline`).

    Loop ``index`` runs instance ``index`` of every inline engine: requests that arrive on its
    connections go to that instance's queue. Used on the loop's thread, but ``plans`` is cleared from
    any thread when the models change.
    """

    def __init__(self, lp: EventLoop) -> None:
        self.lp = lp
        self.index = lp.index
        self.plans = PlanCache()
        self.routes: dict[str, tuple[str, str | None] | None] = {}  # request path -> infer route
        self.kicked: set[Engine] = set()  # inline engines with a run_ready call scheduled
        self.timers: dict[Engine, asyncio.TimerHandle] = {}  # inline engines waiting for a queue delay


class InferenceServer:
    """Serves started :class:`Engine` objects, keyed by ``engine.name``.

    Run it with :meth:`start` (background threads; returns once listening) or
    :meth:`serve_forever` (blocks until SIGINT/SIGTERM or :meth:`stop`). The server does not own
    the engines' lifetime unless ``close_engines`` is passed to :meth:`stop`.

    ``api_keys``: the keys a caller must send (none: no key is asked for; see the module's doc for
    the open routes); :meth:`set_api_keys` replaces them while serving. ``metrics_public``:
    ``/metrics`` answers without a key. ``tls``: a server context
    (:func:`edgeds.runtime.auth.server_tls_context`); the sockets then speak only TLS.

    ``loops`` event-loop threads serve the connections (default: the instance count of the inline
    engines given, else 1). Every inline engine (``engine.start(inline=True)``) must have
    ``loops`` instances: loop ``i`` runs instance ``i``. Engines with workers work with any count.

    ``limits``: timeouts, body sizes and the connection cap (:class:`~edgeds.config.ServerLimits`,
    its defaults when None); ``max_body_bytes``, when given, replaces its ``max_body_mb``.
    """

    def __init__(
        self,
        engines: Engine | Iterable[Engine],
        host: str = "127.0.0.1",
        port: int = 8000,
        max_body_bytes: int | None = None,
        name: str = "edgeds",
        switch_interval_s: float | None = 0.0005,
        loops: int | None = None,
        limits: ServerLimits | None = None,
        *,
        api_keys: ApiKeys | Iterable[str] = (),
        metrics_public: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        engines = [engines] if isinstance(engines, Engine) else list(engines)
        if loops is None:
            loops = max((e.batching.instances for e in engines if e.inline), default=1)
        if loops < 1:
            raise EdgedsError(f"a server needs at least one event loop, got {loops}")
        self._loop_count = loops
        self._loops: EventLoops | None = None  # while started
        self._lanes: list[_Lane] = []  # one per loop, made by start()
        for engine in engines:
            self._check_inline(engine)
        self._models: dict[str, Engine] = {e.name: e for e in engines}
        # Appended to /metrics (Prometheus text); the agent exposes its telemetry figures here.
        self.extra_metrics: Callable[[], str] | None = None
        self.host = host
        self.port = port
        limits = limits if limits is not None else ServerLimits()
        if max_body_bytes is not None:
            limits = limits.model_copy(update={"max_body_mb": max_body_bytes / 2**20})
        self.limits = limits
        self.max_body_bytes = limits.max_body_bytes
        self.name = name
        self.switch_interval_s = switch_interval_s
        self._swap_lock = threading.Lock()
        self._started_at = time.time()
        self._failures = StatusCounts()  # every answer >= 400, shared by the loops of every run
        self._keys: ApiKeys | None = None  # None: no key is asked for
        self.set_api_keys(api_keys)
        self._open_paths = HEALTH_PATHS | ({"/metrics"} if metrics_public else set())
        self.tls = tls

    @property
    def failures(self) -> StatusCounts:
        """Requests answered 4xx or 5xx since the server was made, by status code (all its runs)."""
        return self._failures

    # ------------------------------------------------------------------ models

    @property
    def models(self) -> Mapping[str, Engine]:
        return self._models

    @property
    def loops(self) -> int:
        """Event-loop threads (each inline engine has one instance per loop)."""
        return self._loop_count

    def _check_inline(self, engine: Engine) -> None:
        if engine.inline and engine.batching.instances != self._loop_count:
            raise EdgedsError(
                f"inline engine {engine.name!r} has {engine.batching.instances} instance(s) and this server "
                f"{self._loop_count} event loop(s): they must match (one loop runs each instance)"
            )

    def _models_changed(self) -> None:
        for lane in self._lanes:  # the plans hold the engines: let the old ones go
            lane.plans.clear()

    def add_model(self, engine: Engine) -> None:
        """Serve a started engine under ``engine.name`` (replaces nothing; see :meth:`swap_model`)."""
        self._check_inline(engine)
        with self._swap_lock:
            if engine.name in self._models:
                raise EdgedsError(f"model {engine.name!r} is already served; use swap_model")
            self._models = {**self._models, engine.name: engine}
            self._models_changed()

    def remove_model(self, name: str, drain_timeout_s: float = 30.0) -> bool:
        """Stop routing to ``name`` and drain it (in-flight requests finish). True if drained in time.
        Blocks until then: call it from a thread of your own, not from a callback on the server's loops
        (an inline engine's queue is run by those loops)."""
        with self._swap_lock:
            old = self._models.get(name)
            self._models = {k: v for k, v in self._models.items() if k != name}
            self._models_changed()
        return old.drain(drain_timeout_s) if old is not None else True

    def swap_model(self, new: Engine, drain_timeout_s: float = 30.0) -> SwapReport:
        """Zero-downtime replacement: route ``new.name`` to ``new`` (already started), then drain the old.

        New requests go to ``new`` from the moment of the swap; requests already queued or running
        on the old engine finish there (a request that raced into the old engine while it began
        draining is retried on ``new``). Blocks the caller until the old engine is drained and
        closed, so call it from a thread of your own, not from a callback on the server's loops.
        For memory-constrained devices, call :meth:`remove_model` first and :meth:`add_model`
        after (the gap is the caller's to report).
        """
        if not new.ready:
            raise EdgedsError(f"swap_model needs a started engine (new engine is {new.state})")
        self._check_inline(new)
        with self._swap_lock:
            old = self._models.get(new.name)
            self._models = {**self._models, new.name: new}
            self._models_changed()
        started = time.perf_counter()
        drained = old.drain(drain_timeout_s) if old is not None and old is not new else True
        return SwapReport(
            new.name,
            old.version if old is not None else None,
            new.version,
            drained,
            time.perf_counter() - started,
            old.release if old is not None else None,
            new.release,
        )

    # ------------------------------------------------------------------ callers

    def set_api_keys(self, keys: ApiKeys | Iterable[str]) -> None:
        """Accept these keys from now on (empty: ask for none); requests already let in go on."""
        keys = keys if isinstance(keys, ApiKeys) else ApiKeys(keys)
        self._keys = keys or None

    @property
    def keyed(self) -> bool:
        """Whether callers need an API key."""
        return self._keys is not None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> InferenceServer:
        """Listen and start the event-loop threads; returns once the sockets are bound (``self.port`` is set).

        Lowers the interpreter's GIL switch interval to ``switch_interval_s`` (when smaller than the
        current one): an engine worker or another loop must get the GIL back as soon as it needs
        it, not after a thread's 5 ms default slice.
        """
        if self._loops is not None:
            raise EdgedsError("the server is already started")
        lanes: list[_Lane] = []  # fresh state for every run

        def dispatch(lp: EventLoop) -> Dispatch:
            lanes.append(_Lane(lp))
            return functools.partial(self._handle, lanes[-1])

        loops = EventLoops(
            self._loop_count,
            dispatch,
            limits=self.limits,
            reserved_targets=RESERVED_TARGETS,
            alignment=IN_PLACE_ALIGNMENT,
            tls=self.tls,
            admit=self._admit,
        )
        for lp in loops.loops:
            lp.http.failures = self._failures
        self._lanes = lanes
        self.port = loops.bind(self.host, self.port)
        if self.switch_interval_s and sys.getswitchinterval() > self.switch_interval_s:
            sys.setswitchinterval(self.switch_interval_s)
        # everything loaded so far (libraries, models) is long-lived: keep it out of the GC's scans,
        # which otherwise walk hundreds of thousands of objects every few thousand requests
        gc.collect()
        gc.freeze()
        self._loops = loops
        try:
            loops.start()
        except EdgedsError:
            self._loops = None
            raise
        return self

    def serve_forever(self, close_engines: bool = False, drain_timeout_s: float = 10.0) -> None:
        """Start (unless started) and block until SIGINT/SIGTERM or :meth:`stop`, then stop
        (with ``close_engines``: drain and close the engines first, see :meth:`stop`)."""
        if self._loops is None:
            self.start()
        if self._loops is not None:
            self._loops.wait()
        self.stop(close_engines, drain_timeout_s)

    def stop(self, close_engines: bool = False, drain_timeout_s: float = 10.0) -> None:
        """Stop listening, close the connections; optionally drain and close the engines.

        The engines are drained while the loops still run, so inline engines finish what is queued
        (new requests meanwhile get 503). Once the loops have stopped nobody runs an inline engine's
        queue, and no connection is left to answer: such an engine is closed at once. The accepting
        loop stops first, so no connection is handed to a loop that has stopped."""
        loops = self._loops
        running = loops is not None and loops.running
        if close_engines:
            for engine in list(self._models.values()):
                if engine.inline and not running:
                    engine.close()
                else:
                    engine.drain(drain_timeout_s)
        if loops is not None:
            loops.stop()
            self._loops = None
        for lane in self._lanes:  # the loops are gone: what they had scheduled never runs
            lane.timers.clear()  # they hold engines (and their pools)
            lane.kicked.clear()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}"

    # ------------------------------------------------------------------ routing

    def _handle(self, lane: _Lane, request: Request) -> Response | None:
        """The dispatch callback of ``lane``'s connections: an infer request is queued (and answered
        when its batch has run), any other answered now. A request refused or failed with an HttpError
        or an EdgedsError is answered by :func:`_error_response`; any other exception is a bug and
        escapes to the HTTP layer, which logs it with its traceback and answers 500."""
        try:
            if request.method == "POST":
                target = request.target
                routes = lane.routes
                if target in routes:
                    route = routes[target]
                else:
                    route = _infer_route(target)
                    remember(routes, target, route, _ROUTE_MEMO_SIZE)
                if route is not None:
                    self._infer(lane, route[0], route[1], request)
                    return None
            return self._answer(request)
        except (HttpError, EdgedsError) as exc:
            return _error_response(exc)

    def _admit(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        """The HTTP layer's admission check, run on each request's head before its body is read: 401
        for a request without one of the keys, unless its path is open; None lets it in."""
        keys = self._keys
        if keys is None:
            return None
        authorization = headers.get("authorization")
        if keys.accepts(authorization):
            return None
        if target.split("?", 1)[0].rstrip("/") in self._open_paths:
            return None
        return _NO_KEY if authorization is None else _BAD_KEY

    def _answer(self, request: Request) -> Response:
        """The response to a request other than infer: 404 for an unknown path, whatever the method;
        405 with ``Allow`` for a known path asked with another method."""
        method = request.method
        path = request.target.split("?", 1)[0].rstrip("/") or "/"
        parts = path.split("/")[1:]
        if parts[:1] == ["v2"] and len(parts) >= 3 and parts[1] == "models" and parts[2] != "stats":
            name = parts[2]
            rest = parts[3:]
            version = None
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = rest[1], rest[2:]
            action = rest[0] if rest else ""
            allowed = _MODEL_ACTIONS.get(action)
            if len(rest) > 1 or allowed is None:
                raise HttpError(404, f"not found: {path}")
            if method != allowed:  # a POST infer never gets here: _handle queued it
                raise HttpError(405, f"use {allowed} for {path}", (("Allow", allowed),))
            engine = self._engine(name, version)
            if action == "":
                return json_response(200, model_metadata(engine))
            if action == "ready":
                return json_response(200 if engine.ready else 400, {"ready": engine.ready})
            if action == "config":
                return json_response(200, model_config(engine))
            return json_response(200, {"model_stats": [model_stats(engine)]})
        if path == "/v2/repository/index":
            if method != "POST":
                raise HttpError(405, f"use POST for {path}", (("Allow", "POST"),))
            return json_response(200, self._repository_index(request.body))
        if path not in _GET_PATHS:
            raise HttpError(404, f"not found: {path}")
        if method != "GET":
            raise HttpError(405, f"use GET for {path}", (("Allow", "GET"),))
        if path == "/v2/health/live":
            return json_response(200, {"live": True})
        if path == "/v2/health/ready":
            ready = bool(self._models) and all(e.ready for e in self._models.values())
            return json_response(200 if ready else 400, {"ready": ready})
        if path == "/v2":
            return json_response(
                200,
                {
                    "name": self.name,
                    "version": __version__,
                    "extensions": ["binary_tensor_data", "statistics", "model_configuration"],
                },
            )
        if path == "/v2/models/stats":
            return json_response(200, {"model_stats": [model_stats(e) for e in self._models.values()]})
        return Response(200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _repository_index(self, body: memoryview) -> list[dict[str, str]]:
        """``POST /v2/repository/index``: every served model (name, card version, state), or only the
        ready ones when the body is ``{"ready": true}``. Raises HttpError 400 for another body."""
        ready_only = False
        if body.nbytes:
            try:
                options = json.loads(bytes(body))
            except ValueError as exc:
                raise HttpError(400, f"the repository index request is not JSON: {exc}") from exc
            if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
                raise HttpError(400, 'the repository index request is {"ready": true|false} or empty')
            ready_only = options.get("ready", False)
        return [
            {"name": e.name, "version": e.version, "state": "READY" if e.ready else "UNAVAILABLE"}
            for e in self._models.values()
            if e.ready or not ready_only
        ]

    def _metrics(self) -> str:
        """``/metrics``: the engines' figures, then :attr:`extra_metrics`."""
        text = prometheus_text(self._models.values(), self._started_at, self._failures.snapshot())
        extra = self.extra_metrics
        if extra is not None:
            try:
                text += extra()
            except Exception as exc:  # extra figures must never break /metrics: served without them
                log.exception("extra_metrics failed; /metrics is served without its figures")
                text += f"# edgeds extra metrics unavailable: {type(exc).__name__}\n"
        return text

    def _engine(self, name: str, version: str | None) -> Engine:
        engine = self._models.get(name)
        if engine is None:
            raise HttpError(400, f"unknown model {name!r} (served: {sorted(self._models)})")
        if version not in (None, "", engine.version):
            raise HttpError(400, f"unknown version {version!r} of model {name!r} (served: {engine.version!r})")
        return engine

    # ------------------------------------------------------------------ infer

    def _infer(self, lane: _Lane, name: str, version: str | None, request: Request) -> None:
        """Parse, validate and queue one infer request (on ``lane``'s loop); :meth:`_complete` answers it.

        Raises HttpError / RequestError / ServiceUnavailable for a request refused before queueing.
        An inline engine gets it on instance ``lane.index`` and the lane's loop runs the batch and answers
        (:meth:`_run_inline`). Otherwise the engine's worker serializes the response and sends it
        (:meth:`Request.respond_from_thread`).
        """
        engine = self._engine(name, version)
        body = request.body
        header_length = request.headers.get("inference-header-content-length")
        plan = lane.plans.plan(engine, body, header_length)
        inputs = plan.inputs(body)
        for _ in range(3):
            target = engine

            def done(req: InferRequest, target: Engine = target, plan: InferPlan = plan) -> None:
                self._complete(lane, req, target, plan, request)

            try:
                inline = engine.inline
                queued = engine.submit(
                    inputs,
                    priority=plan.priority,
                    timeout_us=plan.timeout_us,
                    callback=done,
                    instance=lane.index if inline else None,
                    checked_batch=plan.batch,
                )
                if plan.batch is None and not plan.inline:  # checked once: the same layout passes again
                    plan.batch = queued.batch
                if inline:
                    self._kick(lane, engine)
                return
            except EngineDraining:
                replacement = self._models.get(name)
                if replacement is None or replacement is engine:
                    raise
                engine = replacement
                # the plan checked the outputs against the old engine's: check them again
                plan = lane.plans.plan(engine, body, header_length)
        raise ServiceUnavailable(f"model {name!r} was replaced three times while this request was queued; retry")

    def _kick(self, lane: _Lane, engine: Engine) -> None:
        """On ``lane``'s loop: have it look at its instance of inline ``engine`` once it has polled its sockets."""
        if engine not in lane.kicked and lane.lp.loop is not None:
            lane.kicked.add(engine)
            lane.lp.loop.call_soon(self._run_inline, lane, engine)

    def _run_inline(self, lane: _Lane, engine: Engine) -> None:
        """On ``lane``'s loop: run at most one batch of its instance of ``engine``, then poll again (a batch
        formed only now takes the requests that arrived while the last one ran), or wait for the
        queue delay the batcher names."""
        lane.kicked.discard(engine)
        try:
            wake = engine.run_ready(lane.index)
        except Exception:  # a bug: the engine answers a failed batch itself; the loop must go on
            log.exception("running an inline batch of %r failed", engine.name)
            self._kick(lane, engine)  # what else is queued on this instance must not wait for the next request
            return
        if wake is None:
            return
        if wake == 0:
            self._kick(lane, engine)
            return
        when = wake / 1e9  # asyncio's clock is time.monotonic, the batcher's monotonic_ns
        timer = lane.timers.get(engine)
        if timer is not None:
            if not timer.cancelled() and timer.when() <= when:
                return
            timer.cancel()
        assert lane.lp.loop is not None  # we are running on it
        lane.timers[engine] = lane.lp.loop.call_at(when, self._delay_over, lane, engine)

    def _delay_over(self, lane: _Lane, engine: Engine) -> None:
        lane.timers.pop(engine, None)
        self._run_inline(lane, engine)

    def _complete(self, lane: _Lane, req: InferRequest, engine: Engine, plan: InferPlan, request: Request) -> None:
        """Serialize the response where the batch ran: on the connection's own loop (an inline engine)
        answer at once, on an engine worker answer from there (:meth:`Request.respond_from_thread`)."""
        try:
            error = req.error  # the engine logged it if it was not an EdgedsError
            response = plan.respond(engine, req.outputs, keep_alive_head) if error is None else _error_response(error)
        except Exception as exc:  # a bug in serializing the answer: 500 for this request, the rest go on
            log.exception("answering %s failed (answered 500)", request.target)
            response = _error_response(exc)
        finally:
            req.release()  # the views were serialized into the response (or not needed)
        if lane.lp.ident == threading.get_ident():
            request.respond(response)
        else:
            request.respond_from_thread(response)


def _error_response(exc: Exception) -> Response:
    """The answer to a request that failed with ``exc``: the one place the server turns exceptions
    into statuses. :class:`HttpError`: its own status; :class:`RequestError`: 400;
    :class:`ServiceUnavailable`: 503; anything else: 500 with the exception's type and message.

    Nothing is logged here: a request error or a full queue is no fault of the server, and whoever
    catches an unexpected exception logs it with its traceback once before asking for its answer.
    """
    if isinstance(exc, HttpError):
        return error_response(exc.status, str(exc), exc.fields)
    if isinstance(exc, RequestError):
        return error_response(400, str(exc))
    if isinstance(exc, ServiceUnavailable):
        return error_response(503, str(exc))
    return error_response(500, f"{type(exc).__name__}: {exc}")


def _infer_route(path: str) -> tuple[str, str | None] | None:
    """(model, version or None) of an infer path; None for any other path."""
    parts = path.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) == 5 and parts[4] == "infer":
        version = None
    elif len(parts) == 7 and parts[4] == "versions" and parts[6] == "infer":
        version = parts[5]
    else:
        return None
    if parts[1] != "v2" or parts[2] != "models" or parts[3] == "stats":
        return None
    return parts[3], version


__all__ = ["InferenceServer", "SwapReport"]
