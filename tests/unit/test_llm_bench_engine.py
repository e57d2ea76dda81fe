"""The LLM benchmark's in-process closed loop over a real LMEngine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgeds.backends.lm import lm_probe
from edgeds.bench.llm_engine import run_engine
from edgeds.bench.llm_prompts import make_prompts
from edgeds.bench.llm_stats import summarize
from edgeds.errors import BenchError
from edgeds.runtime.lm.engine import LMEngine


def test_engine_loop_keeps_concurrency_and_times_every_request(lm_openvino_dir: Callable[..., Path]) -> None:
    if not lm_probe("openvino-genai").available:
        pytest.skip("openvino-genai is not installed")
    model = lm_openvino_dir("int8")
    engine = LMEngine.from_dir(model, budget_mb=256, max_num_seqs=4, context_length=256, options={"num_threads": 1})
    with engine:
        engine.start()
        prompts = make_prompts(5, 12)
        records = run_engine(engine, prompts, 6, concurrency=3)
        assert len(records) == 5
        assert all(r.ok and r.completion_tokens == 6 and r.finish_reason == "length" for r in records)
        assert all(r.prompt_tokens == len(engine.encode(p)) for r, p in zip(records, prompts, strict=True))
        assert all(r.start < r.arrivals[0] <= r.end for r in records)
        # at most 3 in flight: the 4th starts only once one of the first 3 has ended
        assert records[3].start >= min(r.end for r in records[:3])
        assert summarize(records, 3)["completion_tokens"] == 30
        too_long = run_engine(engine, ["word " * 400], 6, concurrency=1)  # prompt + max_tokens over the context
        assert not too_long[0].ok and "RequestTooLarge" in (too_long[0].error or "")
        with pytest.raises(BenchError, match="concurrency"):
            run_engine(engine, prompts, 6, concurrency=0)
