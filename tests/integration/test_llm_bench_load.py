"""The LLM benchmark's load generator and ``edgeds bench``'s LM path against a real LM server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeds.bench.llm_commands import bench_lm_url, served_lm_models
from edgeds.bench.llm_load import Target, run_load
from edgeds.bench.llm_prompts import make_prompts
from edgeds.runtime.lm.engine import LMEngine
from edgeds.runtime.lm.loading import open_engine
from edgeds.runtime.lm.server import LMServer

pytest.importorskip("openvino_genai")


@pytest.fixture(scope="module")
def engine(lm_openvino_dir: Callable[[str], Path]) -> Iterator[LMEngine]:
    engine = open_engine(lm_openvino_dir("int8"), runtime="openvino-genai", threads=1, max_num_seqs=4)
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


def test_streams_are_timed_per_chunk_with_the_servers_usage(server: LMServer, engine: LMEngine) -> None:
    prompts = make_prompts(5, 12)
    records = run_load(Target(server.url, engine.name), prompts, 6, concurrency=2, timeout_s=60)
    assert [r.ok for r in records] == [True] * 5, [r.error for r in records]
    for record, prompt in zip(records, prompts, strict=True):
        assert record.completion_tokens == 6  # the usage chunk's count (ignore_eos honoured)
        assert record.prompt_tokens == len(engine.encode(prompt))
        assert record.finish_reason == "length"
        assert 1 <= len(record.arrivals) <= 6
        assert record.start < record.arrivals[0] <= record.end
    chat = run_load(Target(server.url, engine.name, "/v1/chat/completions"), prompts[:1], 4, 1, timeout_s=60)
    assert chat[0].ok and chat[0].completion_tokens == 4


def test_errors_are_recorded_not_raised(server: LMServer) -> None:
    (record,) = run_load(Target(server.url, "no-such-model"), ["hello"], 4, 1, timeout_s=60)
    assert not record.ok and (record.error or "").startswith("HTTP 404")
    (refused,) = run_load(Target("http://127.0.0.1:1", "m"), ["hello"], 4, 1, timeout_s=10)
    assert not refused.ok and "Error" in (refused.error or "")


def test_a_stream_cut_short_is_a_failed_request(server: LMServer, engine: LMEngine) -> None:
    """A server that ends a request before the ``max_tokens`` it was asked for (here told to stop
    at 2 through the extra fields) must not count its tokens as throughput."""
    short = Target(server.url, engine.name, extra={"max_tokens": 2})
    (record,) = run_load(short, make_prompts(1, 12), 6, 1, timeout_s=60)
    assert not record.ok and record.error == "ended after 2 of 6 tokens (length)"


def test_bench_lm_url_sweeps_and_reports(server: LMServer, engine: LMEngine) -> None:
    assert served_lm_models(server.url) == [engine.name]
    report = bench_lm_url(server.url, engine.name, concurrency=(1, 2), max_tokens=4, min_requests=2, prompt_words=12)
    assert [run["concurrency"] for run in report["sweep"]] == [1, 2]
    assert all(run["ok"] == run["requests"] and run["completion_tokens"] == 4 * run["ok"] for run in report["sweep"])
    assert report["single"]["concurrency"] == 1
    assert "batching_gain" not in report  # no run at 8


def test_edgeds_bench_runs_the_lm_path_in_process_and_over_http(
    lm_openvino_dir: Callable[[str], Path], server: LMServer, engine: LMEngine
) -> None:
    from typer.testing import CliRunner

    from edgeds.cli import app

    runner = CliRunner()
    args = ["--concurrency", "1,2", "--max-tokens", "3", "--threads", "1", "--json"]
    result = runner.invoke(app, ["bench", str(lm_openvino_dir("int8")), *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["transport"].startswith("in-process") and report["runtime"] == "openvino-genai"
    assert [run["completion_tokens"] for run in report["sweep"]] == [12, 12]  # 4 requests x 3 tokens per level
    result = runner.invoke(app, ["bench", "--url", server.url, "--concurrency", "2", "--max-tokens", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == engine.name and report["sweep"][0]["ok"] == 4
