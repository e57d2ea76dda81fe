"""The clients a benchmark sends its queries through, and the HTTP reads of a server's state.

A client is called with no arguments, sends one query (the same payload every time) and returns
an HTTP-like status (200, 400, 503; 599 for a transport failure). :class:`EngineClient` calls
``Engine.submit`` in-process; :class:`HttpClient` sends a prebuilt request over raw keep-alive
HTTP/1.1 (binary OIP, OIP JSON or any body that a peer takes), one pooled connection per call in
flight. Both are thread-safe.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from ..errors import BenchError, RequestError, ServiceUnavailable


class Client(Protocol):
    """Sends one query (the same payload every time); returns the HTTP-like status."""

    def __call__(self) -> int: ...


class EngineClient:
    """In-process: ``engine.submit`` + wait + release (what the server does minus HTTP)."""

    def __init__(self, engine: Any, inputs: Mapping[str, np.ndarray]) -> None:
        self.engine = engine
        self.inputs = dict(inputs)

    def __call__(self) -> int:
        try:
            request = self.engine.submit(self.inputs)
            request.wait()
            request.release()
            return 200
        except ServiceUnavailable:
            return 503
        except RequestError:
            return 400


class HttpClient:
    """Raw HTTP/1.1 over keep-alive sockets, pooled: a call takes an idle connection or opens one.

    Connections outlive the threads that used them, so consecutive runs with new worker threads
    reuse them (a server sees no connection churn from the load generator).
    """

    def __init__(self, host: str, port: int, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
        for key, value in (headers or {}).items():
            head += f"{key}: {value}\r\n"
        self.request = head.encode("latin-1") + b"\r\n" + body
        self.address = (host, port)
        self._idle: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[socket.socket, Any]:
        """An idle pooled connection, or a new one: (socket, its read file). Hand it back with
        :meth:`give` when its last response is fully read, or :meth:`drop` it."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        sock = socket.create_connection(self.address, timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, sock.makefile("rb")

    def give(self, conn: tuple[socket.socket, Any]) -> None:
        with self._lock:
            self._idle.append(conn)

    @staticmethod
    def drop(conn: tuple[socket.socket, Any]) -> None:
        conn[1].close()
        conn[0].close()

    def __call__(self) -> int:
        for attempt in (0, 1):
            conn = self.take()
            sock, reader = conn
            try:
                sock.sendall(self.request)
                status_line = reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                status = int(status_line.split()[1])
                length = 0
                close = False
                chunked = False
                while True:
                    line = reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    key, _, value = line.decode("latin-1").partition(":")
                    key = key.strip().lower()
                    if key == "content-length":
                        length = int(value)
                    elif key == "connection" and value.strip().lower() == "close":
                        close = True
                    elif key == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                if chunked:
                    while True:
                        size = int(reader.readline().split(b";")[0], 16)
                        reader.read(size + 2)
                        if size == 0:
                            break
                elif length:
                    reader.read(length)
                if close:
                    self.drop(conn)
                else:
                    self.give(conn)
                return status
            except (OSError, ValueError, IndexError):
                self.drop(conn)
                if attempt:
                    return 599
        return 599

    def close(self) -> None:
        """Close the idle connections (connections in use are closed by their callers' errors)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self.drop(conn)


def http_json(url: str, timeout: float = 10.0) -> Any:
    """GET ``url`` and decode JSON (loopback servers only). BenchError, one line, when nothing
    answers there, the server answers with an HTTP error, or the body is not JSON."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise BenchError(f"{url}: no server answers ({exc.reason}); start one with `edgeds serve BUNDLE`") from exc
    except http.client.HTTPException as exc:  # something answers there, not in HTTP (e.g. sshd's banner)
        said = " ".join(str(exc).split())[:80]
        raise BenchError(f"{url}: no usable answer: the server there does not speak HTTP ({said!r})") from exc
    except (OSError, ValueError) as exc:  # a reset connection, a timeout, a body that is not JSON
        raise BenchError(f"{url}: no usable answer ({' '.join(str(exc).split())})") from exc


def stats_snapshot(url: str, model: str) -> Any:
    """An EngineStats-like view of ``GET /v2/models/{model}/stats`` (for batch-size deltas)."""
    data = http_json(f"{url}/v2/models/{model}/stats")["model_stats"][0]
    hist = {int(b["batch_size"]): int(b["count"]) for b in data.get("batch_stats", [])}
    return SimpleNamespace(
        execution_count=int(data["execution_count"]), inference_count=int(data["inference_count"]), batch_sizes=hist
    )


__all__ = ["Client", "EngineClient", "HttpClient", "http_json", "stats_snapshot"]
