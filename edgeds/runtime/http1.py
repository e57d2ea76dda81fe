"""Open Inference Protocol (KServe v2) over HTTP/1.1, plus Triton's config/stats and Prometheus.

asyncio + numpy: event-loop threads receive and parse requests and queue them on the engines.
An engine started with ``inline=True`` (what ``edgeds serve`` does) gets one event loop per
instance: loop ``i`` owns its connections and runs instance ``i``'s batches itself, between its
polls, so a request is received, batched, run and answered on one thread (no hand-off between
threads or cores). Other engines' workers run the batches and write the responses (the loop
writes the rest). New connections go to the loop with the fewest.
Loopback (127.0.0.1) by default. Request bodies come with a ``Content-Length`` or chunked
(``Transfer-Encoding: chunked``, see :mod:`edgeds.runtime.chunked`), and may be gzip or deflate
(``Content-Encoding``); responses are not compressed.

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}``,
``/v2/models/{m}/ready``, ``/v2/models/{m}/config``, ``/v2/models/{m}/stats``, ``/v2/models/stats``,
``/metrics``; ``POST /v2/models/{m}/infer`` (``/versions/{v}/`` accepted everywhere), JSON or the
binary tensor extension (``Inference-Header-Content-Length``, ``binary_data_size``, binary outputs
with ``binary_data`` / ``binary_data_output``).

Errors are non-200 with ``{"error": "..."}``: 400 for a bad request (unknown model / input /
output, wrong shape or dtype, malformed JSON or binary header, body over ``max_body_bytes``),
503 when the queue is full, a request times out or the model is being replaced, 404 for an
unknown path, 501 for a transfer coding before chunked (400 when the last one is not chunked).
The connection stays usable after a 400 whenever the body could be read; after a malformed
chunked body it is closed.

Responses are serialized straight from the engine's output views, which are released right
after. Model replacement without downtime: :meth:`InferenceServer.swap_model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np

from .._version import __version__
from ..backends.base import IN_PLACE_ALIGNMENT
from ..errors import EdgedsError, RequestError, ServiceUnavailable
from .chunked import ChunkedBodyError, ChunkedDecoder
from .engine import Engine, EngineDraining, InferRequest
from .oip import (
    HttpError,
    InferPlan,
    PlanCache,
    Response,
    error_response,
    json_response,
    oip_datatype,
    remember,
)
from .views import model_config, model_metadata, model_stats, prometheus_text

_log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
_DISCARD_LIMIT = 1024 * 1024 * 1024
_HEADER_LIMIT = 64 * 1024
_INITIAL_BUFFER = 64 * 1024
_BUFFER_POOL = 32  # idle connection buffers kept for reuse
# Parsed request heads kept by their bytes: a client's heads repeat byte for byte (same path, same
# fields, same Content-Length for same-shaped tensors). Heads are small; the oldest goes first.
_HEAD_MEMO_SIZE = 256
_HEAD_MEMO_BYTES = 2048

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 501: "Not Implemented"}
_REASONS[500] = "Internal Server Error"
_REASONS[503] = "Service Unavailable"


@dataclass(frozen=True)
class SwapReport:
    """Outcome of :meth:`InferenceServer.swap_model` (times in seconds)."""

    model: str
    old_version: str | None
    new_version: str
    drained: bool
    drain_s: float


class _EventLoop:
    """One event-loop thread of the server and the state only that thread touches.

    Loop ``index`` runs instance ``index`` of every inline engine: requests that arrive on its
    connections go to that instance's queue, and the loop runs its batches between polls
    (:meth:`InferenceServer._run_inline`). ``connections`` is read by the acceptor to balance them.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ident = -1  # the thread's ident once it runs
        self.stopped: asyncio.Event | None = None
        self.ready = threading.Event()
        self.connections = 0  # live connections (acceptor and loop: under the server's _accept_lock)
        self.transports: set[asyncio.BaseTransport] = set()  # closed when the server stops
        self.plans = PlanCache()  # cleared (from any thread) when the models change
        self.heads: dict[bytes, tuple[str, str, str, bool, Mapping[str, str]]] = {}
        self.routes: dict[str, tuple[str, str | None] | None] = {}  # request path -> infer route
        self.free_buffers: list[bytearray] = []  # idle connection buffers (take_buffer, give_buffer)
        self.completions: list[tuple[Response, _Reply]] = []  # answers handed over by engine workers
        self.completions_lock = threading.Lock()
        self.wake_pending = False
        self.kicked: set[Engine] = set()  # inline engines with a run_ready call scheduled
        self.timers: dict[Engine, asyncio.TimerHandle] = {}  # inline engines waiting for a queue delay

    def take_buffer(self) -> bytearray:
        """A connection buffer: a recycled one (already grown to the usual request size) or a new one."""
        pool = self.free_buffers
        return pool.pop() if pool else bytearray(_INITIAL_BUFFER)

    def give_buffer(self, buf: bytearray, max_body_bytes: int) -> None:
        """Keep a lost connection's buffer for the next one (recycling keeps RSS flat when clients
        reconnect: no malloc churn of body-sized buffers)."""
        if len(self.free_buffers) < _BUFFER_POOL and len(buf) <= 2 * max_body_bytes + _INITIAL_BUFFER:
            self.free_buffers.append(buf)

    def call(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on this loop (from any thread); False (dropped) once the loop has closed."""
        loop = self.loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:
            return False
        return True


class InferenceServer:
    """Serves started :class:`Engine` objects, keyed by ``engine.name``.

    Run it with :meth:`start` (background threads; returns once listening) or
    :meth:`serve_forever` (blocks until SIGINT/SIGTERM or :meth:`stop`). The server does not own
    the engines' lifetime unless ``close_engines`` is passed to :meth:`stop`.

    ``loops`` event-loop threads serve the connections (default: the instance count of the inline
    engines given, else 1). Every inline engine (``engine.start(inline=True)``) must have
    ``loops`` instances: loop ``i`` runs instance ``i``. Engines with workers work with any count.
    """

    def __init__(
        self,
        engines: Engine | Iterable[Engine],
        host: str = "127.0.0.1",
        port: int = 8000,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        name: str = "edgeds",
        switch_interval_s: float | None = 0.0005,
        loops: int | None = None,
    ) -> None:
        engines = [engines] if isinstance(engines, Engine) else list(engines)
        if loops is None:
            loops = max((e.batching.instances for e in engines if e.inline), default=1)
        if loops < 1:
            raise EdgedsError(f"a server needs at least one event loop, got {loops}")
        self._loops = [_EventLoop(i) for i in range(loops)]
        for engine in engines:
            self._check_inline(engine)
        self._models: dict[str, Engine] = {e.name: e for e in engines}
        # Appended to /metrics (Prometheus text); the agent exposes its telemetry figures here.
        self.extra_metrics: Callable[[], str] | None = None
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.name = name
        self.switch_interval_s = switch_interval_s
        self._swap_lock = threading.Lock()
        self._accept_lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._start_error: BaseException | None = None
        self._started_at = time.time()

    # ------------------------------------------------------------------ models

    @property
    def models(self) -> Mapping[str, Engine]:
        return self._models

    @property
    def loops(self) -> int:
        """Event-loop threads (each inline engine has one instance per loop)."""
        return len(self._loops)

    def _check_inline(self, engine: Engine) -> None:
        if engine.inline and engine.batching.instances != len(self._loops):
            raise EdgedsError(
                f"inline engine {engine.name!r} has {engine.batching.instances} instance(s) and this server "
                f"{len(self._loops)} event loop(s): they must match (one loop runs each instance)"
            )

    def _models_changed(self) -> None:
        for lp in self._loops:  # the plans hold the engines: let the old ones go
            lp.plans.clear()

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
            new.name, old.version if old is not None else None, new.version, drained, time.perf_counter() - started
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> InferenceServer:
        """Listen and start the event-loop threads; returns once the sockets are bound (``self.port`` is set).

        Lowers the interpreter's GIL switch interval to ``switch_interval_s`` (when smaller than the
        current one): an engine worker or another loop must get the GIL back as soon as it needs
        it, not after a thread's 5 ms default slice.
        """
        if self._listeners:
            raise EdgedsError("the server is already started")
        self._loops = [_EventLoop(i) for i in range(len(self._loops))]  # fresh state for every run
        self._start_error = None
        try:
            self._listeners = _listen(self.host, self.port)
        except OSError as exc:
            raise EdgedsError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = int(self._listeners[0].getsockname()[1])
        if self.switch_interval_s and sys.getswitchinterval() > self.switch_interval_s:
            sys.setswitchinterval(self.switch_interval_s)
        # everything loaded so far (libraries, models) is long-lived: keep it out of the GC's scans,
        # which otherwise walk hundreds of thousands of objects every few thousand requests
        gc.collect()
        gc.freeze()
        for lp in self._loops:
            name = "oip-server" if len(self._loops) == 1 else f"oip-server-{lp.index}"
            lp.thread = threading.Thread(target=self._thread_main, args=(lp,), name=name, daemon=True)
            lp.thread.start()
            lp.ready.wait()
        if self._start_error is not None:
            self.stop()
            raise EdgedsError(f"cannot serve on {self.host}:{self.port}: {self._start_error}")
        return self

    def _thread_main(self, lp: _EventLoop) -> None:
        try:
            asyncio.run(self._main(lp))
        except BaseException as exc:  # reported by start(), or the loop just stopped
            if not lp.ready.is_set():
                self._start_error = exc
        finally:
            lp.ready.set()

    async def _main(self, lp: _EventLoop) -> None:
        loop = lp.loop = asyncio.get_running_loop()
        lp.ident = threading.get_ident()
        lp.stopped = asyncio.Event()
        if lp.index == 0:  # the first loop accepts for all of them
            for sock in self._listeners:
                loop.add_reader(sock.fileno(), self._accept, sock)
        lp.ready.set()
        try:
            await lp.stopped.wait()
        finally:
            if lp.index == 0:
                for sock in self._listeners:
                    loop.remove_reader(sock.fileno())
                    sock.close()
            for transport in list(lp.transports):
                transport.close()
            for timer in lp.timers.values():
                timer.cancel()
            lp.timers.clear()  # they hold engines (and their pools)
            lp.kicked.clear()

    def _accept(self, listener: socket.socket) -> None:
        """Loop 0: accept every waiting connection and give each to the loop with the fewest."""
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of descriptors: the client is refused, the server goes on
                _log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            with self._accept_lock:
                lp = min(self._loops, key=lambda candidate: candidate.connections)
                lp.connections += 1
            if not lp.call(functools.partial(self._adopt, lp, conn)):
                conn.close()  # that loop has stopped: the server is stopping
                self._forget(lp)

    def _adopt(self, lp: _EventLoop, conn: socket.socket) -> None:
        """On ``lp``: make an accepted socket one of its connections."""
        loop = lp.loop
        if loop is None or lp.stopped is None or lp.stopped.is_set():
            conn.close()
            self._forget(lp)
            return
        loop.create_task(self._connect(lp, conn))

    async def _connect(self, lp: _EventLoop, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _Connection(self, lp), conn)
        except OSError:  # the client is gone already: no connection_lost will come
            conn.close()
            self._forget(lp)
        except asyncio.CancelledError:  # the loop is stopping
            conn.close()
            self._forget(lp)
            raise

    def _forget(self, lp: _EventLoop) -> None:
        with self._accept_lock:
            lp.connections -= 1

    def serve_forever(self, close_engines: bool = False, drain_timeout_s: float = 10.0) -> None:
        """Start (unless started) and block until SIGINT/SIGTERM or :meth:`stop`, then stop
        (with ``close_engines``: drain and close the engines first, see :meth:`stop`)."""
        if not self._listeners:
            self.start()
        done = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: done.set())
        while not done.is_set() and all(lp.thread is not None and lp.thread.is_alive() for lp in self._loops):
            done.wait(0.5)
        self.stop(close_engines, drain_timeout_s)

    def stop(self, close_engines: bool = False, drain_timeout_s: float = 10.0) -> None:
        """Stop listening, close the connections; optionally drain and close the engines.

        The engines are drained while the loops still run, so inline engines finish what is queued
        (new requests meanwhile get 503). Once the loops have stopped nobody runs an inline engine's
        queue, and no connection is left to answer: such an engine is closed at once. The accepting
        loop stops first, so no connection is handed to a loop that has stopped."""
        running = any(lp.thread is not None and lp.thread.is_alive() for lp in self._loops)
        if close_engines:
            for engine in list(self._models.values()):
                if engine.inline and not running:
                    engine.close()
                else:
                    engine.drain(drain_timeout_s)
        for lp in self._loops:  # loop 0, the acceptor, first
            stopped = lp.stopped
            if stopped is not None:
                lp.call(stopped.set)
            if lp.thread is not None:
                lp.thread.join(timeout=10)
                lp.thread = None
        for sock in self._listeners:  # when a loop could not close them
            sock.close()
        self._listeners = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ HTTP

    # ------------------------------------------------------------------ routing

    async def _dispatch(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | memoryview
    ) -> Response:
        path = target.split("?", 1)[0].rstrip("/") or "/"
        parts = path.split("/")[1:]
        try:
            if parts[:1] == ["v2"] and len(parts) >= 3 and parts[1] == "models" and parts[2] != "stats":
                name = parts[2]
                rest = parts[3:]
                version = None
                if rest[:1] == ["versions"] and len(rest) >= 2:
                    version, rest = rest[1], rest[2:]
                action = rest[0] if rest else ""
                if len(rest) > 1:
                    raise HttpError(404, f"not found: {path}")
                if action == "infer":  # POST infer takes the fast path in _Connection
                    raise HttpError(405, "use POST for infer")
                if method != "GET":
                    raise HttpError(405, f"use GET for {path}")
                engine = self._engine(name, version)
                if action == "":
                    return json_response(200, model_metadata(engine))
                if action == "ready":
                    return json_response(200 if engine.ready else 400, {"ready": engine.ready})
                if action == "config":
                    return json_response(200, model_config(engine))
                if action == "stats":
                    return json_response(200, {"model_stats": [model_stats(engine)]})
                raise HttpError(404, f"not found: {path}")
            if method != "GET":
                raise HttpError(405, f"use GET for {path}")
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
            if path == "/metrics":
                return Response(200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            raise HttpError(404, f"not found: {path}")
        except HttpError as exc:
            return error_response(exc.status, str(exc))
        except RequestError as exc:
            return error_response(400, str(exc))
        except ServiceUnavailable as exc:
            return error_response(503, str(exc))
        except Exception as exc:  # the server keeps serving whatever one request does
            return error_response(500, f"{type(exc).__name__}: {exc}")

    def _metrics(self) -> str:
        """``/metrics``: the engines' figures, then :attr:`extra_metrics`."""
        text = prometheus_text(self._models.values(), self._started_at)
        extra = self.extra_metrics
        if extra is not None:
            try:
                text += extra()
            except Exception as exc:  # extra figures must never break /metrics
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

    def _infer(
        self,
        lp: _EventLoop,
        name: str,
        version: str | None,
        headers: Mapping[str, str],
        body: bytes | memoryview,
        finish: _Reply,
    ) -> None:
        """Parse, validate and queue one infer request (on loop ``lp``); its response goes to ``finish``.

        Raises HttpError / RequestError / ServiceUnavailable for a request refused before queueing.
        An inline engine gets it on instance ``lp.index`` and ``lp`` runs the batch and answers
        (:meth:`_run_inline`). Otherwise the engine's worker serializes the response and sends it
        itself when the connection allows (:meth:`_Reply.from_worker`), or ``finish(response)``
        runs on the loop, with completions handed over in bulk (one wake-up per batch).
        """
        engine = self._engine(name, version)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            body = _decompress(body, encoding, self.max_body_bytes)
        plan = lp.plans.plan(engine, body, headers.get("inference-header-content-length"))
        inputs = plan.inputs(body)
        for _ in range(3):
            target = engine

            def done(req: InferRequest, target: Engine = target, plan: InferPlan = plan) -> None:
                self._complete(req, target, plan, finish)

            try:
                inline = engine.inline
                request = engine.submit(
                    inputs,
                    priority=plan.priority,
                    timeout_us=plan.timeout_us,
                    callback=done,
                    instance=lp.index if inline else None,
                    checked_batch=plan.batch,
                )
                if plan.batch is None and not plan.inline:  # checked once: the same layout passes again
                    plan.batch = request.batch
                if inline:
                    self._kick(lp, engine)
                return
            except EngineDraining:
                replacement = self._models.get(name)
                if replacement is None or replacement is engine:
                    raise
                engine = replacement
                # the plan checked the outputs against the old engine's: check them again
                plan = lp.plans.plan(engine, body, headers.get("inference-header-content-length"))
        raise ServiceUnavailable(f"model {name!r} was replaced three times while this request was queued; retry")

    def _kick(self, lp: _EventLoop, engine: Engine) -> None:
        """On ``lp``: have it look at its instance of inline ``engine`` once it has polled its sockets."""
        if engine not in lp.kicked and lp.loop is not None:
            lp.kicked.add(engine)
            lp.loop.call_soon(self._run_inline, lp, engine)

    def _run_inline(self, lp: _EventLoop, engine: Engine) -> None:
        """On ``lp``: run at most one batch of its instance of ``engine``, then poll again (a batch
        formed only now takes the requests that arrived while the last one ran), or wait for the
        queue delay the batcher names."""
        lp.kicked.discard(engine)
        try:
            wake = engine.run_ready(lp.index)
        except Exception:  # a bug: the engine answers a failed batch itself; the loop must go on
            _log.exception("running an inline batch of %r failed", engine.name)
            self._kick(lp, engine)  # what else is queued on this instance must not wait for the next request
            return
        if wake is None:
            return
        if wake == 0:
            self._kick(lp, engine)
            return
        when = wake / 1e9  # asyncio's clock is time.monotonic, the batcher's monotonic_ns
        timer = lp.timers.get(engine)
        if timer is not None:
            if not timer.cancelled() and timer.when() <= when:
                return
            timer.cancel()
        assert lp.loop is not None  # we are running on it
        lp.timers[engine] = lp.loop.call_at(when, self._delay_over, lp, engine)

    def _delay_over(self, lp: _EventLoop, engine: Engine) -> None:
        lp.timers.pop(engine, None)
        self._run_inline(lp, engine)

    def _complete(self, req: InferRequest, engine: Engine, plan: InferPlan, finish: _Reply) -> None:
        """Serialize the response where the batch ran. On the connection's own loop (an inline
        engine) answer at once; on an engine worker send it from there when the connection allows
        (:meth:`_Reply.from_worker`), otherwise hand it to the loop, one wake-up per batch."""
        try:
            if req.error is None:
                response = plan.respond(engine, req.outputs, _keep_alive_head)
            elif isinstance(req.error, RequestError):
                response = error_response(400, str(req.error))
            elif isinstance(req.error, ServiceUnavailable):
                response = error_response(503, str(req.error))
            else:
                response = error_response(500, f"{type(req.error).__name__}: {req.error}")
        except Exception as exc:
            response = error_response(500, f"{type(exc).__name__}: {exc}")
        finally:
            req.release()  # the views were serialized into the response (or not needed)
        lp = finish.connection._lp
        if lp.ident == threading.get_ident():
            finish(response)
            return
        if finish.from_worker(response):
            return
        with lp.completions_lock:
            lp.completions.append((response, finish))
            if lp.wake_pending:
                return
            lp.wake_pending = True
        lp.call(lambda: self._drain_completions(lp))

    @staticmethod
    def _drain_completions(lp: _EventLoop) -> None:
        with lp.completions_lock:
            items = list(lp.completions)
            lp.completions.clear()
            lp.wake_pending = False
        for response, finish in items:
            finish(response)

    def _start_infer(
        self, lp: _EventLoop, path: str, headers: Mapping[str, str], body: memoryview, finish: _Reply
    ) -> bool:
        """Fast path for ``POST .../infer`` (no task, no future). False if ``path`` is not an infer route."""
        routes = lp.routes
        if path in routes:
            route = routes[path]
        else:
            route = _infer_route(path)
            remember(routes, path, route, _HEAD_MEMO_SIZE)
        if route is None:
            return False
        try:
            self._infer(lp, route[0], route[1], headers, body, finish)
        except HttpError as exc:
            finish(error_response(exc.status, str(exc)))
        except RequestError as exc:
            finish(error_response(400, str(exc)))
        except ServiceUnavailable as exc:
            finish(error_response(503, str(exc)))
        except Exception as exc:  # the server keeps serving whatever one request does
            finish(error_response(500, f"{type(exc).__name__}: {exc}"))
        return True


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 keep-alive connection, parsed in place in a buffer owned by the connection.

    The socket is read with ``recv_into`` straight into ``_buf``; a request body is handed on as a
    memoryview of it, or of the buffer its decoder filled for a chunked body (binary tensors become
    numpy views of those bytes, copied at most once, into the engine's pooled bucket, or read in
    place by the backend). Until its answer is sent (``_busy``) nothing more is parsed, and while
    views of ``_buf`` may be alive (``_in_flight``, cleared once the inference and the response are
    done) nothing is compacted over them; the buffer grows only when a larger request arrives, so
    steady-state traffic allocates nothing per request for the payload (a chunked body is the
    exception: its decoder allocates the body's buffer).

    Threads: everything runs on the loop thread except :meth:`_answer_from_worker`, which an engine
    worker calls to send an infer response itself (saving the loop a wake-up per request). It writes
    to the socket only while ``_wlock`` is held and ``_fd`` is open; ``connection_lost`` (which
    asyncio calls *before* it closes the socket) invalidates ``_fd`` under the same lock, so a worker
    never writes to a closed or reused descriptor. While a request is in flight the loop writes
    nothing to the connection, so the worker's bytes cannot interleave with the loop's.
    """

    def __init__(self, server: InferenceServer, lp: _EventLoop) -> None:
        self._server = server
        self._lp = lp
        self._buf = lp.take_buffer()
        self._base = _address(self._buf)
        self._lead = 0  # bytes from the last request's first byte to its first binary tensor byte
        self._head_len = 0  # bytes of the last request's head
        self._start = 0  # first unparsed byte
        self._end = 0  # end of received data
        self._need = 0  # bytes the current body still needs beyond _start (0 = parsing a head)
        self._discard = 0  # bytes of an oversized body still to drop
        self._busy = False  # a request is unanswered: parse nothing more (answers stay in order)
        self._in_flight = False  # its body's views may be alive: do not compact over them
        self._processing = False
        self._pending: tuple[str, str, bool, Mapping[str, str], int] | None = None  # a parsed head; length -1 = chunked
        self._chunks: ChunkedDecoder | None = None  # the chunked body being received
        self._transport: asyncio.Transport | None = None
        self._wlock = threading.Lock()
        self._fd = -1  # the socket's descriptor for workers' writes; -1 once the connection is lost

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (its methods are all this protocol uses)
        self._transport = cast(asyncio.Transport, transport)
        self._lp.transports.add(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._fd = sock.fileno()

    def connection_lost(self, exc: Exception | None) -> None:
        with self._wlock:  # asyncio closes the socket after this returns: no worker is writing now
            self._fd = -1
        if self._transport is not None:
            self._lp.transports.discard(self._transport)
        self._transport = None
        self._server._forget(self._lp)
        if not self._in_flight:  # no request views point into it: the next connection reuses it
            self._lp.give_buffer(self._buf, self._server.max_body_bytes)

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._in_flight:
            self._reset_if_empty()  # all parsed and answered (maybe by a worker): start over
        if self._end == len(self._buf):
            self._make_room(max(_INITIAL_BUFFER, self._need))
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        self._process()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- buffer management

    def _make_room(self, want: int) -> None:
        """Free space after ``_end``: drop parsed bytes, and grow to hold ``want`` unparsed bytes.

        While a request is in flight its body (before ``_start``) must stay intact, so the unparsed
        tail then moves to a fresh buffer instead of being compacted in place (clients that wait for
        the answer before sending again never get here).
        """
        used = self._end - self._start
        size = len(self._buf)
        if used + _INITIAL_BUFFER // 4 > size or want > size:
            size = max(size * 2, want + _INITIAL_BUFFER // 4)
        if size != len(self._buf) or self._in_flight:
            # a new buffer (views of the old one, if any, keep it alive until they are dropped)
            fresh = bytearray(size)
            fresh[:used] = self._buf[self._start : self._end]
            self._buf = fresh
            self._base = _address(fresh)
        elif self._start:
            self._buf[:used] = self._buf[self._start : self._end]
        self._start, self._end = 0, used

    # -- parsing

    def _process(self) -> None:
        if self._processing:  # re-entered from a request answered synchronously: the outer loop goes on
            return
        self._processing = True
        try:
            self._parse_loop()
        finally:
            self._processing = False

    def _parse_loop(self) -> None:
        transport = self._transport
        while transport is not None and not self._busy and not transport.is_closing():
            if self._discard:
                dropped = min(self._discard, self._end - self._start)
                self._start += dropped
                self._discard -= dropped
                if self._discard:
                    self._reset_if_empty()
                    return
                continue
            if self._pending is None:
                if self._start == self._end:  # all answered: wait for the next request
                    self._reset_if_empty()
                    return
                if not self._parse_head():
                    return
                continue
            method, target, keep_alive, headers, length = self._pending
            chunks = self._chunks
            if chunks is not None:  # decoded into a buffer of its own as it arrives
                body = self._dechunk(chunks)
                if body is None:
                    return
            elif self._end - self._start < length:
                self._need = length
                return
            else:
                body = memoryview(self._buf)[self._start : self._start + length]
                self._start += length
            self._pending = None
            self._need = 0
            self._busy = True  # nothing more is parsed until this is answered (answers stay in order)
            self._in_flight = chunks is None  # views of _buf may be alive: nothing is compacted over them
            if method == "POST" and self._server._start_infer(
                self._lp, target, headers, body, _Reply(self, keep_alive, body)
            ):
                continue  # answered already (an error) -> parse on; queued -> _busy ends the loop
            asyncio.get_running_loop().create_task(self._respond(method, target, keep_alive, headers, body))
            return

    def _parse_head(self) -> bool:
        """Parse one request head if complete; False when more bytes are needed (or on close)."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n", self._start, self._end)
        if end < 0:
            if self._end - self._start > _HEADER_LIMIT:
                self._reply(error_response(400, "request header too large"), keep_alive=False)
                return False
            self._reset_if_empty()
            return False
        head = bytes(buf[self._start : end + 4])
        head_start, self._start = self._start, end + 4
        heads = self._lp.heads
        parsed = heads.get(head)
        if parsed is None:
            try:
                parsed = _parse_head(head)
            except HttpError as exc:
                self._reply(error_response(exc.status, str(exc)), keep_alive=False)
                return False
            if len(head) <= _HEAD_MEMO_BYTES:
                remember(heads, head, parsed, _HEAD_MEMO_SIZE)
        method, target, version, keep_alive, headers = parsed
        limit = self._server.max_body_bytes
        expect = headers.get("expect", "").lower() == "100-continue"
        if "transfer-encoding" in headers:
            codings = [part.strip() for part in headers["transfer-encoding"].lower().split(",")]
            if codings[-1] != "chunked":  # the body's length cannot be known (RFC 9112 6.3)
                message = f"the last Transfer-Encoding must be chunked, not {codings[-1]!r}"
                self._reply(error_response(400, message), keep_alive=False)
                return False
            if len(codings) > 1:
                message = f"unsupported Transfer-Encoding {', '.join(codings)!r} (only chunked)"
                self._reply(error_response(501, message), keep_alive=False)
                return False
            # a Content-Length beside it is overridden and, as for HTTP/1.0 with a transfer coding,
            # the connection is closed after the answer: disagreeing framing is how requests get smuggled
            keep_alive = keep_alive and version == "HTTP/1.1" and "content-length" not in headers
            length = -1
            self._chunks = ChunkedDecoder(limit)  # enforces the limit as the chunks arrive
        else:
            raw = headers.get("content-length", "0")
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError(raw)
            except ValueError:
                self._reply(error_response(400, f"bad Content-Length {raw!r}"), keep_alive=False)
                return False
            if length > limit:
                message = f"request body of {length} bytes exceeds the limit of {limit} bytes"
                if expect or length > _DISCARD_LIMIT:
                    self._reply(error_response(400, message), keep_alive=False)
                    return False
                self._discard = length  # read and drop it, then answer, so the client sees the 400
                self._reply(error_response(400, message), keep_alive=keep_alive)
                return True
        if expect and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._pending = (method, target, keep_alive, headers, length)
        if length >= 0:  # how the next request's tensor will lie (a chunked body is decoded elsewhere)
            self._head_len = self._start - head_start
            with contextlib.suppress(ValueError):
                self._lead = self._head_len + int(headers.get("inference-header-content-length", "0"))
        return True

    def _dechunk(self, chunks: ChunkedDecoder) -> memoryview | None:
        """Feed the received bytes to the chunked body's decoder: the whole body once it is complete,
        None while more is needed (or after a malformed body was answered with 400 and closed)."""
        try:
            self._start = chunks.feed(self._buf, self._start, self._end)
        except ChunkedBodyError as exc:
            self._pending = self._chunks = None
            self._reply(error_response(400, str(exc)), keep_alive=False)
            return None
        if not chunks.done:
            self._reset_if_empty()
            return None
        self._chunks = None
        return memoryview(chunks.body)

    def _reset_if_empty(self) -> None:
        """Receive the next request from the buffer's start, shifted (< 64 bytes) so that if it is laid
        out like the last one, its first binary tensor lands aligned (``IN_PLACE_ALIGNMENT``): the engine can then
        hand it to the backend in place (see ``OnnxRuntimeBackend``) instead of copying it."""
        if self._start == self._end:
            # a parsed head whose body has not arrived yet: the body starts here, not the head
            # (for a chunked body, decoded elsewhere, the shift is as good as any)
            lead = self._lead - self._head_len if self._pending is not None else self._lead
            self._start = self._end = -(self._base + lead) % IN_PLACE_ALIGNMENT

    # -- responses

    async def _respond(
        self, method: str, target: str, keep_alive: bool, headers: Mapping[str, str], body: memoryview
    ) -> None:
        try:
            response = await self._server._dispatch(method, target, headers, body)
        except Exception as exc:  # the connection must survive whatever one request does
            response = error_response(500, f"{type(exc).__name__}: {exc}")
        self._finish(response, keep_alive, body)

    def _finish(self, response: Response, keep_alive: bool, body: memoryview) -> None:
        """Answer the request in flight and go on reading (loop thread)."""
        self._reply(response, keep_alive)
        self._finish_after_reply(body)

    def _finish_after_reply(self, body: memoryview) -> None:
        _release(body)
        self._busy = self._in_flight = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._reset_if_empty()
            self._process()

    def _reply(self, response: Response, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_http_bytes(response, keep_alive))
        if not keep_alive:
            transport.close()

    def _answer_from_worker(self, response: Response, keep_alive: bool, body: memoryview) -> bool:
        """Send the in-flight request's response from an engine worker thread; False = the loop must.

        Only a keep-alive response on a connection with nothing queued in the transport is sent here
        (anything else keeps the loop's ordering). The body's views are done with before the bytes
        leave (the client may send its next request at once, and the loop may then reuse the
        buffer); once all is sent the connection stops being busy, and bytes that arrived meanwhile
        (a pipelining client, or one quicker than this thread) are parsed on the loop.
        """
        if not keep_alive:
            return False
        data = _http_bytes(response, keep_alive)
        with self._wlock:
            transport = self._transport
            if self._fd < 0 or transport is None or transport.is_closing() or transport.get_write_buffer_size():
                return False
            _release(body)
            self._in_flight = False
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                return False
            except OSError:
                return False  # the peer is gone: the loop sees it and closes the connection
            if sent < len(data):  # the socket buffer is full (rare for a response): the loop sends the rest
                rest = data[sent:]
                self._lp.call(lambda: self._send_rest(rest, body))
                return True
            self._busy = False
            waiting = self._end > self._start
        if waiting:
            self._lp.call(self._process)
        return True

    def _send_rest(self, rest: bytes, body: memoryview) -> None:
        """Loop thread: the tail of a response a worker began, then go on as after any answer."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(rest)
        self._finish_after_reply(body)


class _Reply:
    """Where one infer response goes: :meth:`from_worker` tries the engine worker's thread, calling
    the object answers on the loop (both once, and only one of them)."""

    __slots__ = ("body", "connection", "keep_alive")

    def __init__(self, connection: _Connection, keep_alive: bool, body: memoryview) -> None:
        self.connection = connection
        self.keep_alive = keep_alive
        self.body = body

    def __call__(self, response: Response) -> None:
        self.connection._finish(response, self.keep_alive, self.body)

    def from_worker(self, response: Response) -> bool:
        return self.connection._answer_from_worker(response, self.keep_alive, self.body)


# ---------------------------------------------------------------------- helpers


def _listen(host: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets for every address ``host`` resolves to (as asyncio's
    ``create_server``; with port 0 the first address picks the port and the others take it too)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(infos):
            if port == 0 and sockets:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            # SO_REUSEADDR, and IPV6_V6ONLY for an IPv6 address, as asyncio's create_server
            sockets.append(socket.create_server(address, family=family, backlog=1024))
            sockets[-1].setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _release(view: memoryview) -> None:
    """Release a request body's view unless something still holds it (e.g. a traceback). Per request,
    so a plain try: ``contextlib.suppress`` builds an object and enters and leaves it."""
    try:  # noqa: SIM105
        view.release()
    except BufferError:
        pass


def _address(buf: bytearray) -> int:
    """Memory address of ``buf``'s first byte (the view is dropped at once: ``buf`` stays resizable)."""
    return int(np.frombuffer(buf, dtype=np.uint8).ctypes.data) if buf else 0


def _http_head(response: Response, keep_alive: bool) -> bytes:
    """Status line and header fields of ``response``, with the blank line that ends them."""
    status = response.status
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
    )
    if response.header_length is not None:
        head += f"Inference-Header-Content-Length: {response.header_length}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("latin-1")


def _keep_alive_head(response: Response) -> bytes:
    return _http_head(response, True)


def _http_bytes(response: Response, keep_alive: bool) -> bytes:
    """``response`` as sent on the wire (its head rendered in advance when it has one)."""
    head = response.head if keep_alive and response.head is not None else _http_head(response, keep_alive)
    return head + response.body


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


def _parse_head(head: bytes) -> tuple[str, str, str, bool, Mapping[str, str]]:
    """Method, target, HTTP version, keep-alive and the header fields (lower-case names) of a request
    head. A repeated field's values are joined with ", " (RFC 9110 5.3); Content-Length values that
    disagree are refused (RFC 9112 6.3). The fields are shared by every request with the same head
    bytes (``_HEAD_MEMO_SIZE``): never change them."""
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError as exc:
        raise HttpError(400, "malformed request line") from exc
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key, value = key.strip().lower(), value.strip()
        seen = headers.get(key)
        if seen is None:
            headers[key] = value
        elif key == "content-length":
            if value != seen:
                raise HttpError(400, f"conflicting Content-Length values {seen!r} and {value!r}")
        else:
            headers[key] = f"{seen}, {value}"
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return method, target, version, keep_alive, headers


def _decompress(body: bytes | memoryview, encoding: str, limit: int) -> bytes:
    """A ``Content-Encoding: gzip`` or ``deflate`` body (what ``tritonclient``'s
    ``request_compression_algorithm`` sends), inflated to at most ``limit`` bytes; HttpError 400 for
    another encoding, a corrupt or truncated stream, or one that inflates past the limit."""
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":  # zlib-wrapped, as HTTP means it; raw deflate streams are taken too
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] * 256 + body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise HttpError(400, f"unsupported Content-Encoding {encoding!r} (this server takes gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the body is not valid {encoding}: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise HttpError(400, f"the {encoding} body inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise HttpError(400, f"the {encoding} body is truncated")
    return data


__all__ = ["DEFAULT_MAX_BODY", "HttpError", "InferenceServer", "SwapReport", "oip_datatype"]
