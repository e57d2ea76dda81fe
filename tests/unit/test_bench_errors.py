"""What the benchmark library does when a backend, an engine or a target fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from edgeds.bench import engine_closed_loop, floor_window, run_benchmark
from edgeds.errors import BenchError, InferenceError, ServiceUnavailable


class _Backend:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def infer(self, feed: Mapping[str, np.ndarray]) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise InferenceError("the backend broke")


def test_a_backend_that_fails_in_a_floor_window_fails_it_on_the_calling_thread() -> None:
    feed = {"input": np.zeros((1, 4), np.float32)}
    good, bad = _Backend(), _Backend(fail_after=3)
    with pytest.raises(InferenceError, match="broke"):
        floor_window([good, bad], [feed, feed], 1, 0.2)
    assert good.calls > 3  # the other backend ran its window to the end
    rate, latencies = floor_window([_Backend(), _Backend()], [feed, feed], 2, 0.05)
    assert rate > 0 and latencies


class _Engine:
    """An engine whose submit raises what it is given."""

    def __init__(self, raises: BaseException) -> None:
        self.raises = raises

    def submit(self, inputs: Mapping[str, np.ndarray], callback: Callable[[Any], None] | None = None) -> None:
        raise self.raises


def test_an_engine_that_raises_unexpectedly_counts_as_a_500_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    inputs = {"input": np.zeros((1, 4), np.float32)}
    with caplog.at_level(logging.ERROR, logger="edgeds.bench.loops"):
        samples = engine_closed_loop(_Engine(KeyError("bug")), inputs, concurrency=2, duration_s=0.1, warmup_s=0.0)
    assert samples.status == [500, 500]  # each slot stops after its failure
    assert "engine.submit failed" in caplog.text and "KeyError" in caplog.text
    busy = engine_closed_loop(_Engine(ServiceUnavailable("full")), inputs, concurrency=2, duration_s=0.1, warmup_s=0.0)
    assert busy.status == [503, 503]


def test_a_target_that_fails_a_valid_request_or_no_target_is_a_bench_error() -> None:
    sample = np.zeros((1, 4), np.float32)
    with pytest.raises(BenchError, match="answered 503"):
        run_benchmark(engine=_Engine(ServiceUnavailable("full")), sample=sample, input_name="input", scenarios=())
    with pytest.raises(BenchError, match="needs an engine"):
        run_benchmark(url="http://127.0.0.1:1", sample=sample, input_name="input", scenarios=())
