"""Load generator for OpenAI-compatible LM servers: streaming requests, timed per SSE chunk.

:func:`run_load` drives ``/v1/completions`` (or ``/v1/chat/completions``) with ``stream: true``
from ``concurrency`` closed-loop clients in one asyncio thread, each on its own keep-alive HTTP/1.1
connection, and returns one :class:`~.llm_stats.Generation` per request with the arrival time of
every chunk that carried generated text. It speaks raw HTTP over asyncio streams (no client
library's buffering between the socket and the timestamps) and decodes chunked transfer encoding
(:class:`ChunkedDecoder`), server-sent events (:class:`SSEParser`) and OpenAI's chunk objects
(:func:`parse_chunk`); those three are pure and tested on their own.

Every system gets the same requests: the same prompt texts in the same order, ``max_tokens``,
greedy sampling, and ``ignore_eos`` (plus what a peer needs instead, in ``extra``), so every
request generates exactly ``max_tokens`` tokens where the server honours it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BenchError
from .llm_stats import Generation


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 ``Transfer-Encoding: chunked`` body.

    :meth:`feed` takes bytes as they come off the socket and returns the payload bytes they
    complete; :attr:`done` turns True after the last (zero-size) chunk and its trailer, and
    :attr:`rest` holds whatever came after it (the next response on a keep-alive connection).
    BenchError for a malformed size line.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = -1  # payload bytes left in the current chunk (+2 for its CRLF); -1: at a size line
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while not self.done:
            if self._left == -2:  # waiting for the empty line after the zero chunk
                end = self._buf.find(b"\r\n")
                if end < 0:
                    break
                del self._buf[: end + 2]
                self.done, self.rest = True, bytes(self._buf)
                break
            if self._left < 0:
                eol = self._buf.find(b"\r\n")
                if eol < 0:
                    break
                line = bytes(self._buf[:eol]).split(b";", 1)[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    raise BenchError(f"bad chunk size line {bytes(self._buf[:eol])[:40]!r}") from None
                del self._buf[: eol + 2]
                if size == 0:  # no trailers expected: an empty line ends the body
                    self._left = -2
                    continue
                self._left = size + 2
            else:
                take = min(self._left, len(self._buf))
                payload = max(0, min(take, self._left - 2))
                out += self._buf[:payload]
                del self._buf[:take]
                self._left -= take
                if self._left == 0:
                    self._left = -1
                elif not self._buf:
                    break
        return bytes(out)


class SSEParser:
    """Incremental parser of a ``text/event-stream``: :meth:`feed` returns the ``data`` of every
    event the bytes complete (multi-line data joined with newlines; comments and other fields
    ignored). Lines may end in LF or CRLF; an event ends at an empty line."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        events: list[str] = []
        while True:
            eol = self._buf.find(b"\n")
            if eol < 0:
                break
            line = self._buf[:eol].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buf = self._buf[eol + 1 :]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events


@dataclass(frozen=True)
class Chunk:
    """What one SSE event of an OpenAI stream says: generated text, usage, end of stream."""

    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    done: bool = False
    error: str | None = None


def parse_chunk(data: str) -> Chunk:
    """One SSE ``data`` payload of ``/v1/completions`` or ``/v1/chat/completions`` streaming.

    ``[DONE]`` ends the stream; an ``{"error": ...}`` object is an error; otherwise the first
    choice's ``text`` (completions) or ``delta.content`` (chat) and ``finish_reason``, and the
    ``usage`` counts when the chunk has them (``stream_options.include_usage``).
    """
    if data.strip() == "[DONE]":
        return Chunk(done=True)
    try:
        obj = json.loads(data)
    except ValueError:
        return Chunk(error=f"not JSON: {data[:80]!r}")
    if not isinstance(obj, dict):
        return Chunk(error=f"not an object: {data[:80]!r}")
    if "error" in obj:
        err = obj["error"]
        return Chunk(error=str(err.get("message", err) if isinstance(err, dict) else err))
    text, finish = "", None
    choices = obj.get("choices") or []
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = (choice.get("text") if "text" in choice else delta.get("content")) or ""
        finish = choice.get("finish_reason")
    usage = obj.get("usage") or {}
    return Chunk(
        text=text,
        finish_reason=finish,
        completion_tokens=usage.get("completion_tokens"),
        prompt_tokens=usage.get("prompt_tokens"),
    )


@dataclass(frozen=True)
class Target:
    """An OpenAI-compatible server to drive: ``url`` (``http://host:port``), the served model's
    name, the route, extra JSON fields for every request, and extra headers (an API key)."""

    url: str
    model: str
    path: str = "/v1/completions"
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.url.removeprefix("http://").rstrip("/")
        host, _, port = rest.partition(":")
        return host, int(port or 80)

    def body(self, prompt: str, max_tokens: int) -> bytes:
        """The request body for ``prompt``: streaming, greedy, ``max_tokens``, ``ignore_eos``."""
        obj: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
        if self.path.endswith("/chat/completions"):
            obj["messages"] = [{"role": "user", "content": prompt}]
        else:
            obj["prompt"] = prompt
        obj.update(self.extra)
        return json.dumps(obj).encode()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and the bytes read past the head."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("connection closed before the response head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


class _Connection:
    """One keep-alive connection of one client; reopened after the server closes it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):  # already reset by the server: nothing left to close
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, prompt: str, max_tokens: int, timeout_s: float) -> Generation:
        """Send one streaming request and time its chunks. Errors end up in the record."""
        target = self.target
        host, port = target.host_port
        body = target.body(prompt, max_tokens)
        head = f"POST {target.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        head += "Accept: text/event-stream\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        record = Generation(start=time.perf_counter())
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(host, port)
            self.writer.write(head.encode() + body)
            await asyncio.wait_for(self._read(record), timeout_s)
        except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, BenchError) as exc:
            record.ok, record.error = False, f"{type(exc).__name__}: {exc}"
            await self.close()
        if not record.end:
            record.end = time.perf_counter()
        return record

    async def _read(self, record: Generation) -> None:
        assert self.reader is not None
        reader = self.reader
        status, headers, rest = await _read_head(reader)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = int(headers["content-length"]) if "content-length" in headers else None
        closing = headers.get("connection", "").lower() == "close"
        decoder = ChunkedDecoder() if chunked else None
        sse = SSEParser()
        received = 0
        body = bytearray()
        data = rest
        while True:
            now = time.perf_counter()
            if data:
                payload = decoder.feed(data) if decoder is not None else data
                received += len(data)
                if status != 200:
                    body += payload
                else:
                    self._events(record, sse.feed(payload), now)
            if decoder is not None and decoder.done:
                break
            if length is not None and received >= length:
                break
            data = await reader.read(65536)
            if not data:
                if decoder is not None or length is not None:
                    raise ConnectionError("connection closed mid-response")
                closing = True
                break
        record.end = time.perf_counter()
        if closing:
            await self.close()
        if status != 200:
            record.ok = False
            record.error = f"HTTP {status}: {bytes(body[:200]).decode(errors='replace')}"
        elif record.error is not None:
            record.ok = False
        elif not record.arrivals:
            record.ok, record.error = False, "no generated text in the stream"
        if record.completion_tokens == 0:
            record.completion_tokens = len(record.arrivals)

    @staticmethod
    def _events(record: Generation, events: list[str], now: float) -> None:
        for data in events:
            chunk = parse_chunk(data)
            if chunk.error is not None:
                record.error = chunk.error
                continue
            if chunk.text:
                record.arrivals.append(now)
            if chunk.finish_reason is not None:
                record.finish_reason = chunk.finish_reason
            if chunk.completion_tokens is not None:
                record.completion_tokens = int(chunk.completion_tokens)
            if chunk.prompt_tokens is not None:
                record.prompt_tokens = int(chunk.prompt_tokens)


async def _closed_loop(
    target: Target, prompts: Sequence[str], max_tokens: int, concurrency: int, timeout_s: float
) -> list[Generation]:
    queue = list(enumerate(prompts))
    queue.reverse()  # pop() takes them in order
    results: list[tuple[int, Generation]] = []

    async def client() -> None:
        conn = _Connection(target)
        try:
            while queue:
                index, prompt = queue.pop()
                results.append((index, await conn.request(prompt, max_tokens, timeout_s)))
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return [g for _, g in sorted(results, key=lambda item: item[0])]


def run_load(
    target: Target, prompts: Sequence[str], max_tokens: int, concurrency: int, *, timeout_s: float = 600.0
) -> list[Generation]:
    """Send every prompt of ``prompts`` once, from ``concurrency`` closed-loop clients (each sends
    its next request when its stream has ended), and return their records in prompt order.

    ``timeout_s`` bounds one request; a request that fails is recorded with its error, not raised.
    Every request asks for exactly ``max_tokens`` (``ignore_eos``): one that ends with fewer (a
    server that cut it short) is recorded as failed, so a cut stream never counts as throughput.
    BenchError for a concurrency below 1.
    """
    if concurrency < 1:
        raise BenchError(f"concurrency must be >= 1, got {concurrency}")
    records = asyncio.run(_closed_loop(target, prompts, max_tokens, concurrency, timeout_s))
    for record in records:
        if record.ok and record.completion_tokens < max_tokens:
            record.ok = False
            record.error = (
                f"ended after {record.completion_tokens} of {max_tokens} tokens ({record.finish_reason or 'no reason'})"
            )
    return records


__all__ = ["Chunk", "ChunkedDecoder", "SSEParser", "Target", "parse_chunk", "run_load"]
