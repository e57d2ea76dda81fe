"""The LLM benchmark's pure parts: chunked and SSE decoding, OpenAI chunks, timings, percentiles."""

from __future__ import annotations

import json

import pytest

from edgeds.bench.llm_load import ChunkedDecoder, SSEParser, Target, parse_chunk
from edgeds.bench.llm_stats import Generation, percentiles, ratio, summarize
from edgeds.errors import BenchError


def chunked(*parts: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def test_chunked_decoder_byte_by_byte_and_rest() -> None:
    wire = chunked(b"data: a\n\n", b"data: [DONE]\n\n") + b"HTTP/1.1 200 OK\r\n"
    decoder = ChunkedDecoder()
    out = b"".join(decoder.feed(wire[i : i + 1]) for i in range(len(wire)))
    assert out == b"data: a\n\ndata: [DONE]\n\n"
    assert decoder.done
    decoder2 = ChunkedDecoder()
    assert decoder2.feed(wire) == out
    assert decoder2.rest == b"HTTP/1.1 200 OK\r\n"


def test_chunked_decoder_extension_and_bad_size() -> None:
    assert ChunkedDecoder().feed(b"3;ext=1\r\nabc\r\n0\r\n\r\n") == b"abc"
    with pytest.raises(BenchError, match="chunk size"):
        ChunkedDecoder().feed(b"zz\r\nabc\r\n")


def test_sse_parser_split_lines_crlf_comments_multiline() -> None:
    parser = SSEParser()
    assert parser.feed(b': keep-alive\r\n\r\ndata: {"a"') == []
    assert parser.feed(b": 1}\r\n\r\ndata:x\ndata: y\n\n") == ['{"a": 1}', "x\ny"]
    assert parser.feed(b"event: ping\n\n") == []


def test_parse_chunk_completion_chat_usage_done_error() -> None:
    c = parse_chunk(json.dumps({"choices": [{"index": 0, "text": "ab", "finish_reason": None}]}))
    assert (c.text, c.finish_reason, c.done) == ("ab", None, False)
    c = parse_chunk(json.dumps({"choices": [{"delta": {"content": "x"}, "finish_reason": "length"}]}))
    assert (c.text, c.finish_reason) == ("x", "length")
    c = parse_chunk(json.dumps({"choices": [{"delta": {"role": "assistant"}}]}))
    assert c.text == ""
    c = parse_chunk(json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 16}}))
    assert (c.prompt_tokens, c.completion_tokens, c.text) == (7, 16, "")
    assert parse_chunk("[DONE]").done
    assert parse_chunk(json.dumps({"error": {"message": "too long", "type": "x"}})).error == "too long"
    assert parse_chunk("{oops").error is not None


def test_target_body_is_the_same_request_for_every_system() -> None:
    body = json.loads(Target("http://127.0.0.1:1", "m").body("hello", 32))
    assert body == {
        "model": "m",
        "prompt": "hello",
        "max_tokens": 32,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    chat = json.loads(Target("http://h:2", "m", "/v1/chat/completions", {"logit_bias": {"2": -100}}).body("q", 4))
    assert chat["messages"] == [{"role": "user", "content": "q"}] and chat["logit_bias"] == {"2": -100}
    assert Target("http://127.0.0.1:8123", "m").host_port == ("127.0.0.1", 8123)


def test_generation_timings() -> None:
    g = Generation(start=10.0, end=10.9, arrivals=[10.3, 10.5, 10.9], completion_tokens=3)
    assert g.ttft == pytest.approx(0.3)
    assert g.intervals() == pytest.approx([0.2, 0.4])
    assert g.tpot == pytest.approx(0.3)
    assert Generation(start=0.0, end=1.0).ttft is None
    assert Generation(start=0.0, end=1.0, arrivals=[0.5], completion_tokens=1).tpot is None


def test_percentiles_interpolate_and_scale() -> None:
    values = [float(v) for v in range(1, 101)]  # seconds
    p = percentiles(values)
    assert p["p50"] == pytest.approx(50500.0)
    assert p["p99"] == pytest.approx(99010.0)
    assert p["mean"] == pytest.approx(50500.0)
    assert percentiles([2.0], scale=1.0) == {"p50": 2.0, "p90": 2.0, "p99": 2.0, "mean": 2.0}
    assert percentiles([]) == {}


def test_summarize_counts_tokens_over_the_span() -> None:
    records = [
        Generation(start=0.0, end=2.0, arrivals=[0.5, 1.0, 1.5, 2.0], completion_tokens=4, prompt_tokens=10),
        Generation(start=0.0, end=4.0, arrivals=[1.0, 2.0, 3.0, 4.0], completion_tokens=4, prompt_tokens=12),
        Generation(start=1.0, end=1.5, ok=False, error="HTTP 429: busy"),
    ]
    s = summarize(records, concurrency=2)
    assert (s["requests"], s["ok"], s["errors"], s["concurrency"]) == (3, 2, 1, 2)
    assert s["error_examples"] == ["HTTP 429: busy"]
    assert s["total_tok_s"] == pytest.approx(2.0)  # 8 tokens over 0..4 s
    assert s["prompt_tokens_per_request"] == pytest.approx(11.0)
    assert s["ttft_ms"]["p50"] == pytest.approx(750.0)
    assert s["itl_ms"]["p50"] == pytest.approx(750.0)  # 0.5 x3, 1.0 x3
    assert s["decode_tok_s_per_stream"]["p50"] == pytest.approx(1.5)  # 2 and 1 tok/s
    assert s["stream_tok_s"]["p50"] == pytest.approx(1.5)  # 4 tokens in 2 s and in 4 s
    with pytest.raises(BenchError):
        summarize([])
    assert summarize([Generation(start=0.0, end=1.0, ok=False)])["ok"] == 0


def test_ratio() -> None:
    assert ratio(9.0, 10.0) == 0.9
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None
