"""The LM engine over a real runtime: admission against the KV plan, cancel, continuous batching,
stop strings, seeds, timeouts and the memory budget."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from edgeds.backends.lm import lm_backend_class
from edgeds.backends.lm.base import model_weights_bytes
from edgeds.backends.lm.kv import MB, Architecture
from edgeds.errors import EngineClosed, InferenceError, QueueFull, RequestError, RequestTooLarge
from edgeds.runtime.lm import Event, LMEngine, SamplingParams
from edgeds.runtime.lm.client import LocalReplier, complete
from edgeds.runtime.lm.sampling import Sampling

CONTEXT = 256
OVERHEAD_MB = 96.0  # the runtime's own memory kept out of the KV budget (measured: ~65 MiB OpenVINO GenAI)
LONG = SamplingParams(max_tokens=200, ignore_eos=True)


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


_MEASURED: dict[Path, int] = {}


def _measured_bytes_per_token(model: Path) -> int:
    """What one token of OpenVINO GenAI's u8 cache takes for ``model`` (scales and zero points
    included), measured once: a roomy budget opens without refitting and reports it."""
    if model not in _MEASURED:
        with LMEngine.from_dir(model, budget_mb=256, context_length=CONTEXT, max_num_seqs=1) as engine:
            _MEASURED[model] = engine.spec.kv_bytes_per_token
    return _MEASURED[model]


def _budget_for(model: Path, seqs: float) -> float:
    """A budget (MiB) whose KV part holds ``seqs`` full-context sequences of the runtime's u8 cache."""
    per_seq = _measured_bytes_per_token(model) * CONTEXT
    return (model_weights_bytes(model) + seqs * per_seq) / MB + OVERHEAD_MB


@pytest.fixture(scope="module")
def model(lm_openvino_dir: Callable[[str], Path]) -> Path:
    availability = lm_backend_class("openvino-genai").probe()
    if not availability.available:
        pytest.skip(f"openvino-genai not available here: {availability.reason}")
    return lm_openvino_dir("int8")


@pytest.fixture
def engine(model: Path) -> Iterator[LMEngine]:
    """The budget admits two sequences; one more may wait."""
    with LMEngine.from_dir(
        model,
        budget_mb=_budget_for(model, 2.5),
        kv_overhead_mb=OVERHEAD_MB,
        context_length=CONTEXT,
        max_queue=1,
        options={"num_threads": 1},
    ) as engine:
        yield engine


def test_the_budget_admits_n_the_next_waits_a_full_queue_is_refused(engine: LMEngine) -> None:
    assert (engine.plan.max_num_seqs, engine.spec.max_num_seqs, engine.spec.context_length) == (2, 2, CONTEXT)
    running = [engine.submit("Station S3", LONG) for _ in range(2)]
    _wait(lambda: all(g._ids for g in running))
    waiting = engine.submit("Station S3", LONG)  # the N+1-th waits
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (2, 1)
    with pytest.raises(QueueFull) as full:
        engine.submit("Station S3", LONG)
    assert full.value.retry_after_s is not None and full.value.retry_after_s >= 1
    with pytest.raises(RequestTooLarge, match=r"exceeds the context of 256 tokens") as large:
        engine.submit("Station S3", SamplingParams(max_tokens=CONTEXT))
    assert "max_tokens (256)" in large.value.reason
    running[0].cancel()
    _wait(lambda: bool(waiting._ids))  # the freed slot goes to the waiting request
    for generation in (running[1], waiting):
        generation.cancel()
    assert [g.result(10).finish_reason for g in (*running, waiting)] == ["abort"] * 3
    stats = engine.stats()
    assert stats.rejected == {"queue_full": 1, "too_large": 1} and stats.requests["abort"] == 3


def test_cancel_mid_stream_frees_the_sequence(engine: LMEngine) -> None:
    events: list[Event] = []
    got = threading.Event()

    def on_event(event: Event) -> None:
        events.append(event)
        if len(events) >= 3:
            got.set()

    generation = engine.submit("Station S3", LONG, on_event=on_event)
    assert got.wait(20)
    _wait(lambda: engine.stats().kv_usage > 0)
    assert engine.stats().running == 1
    generation.cancel()
    completion = generation.result(10)
    assert completion.finish_reason == "abort" and events[-1].finished and events[-1].finish_reason == "abort"
    assert 3 <= completion.usage.completion_tokens < 200
    _wait(lambda: engine.stats().running == 0 and engine.stats().kv_usage == 0.0)
    with pytest.raises(RequestError, match="on_event"):
        iter(generation).__next__()


def test_a_request_joins_while_another_is_mid_generation(engine: LMEngine) -> None:
    first = engine.submit("Station S3, shift B", SamplingParams(max_tokens=120, ignore_eos=True))
    _wait(lambda: len(first._ids) >= 3)
    late = engine.submit("How many cracks", SamplingParams(max_tokens=5, ignore_eos=True))
    events = list(late)  # a synchronous caller iterates the events
    assert events[-1].finished and events[-1].usage is not None and events[-1].usage.completion_tokens == 5
    assert not first.done  # the late request finished while the first was still generating
    assert sum(len(e.token_ids) for e in events) == 5
    assert first.result(30).usage.completion_tokens == 120


def test_stop_strings_cut_the_text(engine: LMEngine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": "Station S3 rejects?"}])
    full = engine.submit(prompt, SamplingParams(max_tokens=24, ignore_eos=True)).result(30)
    assert full.finish_reason == "length" and len(full.token_ids) == 24
    assert full.text == engine.decode(full.token_ids)
    stop = full.text[len(full.text) // 2 :][:2]
    cut = engine.submit(prompt, SamplingParams(max_tokens=24, ignore_eos=True, stop=(stop,))).result(30)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)] and stop not in cut.text


def test_greedy_and_seeded_sampling_are_deterministic(engine: LMEngine) -> None:
    greedy = [engine.submit("Station S3", SamplingParams(max_tokens=12, ignore_eos=True)) for _ in range(2)]
    assert greedy[0].result(30).token_ids == greedy[1].result(30).token_ids
    sampled = SamplingParams(max_tokens=12, ignore_eos=True, temperature=1.0, top_k=50, top_p=0.95, seed=7)
    first = engine.submit("Station S3", sampled).result(30)
    second = engine.submit("Station S3", sampled).result(30)
    assert first.token_ids == second.token_ids


def test_timeouts_and_validation(engine: LMEngine) -> None:
    timed = engine.submit("Station S3", SamplingParams(max_tokens=CONTEXT - 8, ignore_eos=True, timeout_s=0.05))
    assert timed.result(10).finish_reason == "timeout"
    for bad in (SamplingParams(max_tokens=0), SamplingParams(temperature=-1), SamplingParams(top_p=0)):
        with pytest.raises(RequestError):
            engine.submit("x", bad)
    with pytest.raises(RequestError, match="empty"):
        engine.submit([], SamplingParams())
    _wait(lambda: engine.stats().running == 0)
    stats = engine.stats()
    assert stats.requests["timeout"] == 1 and stats.ttft.count >= 1 and stats.e2e.count >= 1


def test_out_of_range_seeds_and_token_ids_are_refused_at_submit(engine: LMEngine) -> None:
    vocab = engine.spec.vocab_size
    for seed in (-1, 2**63):
        with pytest.raises(RequestError, match="seed must be in"):
            engine.submit("x", SamplingParams(max_tokens=2, seed=seed))
    for bad in (vocab, 2**63, -1):
        with pytest.raises(RequestError, match=f"prompt token id {bad} is outside the vocabulary"):
            engine.submit([1, bad], SamplingParams(max_tokens=2))
    assert engine.submit([1, vocab - 1], SamplingParams(max_tokens=2)).result(30).usage.completion_tokens >= 1


def test_a_request_the_runtime_refuses_fails_alone(engine: LMEngine) -> None:
    """A value the runtime's bindings cannot hold (here a stop token id over 64 bits) fails its own
    request when it is added; the engine keeps serving and nothing stays counted as running."""
    refused = engine.submit("Station S3", SamplingParams(max_tokens=2, stop_token_ids=frozenset({2**64})))
    with pytest.raises(InferenceError, match="refused request"):
        refused.result(30)
    assert engine.ready and not engine.failed
    assert engine.submit("Station S3", SamplingParams(max_tokens=2)).result(30).finish_reason in ("stop", "length")
    _wait(lambda: engine.stats().running == 0)


def _ask(engine: LMEngine, use: str, raised: list[BaseException]) -> None:
    messages = [{"role": "user", "content": "Status?"}]
    sampling = Sampling(max_tokens=CONTEXT - 64, ignore_eos=True)
    try:
        if use == "complete":
            complete(engine, messages, sampling)
        else:
            list(LocalReplier(engine).reply(messages, sampling))
    except InferenceError as exc:
        raised.append(exc)


@pytest.mark.parametrize("use", ["complete", "reply"])
def test_complete_and_the_local_replier_raise_when_the_runtime_fails(model: Path, use: str) -> None:
    """``edgeds run --prompt`` and ``edgeds chat`` read these: a request the runtime failed is an
    error, never an empty answer that exits 0. The runtime is closed under a long request."""
    with LMEngine.from_dir(model, budget_mb=_budget_for(model, 1), context_length=CONTEXT) as engine:
        raised: list[BaseException] = []
        thread = threading.Thread(target=_ask, args=(engine, use, raised), daemon=True)
        thread.start()
        _wait(lambda: engine.stats().running == 1)
        engine.backend.close()  # the next step of the loop finds no runtime
        thread.join(30)
        assert not thread.is_alive()
        assert len(raised) == 1 and "the runtime failed this request" in str(raised[0])


def test_close_aborts_what_is_queued_and_refuses_more(model: Path) -> None:
    engine = LMEngine.from_dir(model, budget_mb=_budget_for(model, 1.5), context_length=CONTEXT, kv_overhead_mb=96)
    engine.start()
    generations = [engine.submit("Station S3", LONG) for _ in range(3)]
    engine.close()
    engine.close()
    assert [g.result(10).finish_reason for g in generations] == ["abort"] * 3
    with pytest.raises(EngineClosed):
        engine.submit("x", SamplingParams())


RSS_SLACK_MB = 64.0  # the Python side of serving (threads, the engine's objects, allocator pages)


def test_rss_stays_within_the_computed_budget(model: Path) -> None:
    """The computed budget (weights + KV budget + the stated overhead) + :data:`RSS_SLACK_MB`
    bounds what serving adds to the process; the runtime's measured cache fits the KV budget."""
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    with LMEngine.from_dir(
        model, budget_mb=_budget_for(model, 4), kv_overhead_mb=OVERHEAD_MB, context_length=CONTEXT
    ) as engine:
        full = SamplingParams(max_tokens=CONTEXT - 8, ignore_eos=True)
        generations = [engine.submit("Station S3", full) for _ in range(engine.spec.max_num_seqs)]
        assert all(g.result(60).finish_reason == "length" for g in generations)
        grown = process.memory_info().rss - before
        bound = engine.plan.budget_bytes + int(RSS_SLACK_MB * MB)
        assert engine.spec.max_num_seqs == 4
        assert engine.spec.kv_bytes <= engine.plan.kv_budget_bytes
        assert grown <= bound, f"RSS grew {grown / MB:.1f} MiB, budget {bound / MB:.1f} MiB"


@pytest.mark.parametrize("precision", ["u4", "u8", "f32"])
def test_a_quantized_cache_is_measured_and_the_plan_refitted_to_the_budget(model: Path, precision: str) -> None:
    """The formula leaves out a u8/u4 cache's scales and zero points; the backend measures its cache
    after opening and, over the KV budget, reopens with fewer sequences so the cache fits."""
    formula = Architecture.from_dir(model).kv_bytes_per_token(precision)  # type: ignore[arg-type]
    budget = (model_weights_bytes(model) + 4 * formula * CONTEXT) / MB + OVERHEAD_MB  # 4 sequences by the formula
    with LMEngine.from_dir(
        model,
        budget_mb=budget,
        kv_overhead_mb=OVERHEAD_MB,
        context_length=CONTEXT,
        options={"kv_cache_precision": precision, "num_threads": 1},
    ) as engine:
        spec = engine.spec
        assert spec.kv_bytes <= engine.plan.kv_budget_bytes
        assert engine.plan == spec.plan and engine.plan.bytes_per_token == spec.kv_bytes_per_token
        assert spec.kv_bytes == spec.plan.num_blocks * spec.plan.block_size * spec.kv_bytes_per_token
        if precision == "f32":
            assert spec.kv_bytes_per_token == formula and spec.max_num_seqs == 4
        else:
            assert spec.kv_bytes_per_token > formula and spec.max_num_seqs < 4
        assert engine.submit("Station S3", SamplingParams(max_tokens=3)).result(30).usage.completion_tokens >= 1


@pytest.mark.parametrize("runtime", ["openvino-genai", "onnxruntime-genai"])
def test_every_runtime_serves_through_the_engine(
    runtime: str, lm_openvino_dir: Callable[[str], Path], lm_onnxruntime_dir: Callable[[str], Path]
) -> None:
    """ONNX Runtime GenAI's Engine must be driven by the thread that made it: the step loop opens it."""
    availability = lm_backend_class(runtime).probe()
    if not availability.available:
        pytest.skip(f"{runtime} not available here: {availability.reason}")
    model = lm_openvino_dir("int8") if runtime == "openvino-genai" else lm_onnxruntime_dir("int4")
    with LMEngine.from_dir(model, runtime, budget_mb=128, context_length=CONTEXT, max_num_seqs=2) as engine:
        assert engine.runtime == runtime and engine.spec.continuous_batching == (runtime == "openvino-genai")
        generations = [engine.submit("Station S3", SamplingParams(max_tokens=6, ignore_eos=True)) for _ in range(3)]
        completions = [g.result(30) for g in generations]
        assert [c.usage.completion_tokens for c in completions] == [6, 6, 6]
        assert len({c.token_ids for c in completions}) == 1  # greedy: the same prompt, the same tokens
