"""The LM server's /metrics text: vLLM's names, a model_name label, Prometheus histograms."""

from __future__ import annotations

from edgeds.runtime.lm.metrics import prometheus_text
from edgeds.runtime.lm.stats import HistogramSnapshot, LMStats

from .._prometheus import parse

_HIST = HistogramSnapshot(buckets=(0.1, 1.0), counts=(1, 2, 1), count=4, total=3.5)
_STATS = LMStats(
    running=2,
    waiting=1,
    kv_usage=0.25,
    kv_bytes=1 << 20,
    preemptions=None,
    prompt_tokens=40,
    generation_tokens=17,
    requests={"stop": 2, "length": 1},
    rejected={"queue_full": 1},
    ttft=_HIST,
    inter_token=_HIST,
    e2e=_HIST,
    queue_time=_HIST,
)


def test_vllm_names_parse_with_the_model_label() -> None:
    text = prometheus_text([("shift", _STATS)], {429: 2}, started_at=0.0)
    families = parse(text)
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ):
        assert name in families, name
        assert all('model_name="shift"' in key for key in families[name]), name
    assert families["vllm:prompt_tokens_total"] == {'vllm:prompt_tokens_total{model_name="shift"}': 40.0}
    assert families["vllm:kv_cache_usage_perc"] == {'vllm:kv_cache_usage_perc{model_name="shift"}': 0.25}
    ttft = families["vllm:time_to_first_token_seconds"]
    buckets = [v for k, v in ttft.items() if "_bucket" in k]
    assert buckets == [1.0, 3.0, 4.0]  # cumulative, +Inf last = the count
    assert ttft['vllm:time_to_first_token_seconds_count{model_name="shift"}'] == 4.0
    assert families["edgeds_http_request_failures_total"] == {
        'edgeds_http_request_failures_total{class="4xx",code="429"}': 2.0
    }
    assert families["vllm:num_preemptions_total"] == {'vllm:num_preemptions_total{model_name="shift"}': 0.0}
    success = families["vllm:request_success_total"]
    assert success['vllm:request_success_total{model_name="shift",finished_reason="stop"}'] == 2.0


def test_counter_metadata_names_the_sample_as_prometheus_client_does() -> None:
    """Text format 0.0.4 (what prometheus_client, and so vLLM, writes): a counter's HELP and TYPE
    lines carry the ``_total`` name of its samples, so Prometheus attaches the metadata to them."""
    text = prometheus_text([("shift", _STATS)], {429: 2}, started_at=0.0)
    lines = text.splitlines()
    counters = [line.split(" ")[2] for line in lines if line.startswith("# TYPE ") and line.endswith(" counter")]
    assert "vllm:prompt_tokens_total" in counters and "vllm:request_success_total" in counters
    for name in counters:
        assert name.endswith("_total"), name
        assert f"# HELP {name} " in text, name
    samples = [line.split("{")[0].split(" ")[0] for line in lines if line and not line.startswith("#")]
    typed = {line.split(" ")[2] for line in lines if line.startswith("# TYPE ")}
    assert set(samples) - typed <= {n for n in samples if n.endswith(("_bucket", "_sum", "_count"))}
