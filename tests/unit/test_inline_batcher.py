"""InlineBatcher: one queue per instance, run by the thread that calls ``run_ready`` (no threads of its own)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeds.config import Batching
from edgeds.errors import QueueFull, ServiceUnavailable
from edgeds.runtime.batcher import InlineBatcher, Pending, QueueTimeout

Item = tuple[int, int]  # (instance it was submitted to, submission index)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, list[Pending[Item]]]] = []
        self.rejected: list[tuple[Pending[Item], Exception]] = []

    def execute(self, batch: list[Pending[Item]], instance: int) -> None:
        self.batches.append((instance, batch))

    def reject(self, pending: Pending[Item], error: Exception) -> None:
        self.rejected.append((pending, error))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_batch=st.integers(1, 6),
    instances=st.integers(1, 3),
    steps=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 6), st.booleans()), min_size=1, max_size=80),
)
def test_every_request_runs_once_on_its_own_instance_in_order(
    max_batch: int, instances: int, steps: list[tuple[int, int, bool]]
) -> None:
    """Submits interleaved with run_ready calls, then everything run out: nothing lost or duplicated,
    no batch over the maximum, no request split, a batch only on the instance it was submitted to, and
    each instance's requests executed in submission order (one priority level)."""
    config = Batching(max_batch_size=max_batch, max_queue_delay_us=0, max_queue_size=10_000)
    rec = Recorder()
    batcher: InlineBatcher[Item] = InlineBatcher(config, rec.execute, rec.reject, instances)
    submitted: list[Item] = []
    for index, (instance, size, drive) in enumerate(steps):
        instance %= instances
        item = (instance, index)
        batcher.submit(item, min(size, max_batch), instance=instance)
        submitted.append(item)
        if drive:
            batcher.run_ready(instance)
    for instance in range(instances):
        while batcher.run_ready(instance) == 0:
            pass
    ran = [p.item for _, batch in rec.batches for p in batch]
    assert sorted(ran) == sorted(submitted) and len(ran) == len(set(ran))
    assert not rec.rejected and batcher.depth() == 0
    for instance, batch in rec.batches:
        assert sum(p.size for p in batch) <= max_batch
        assert all(p.item[0] == instance for p in batch)
    for instance in range(instances):
        order = [p.item[1] for i, batch in rec.batches if i == instance for p in batch]
        assert order == sorted(order)


def test_run_ready_says_when_to_come_back() -> None:
    config = Batching(max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=50_000)
    rec = Recorder()
    batcher: InlineBatcher[Item] = InlineBatcher(config, rec.execute, rec.reject, 2)
    assert batcher.run_ready(0) is None  # nothing queued: wait for a submit
    before = time.monotonic_ns()
    batcher.submit((0, 0), 1, instance=0)
    wake = batcher.run_ready(0)  # one sample of a preferred four: wait for the delay
    assert wake is not None and before + 50_000_000 <= wake <= time.monotonic_ns() + 50_000_000
    assert rec.batches == [] and batcher.run_ready(1) is None  # the other instance has nothing
    batcher.submit((0, 1), 3, instance=0)
    assert batcher.run_ready(0) == 0  # a preferred batch goes at once
    assert [[p.item for p in batch] for _, batch in rec.batches] == [[(0, 0), (0, 1)]]
    assert batcher.run_ready(0) is None


def test_queue_size_counts_every_instance_and_timeouts_are_rejected() -> None:
    config = Batching(max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=10_000_000, max_queue_size=3)
    rec = Recorder()
    batcher: InlineBatcher[Item] = InlineBatcher(config, rec.execute, rec.reject, 2)
    batcher.submit((0, 0), 1, instance=0, timeout_us=1_000)
    batcher.submit((0, 1), 1, instance=0)
    batcher.submit((1, 2), 1, instance=1)
    with pytest.raises(QueueFull):
        batcher.submit((1, 3), 1, instance=1)
    time.sleep(0.005)
    wake = batcher.run_ready(0)  # (0, 0) is past its 1 ms: rejected on the instance's own thread
    assert wake == 0 and [(p.item, type(e)) for p, e in rec.rejected] == [((0, 0), QueueTimeout)]
    assert batcher.depth() == 2
    batcher.submit((1, 3), 1, instance=1)  # room again


def test_close_rejects_what_is_queued_and_waits_for_a_running_batch() -> None:
    config = Batching(max_batch_size=1, max_queue_delay_us=0)
    started, release = threading.Event(), threading.Event()
    rejected: list[tuple[Item, Exception]] = []

    def execute(batch: list[Pending[Item]], instance: int) -> None:
        started.set()
        release.wait(10)

    batcher: InlineBatcher[Item] = InlineBatcher(config, execute, lambda p, e: rejected.append((p.item, e)), 2)
    batcher.submit((0, 0), 1, instance=0)
    batcher.submit((1, 1), 1, instance=1)
    runner = threading.Thread(target=batcher.run_ready, args=(0,))
    runner.start()
    assert started.wait(10)
    closed = threading.Event()

    def close() -> None:
        batcher.close()
        closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    time.sleep(0.1)
    assert not closed.is_set()  # instance 0 is still executing: the backends must not be closed under it
    release.set()
    closer.join(10)
    runner.join(10)
    assert closed.is_set()
    assert [(item, type(e)) for item, e in rejected] == [((1, 1), ServiceUnavailable)]
    with pytest.raises(ServiceUnavailable):
        batcher.submit((0, 2), 1, instance=0)
    assert batcher.run_ready(0) is None


def test_wait_idle_needs_someone_to_run_the_queue() -> None:
    rec = Recorder()
    batcher: InlineBatcher[Item] = InlineBatcher(
        Batching(max_batch_size=2, max_queue_delay_us=0), rec.execute, rec.reject
    )
    batcher.submit((0, 0), 1, instance=0)
    assert batcher.wait_idle(0.05) is False
    assert batcher.run_ready(0) == 0
    assert batcher.wait_idle(1.0) is True


def test_an_inline_batcher_needs_an_instance() -> None:
    rec = Recorder()
    with pytest.raises(ValueError):
        InlineBatcher(Batching(), rec.execute, rec.reject, 0)


def test_close_from_a_running_batch_still_waits_for_the_other_instances() -> None:
    """A batch's own callback may close the engine: close() must not wait for that batch (it would
    wait for itself) but must wait for the other instances' batches before the backends go."""
    config = Batching(max_batch_size=1, max_queue_delay_us=0)
    other_started, release_other = threading.Event(), threading.Event()
    events: list[str] = []
    batcher: InlineBatcher[Item]

    def execute(batch: list[Pending[Item]], instance: int) -> None:
        if instance == 1:
            other_started.set()
            release_other.wait(10)
            events.append("instance 1 done")
        else:
            threading.Timer(0.2, release_other.set).start()
            batcher.close()
            events.append("close returned")

    batcher = InlineBatcher(config, execute, lambda p, e: None, 2)
    batcher.submit((0, 0), 1, instance=0)
    batcher.submit((1, 1), 1, instance=1)
    other = threading.Thread(target=batcher.run_ready, args=(1,))
    other.start()
    assert other_started.wait(10)
    batcher.run_ready(0)
    other.join(10)
    assert events == ["instance 1 done", "close returned"]


def test_an_instance_outside_the_queues_is_refused() -> None:
    rec = Recorder()
    batcher: InlineBatcher[Item] = InlineBatcher(Batching(), rec.execute, rec.reject, 2)
    for instance in (-1, 2):
        with pytest.raises(ValueError, match="outside"):
            batcher.submit((0, 0), 1, instance=instance)
