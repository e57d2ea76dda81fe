"""Closed-loop load on an :class:`~edgeds.runtime.lm.engine.LMEngine` in-process.

:func:`run_engine` submits the benchmark's requests to a started engine, at most ``concurrency``
at once, and times each from the engine's events: the ``on_event`` callback runs on the engine's
step-loop thread right after the step that produced the tokens, and only records the time (it
must not block). The next request is submitted from the calling thread as soon as one finishes,
as a closed-loop client would send it. The records read like the load generator's and the floor's
(:mod:`.llm_stats`): between the floor and this is what the engine's admission, detokenization
and statistics cost; between this and ``edgeds serve`` is what HTTP costs.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence

from ..errors import BenchError, EdgedsError
from ..runtime.lm.engine import Event, LMEngine, SamplingParams
from ..runtime.lm.engine import Generation as EngineGeneration
from .llm_stats import Generation


def run_engine(
    engine: LMEngine,
    prompts: Sequence[str | Sequence[int]],
    max_tokens: int,
    concurrency: int,
    *,
    ignore_eos: bool = True,
    timeout_s: float = 900.0,
) -> list[Generation]:
    """Generate ``max_tokens`` greedy tokens (``ignore_eos``) for each prompt (text or token ids)
    through ``engine`` (started), ``concurrency`` requests in flight, and return their records in
    prompt order. A request the engine refuses is recorded as an error.

    BenchError if the run takes longer than ``timeout_s`` (what is still running is cancelled).
    """
    if concurrency < 1:
        raise BenchError(f"concurrency must be >= 1, got {concurrency}")
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos)
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    records: list[Generation | None] = [None] * len(prompts)
    running: dict[int, EngineGeneration] = {}

    def submit(index: int) -> None:
        record = Generation(start=time.perf_counter())
        records[index] = record

        def on_event(event: Event) -> None:
            now = time.perf_counter()
            if event.token_ids:
                record.arrivals.append(now)
                record.completion_tokens += len(event.token_ids)
            if event.finished:
                record.end = now
                record.finish_reason = event.finish_reason
                if event.usage is not None:
                    record.prompt_tokens = event.usage.prompt_tokens
                if not record.arrivals:
                    record.ok, record.error = False, f"no tokens (finish reason {event.finish_reason})"
                finished.put(index)

        try:
            running[index] = engine.submit(prompts[index], params, on_event)
        except EdgedsError as exc:  # refused (queue full, too large, closed): a failed request
            record.end = time.perf_counter()
            record.ok, record.error = False, f"{type(exc).__name__}: {exc}"
            finished.put(index)

    deadline = time.perf_counter() + timeout_s
    following = iter(range(len(prompts)))
    try:
        outstanding = 0  # submitted and not yet taken off ``finished``
        for index in following:
            submit(index)
            outstanding += 1
            if outstanding >= concurrency:
                break
        while outstanding:
            try:
                index = finished.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                raise BenchError(f"the engine run took over {timeout_s:.0f} s") from None
            running.pop(index, None)
            outstanding -= 1
            nxt = next(following, None)
            if nxt is not None:
                submit(nxt)
                outstanding += 1
    finally:
        for generation in running.values():
            generation.cancel()
    out = [r for r in records if r is not None]
    if len(out) != len(prompts):
        raise BenchError(f"{len(prompts) - len(out)} requests were never submitted")
    return out


__all__ = ["run_engine"]
