"""Dynamic batcher with Triton's semantics (docs/runtime.md, "Batching (Triton semantics)").

Two layers:

* :class:`BatchQueue` is the pure policy: no threads, no clock of its own (every call takes
  ``now_ns``), so its invariants are property-tested with a simulated clock.
* :class:`DynamicBatcher` drives a queue with one worker thread per engine instance (Triton's
  ``instance_group`` count): a worker forms a batch only when its previous one has finished
  executing (its instance is free), so under load the queue grows while the instances are busy
  and batches grow by themselves even with ``max_queue_delay_us == 0``.
* :class:`InlineBatcher` has no threads: one queue per instance, each run by the thread that owns
  the instance (the server's event loop for that instance) whenever it calls
  :meth:`InlineBatcher.run_ready`. The thread that receives a request also runs its batch, so
  nothing is handed between threads or cores on the way.

Rules (Triton's):

* Batch size counts samples (the first dim), a request is never split, and requests batch together
  only when their ``key`` (non-batch shapes) matches.
* The queue is walked in priority order (level 1 first, FIFO within a level). A batch is always
  a *prefix* of that order: the walk stops at the first request that does not fit or does not
  match, so no request overtakes an earlier one of the same or a higher level.
* If a prefix totals a preferred size (``preferred_batch_sizes``, default ``[max_batch_size]``)
  the largest such prefix is sent at once. Otherwise the whole prefix is sent when it is full,
  when the next request cannot join it, when ``max_queue_delay_us`` is 0, or when the oldest
  pending request has waited ``max_queue_delay_us``; else the batcher waits until then.
* ``max_queue_size`` (requests) full -> :class:`QueueFull` at once (HTTP 503).
* Per-request ``timeout_us`` can only shorten ``default_timeout_us``; a request still queued at its
  deadline is rejected with :class:`QueueTimeout` (HTTP 503).
* Priority ``0`` means the default level, which is the lowest (``priority_levels``); level 1 is
  the highest, as in Triton.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from ..config import Batching
from ..errors import QueueFull, RequestError, ServiceUnavailable

T = TypeVar("T")


class QueueTimeout(ServiceUnavailable):
    """A request reached its timeout while still queued."""


class Pending(Generic[T]):
    """One queued request: ``size`` samples of shape ``key``; times in ns of the caller's clock."""

    __slots__ = ("arrival_ns", "deadline_ns", "done", "item", "key", "level", "seq", "size")

    def __init__(
        self, item: T, size: int, key: Hashable, level: int, arrival_ns: int, deadline_ns: int | None, seq: int
    ) -> None:
        self.item = item
        self.size = size
        self.key = key
        self.level = level
        self.arrival_ns = arrival_ns
        self.deadline_ns = deadline_ns
        self.seq = seq
        self.done = False  # taken into a batch or expired (lazy deletion)


class BatchQueue(Generic[T]):
    """Triton batching policy over explicit timestamps. Not thread-safe: callers hold a lock."""

    def __init__(self, config: Batching) -> None:
        self.config = config
        self.max_batch = config.max_batch_size
        self.preferred = frozenset(config.preferred_batch_sizes or (config.max_batch_size,))
        self.delay_ns = config.max_queue_delay_us * 1000
        self._levels: list[deque[Pending[T]]] = [deque() for _ in range(config.priority_levels)]
        self._deadlines: list[tuple[int, int, Pending[T]]] = []
        self._live = 0
        self._seq = 0

    def __len__(self) -> int:
        return self._live

    def push(
        self,
        item: T,
        size: int,
        now_ns: int,
        key: Hashable = None,
        priority: int = 0,
        timeout_us: int | None = None,
    ) -> Pending[T]:
        """Queue ``item`` (``size`` samples). Raises :class:`QueueFull` or :class:`RequestError`."""
        if size < 1 or size > self.max_batch:
            raise RequestError(f"batch size {size} is outside 1..{self.max_batch}")
        levels = len(self._levels)
        if priority < 0 or priority > levels:
            raise RequestError(f"priority {priority} is outside 0..{levels}")
        if self._live >= self.config.max_queue_size:
            raise QueueFull(f"exceeds maximum queue size ({self.config.max_queue_size})")
        timeout = self.config.default_timeout_us
        if timeout_us is not None and timeout_us > 0 and (timeout is None or timeout_us < timeout):
            timeout = timeout_us
        deadline = now_ns + timeout * 1000 if timeout is not None else None
        level = (priority or levels) - 1
        pending = Pending(item, size, key, level, now_ns, deadline, self._seq)
        self._seq += 1
        self._levels[level].append(pending)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, pending.seq, pending))
        self._live += 1
        return pending

    def expire(self, now_ns: int) -> list[Pending[T]]:
        """Remove and return the requests whose deadline has passed."""
        expired: list[Pending[T]] = []
        heap = self._deadlines
        while heap and (heap[0][2].done or heap[0][0] <= now_ns):
            _, _, pending = heapq.heappop(heap)
            if not pending.done:
                pending.done = True
                self._live -= 1
                expired.append(pending)
        return expired

    def _walk(self) -> Iterator[Pending[T]]:
        for queue in self._levels:
            while queue and queue[0].done:
                queue.popleft()
            for pending in queue:
                if not pending.done:
                    yield pending

    def next_batch(self, now_ns: int) -> list[Pending[T]] | None:
        """The batch to run now (engine free), or None to wait (see :meth:`wake_at`).

        Call :meth:`expire` first so that no expired request is batched.
        """
        if self._live == 0:
            return None
        chosen: list[Pending[T]] = []
        total = 0
        preferred_len = 0
        blocked = False
        key: Hashable = None
        for pending in self._walk():
            if chosen and pending.key != key:
                blocked = True
                break
            if total + pending.size > self.max_batch:
                blocked = True
                break
            if not chosen:
                key = pending.key
            chosen.append(pending)
            total += pending.size
            if total in self.preferred:
                preferred_len = len(chosen)
            if total == self.max_batch:
                break
        if not chosen:
            return None
        if preferred_len:
            chosen = chosen[:preferred_len]
        elif not (
            total == self.max_batch or blocked or self.delay_ns == 0 or now_ns - self._oldest_arrival() >= self.delay_ns
        ):
            return None
        for pending in chosen:
            pending.done = True
        self._live -= len(chosen)
        return chosen

    def _oldest_arrival(self) -> int:
        return min(q[0].arrival_ns for q in self._levels if q)

    def wake_at(self) -> int | None:
        """When the decision of :meth:`next_batch` or :meth:`expire` may change without a new push."""
        if self._live == 0:
            return None
        times: list[int] = []
        if self.delay_ns:
            for queue in self._levels:
                while queue and queue[0].done:
                    queue.popleft()
            times.append(self._oldest_arrival() + self.delay_ns)
        heap = self._deadlines
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if heap:
            times.append(heap[0][0])
        return min(times) if times else None

    def drain_all(self) -> list[Pending[T]]:
        """Remove and return every queued request (engine closing)."""
        out = [p for p in self._walk()]
        for pending in out:
            pending.done = True
        for queue in self._levels:
            queue.clear()
        self._deadlines.clear()
        self._live = 0
        return out


def _wait_while(condition: threading.Condition, busy: Callable[[], bool], timeout: float | None) -> bool:
    """Wait on ``condition`` (and look again every 50 ms) while ``busy()``, which is read with the
    condition's lock held; False if ``timeout`` (seconds; None = no limit) ran out first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with condition:
        while busy():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            condition.wait(0.05 if remaining is None else min(remaining, 0.05))
    return True


Execute = Callable[[list[Pending[T]], int], None]
Reject = Callable[[Pending[T], Exception], None]


class DynamicBatcher(Generic[T]):
    """Runs :class:`BatchQueue` with ``workers`` threads; worker ``i`` calls ``execute(batch, i)``.

    ``execute`` runs on the worker's thread; that worker forms its next batch only after it
    returns, so at most ``workers`` batches execute at once (one per engine instance).
    ``reject(pending, error)`` is called (on a worker, or on the caller for :meth:`close`) for
    requests that expire in the queue or are dropped on close. :meth:`wait_idle` waits until the
    queue is empty and no batch executes.
    """

    def __init__(
        self, config: Batching, execute: Execute[T], reject: Reject[T], name: str = "batcher", workers: int = 1
    ) -> None:
        if workers < 1:
            raise ValueError(f"a batcher needs at least one worker, got {workers}")
        self.queue: BatchQueue[T] = BatchQueue(config)
        self._execute = execute
        self._reject = reject
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # workers wait here for requests
        self._drained = threading.Condition(lock)  # wait_idle waits here
        self._busy = 0  # workers executing a batch
        self._idle = 0  # workers waiting on the condition
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=name if workers == 1 else f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, item: T, size: int, key: Hashable = None, priority: int = 0, timeout_us: int | None = None
    ) -> Pending[T]:
        """Queue one request; raises :class:`QueueFull`, :class:`RequestError` or, after close, ServiceUnavailable."""
        with self._cond:
            if self._stopping:
                raise ServiceUnavailable("engine is closing")
            pending = self.queue.push(item, size, time.monotonic_ns(), key, priority, timeout_us)
            if self._idle:  # a busy worker looks at the queue when its batch is done: no wake-up needed
                self._cond.notify()
        return pending

    def _run(self, worker: int) -> None:
        cond = self._cond
        while True:
            batch: list[Pending[T]] | None = None
            with cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic_ns()
                    expired = self.queue.expire(now)
                    if expired:
                        break
                    batch = self.queue.next_batch(now)
                    if batch is not None:
                        break
                    wake = self.queue.wake_at()
                    if not self.queue and not self._busy:
                        self._drained.notify_all()
                    self._idle += 1
                    cond.wait(None if wake is None else max(0.0, (wake - now) / 1e9))
                    self._idle -= 1
                if not expired:
                    self._busy += 1
                    if self._idle and self.queue:  # more work than this worker took: wake a free one
                        cond.notify()
            if expired:
                for pending in expired:
                    self._reject(pending, QueueTimeout("request timed out in the queue"))
                continue
            if batch is None:
                continue
            try:
                self._execute(batch, worker)
            finally:
                with cond:
                    self._busy -= 1
                    if not self._busy and not self.queue:
                        self._drained.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and no batch is executing; False on timeout."""
        return _wait_while(self._drained, lambda: bool(self.queue or self._busy), timeout)

    def depth(self) -> int:
        with self._cond:
            return len(self.queue)

    def close(self) -> None:
        """Stop the workers (after their batches in flight) and reject what is still queued."""
        with self._cond:
            self._stopping = True
            dropped = self.queue.drain_all()
            self._cond.notify_all()
            self._drained.notify_all()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join()
        for pending in dropped:
            self._reject(pending, ServiceUnavailable("engine is closing"))


class InlineBatcher(Generic[T]):
    """One :class:`BatchQueue` per instance, executed by the caller: no threads of its own.

    Instance ``i``'s queue is filled by :meth:`submit` ``(instance=i)`` and emptied by
    :meth:`run_ready` ``(i)``, both called by the one thread that owns the instance (an event loop).
    That thread forms a batch only between its own batches, which is when its instance is free, so
    Triton's rules hold per instance exactly as in :class:`DynamicBatcher`; requests never move
    from one instance's queue to another's (a free instance does not take a busy one's requests).
    ``max_queue_size`` counts the requests of all queues together. :meth:`wait_idle`,
    :meth:`depth` and :meth:`close` may be called from any thread; ``reject`` runs on the thread
    that calls :meth:`run_ready` (expired requests) or :meth:`close` (dropped ones).
    """

    def __init__(self, config: Batching, execute: Execute[T], reject: Reject[T], instances: int = 1) -> None:
        if instances < 1:
            raise ValueError(f"an inline batcher needs at least one instance, got {instances}")
        self.queues: list[BatchQueue[T]] = [BatchQueue(config) for _ in range(instances)]
        self._limit = config.max_queue_size
        self._execute = execute
        self._reject = reject
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # wait_idle waits here
        self._queued = 0  # requests in all queues
        self._busy = 0  # instances executing a batch
        self._executing: set[int] = set()  # idents of the threads executing one
        self._stopping = False

    def submit(
        self,
        item: T,
        size: int,
        key: Hashable = None,
        priority: int = 0,
        timeout_us: int | None = None,
        instance: int = 0,
    ) -> Pending[T]:
        """Queue one request for ``instance``; raises :class:`QueueFull`, :class:`RequestError` or,
        after close, ServiceUnavailable. The caller then calls :meth:`run_ready` on that instance's thread."""
        if not 0 <= instance < len(self.queues):
            raise ValueError(f"instance {instance} is outside 0..{len(self.queues) - 1}")
        with self._lock:
            if self._stopping:
                raise ServiceUnavailable("engine is closing")
            if self._queued >= self._limit:
                raise QueueFull(f"exceeds maximum queue size ({self._limit})")
            pending = self.queues[instance].push(item, size, time.monotonic_ns(), key, priority, timeout_us)
            self._queued += 1
        return pending

    def run_ready(self, instance: int) -> int | None:
        """On ``instance``'s thread (one thread per instance, always the same: two would run two
        batches at once on one backend): reject what expired, then execute at most one batch if the
        policy releases one now. Returns 0 to be called again at once, a ``time.monotonic_ns()`` time
        to be called again then (a queue delay or a timeout ends), or None (nothing queued: wait for
        a submit).

        One batch per call, so the caller can take in the requests that arrived meanwhile before
        the next batch is formed (an event loop polls its sockets between two calls).
        """
        queue = self.queues[instance]
        with self._lock:
            if self._stopping:
                return None
            now = time.monotonic_ns()
            expired = queue.expire(now)
            batch = None if expired else queue.next_batch(now)
            taken = len(expired) + (len(batch) if batch else 0)
            self._queued -= taken
            if batch is not None:
                self._busy += 1
                self._executing.add(threading.get_ident())
            elif not expired:
                if not self._queued and not self._busy:
                    self._drained.notify_all()
                return queue.wake_at()
        for pending in expired:
            self._reject(pending, QueueTimeout("request timed out in the queue"))
        if batch is not None:
            try:
                self._execute(batch, instance)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._executing.discard(threading.get_ident())
                    if not self._busy and not self._queued:
                        self._drained.notify_all()
        return 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queue is empty and no batch is executing; False on timeout. The
        instances' threads must go on calling :meth:`run_ready` meanwhile."""
        return _wait_while(self._drained, lambda: bool(self._queued or self._busy), timeout)

    def depth(self) -> int:
        with self._lock:
            return self._queued

    def close(self) -> None:
        """Stop forming batches, reject what is still queued and return once no batch executes (the
        caller may then close the backends), unless called from a thread that is executing one."""
        with self._lock:
            self._stopping = True
            dropped = [pending for queue in self.queues for pending in queue.drain_all()]
            self._queued = 0
            self._drained.notify_all()
            own = 1 if threading.get_ident() in self._executing else 0  # a batch of this thread's own
            while self._busy > own:
                self._drained.wait(0.05)
        for pending in dropped:
            self._reject(pending, ServiceUnavailable("engine is closing"))


__all__ = ["BatchQueue", "DynamicBatcher", "InlineBatcher", "Pending", "QueueFull", "QueueTimeout"]
