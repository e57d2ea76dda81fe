"""Open Inference Protocol (KServe v2) over HTTP/1.1, plus Triton's config/stats and Prometheus.

asyncio + numpy: event-loop threads receive and parse requests and queue them on the engines.
An engine started with ``inline=True`` (what ``edgeds serve`` does) gets one event loop per
instance: loop ``i`` owns its connections and runs instance ``i``'s batches itself, between its
polls, so a request is received, batched, run and answered on one thread (no hand-off between
threads or cores). Other engines' workers run the batches and write the responses (the loop
writes the rest). New connections go to the loop with the fewest.
Loopback (127.0.0.1) by default. HTTP framing, compression and keep-alive: :mod:`edgeds.runtime.http1`.

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}``,
``/v2/models/{m}/ready``, ``/v2/models/{m}/config``, ``/v2/models/{m}/stats``, ``/v2/models/stats``,
``/metrics``; ``POST /v2/models/{m}/infer`` (``/versions/{v}/`` accepted everywhere), JSON or the
binary tensor extension (``Inference-Header-Content-Length``, ``binary_data_size``, binary outputs
with ``binary_data`` / ``binary_data_output``).

Errors are non-200 with ``{"error": "..."}``: 400 for a bad request (unknown model / input /
output, wrong shape or dtype, malformed JSON or binary header, body over ``max_body_bytes``),
503 when the queue is full, a request times out or the model is being replaced, 404 for an
unknown path.

Responses are serialized straight from the engine's output views, which are released right
after. Model replacement without downtime: :meth:`InferenceServer.swap_model`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .._version import __version__
from ..backends.base import IN_PLACE_ALIGNMENT
from ..errors import EdgedsError, RequestError, ServiceUnavailable
from .engine import Engine, EngineDraining, InferRequest
from .http1 import (
    DEFAULT_MAX_BODY,
    ConnectionGroup,
    HttpError,
    Request,
    Response,
    error_response,
    json_response,
    keep_alive_head,
)
from .memo import remember
from .oip import InferPlan, PlanCache
from .views import model_config, model_metadata, model_stats, prometheus_text

_log = logging.getLogger(__name__)

_ROUTE_MEMO_SIZE = 256  # infer routes kept per loop by request path; the oldest goes first


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

    def __init__(self, index: int, server: InferenceServer) -> None:
        self.index = index
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ident = -1  # the thread's ident once it runs
        self.stopped: asyncio.Event | None = None
        self.ready = threading.Event()
        self.connections = 0  # live connections (acceptor and loop: under the server's _accept_lock)
        self.plans = PlanCache()  # cleared (from any thread) when the models change
        self.routes: dict[str, tuple[str, str | None] | None] = {}  # request path -> infer route
        self.kicked: set[Engine] = set()  # inline engines with a run_ready call scheduled
        self.timers: dict[Engine, asyncio.TimerHandle] = {}  # inline engines waiting for a queue delay
        self.http = ConnectionGroup(
            functools.partial(server._handle, self),
            call=self.call,
            lost=functools.partial(server._forget, self),
            max_body_bytes=server.max_body_bytes,
            alignment=IN_PLACE_ALIGNMENT,
        )

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
        self._loop_count = loops
        self._loops: list[_EventLoop] = []  # made by start()
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
        return self._loop_count

    def _check_inline(self, engine: Engine) -> None:
        if engine.inline and engine.batching.instances != self._loop_count:
            raise EdgedsError(
                f"inline engine {engine.name!r} has {engine.batching.instances} instance(s) and this server "
                f"{self._loop_count} event loop(s): they must match (one loop runs each instance)"
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
        self._loops = [_EventLoop(i, self) for i in range(self._loop_count)]  # fresh state for every run
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
            lp.http.close()
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
            await loop.connect_accepted_socket(lp.http.protocol, conn)
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

    # ------------------------------------------------------------------ routing

    def _handle(self, lp: _EventLoop, request: Request) -> Response | None:
        """The dispatch callback of loop ``lp``'s connections: an infer request is queued (and answered
        when its batch has run), any other answered now."""
        if request.method == "POST":
            target = request.target
            routes = lp.routes
            if target in routes:
                route = routes[target]
            else:
                route = _infer_route(target)
                remember(routes, target, route, _ROUTE_MEMO_SIZE)
            if route is not None:
                try:
                    self._infer(lp, route[0], route[1], request)
                except HttpError as exc:
                    return error_response(exc.status, str(exc))
                except RequestError as exc:
                    return error_response(400, str(exc))
                except ServiceUnavailable as exc:
                    return error_response(503, str(exc))
                except Exception as exc:  # the server keeps serving whatever one request does
                    return error_response(500, f"{type(exc).__name__}: {exc}")
                return None
        return self._answer(request.method, request.target)

    def _answer(self, method: str, target: str) -> Response:
        """The response to a request other than infer."""
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
                if action == "infer":  # POST infer is queued by _handle
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

    def _infer(self, lp: _EventLoop, name: str, version: str | None, request: Request) -> None:
        """Parse, validate and queue one infer request (on loop ``lp``); it is answered by :meth:`_complete`.

        Raises HttpError / RequestError / ServiceUnavailable for a request refused before queueing.
        An inline engine gets it on instance ``lp.index`` and ``lp`` runs the batch and answers
        (:meth:`_run_inline`). Otherwise the engine's worker serializes the response and sends it
        (:meth:`Request.respond_from_thread`).
        """
        engine = self._engine(name, version)
        body = request.body
        header_length = request.headers.get("inference-header-content-length")
        plan = lp.plans.plan(engine, body, header_length)
        inputs = plan.inputs(body)
        for _ in range(3):
            target = engine

            def done(req: InferRequest, target: Engine = target, plan: InferPlan = plan) -> None:
                self._complete(lp, req, target, plan, request)

            try:
                inline = engine.inline
                queued = engine.submit(
                    inputs,
                    priority=plan.priority,
                    timeout_us=plan.timeout_us,
                    callback=done,
                    instance=lp.index if inline else None,
                    checked_batch=plan.batch,
                )
                if plan.batch is None and not plan.inline:  # checked once: the same layout passes again
                    plan.batch = queued.batch
                if inline:
                    self._kick(lp, engine)
                return
            except EngineDraining:
                replacement = self._models.get(name)
                if replacement is None or replacement is engine:
                    raise
                engine = replacement
                # the plan checked the outputs against the old engine's: check them again
                plan = lp.plans.plan(engine, body, header_length)
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

    def _complete(self, lp: _EventLoop, req: InferRequest, engine: Engine, plan: InferPlan, request: Request) -> None:
        """Serialize the response where the batch ran: on the connection's own loop (an inline engine)
        answer at once, on an engine worker answer from there (:meth:`Request.respond_from_thread`)."""
        try:
            if req.error is None:
                response = plan.respond(engine, req.outputs, keep_alive_head)
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
        if lp.ident == threading.get_ident():
            request.respond(response)
        else:
            request.respond_from_thread(response)


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
