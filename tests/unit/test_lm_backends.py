"""Conformance of every available LM backend: the contract of ``edgeds.backends.lm.base``.

Each backend opens the test LM with a small KV plan and is driven step by step as the engine
does. A random tiny model repeats tokens, so "EOS" is exercised through a stop token id (the
greedy token), which ends a sequence by the same path as EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeds.backends.lm import GenParams, LMBackend, LMHandle, LMSpec, lm_backend_class, lm_create, lm_names
from edgeds.backends.lm.base import model_weights_bytes
from edgeds.backends.lm.kv import Architecture, plan
from edgeds.errors import ConfigError

MAX_STEPS = 400
PROMPT = "Station S3, shift B: inspected 1240"


@pytest.fixture(scope="module", params=lm_names())
def opened(
    request: pytest.FixtureRequest,
    lm_openvino_dir: Callable[[str], Path],
    lm_onnxruntime_dir: Callable[[str], Path],
) -> Iterator[tuple[LMBackend, LMSpec]]:
    name: str = request.param
    availability = lm_backend_class(name).probe()
    if not availability.available:
        pytest.skip(f"{name} not available here: {availability.reason}")
    model = lm_openvino_dir("int8") if name == "openvino-genai" else lm_onnxruntime_dir("int4")
    backend = lm_create(name, {"num_threads": 1})
    kv_plan = plan(
        Architecture.from_dir(model),
        budget_mb=8,
        weights_bytes=model_weights_bytes(model),
        kv_precision=backend.kv_precision(),
        context_length=256,
        max_num_seqs=2,
        overhead_mb=4,
        block_size=backend.block_size,
    )
    spec = backend.open(model, kv_plan)
    yield backend, spec
    backend.close()
    backend.close()  # idempotent


def _drain(backend: LMBackend, handles: list[LMHandle]) -> list[list[int]]:
    tokens: list[list[int]] = [[] for _ in handles]
    for _ in range(MAX_STEPS):
        if not backend.has_unfinished() and all(h.finished for h in handles):
            break
        if backend.has_unfinished():
            backend.step()
        for i, handle in enumerate(handles):
            tokens[i] += handle.read()
    assert all(h.finished for h in handles)
    return tokens


def _generate(backend: LMBackend, ids: list[int], params: GenParams, rid: int = 1) -> tuple[list[int], LMHandle]:
    handle = backend.add(rid, ids, params)
    return _drain(backend, [handle])[0], handle


def test_spec_and_tokenizer(opened: tuple[LMBackend, LMSpec]) -> None:
    backend, spec = opened
    assert spec.context_length == 256 and spec.max_num_seqs == 2
    assert spec.kv_bytes > 0 and spec.eos_token_ids and spec.vocab_size > 0
    assert spec.continuous_batching == type(backend).continuous_batching
    ids = backend.encode(PROMPT)
    assert ids and all(0 <= i < spec.vocab_size for i in ids)
    assert backend.decode(ids) == PROMPT
    assert backend.decode_batch([ids, ids[:2], ids[1:]]) == [backend.decode(w) for w in (ids, ids[:2], ids[1:])]
    assert backend.probe().available and backend.probe().devices


def test_greedy_is_deterministic_and_max_tokens_is_honoured(opened: tuple[LMBackend, LMSpec]) -> None:
    backend, _ = opened
    ids = backend.encode(PROMPT)
    first, handle = _generate(backend, ids, GenParams(max_tokens=9, ignore_eos=True))
    second, _ = _generate(backend, ids, GenParams(max_tokens=9, ignore_eos=True), rid=2)
    assert len(first) == 9 and first == second
    assert handle.finish_reason == "length"
    assert handle.read() == []  # nothing after the end


def test_stop_token_ends_the_sequence(opened: tuple[LMBackend, LMSpec]) -> None:
    backend, _ = opened
    ids = backend.encode(PROMPT)
    greedy, _ = _generate(backend, ids, GenParams(max_tokens=4, ignore_eos=True))
    tokens, handle = _generate(backend, ids, GenParams(max_tokens=20, stop_token_ids=frozenset({greedy[0]})), rid=3)
    assert tokens == greedy[:1]
    assert handle.finish_reason == "stop"


def test_cancel_frees_the_sequence(opened: tuple[LMBackend, LMSpec]) -> None:
    backend, _ = opened
    ids = backend.encode(PROMPT)
    keep = backend.add(10, ids, GenParams(max_tokens=12, ignore_eos=True))
    drop = backend.add(11, ids, GenParams(max_tokens=200, ignore_eos=True))
    for _ in range(3):
        backend.step()
        keep.read()
        drop.read()
    before = backend.metrics()
    assert before.running == 2 and before.kv_usage > 0
    drop.cancel()
    drop.cancel()  # idempotent
    assert drop.finished and drop.finish_reason == "abort" and drop.read() == []
    backend.step()
    keep.read()
    assert backend.metrics().running == 1
    _drain(backend, [keep])
    after = backend.metrics()
    assert keep.finish_reason == "length"
    assert (after.running, after.waiting, after.kv_usage) == (0, 0, 0.0)
    assert not backend.has_unfinished()


def test_a_request_added_mid_generation_joins_and_finishes(opened: tuple[LMBackend, LMSpec]) -> None:
    """Continuous batching: the late request gets tokens while the first is still generating and
    finishes first. Static batching (ONNX Runtime GenAI on CPU): it starts once the batch is done."""
    backend, _ = opened
    ids = backend.encode(PROMPT)
    first = backend.add(20, ids, GenParams(max_tokens=24, ignore_eos=True))
    for _ in range(4):
        backend.step()
        first.read()
    late = backend.add(21, ids, GenParams(max_tokens=4, ignore_eos=True))
    late_tokens: list[int] = []
    first_busy_at_late_token: bool | None = None
    for _ in range(MAX_STEPS):
        if first.finished and late.finished:
            break
        backend.step()
        first.read()
        got = late.read()
        if got and first_busy_at_late_token is None:
            first_busy_at_late_token = not first.finished
        late_tokens += got
    assert len(late_tokens) == 4 and late.finish_reason == "length" and first.finish_reason == "length"
    assert first_busy_at_late_token is type(backend).continuous_batching


def test_metrics_are_sane(opened: tuple[LMBackend, LMSpec]) -> None:
    backend, spec = opened
    ids = backend.encode(PROMPT)
    handles = [backend.add(30 + i, ids, GenParams(max_tokens=6 + i, ignore_eos=True)) for i in range(spec.max_num_seqs)]
    seen_running = 0
    for _ in range(MAX_STEPS):
        if all(h.finished for h in handles):
            break
        backend.step()
        for handle in handles:
            handle.read()
        m = backend.metrics()
        assert 0 <= m.running <= spec.max_num_seqs and m.waiting >= 0 and m.running + m.waiting <= spec.max_num_seqs
        assert 0.0 <= m.kv_usage <= 1.0 and m.kv_bytes > 0
        assert m.preemptions is None or m.preemptions >= 0
        seen_running = max(seen_running, m.running)
    assert all(h.finish_reason == "length" for h in handles)
    assert seen_running == spec.max_num_seqs


@pytest.mark.parametrize("name", lm_names())
def test_options_that_do_not_validate_are_a_one_line_config_error(name: str) -> None:
    """A manifest's artifact options or ``--threads 0``: ConfigError naming the option, which the
    loader reports as that artifact's reason, never a pydantic traceback."""
    with pytest.raises(ConfigError, match="num_threads") as caught:
        lm_backend_class(name)({"num_threads": 0})
    assert "\n" not in str(caught.value) and name in str(caught.value)
