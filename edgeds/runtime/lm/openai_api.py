"""The OpenAI API's wire format: request bodies checked into plain requests, and the JSON of
answers, stream chunks and errors (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``).

Pure functions, no sockets and no engine: :mod:`edgeds.runtime.lm.server` routes, submits and
streams. What is taken (the rest of the OpenAI parameters that change the output are refused with
one clear line, never silently ignored): ``model``, ``messages`` (roles ``system``/``developer``,
``user``, ``assistant``; content a string or a list of text parts) or ``prompt`` (a string, a list
of one string, or token ids), ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p``,
``top_k`` and ``ignore_eos`` (vLLM's extensions), ``seed``, ``stop``, ``n`` (1 only), ``stream``,
``stream_options.include_usage``. Parameters that change nothing here (``user``, ``metadata``,
``store``, ``service_tier``...) are ignored, as by vLLM.

Errors (:class:`ApiError`) answer ``{"error": {"message", "type", "param", "code"}}``, the shape the
``openai`` client reads; the status picks the type: 400 ``invalid_request_error``, 401
``authentication_error``, 404 ``not_found_error``, 429 ``rate_limit_error`` (with ``Retry-After``),
503 ``service_unavailable``, 500 ``server_error``.

Streams are Server-Sent Events, one ``data: {chunk}`` per text delta, ended by ``data: [DONE]``
(:data:`DONE`). A chat stream opens with a chunk whose delta is the assistant's role, and ends with
an empty delta carrying ``finish_reason``; with ``include_usage`` every chunk has ``"usage": null``
and one last chunk has no choices and the usage. A chunk's JSON is its stream's fixed prefix, the
delta's JSON string and a fixed suffix (:class:`ChunkFormat`): one ``json.dumps`` of the text per
token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..http_syntax import Response
from .sampling import BadField, Sampling, flag, integer, read_sampling

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Parameters that change the output and that this server does not do: refused when set.
_UNSUPPORTED = {
    "tools": "tool calls",
    "functions": "function calls",
    "tool_choice": "tool calls",
    "function_call": "function calls",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit biases",
    "presence_penalty": "presence penalties",
    "frequency_penalty": "frequency penalties",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "suffix": "suffixes",
    "echo": "echoing the prompt",
    "best_of": "best_of",
}
DONE = b"data: [DONE]\n\n"
MAX_MESSAGES = 1024


class ApiError(Exception):
    """An answer with ``status`` and the OpenAI error body; ``fields``: extra header fields (a 429's
    ``Retry-After``, a 401's ``WWW-Authenticate``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        fields: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.fields = fields

    def response(self) -> Response:
        return error_response(self.status, str(self), param=self.param, code=self.code, fields=self.fields)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object of an answer with ``status``."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    fields: tuple[tuple[str, str], ...] = (),
) -> Response:
    body = json.dumps(error_body(status, message, param, code), separators=(",", ":")).encode()
    return Response(status, body, fields=fields)


@dataclass(frozen=True)
class ChatRequest:
    """A checked ``/v1/chat/completions`` body. ``messages``: role and text of each, in order."""

    model: str
    messages: tuple[dict[str, str], ...]
    sampling: Sampling
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class CompletionRequest:
    """A checked ``/v1/completions`` body. ``prompt``: text, or token ids."""

    model: str
    prompt: str | tuple[int, ...]
    sampling: Sampling
    stream: bool
    include_usage: bool


def read_json(body: bytes | memoryview) -> dict[str, Any]:
    """A request body as a JSON object; ApiError 400 otherwise."""
    try:
        value = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(value).__name__}")
    return value


def parse_chat(body: bytes | memoryview) -> ChatRequest:
    """A ``/v1/chat/completions`` body checked; ApiError 400 with one line naming the field."""
    data = read_json(body)
    try:
        model, sampling, stream, usage = _common(data, ("max_completion_tokens", "max_tokens"))
        messages = _messages(data.get("messages"))
        response_format = data.get("response_format")
        if response_format is not None and (
            not isinstance(response_format, dict) or response_format.get("type", "text") != "text"
        ):
            raise BadField("response_format", "response_format: only plain text is served here")
    except BadField as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    return ChatRequest(model, messages, sampling, stream, usage)


def parse_completion(body: bytes | memoryview) -> CompletionRequest:
    """A ``/v1/completions`` body checked; ApiError 400 with one line naming the field."""
    data = read_json(body)
    try:
        model, sampling, stream, usage = _common(data, ("max_tokens",))
        prompt = _prompt(data.get("prompt"))
    except BadField as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    return CompletionRequest(model, prompt, sampling, stream, usage)


def _common(data: Mapping[str, Any], max_tokens_names: tuple[str, ...]) -> tuple[str, Sampling, bool, bool]:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadField("model", "model is required: the served model's name (GET /v1/models lists it)")
    for name, what in _UNSUPPORTED.items():
        value = data.get(name)
        if value is None or value is False or value == 0 or value == [] or value == {}:
            continue
        if name != "best_of" or value != 1:  # best_of 1 is what is done anyway
            raise BadField(name, f"{name}: this server does not do {what}")
    n = integer(data, "n", low=1)
    if n not in (None, 1):
        raise BadField("n", f"n must be 1 (one choice per request), not {n}")
    stream = flag(data, "stream")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise BadField("stream_options", "stream_options must be an object")
        if not stream:
            raise BadField("stream_options", "stream_options is only allowed with stream: true")
        include_usage = flag(options, "include_usage")
    return model, read_sampling(data, max_tokens_names), stream, include_usage


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise BadField("messages", "messages must be a non-empty list of {role, content}")
    if len(value) > MAX_MESSAGES:
        raise BadField("messages", f"messages takes at most {MAX_MESSAGES} entries, not {len(value)}")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadField(where, f"{where} must be an object with role and content")
        role = _ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            shown = message.get("role")
            raise BadField(f"{where}.role", f"{where}.role must be system, developer, user or assistant, not {shown!r}")
        out.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    return tuple(out)


def _content(value: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadField(where, f"{where}: only text parts ({{type: text, text}}) are taken")
            texts.append(part["text"])
        return "".join(texts)
    raise BadField(where, f"{where} must be a string or a list of text parts")


def _prompt(value: Any) -> str | tuple[int, ...]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]  # a batch of one
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if any(t < 0 for t in value):
            raise BadField("prompt", "prompt token ids must not be negative")
        return tuple(value)
    if isinstance(value, list) and len(value) > 1:
        raise BadField("prompt", "prompt: one prompt per request (send several requests; they are batched)")
    raise BadField("prompt", "prompt must be a string or a list of token ids")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    ident: str, created: int, model: str, text: str, finish_reason: str | None, prompt_tokens: int, new_tokens: int
) -> dict[str, Any]:
    """The answer of a non-streamed chat completion."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, new_tokens),
    }


def text_completion(
    ident: str, created: int, model: str, text: str, finish_reason: str | None, prompt_tokens: int, new_tokens: int
) -> dict[str, Any]:
    """The answer of a non-streamed completion."""
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, new_tokens),
    }


class ChunkFormat:
    """The SSE events of one streamed answer (chat when ``chat``, else a text completion). Each
    method returns the bytes of whole events, ready for :meth:`Stream.send`."""

    __slots__ = ("_chat", "_head", "_usage_null", "include_usage")

    def __init__(self, ident: str, created: int, model: str, chat: bool, include_usage: bool) -> None:
        self._chat = chat
        self.include_usage = include_usage
        obj = "chat.completion.chunk" if chat else "text_completion"
        ident_json, model_json = json.dumps(ident), json.dumps(model)
        self._head = f'data: {{"id":{ident_json},"object":"{obj}","created":{created},"model":{model_json},'
        self._usage_null = ',"usage":null' if include_usage else ""

    def _choice(self, delta_json: str, finish_reason: str | None) -> bytes:
        finish = "null" if finish_reason is None else json.dumps(finish_reason)
        if self._chat:
            choice = f'{{"index":0,"delta":{delta_json},"logprobs":null,"finish_reason":{finish}}}'
        else:
            choice = f'{{"index":0,"text":{delta_json},"logprobs":null,"finish_reason":{finish}}}'
        return f'{self._head}"choices":[{choice}]{self._usage_null}}}\n\n'.encode()

    def opening(self) -> bytes:
        """The first event: the assistant's role (chat); nothing for a completion."""
        return self._choice('{"role":"assistant","content":""}', None) if self._chat else b""

    def delta(self, text: str) -> bytes:
        """The event of a text delta (nothing for empty text)."""
        if not text:
            return b""
        dumped = json.dumps(text)
        return self._choice(f'{{"content":{dumped}}}' if self._chat else dumped, None)

    def closing(self, finish_reason: str | None, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The last events: the finish reason, the usage (when asked for) and ``[DONE]``."""
        out = self._choice("{}" if self._chat else '""', finish_reason)
        if self.include_usage:
            counts = json.dumps(usage(prompt_tokens, completion_tokens), separators=(",", ":"))
            out += f'{self._head}"choices":[],"usage":{counts}}}\n\n'.encode()
        return out + DONE

    def error(self, message: str, status: int = 500) -> bytes:
        """An error met mid-stream (the answer's status is sent already), then ``[DONE]``."""
        body = json.dumps(error_body(status, message), separators=(",", ":"))
        return f"data: {body}\n\n".encode() + DONE


def model_list(models: Sequence[tuple[str, int, int]]) -> dict[str, Any]:
    """``GET /v1/models``: (name, created, context length) of each served model."""
    return {"object": "list", "data": [model_card(*m) for m in models]}


def model_card(name: str, created: int, context_length: int) -> dict[str, Any]:
    """One entry of ``/v1/models`` (and ``GET /v1/models/{name}``)."""
    return {"id": name, "object": "model", "created": created, "owned_by": "edgeds", "max_model_len": context_length}


def now() -> int:
    """The ``created`` field: Unix seconds."""
    return int(time.time())


__all__ = [
    "DONE",
    "ApiError",
    "ChatRequest",
    "ChunkFormat",
    "CompletionRequest",
    "chat_completion",
    "error_body",
    "error_response",
    "model_card",
    "model_list",
    "parse_chat",
    "parse_completion",
    "read_json",
    "text_completion",
    "usage",
]
