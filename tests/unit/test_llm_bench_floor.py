"""The LLM benchmark's floor drives a real LM runtime with the benchmark's requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgeds.backends.lm import kv, lm_create, lm_probe
from edgeds.backends.lm.base import model_weights_bytes
from edgeds.bench.llm_floor import run_floor
from edgeds.bench.llm_stats import summarize
from edgeds.errors import BenchError


def test_floor_generates_every_request_to_its_length(lm_openvino_dir: Callable[[str], Path]) -> None:
    if not lm_probe("openvino-genai").available:
        pytest.skip("openvino-genai is not installed")
    model = lm_openvino_dir("int8")
    backend = lm_create("openvino-genai", {"num_threads": 1})
    arch = kv.Architecture.from_dir(model)
    plan = kv.plan(arch, budget_mb=256, weights_bytes=model_weights_bytes(model), context_length=256, max_num_seqs=4)
    backend.open(model, plan)
    try:
        prompts = [backend.encode(f"Station S{i}, shift A: inspected {100 + i}") for i in range(5)]
        records = run_floor(backend, prompts, 6, concurrency=2)
        assert [r.completion_tokens for r in records] == [6] * 5
        assert all(r.ok and r.finish_reason == "length" for r in records)
        assert all(r.prompt_tokens == len(p) for r, p in zip(records, prompts, strict=True))
        assert all(r.start < r.arrivals[0] <= r.arrivals[-1] == r.end for r in records)
        summary = summarize(records, 2)
        assert summary["ok"] == 5 and summary["completion_tokens"] == 30
        assert not backend.has_unfinished()
        with pytest.raises(BenchError, match="concurrency"):
            run_floor(backend, prompts, 6, concurrency=0)
    finally:
        backend.close()
