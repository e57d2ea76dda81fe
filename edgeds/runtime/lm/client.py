"""A small chat client: a conversation's history, answered token by token by a served model (over
the OpenAI API, any server that speaks it) or by an engine in this process.

:class:`ChatSession` keeps the messages and streams each answer from a :class:`Replier`:
:class:`RemoteReplier` (``POST /v1/chat/completions`` with ``stream: true``, read as Server-Sent
Events with the standard library's HTTP client) or :class:`LocalReplier` (an
:class:`~edgeds.runtime.lm.engine.LMEngine`). What ``edgeds chat`` and ``edgeds run --prompt`` use.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from ...errors import EdgedsError, InferenceError, RequestError, ServiceUnavailable
from .engine import Generation, LMEngine
from .openai_api import chat_completion
from .sampling import Sampling
from .server import sampling_params


class Replier(Protocol):
    """Streams the assistant's answer to ``messages`` as text deltas."""

    def reply(self, messages: Sequence[dict[str, str]], sampling: Sampling) -> Iterator[str]: ...


class RemoteReplier:
    """A server's OpenAI API at ``url`` (``http(s)://host:port``, an optional path prefix before
    ``/v1``). ``model``: the model to ask (None: the first ``GET /v1/models`` lists). ``api_key``
    is sent as a bearer token; ``tls``: the client context of an HTTPS server (None: the system's
    trust). ``timeout_s`` bounds connecting and each read. Answers 400/413 raise
    :class:`~edgeds.errors.RequestError`, 429/503 and an unreachable server
    :class:`~edgeds.errors.ServiceUnavailable`, an error mid-stream
    :class:`~edgeds.errors.InferenceError`, any other status :class:`~edgeds.errors.EdgedsError`."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EdgedsError(f"not a server URL: {url!r} (http://host:port or https://host:port)")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/").removesuffix("/v1")
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._tls = tls
        self._timeout = timeout_s
        self.model = model or self._first_model()

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[http.client.HTTPConnection, Any]:
        connection = self._connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, self._prefix + path, data, self._headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ServiceUnavailable(f"cannot reach {self._host}:{self._port}: {exc}") from exc
        if response.status != 200:
            text = response.read().decode("utf-8", "replace")
            connection.close()
            message = f"the server answered {response.status}: {_error_message(text)}"
            if response.status in (400, 413):
                raise RequestError(message)
            if response.status in (429, 503):
                raise ServiceUnavailable(message)
            raise EdgedsError(message)
        return connection, response

    def _first_model(self) -> str:
        connection, response = self._request("GET", "/v1/models", None)
        try:
            data = json.loads(response.read())
        finally:
            connection.close()
        models = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
        if not models or not isinstance(models[0], str):
            raise EdgedsError("the server serves no model (GET /v1/models is empty)")
        return models[0]

    def reply(self, messages: Sequence[dict[str, str]], sampling: Sampling) -> Iterator[str]:
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "stream": True}
        for name in ("max_tokens", "temperature", "top_p", "top_k", "seed"):
            value = getattr(sampling, name)
            if value is not None:
                body[name] = value
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        connection, response = self._request("POST", "/v1/chat/completions", body)
        try:
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise ServiceUnavailable(f"the stream from {self._host}:{self._port} broke: {exc}") from exc
                if not line:
                    raise ServiceUnavailable("the server ended the stream before [DONE]")
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                chunk = json.loads(payload)
                if "error" in chunk:
                    raise InferenceError(f"the server failed mid-answer: {_error_message(json.dumps(chunk))}")
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        yield text
        finally:
            connection.close()


class LocalReplier:
    """An engine in this process (started; its owner closes it). A request the runtime failed
    raises :class:`~edgeds.errors.InferenceError` (after the text it had produced)."""

    def __init__(self, engine: LMEngine) -> None:
        self.engine = engine

    def reply(self, messages: Sequence[dict[str, str]], sampling: Sampling) -> Iterator[str]:
        generation = _submit(self.engine, messages, sampling)
        try:
            for event in generation:
                if event.text:
                    yield event.text
                if event.error is not None:
                    raise InferenceError(event.error)
        finally:
            generation.cancel()  # nothing once finished; frees the sequence when the reader stops early


def complete(
    engine: LMEngine,
    messages: Sequence[dict[str, str]],
    sampling: Sampling,
    on_text: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Answer ``messages`` with an engine in this process, calling ``on_text`` with each text delta
    as it comes; the OpenAI ``chat.completion`` object of the whole answer.
    :class:`~edgeds.errors.InferenceError` when the runtime failed the request."""
    generation = _submit(engine, messages, sampling)
    pieces: list[str] = []
    finish_reason = None
    prompt_tokens, new_tokens = generation.prompt_tokens, 0
    try:
        for event in generation:
            if event.text:
                pieces.append(event.text)
                if on_text is not None:
                    on_text(event.text)
            if event.error is not None:
                raise InferenceError(event.error)
            if event.finished:
                finish_reason = event.finish_reason
                if event.usage is not None:
                    prompt_tokens, new_tokens = event.usage.prompt_tokens, event.usage.completion_tokens
    finally:
        generation.cancel()  # nothing once finished; frees the sequence when interrupted
    ident = f"chatcmpl-local-{generation.id}"
    return chat_completion(
        ident, int(time.time()), engine.name, "".join(pieces), finish_reason, prompt_tokens, new_tokens
    )


def _submit(engine: LMEngine, messages: Sequence[dict[str, str]], sampling: Sampling) -> Generation:
    ids = engine.encode(engine.chat_prompt(list(messages)))
    params = sampling_params(sampling, len(ids), engine.spec.context_length, engine.generation)
    return engine.submit(ids, params)


class ChatSession:
    """A conversation: ``system`` (optional) and the turns so far; :meth:`ask` streams the next answer."""

    def __init__(self, replier: Replier, system: str | None = None, sampling: Sampling | None = None) -> None:
        self.replier = replier
        self.sampling = sampling if sampling is not None else Sampling()
        self.messages: list[dict[str, str]] = [] if not system else [{"role": "system", "content": system}]
        self._system = len(self.messages)

    def ask(self, text: str) -> Iterator[str]:
        """Stream the answer to ``text``; the turn joins the history once the answer is whole."""
        messages = [*self.messages, {"role": "user", "content": text}]
        pieces: list[str] = []
        for piece in self.replier.reply(messages, self.sampling):
            pieces.append(piece)
            yield piece
        self.messages = [*messages, {"role": "assistant", "content": "".join(pieces)}]

    def reset(self) -> None:
        """Forget the turns (the system message stays)."""
        del self.messages[self._system :]


def _error_message(text: str) -> str:
    """The message of an error body (OpenAI's or KServe's shape), else the text itself (one line)."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text.strip().splitlines()[0] if text.strip() else "(no body)"
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


__all__ = ["ChatSession", "LocalReplier", "RemoteReplier", "Replier", "complete"]
