"""The LM server on loopback: the real ``openai`` client, ``curl -N``, the generate extension with
httpx, OpenAI-shaped errors, 429 with Retry-After, API keys, and a stream cancelled mid-way that
frees its sequence (read back from /metrics)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edgeds.runtime.lm.engine import LMEngine
from edgeds.runtime.lm.loading import open_engine
from edgeds.runtime.lm.server import LMServer

from .._prometheus import parse

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("openvino_genai")

KEY = "lm-key-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Shift summary for station 3?"}]


@pytest.fixture(scope="module")
def model_dir(lm_openvino_dir: Callable[[str], Path]) -> Path:
    return lm_openvino_dir("int8")


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[LMEngine]:
    engine = open_engine(model_dir, runtime="openvino-genai", threads=1, max_num_seqs=2, max_queue=2)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def server(engine: LMEngine) -> Iterator[LMServer]:
    server = LMServer(engine, port=0).start()
    try:
        yield server
    finally:
        server.stop()


def _client(server: LMServer, key: str = "none") -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def _metrics(server: LMServer) -> dict[str, dict[str, float]]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return parse(text)


def _gauge(families: dict[str, dict[str, float]], name: str) -> float:
    (value,) = families[name].values()
    return value


def test_openai_client_chat_and_completions(server: LMServer, engine: LMEngine) -> None:
    client = _client(server)
    (model,) = [m.id for m in client.models.list()]
    assert model == engine.name
    answer = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8, temperature=0)
    assert answer.object == "chat.completion"
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content  # greedy: the same text streamed and not
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    text = client.completions.create(model=model, prompt="Station 3:", max_tokens=5, temperature=0)
    assert text.object == "text_completion" and text.usage is not None
    pieces = list(client.completions.create(model=model, prompt="Station 3:", max_tokens=5, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == text.choices[0].text


def test_curl_streams_sse_ending_in_done(server: LMServer, engine: LMEngine) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"model": engine.name, "messages": MESSAGES, "max_tokens": 6, "stream": True})
    out = subprocess.run(
        [curl, "-sN", "-H", "Content-Type: application/json", "-d", body, f"{server.url}/v1/chat/completions"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    events = [block[len("data: ") :] for block in out.split("\n\n") if block]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["object"] == "chat.completion.chunk"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


def test_generate_extension_with_httpx(server: LMServer, engine: LMEngine) -> None:
    url = f"{server.url}/v2/models/{engine.name}"
    meta = httpx.get(url, timeout=10).json()
    assert meta["inputs"][0]["name"] == "text_input" and meta["outputs"][0]["name"] == "text_output"
    body = {"text_input": "Station 3:", "parameters": {"max_tokens": 5, "temperature": 0}}
    answer = httpx.post(f"{url}/generate", json=body, timeout=60).json()
    assert answer["model_name"] == engine.name and isinstance(answer["text_output"], str)
    assert 0 < answer["usage"]["completion_tokens"] <= 5
    with httpx.stream("POST", f"{url}/generate_stream", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    assert "".join(e["text_output"] for e in events) == answer["text_output"]
    assert events[-1]["finish_reason"] == answer["finish_reason"]
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}


def test_errors_are_openai_shaped(server: LMServer, engine: LMEngine) -> None:
    client = _client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert missing.value.body["code"] == "model_not_found"  # the client hands over the error object
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=engine.name, messages=MESSAGES, n=2)
    assert "n must be 1" in bad.value.message
    huge = engine.spec.context_length + 1
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=engine.name, messages=MESSAGES, max_tokens=huge)
    assert too_long.value.body["code"] == "context_length_exceeded"
    response = httpx.post(f"{server.url}/v1/chat/completions", content=b"{", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/v1/chat/completions", timeout=10).headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("fields", "param", "said"),
    [
        ({"prompt": "hi", "seed": -1}, "seed", "seed must be at least 0"),
        ({"prompt": "hi", "seed": 2**64}, "seed", "seed must be at most"),
        ({"prompt": "hi", "top_k": 2**64, "temperature": 0.5}, "top_k", "top_k must be at most"),
        ({"prompt": [1, "vocab"]}, None, "outside the vocabulary"),
        ({"prompt": [1, 2**63]}, None, "outside the vocabulary"),
    ],
)
def test_an_out_of_range_value_gets_400_and_the_next_request_is_served(
    server: LMServer, engine: LMEngine, fields: dict[str, Any], param: str | None, said: str
) -> None:
    """Values a runtime's bindings cannot hold are refused at the edge, never reach the step loop."""
    url = f"{server.url}/v1/completions"
    body = {"model": engine.name, "max_tokens": 3, **fields}
    if isinstance(body["prompt"], list):
        body["prompt"] = [engine.spec.vocab_size if t == "vocab" else t for t in body["prompt"]]
    refused = httpx.post(url, json=body, timeout=30)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert said in error["message"] and "\n" not in error["message"]
    served = httpx.post(url, json={"model": engine.name, "prompt": "hi", "max_tokens": 3}, timeout=60)
    assert served.status_code == 200, served.text
    assert engine.ready and httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200


def test_a_top_k_over_the_vocabulary_and_the_largest_seed_are_served(server: LMServer, engine: LMEngine) -> None:
    body = {"model": engine.name, "prompt": "hi", "max_tokens": 3, "temperature": 0.7, "seed": 2**63 - 1}
    answer = httpx.post(f"{server.url}/v1/completions", json={**body, "top_k": engine.spec.vocab_size + 5}, timeout=60)
    assert answer.status_code == 200, answer.text


def _long(engine: LMEngine, prompt_tokens: int) -> dict[str, Any]:
    """All the context the prompt leaves: the shipped LM makes over 1,000 tokens/s, and these
    requests must still be running while the test looks at them."""
    return {"max_tokens": engine.spec.context_length - prompt_tokens, "ignore_eos": True, "temperature": 0}


def test_a_full_queue_answers_429_with_retry_after(server: LMServer, engine: LMEngine) -> None:
    """2 running + 2 waiting fill the engine: of 8 requests sent at once, the ones beyond get 429.
    Sent together (not one after another) so that none of the first four can finish meanwhile."""
    body = {"model": engine.name, "prompt": "x", "stream": True, **_long(engine, len(engine.encode("x")))}
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=8)) as http:

        def send(_: int) -> Any:
            return http.send(http.build_request("POST", f"{server.url}/v1/completions", json=body), stream=True)

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(send, range(8)))
        try:
            refused = [r for r in responses if r.status_code == 429]
            assert refused, [r.status_code for r in responses]
            assert all(r.status_code in (200, 429) for r in responses)
            response = refused[0]
            response.read()
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["type"] == "rate_limit_error"
        finally:
            for r in responses:
                r.close()
    _wait_idle(server)


def _wait_idle(server: LMServer, timeout_s: float = 30.0) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + timeout_s
    while True:
        families = _metrics(server)
        idle = _gauge(families, "vllm:num_requests_running") == 0 and _gauge(families, "vllm:num_requests_waiting") == 0
        if idle or time.monotonic() > deadline:
            return families
        time.sleep(0.1)


def test_a_client_that_goes_away_frees_its_sequence(server: LMServer, engine: LMEngine) -> None:
    before = _wait_idle(server)
    kv_before = _gauge(before, "vllm:kv_cache_usage_perc")
    prompt_tokens = len(engine.encode(engine.chat_prompt(MESSAGES)))
    body = {"model": engine.name, "messages": MESSAGES, "stream": True, **_long(engine, prompt_tokens)}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        seen = 0
        for line in lines:
            seen += line.startswith("data:")
            if seen >= 4:
                break
        during = _metrics(server)
        assert _gauge(during, "vllm:num_requests_running") == 1
        assert _gauge(during, "vllm:kv_cache_usage_perc") > kv_before
    after = _wait_idle(server)
    assert _gauge(after, "vllm:num_requests_running") == 0
    assert _gauge(after, "vllm:kv_cache_usage_perc") <= kv_before
    aborted = after["vllm:request_success_total"]
    assert any('finished_reason="abort"' in k and v >= 1 for k, v in aborted.items())


def test_metrics_carry_vllm_names(server: LMServer, engine: LMEngine) -> None:
    families = _metrics(server)
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
    ):
        assert all(f'model_name="{engine.name}"' in key for key in families[name]), name


def test_api_keys(engine: LMEngine) -> None:
    server = LMServer(engine, port=0, api_keys=[KEY]).start()
    try:
        with pytest.raises(openai.AuthenticationError):
            _client(server, "wrong").models.list()
        no_key = httpx.get(f"{server.url}/v1/models", timeout=10)
        assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
        assert no_key.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{server.url}/v2/models/{engine.name}", timeout=10).json()["error"]
        assert httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200
        assert [m.id for m in _client(server, KEY).models.list()] == [engine.name]
    finally:
        server.stop()
