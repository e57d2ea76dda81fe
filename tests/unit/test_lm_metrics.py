"""The LM server's /metrics text: vLLM's names, a model_name label, Prometheus histograms."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edgeds.runtime.lm.metrics import prometheus_text

# one sample line of the text exposition format: name{labels} value
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


@dataclass(frozen=True)
class _Hist:
    bounds: Sequence[float] = (0.1, 1.0)
    counts: Sequence[int] = (1, 2, 1)
    sum: float = 3.5
    count: int = 4


@dataclass(frozen=True)
class _Stats:
    running: int = 2
    waiting: int = 1
    kv_usage: float = 0.25
    preemptions: int = 0
    prompt_tokens: int = 40
    generation_tokens: int = 17
    finished: Mapping[str, int] = field(default_factory=lambda: {"stop": 2, "length": 1})
    ttft: _Hist = _Hist()
    inter_token: _Hist = _Hist()
    e2e: _Hist = _Hist()
    queue_time: _Hist = _Hist()


def parse(text: str) -> dict[str, dict[str, float]]:
    """Family -> {sample line's name+labels: value}; every line must be a comment or a sample."""
    samples: dict[str, dict[str, float]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name = match.group(1)
        family = next(f for f in sorted(types, key=len, reverse=True) if name.startswith(f))
        samples.setdefault(family, {})[name + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_vllm_names_parse_with_the_model_label() -> None:
    text = prometheus_text([("shift", _Stats())], {429: 2}, started_at=0.0)
    families = parse(text)
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ):
        assert name in families, name
        assert all('model_name="shift"' in key for key in families[name]), name
    assert families["vllm:prompt_tokens"] == {'vllm:prompt_tokens_total{model_name="shift"}': 40.0}
    assert families["vllm:kv_cache_usage_perc"] == {'vllm:kv_cache_usage_perc{model_name="shift"}': 0.25}
    ttft = families["vllm:time_to_first_token_seconds"]
    buckets = [v for k, v in ttft.items() if "_bucket" in k]
    assert buckets == [1.0, 3.0, 4.0]  # cumulative, +Inf last = the count
    assert ttft['vllm:time_to_first_token_seconds_count{model_name="shift"}'] == 4.0
    assert families["edgeds_http_request_failures_total"] == {
        'edgeds_http_request_failures_total{class="4xx",code="429"}': 2.0
    }
    success = families["vllm:request_success"]
    assert success['vllm:request_success_total{model_name="shift",finished_reason="stop"}'] == 2.0
