"""Load patterns: how queries are sent to a client over time, each returning raw :class:`Samples`.

Closed loops keep ``concurrency`` queries in flight, each sent when the previous one is answered:
:func:`closed_loop` with a thread per query in flight (any client), :func:`engine_closed_loop`
with no client threads (engine completion callbacks submit the next request) and
:func:`http_closed_loop` over keep-alive connections driven by one thread. :func:`poisson_open_loop`
sends at exponential gaps and counts latency from the scheduled arrival. Requests sent during the
warm-up are not recorded.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import BenchError, RequestError, ServiceUnavailable
from .clients import Client, HttpClient
from .stats import Samples

log = logging.getLogger(__name__)


def http_closed_loop(
    client: HttpClient,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    max_queries: int | None = None,
) -> Samples:
    """The closed loop of :func:`closed_loop` over ``client``'s request, driven by one thread.

    ``concurrency`` keep-alive connections each send the next request as soon as the previous
    response is complete; a selector waits on all of them. Without a thread per connection, the
    load generator takes less of the CPU it shares with the server under test (no thread
    wake-ups or GIL hand-offs per response). Connections go back to ``client``'s pool.
    """
    import selectors

    samples = Samples()
    selector = selectors.DefaultSelector()
    conns = [client.take() for _ in range(concurrency)]
    start = time.perf_counter()
    t_measure, t_end = start + warmup_s, start + warmup_s + duration_s
    budget = max_queries
    pending: dict[int, tuple[float, bytearray]] = {}  # fileno -> (request start, bytes received)

    def send(sock: socket.socket) -> bool:
        nonlocal budget
        now = time.perf_counter()
        if now >= t_end or budget == 0:
            return False
        if budget is not None:
            budget -= 1
        pending[sock.fileno()] = (now, bytearray())
        with contextlib.suppress(OSError):  # a reset shows as the empty read that follows: a 599
            sock.sendall(client.request)
        return True

    for sock, _ in conns:  # plain blocking calls: with a timeout, Python polls before every send and recv
        sock.settimeout(None)
    by_fd = {sock.fileno(): sock for sock, _ in conns}
    live = 0
    for sock, _ in conns:
        if send(sock):
            selector.register(sock, selectors.EVENT_READ)
            live += 1
    try:
        while live:
            events = selector.select(timeout=60)
            if not events:
                raise BenchError(f"no response from {client.address} for 60 s")
            for key, _ in events:
                sock = by_fd[key.fd]
                began, data = pending[key.fd]
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                fields: dict[str, str] = {"connection": "close"}
                if not chunk:  # the server dropped the connection: a failed request, then a new one
                    status = 599
                else:
                    data += chunk
                    head_end = data.find(b"\r\n\r\n")
                    if head_end < 0:
                        continue
                    head = data[:head_end].decode("latin-1").split("\r\n")
                    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
                    if "chunked" in fields.get("transfer-encoding", "").lower():
                        if not data.endswith(b"0\r\n\r\n"):  # the last chunk
                            continue
                        status = int(head[0].split()[1])
                    else:
                        try:
                            length = int(fields.get("content-length", "0"))
                            status = int(head[0].split()[1])
                        except (ValueError, IndexError):  # not HTTP: a failed request
                            length, status, fields["connection"] = 0, 599, "close"
                        if len(data) < head_end + 4 + length:
                            continue
                if began >= t_measure:
                    samples.add(began, time.perf_counter(), status)
                del pending[key.fd]
                if fields.get("connection", "").lower() == "close":  # the server ends it: open another
                    selector.unregister(sock)
                    index = next(i for i, (s, _) in enumerate(conns) if s is sock)
                    client.drop(conns[index])
                    conns[index] = client.take()
                    sock = conns[index][0]
                    sock.settimeout(None)
                    by_fd[sock.fileno()] = sock
                    selector.register(sock, selectors.EVENT_READ)
                if not send(sock):
                    selector.unregister(sock)
                    live -= 1
    except BaseException:
        for conn in conns:
            client.drop(conn)
        raise
    finally:
        selector.close()
    for sock, reader in conns:
        sock.settimeout(60)
        client.give((sock, reader))
    return samples


def engine_closed_loop(
    engine: Any,
    inputs: Mapping[str, np.ndarray],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
) -> Samples:
    """In-process closed loop without client threads: ``concurrency`` requests stay in flight, and
    each completion callback (on the engine's worker) records its request and submits the next.

    This is how an in-process producer that reacts at once (a camera pipeline) drives the engine;
    it measures the batcher and engine without the wake-ups of ``concurrency`` blocked threads.
    """
    samples = Samples()
    lock = threading.Lock()
    done = threading.Event()
    live = [concurrency]
    start = time.perf_counter()
    t_measure, t_end = start + warmup_s, start + warmup_s + duration_s
    starts: dict[int, float] = {}

    def stop_slot() -> None:
        with lock:
            live[0] -= 1
            if live[0] == 0:
                done.set()

    def submit(slot: int) -> None:
        now = time.perf_counter()
        if now >= t_end:
            stop_slot()
            return
        starts[slot] = now
        try:
            engine.submit(inputs, callback=lambda request, slot=slot: finished(slot, request))
            return
        except ServiceUnavailable:  # queue full or engine closing: this slot stops (no retry spin)
            status = 503
        except RequestError:
            status = 400
        except Exception:  # logged and counted as a 500: never raise into the engine's worker thread
            log.exception("engine.submit failed; slot %d stops", slot)
            status = 500
        if now >= t_measure:
            with lock:
                samples.add(now, time.perf_counter(), status)
        stop_slot()

    def finished(slot: int, request: Any) -> None:
        try:
            end = time.perf_counter()
            status = 200 if request.error is None else 503 if isinstance(request.error, ServiceUnavailable) else 500
            request.release()
            began = starts[slot]
            if began >= t_measure:
                with lock:
                    samples.add(began, end, status)
        finally:
            submit(slot)

    for slot in range(concurrency):
        submit(slot)
    if not done.wait(warmup_s + duration_s + 60.0):
        raise BenchError(f"{live[0]} of {concurrency} requests still unanswered 60 s after the run")
    return samples


def closed_loop(
    client: Client,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    max_queries: int | None = None,
) -> Samples:
    """``concurrency`` workers send back to back for ``duration_s`` after ``warmup_s`` (excluded)."""
    results = [Samples() for _ in range(concurrency)]
    start_gate = threading.Barrier(concurrency + 1)
    t_measure = [0.0]
    t_end = [0.0]
    budget = [max_queries]
    lock = threading.Lock()

    def worker(index: int) -> None:
        mine = results[index]
        start_gate.wait()
        while True:
            now = time.perf_counter()
            if now >= t_end[0]:
                return
            if budget[0] is not None:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
            status = client()
            end = time.perf_counter()
            if now >= t_measure[0]:
                mine.add(now, end, status)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    t_measure[0] = now + warmup_s
    t_end[0] = now + warmup_s + duration_s
    start_gate.wait()
    for t in threads:
        t.join()
    merged = Samples()
    for r in results:
        merged.merge(r)
    return merged


def poisson_open_loop(
    client: Client, qps: float, duration_s: float, workers: int = 32, seed: int = 0
) -> tuple[Samples, float]:
    """Open loop: arrivals at exponential gaps; latency counts from the *scheduled* arrival.

    Returns the samples and the offered rate. ``workers`` bounds outstanding queries; when all are
    busy, arrivals wait (and that wait is part of their latency, as in LoadGen's Server scenario).
    """
    rng = random.Random(seed)
    arrivals: list[float] = []
    t = 0.0
    while t < duration_s:
        t += rng.expovariate(qps)
        arrivals.append(t)
    arrivals.pop()
    samples = [Samples() for _ in range(workers)]
    index = [0]
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.05

    def worker(w: int) -> None:
        mine = samples[w]
        while True:
            with lock:
                i = index[0]
                if i >= len(arrivals):
                    return
                index[0] = i + 1
            scheduled = t0 + arrivals[i]
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = client()
            mine.add(scheduled, time.perf_counter(), status)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    merged = Samples()
    for s in samples:
        merged.merge(s)
    return merged, len(arrivals) / duration_s


__all__ = [
    "closed_loop",
    "engine_closed_loop",
    "http_closed_loop",
    "poisson_open_loop",
]
