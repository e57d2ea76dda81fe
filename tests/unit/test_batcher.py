"""Property tests of the Triton batching policy (simulated clock) and of its threaded driver."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeds.config import Batching
from edgeds.errors import QueueFull, RequestError
from edgeds.runtime.batcher import BatchQueue, DynamicBatcher, Pending, QueueTimeout

US = 1000  # ns


@dataclass(frozen=True)
class Arrival:
    gap_us: int
    size: int
    key: int
    priority: int
    timeout_us: int | None


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Batching, list[Arrival], int]:
    max_batch = draw(st.integers(1, 8))
    preferred = draw(st.lists(st.integers(1, max_batch), max_size=3, unique=True))
    levels = draw(st.integers(1, 3))
    config = Batching(
        max_batch_size=max_batch,
        preferred_batch_sizes=tuple(preferred),
        max_queue_delay_us=draw(st.sampled_from([0, 50, 200, 1000])),
        max_queue_size=10_000,
        default_timeout_us=draw(st.sampled_from([None, 300, 5000])),
        priority_levels=levels,
    )
    arrivals = draw(
        st.lists(
            st.builds(
                Arrival,
                gap_us=st.integers(0, 300),
                size=st.integers(1, max_batch),
                key=st.integers(0, 1),
                priority=st.integers(0, levels),
                timeout_us=st.one_of(st.none(), st.integers(1, 2000)),
            ),
            min_size=1,
            max_size=60,
        )
    )
    exec_us = draw(st.integers(0, 400))
    return config, arrivals, exec_us


@dataclass
class Dispatch:
    time_ns: int
    batch: list[Pending[int]]
    blocked_after: bool


def simulate(
    config: Batching, arrivals: list[Arrival], exec_us: int
) -> tuple[list[Dispatch], list[tuple[int, Pending[int]]], list[Pending[int]]]:
    """Event-driven run: the engine takes a batch only when free; returns dispatches, expiries, pushes."""
    queue: BatchQueue[int] = BatchQueue(config)
    times = []
    t = 0
    for a in arrivals:
        t += a.gap_us * US
        times.append(t)
    pushed: list[Pending[int]] = []
    dispatches: list[Dispatch] = []
    expired: list[tuple[int, Pending[int]]] = []
    live: dict[int, Pending[int]] = {}
    now, busy_until, i = 0, 0, 0
    delay_ns = config.max_queue_delay_us * US
    for _ in range(100_000):
        while i < len(arrivals) and times[i] <= now:
            a = arrivals[i]
            p = queue.push(i, a.size, times[i], key=a.key, priority=a.priority, timeout_us=a.timeout_us)
            pushed.append(p)
            live[p.seq] = p
            i += 1
        for p in queue.expire(now):
            assert p.deadline_ns is not None and p.deadline_ns <= now
            expired.append((now, p))
            del live[p.seq]
        if busy_until <= now and live:
            levels_live = min(p.level for p in live.values())
            batch = queue.next_batch(now)
            if batch is not None:
                for p in batch:
                    del live[p.seq]
                # the batch starts at the highest live priority level
                assert batch[0].level == levels_live
                dispatches.append(Dispatch(now, batch, bool(live)))
                busy_until = now + exec_us * US
                continue
            # idle with work queued: the batcher must plan to wake no later than the delay bound
            oldest = min(p.arrival_ns for p in live.values())
            wake = queue.wake_at()
            assert wake is not None and wake <= oldest + delay_ns
            assert now < oldest + delay_ns
        if i == len(arrivals) and not live:
            break
        candidates = []
        if i < len(arrivals):
            candidates.append(times[i])
        if live:
            if busy_until > now:
                candidates.append(busy_until)
            wake = queue.wake_at()
            if wake is not None:
                candidates.append(max(wake, now if busy_until <= now else busy_until))
        now = min(c for c in candidates if c >= now) if candidates else now
    else:  # pragma: no cover - the simulation must terminate
        raise AssertionError("simulation did not terminate")
    return dispatches, expired, pushed


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_batching_invariants(scenario: tuple[Batching, list[Arrival], int]) -> None:
    config, arrivals, exec_us = scenario
    dispatches, expired, pushed = simulate(config, arrivals, exec_us)
    preferred = set(config.preferred_batch_sizes or (config.max_batch_size,))
    delay_ns = config.max_queue_delay_us * US

    # nothing lost or duplicated
    seen = [p.item for d in dispatches for p in d.batch] + [p.item for _, p in expired]
    assert sorted(seen) == list(range(len(arrivals)))

    order: dict[int, int] = {}
    position = 0
    for d in dispatches:
        total = sum(p.size for p in d.batch)
        # no batch over the maximum; requests are whole (sizes as submitted) and share one shape key
        assert 1 <= total <= config.max_batch_size
        assert all(p.size == arrivals[p.item].size for p in d.batch)
        assert len({p.key for p in d.batch}) == 1
        # no expired request is ever executed
        assert all(p.deadline_ns is None or p.deadline_ns > d.time_ns for p in d.batch)
        # a batch sent before the oldest request waited the delay must have a reason
        oldest = min(p.arrival_ns for p in d.batch)
        if delay_ns and d.time_ns - oldest < delay_ns:
            assert total in preferred or total == config.max_batch_size or d.blocked_after
        for p in d.batch:
            order[p.seq] = position
            position += 1

    # FIFO within a priority level
    by_level: dict[int, list[Pending[int]]] = {}
    for p in pushed:
        if p.seq in order:
            by_level.setdefault(p.level, []).append(p)
    for items in by_level.values():
        positions = [order[p.seq] for p in sorted(items, key=lambda p: p.seq)]
        assert positions == sorted(positions)

    # per-request timeout only shortens the default
    for p in pushed:
        a = arrivals[p.item]
        limits = [t for t in (config.default_timeout_us, a.timeout_us) if t]
        expected = p.arrival_ns + min(limits) * US if limits else None
        assert p.deadline_ns == expected


def test_preferred_size_sent_at_once_and_delay_waits() -> None:
    config = Batching(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_us=1000)
    q: BatchQueue[int] = BatchQueue(config)
    for i in range(3):
        q.push(i, 1, 0)
    assert q.next_batch(10 * US) is None  # 3 samples, not preferred, oldest 10 µs old
    assert q.wake_at() == 1000 * US
    q.push(3, 1, 20 * US)
    batch = q.next_batch(20 * US)
    assert batch is not None and [p.item for p in batch] == [0, 1, 2, 3]
    q.push(4, 2, 30 * US)
    assert q.next_batch(500 * US) is None
    late = q.next_batch(1030 * US)
    assert late is not None and [p.item for p in late] == [4]


def test_shape_mismatch_ends_batch_and_request_never_split() -> None:
    q: BatchQueue[str] = BatchQueue(Batching(max_batch_size=4))
    q.push("a", 3, 0, key=(3, 8))
    q.push("b", 2, 0, key=(3, 8))  # does not fit with a
    q.push("c", 1, 0, key=(1, 1))
    first, second, third = q.next_batch(0), q.next_batch(0), q.next_batch(0)
    assert [p.item for p in first or []] == ["a"]
    assert [p.item for p in second or []] == ["b"]
    assert [p.item for p in third or []] == ["c"]


def test_queue_full_and_bad_sizes_rejected() -> None:
    q: BatchQueue[int] = BatchQueue(Batching(max_batch_size=4, max_queue_size=2, priority_levels=2))
    q.push(0, 1, 0)
    q.push(1, 1, 0)
    with pytest.raises(QueueFull, match="maximum queue size"):
        q.push(2, 1, 0)
    with pytest.raises(RequestError):
        q.push(3, 5, 0)
    with pytest.raises(RequestError):
        q.push(3, 1, 0, priority=3)


def test_priority_levels_served_first() -> None:
    q: BatchQueue[str] = BatchQueue(Batching(max_batch_size=2, priority_levels=2))
    q.push("low1", 1, 0)  # priority 0 = default = lowest level
    q.push("low2", 1, 0)
    q.push("high", 1, 5, priority=1)
    batch = q.next_batch(10)
    assert [p.item for p in batch or []] == ["high", "low1"]


def test_threaded_batcher_grows_batches_while_busy() -> None:
    executed: list[list[int]] = []
    rejected: list[int] = []
    gate = threading.Event()
    busy = threading.Event()

    def execute(batch: list[Pending[int]], worker: int) -> None:
        busy.set()
        gate.wait(5)
        executed.append([p.item for p in batch])

    batcher: DynamicBatcher[int] = DynamicBatcher(
        Batching(max_batch_size=8), execute, lambda p, e: rejected.append(p.item)
    )
    try:
        batcher.submit(0, 1)
        assert busy.wait(5)  # the first request is taken alone (delay 0), the engine is now busy
        for i in range(1, 8):
            batcher.submit(i, 1)
        gate.set()
        assert batcher.wait_idle(5)
    finally:
        batcher.close()
    assert executed == [[0], [1, 2, 3, 4, 5, 6, 7]]
    assert rejected == []


def test_threaded_batcher_times_out_queued_requests() -> None:
    errors: list[Exception] = []
    release = threading.Event()

    def execute(batch: list[Pending[int]], worker: int) -> None:
        release.wait(2)  # the engine stays busy until the test releases it

    batcher: DynamicBatcher[int] = DynamicBatcher(Batching(max_batch_size=1), execute, lambda p, e: errors.append(e))
    try:
        batcher.submit(0, 1)
        time.sleep(0.02)
        batcher.submit(1, 1, timeout_us=1000)  # waits behind the busy engine, expires
        time.sleep(0.05)
        release.set()
        assert batcher.wait_idle(5)
    finally:
        batcher.close()
    assert len(errors) == 1 and isinstance(errors[0], QueueTimeout)


def test_threaded_batcher_runs_one_batch_per_free_worker() -> None:
    """Two workers (two engine instances): two batches execute at once, a third waits for a free one."""
    gate = threading.Event()
    lock = threading.Lock()
    running: set[int] = set()
    peak = 0
    executed: list[tuple[int, list[int]]] = []

    def execute(batch: list[Pending[int]], worker: int) -> None:
        nonlocal peak
        with lock:
            running.add(worker)
            peak = max(peak, len(running))
        gate.wait(5)
        with lock:
            running.discard(worker)
            executed.append((worker, [p.item for p in batch]))

    batcher: DynamicBatcher[int] = DynamicBatcher(Batching(max_batch_size=2), execute, lambda p, e: None, workers=2)
    try:
        for i in range(6):
            batcher.submit(i, 1)
        deadline = time.monotonic() + 5
        while peak < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert peak == 2  # both workers hold a batch while the gate is closed
        assert batcher.depth() >= 2  # the rest waits: no third batch without a free worker
        gate.set()
        assert batcher.wait_idle(5)
    finally:
        batcher.close()
    assert peak == 2
    assert {w for w, _ in executed} == {0, 1}
    assert sorted(i for _, items in executed for i in items) == list(range(6))  # nothing lost or repeated
    assert all(len(items) <= 2 for _, items in executed)


def test_batcher_needs_a_worker() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(Batching(), lambda b, w: None, lambda p, e: None, workers=0)
