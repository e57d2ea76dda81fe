"""The LM server's wire formats: OpenAI and generate request bodies checked, answers and SSE chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeds.runtime.http_syntax import HttpError
from edgeds.runtime.lm.generate_api import DeltaFormat, generate_answer, parse_generate
from edgeds.runtime.lm.openai_api import (
    DONE,
    ApiError,
    ChunkFormat,
    chat_completion,
    error_response,
    parse_chat,
    parse_completion,
)
from edgeds.runtime.lm.sampling import Sampling


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _events(data: bytes) -> list[Any]:
    """The ``data:`` payloads of SSE bytes, JSON-decoded ([DONE] kept as the string)."""
    out: list[Any] = []
    for block in data.decode().split("\n\n"):
        if block:
            assert block.startswith("data: ")
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_chat_body_is_checked_into_messages_and_sampling() -> None:
    request = parse_chat(
        _body(
            model="m",
            messages=[
                {"role": "developer", "content": "be short"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            ],
            max_completion_tokens=7,
            temperature=0,
            top_p=0.9,
            top_k=-1,
            seed=3,
            stop="\n",
            stream=True,
            stream_options={"include_usage": True},
            user="ignored",
        )
    )
    assert request.model == "m"
    assert request.messages == ({"role": "system", "content": "be short"}, {"role": "user", "content": "hi there"})
    assert request.sampling == Sampling(max_tokens=7, temperature=0.0, top_p=0.9, top_k=0, seed=3, stop=("\n",))
    assert request.stream and request.include_usage


def test_absent_sampling_fields_leave_the_engine_defaults() -> None:
    request = parse_completion(_body(model="m", prompt=["once"]))
    assert request.prompt == "once"
    assert request.sampling == Sampling()
    assert not request.stream
    assert parse_completion(_body(model="m", prompt=[1, 2, 3])).prompt == (1, 2, 3)


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "model is required"),
        ({"model": "m", "messages": []}, "messages", "non-empty"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'tool'"),
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content", "string"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "n must be 1"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature", "[0, 2]"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p", "(0, 1]"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens", "at least 1"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop", "1 to"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs", "log prob"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, "tools", "tool calls"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
            "stream_options",
            "stream: true",
        ),
    ],
)
def test_bad_chat_bodies_get_one_line_naming_the_field(fields: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat(json.dumps(fields).encode())
    assert caught.value.status == 400
    assert caught.value.param == param
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_body_that_is_not_a_json_object_is_400() -> None:
    for body in (b"{", b"[1]", b"\xff"):
        with pytest.raises(ApiError) as caught:
            parse_chat(body)
        assert caught.value.status == 400


def test_errors_have_the_openai_shape() -> None:
    response = error_response(429, "the queue is full", code="queue_full", fields=(("Retry-After", "2"),))
    assert response.status == 429 and response.fields == (("Retry-After", "2"),)
    assert json.loads(response.body) == {
        "error": {"message": "the queue is full", "type": "rate_limit_error", "param": None, "code": "queue_full"}
    }


def test_a_chat_stream_opens_with_the_role_and_ends_with_usage_and_done() -> None:
    fmt = ChunkFormat("chatcmpl-1", 5, "m", chat=True, include_usage=True)
    data = fmt.opening() + fmt.delta('he said "hi"\n') + fmt.delta("") + fmt.closing("length", 4, 2)
    events = _events(data)
    assert events[-1] == "[DONE]" and data.endswith(DONE)
    first, text, last, counts = events[:-1]
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"
    assert first["usage"] is None
    assert text["choices"][0]["delta"] == {"content": 'he said "hi"\n'}
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert counts["choices"] == [] and counts["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "total_tokens": 6,
    }
    assert {e["id"] for e in events[:-1]} == {"chatcmpl-1"}


def test_a_completion_stream_without_usage() -> None:
    fmt = ChunkFormat("cmpl-1", 5, "m", chat=False, include_usage=False)
    events = _events(fmt.opening() + fmt.delta("abc") + fmt.closing("stop", 1, 1))
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["abc", ""]
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in events[-2]
    assert events[0]["object"] == "text_completion"


def test_a_chat_completion_answer() -> None:
    answer = chat_completion("chatcmpl-2", 1, "m", "ok", "stop", 3, 1)
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
    assert answer["usage"]["total_tokens"] == 4


def test_generate_body_merges_top_level_and_parameters() -> None:
    request = parse_generate(
        _body(text_input="hi", max_tokens=5, parameters={"temperature": 0.5, "stop_words": ["x"], "stop": "y"}, id="7")
    )
    assert request.text_input == "hi" and request.id == "7"
    assert request.sampling == Sampling(max_tokens=5, temperature=0.5, stop=("y", "x"))
    assert parse_generate(_body(text_input="", parameters={"max_new_tokens": 3})).sampling.max_tokens == 3


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({}, "text_input"),
        ({"text_input": 1}, "text_input"),
        ({"text_input": "x", "bogus": 1}, "'bogus'"),
        ({"text_input": "x", "parameters": {"beam_width": 2}}, "'beam_width'"),
        ({"text_input": "x", "parameters": {"top_k": "a"}}, "top_k"),
        ({"text_input": "x", "parameters": []}, "parameters"),
    ],
)
def test_bad_generate_bodies_are_400(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(HttpError) as caught:
        parse_generate(json.dumps(fields).encode())
    assert caught.value.status == 400 and words in str(caught.value)


def test_generate_answers_and_stream_events() -> None:
    request = parse_generate(_body(text_input="hi", id="a"))
    answer = generate_answer(request, "m", "1.0.0", "out", "stop", 2, 1)
    assert answer == {
        "id": "a",
        "model_name": "m",
        "model_version": "1.0.0",
        "text_output": "out",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    fmt = DeltaFormat(request, "m", "1.0.0")
    events = _events(fmt.delta("o") + fmt.delta("") + fmt.closing("length", 2, 1))
    assert [e["text_output"] for e in events] == ["o", ""]
    assert events[-1]["finish_reason"] == "length" and events[-1]["usage"]["completion_tokens"] == 1
    assert events[0]["id"] == "a" and "finish_reason" not in events[0]
