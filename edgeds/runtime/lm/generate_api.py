"""The KServe / Triton generate extension's wire format: ``POST /v2/models/{m}/generate`` and
``/generate_stream`` bodies checked, and the JSON of their answers.

Pure functions, no sockets and no engine (:mod:`edgeds.runtime.lm.server` routes and streams).
A request is ``{"text_input": str, "parameters": {...}}``; the sampling fields may also sit at the
top level, as Triton's clients send them. Taken: ``max_tokens`` (or ``max_new_tokens``),
``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop`` (or ``stop_words``), ``ignore_eos``,
``stream`` (ignored: the route decides) and an ``id`` echoed back; anything else is refused with one
line naming it. The answer is ``{"id"?, "model_name", "model_version", "text_output",
"finish_reason", "usage"}``; ``generate_stream`` sends one such object per text delta as a
Server-Sent Event (``data: {...}``), the last with ``finish_reason`` and ``usage``. Errors are
KServe's ``{"error": "message"}`` (a 429 with ``Retry-After``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..http_syntax import HttpError
from .openai_api import usage
from .sampling import BadField, Sampling, read_sampling, stop_strings

_SAMPLING = frozenset(
    {"max_tokens", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_words", "ignore_eos"}
)
_TOP_LEVEL = frozenset({"id", "text_input", "parameters", "stream"}) | _SAMPLING


@dataclass(frozen=True)
class GenerateRequest:
    """A checked generate body: the prompt text, how to sample, and the client's ``id`` (or None)."""

    text_input: str
    sampling: Sampling
    id: str | None


def parse_generate(body: bytes | memoryview) -> GenerateRequest:
    """A generate body checked; HttpError 400 with one line naming the field."""
    try:
        data = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"the generate request is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HttpError(400, "the generate request must be a JSON object with text_input")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise HttpError(400, f"unknown field {unknown[0]!r} (taken: text_input, parameters, id and sampling fields)")
    text = data.get("text_input")
    if not isinstance(text, str):
        raise HttpError(400, "text_input must be a string (the prompt)")
    ident = data.get("id")
    if ident is not None and not isinstance(ident, str):
        raise HttpError(400, "id must be a string")
    parameters = data.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise HttpError(400, "parameters must be an object")
    unknown = sorted(set(parameters) - _SAMPLING - {"stream"})
    if unknown:
        raise HttpError(400, f"unknown parameter {unknown[0]!r} (taken: {', '.join(sorted(_SAMPLING))})")
    merged: dict[str, Any] = {k: v for k, v in data.items() if k in _SAMPLING}
    merged.update(parameters)
    try:
        sampling = read_sampling(merged, ("max_tokens", "max_new_tokens"))
        if merged.get("stop_words") is not None:
            extra = stop_strings(merged["stop_words"], "stop_words")
            sampling = replace(sampling, stop=tuple(dict.fromkeys(sampling.stop + extra)))
    except BadField as exc:
        raise HttpError(400, str(exc)) from exc
    return GenerateRequest(text, sampling, ident)


def generate_answer(
    request: GenerateRequest,
    model: str,
    version: str,
    text: str,
    finish_reason: str | None,
    prompt_tokens: int,
    new_tokens: int,
) -> dict[str, Any]:
    """The answer of ``/generate``, or the last event of ``/generate_stream`` (its ``text`` the last delta)."""
    answer: dict[str, Any] = {} if request.id is None else {"id": request.id}
    answer.update(
        model_name=model,
        model_version=version,
        text_output=text,
        finish_reason=finish_reason,
        usage=usage(prompt_tokens, new_tokens),
    )
    return answer


class DeltaFormat:
    """The SSE events of one ``generate_stream`` answer, as bytes for :meth:`Stream.send`."""

    __slots__ = ("_head", "_request")

    def __init__(self, request: GenerateRequest, model: str, version: str) -> None:
        self._request = request
        ident = "" if request.id is None else f'"id":{json.dumps(request.id)},'
        self._head = f'data: {{{ident}"model_name":{json.dumps(model)},"model_version":{json.dumps(version)},'

    def delta(self, text: str) -> bytes:
        """The event of a text delta (nothing for empty text)."""
        return f'{self._head}"text_output":{json.dumps(text)}}}\n\n'.encode() if text else b""

    def closing(self, finish_reason: str | None, prompt_tokens: int, new_tokens: int) -> bytes:
        """The last event: no text, the finish reason and the usage."""
        counts = json.dumps(usage(prompt_tokens, new_tokens), separators=(",", ":"))
        finish = json.dumps(finish_reason)
        return f'{self._head}"text_output":"","finish_reason":{finish},"usage":{counts}}}\n\n'.encode()

    @staticmethod
    def error(message: str) -> bytes:
        """An error met mid-stream (the answer's status is sent already)."""
        return f"data: {json.dumps({'error': message})}\n\n".encode()


__all__ = ["DeltaFormat", "GenerateRequest", "generate_answer", "parse_generate"]
