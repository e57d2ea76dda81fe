"""The LLM benchmark's floor: the bare LM runtime driven in-process with the benchmark's requests.

:func:`run_floor` keeps ``concurrency`` sequences in an opened :class:`~edgeds.backends.lm.LMBackend`
(for OpenVINO GenAI: its ``ContinuousBatchingPipeline``, opened with the same KV plan and options
as the engine ``edgeds serve`` runs) and steps it in a loop on the calling thread: no engine, no
admission queue, no HTTP, no detokenization. When a sequence finishes the next request is added
before the next step, as a closed-loop client would send it. Each request's record carries the
time of every step that gave it tokens, so its figures read like the load generator's
(:mod:`.llm_stats`). What ``edgeds serve`` reaches of this floor is what its own serving costs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from ..backends.lm import GenParams, LMBackend, LMHandle
from ..errors import BenchError
from .llm_stats import Generation


def run_floor(
    backend: LMBackend,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    concurrency: int,
    *,
    ignore_eos: bool = True,
    timeout_s: float = 900.0,
    first_id: int = 1,
) -> list[Generation]:
    """Generate ``max_tokens`` greedy tokens (``ignore_eos``) for each of ``prompts`` (token ids),
    at most ``concurrency`` sequences in the runtime at once, and return their records in prompt
    order. ``backend`` is open and idle; request ids count from ``first_id``.

    BenchError if the backend has unfinished sequences at the start, or the run takes longer than
    ``timeout_s`` (every sequence still in the runtime is cancelled first).
    """
    if concurrency < 1:
        raise BenchError(f"concurrency must be >= 1, got {concurrency}")
    if backend.has_unfinished():
        raise BenchError("the runtime has unfinished sequences: the floor needs it idle")
    params = GenParams(max_tokens=max_tokens, ignore_eos=ignore_eos)
    pending = deque(enumerate(prompts))
    active: dict[int, tuple[int, LMHandle, Generation]] = {}
    done: dict[int, Generation] = {}
    next_id = first_id
    deadline = time.perf_counter() + timeout_s
    try:
        while pending or active:
            while pending and len(active) < concurrency:
                index, ids = pending.popleft()
                record = Generation(start=time.perf_counter(), prompt_tokens=len(ids))
                active[next_id] = (index, backend.add(next_id, ids, params), record)
                next_id += 1
            backend.step()
            now = time.perf_counter()
            for rid in list(active):
                index, handle, record = active[rid]
                tokens = handle.read()
                if tokens:
                    record.arrivals.append(now)
                    record.completion_tokens += len(tokens)
                if handle.finished:
                    record.end = now
                    record.finish_reason = handle.finish_reason
                    record.ok = bool(record.arrivals)
                    if not record.ok:
                        record.error = f"no tokens (finish reason {handle.finish_reason})"
                    done[index] = record
                    del active[rid]
            if now > deadline:
                raise BenchError(f"the floor run took over {timeout_s:.0f} s ({len(done)} of {len(prompts)} done)")
    finally:
        if active:
            for _, handle, _ in active.values():
                handle.cancel()
            for _ in range(100):  # cancelled sequences leave the runtime at its next steps
                if not backend.has_unfinished():
                    break
                backend.step()
    return [done[i] for i in range(len(prompts))]


__all__ = ["run_floor"]
