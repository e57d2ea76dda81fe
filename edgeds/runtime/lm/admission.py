"""Admission policy of the LM engine: a bounded FIFO in front of the runtime's scheduler.

Pure (no threads, no clock of its own: every call takes ``now`` in seconds of the caller's
clock), so its invariants are property-tested with a simulated clock. Not thread-safe: the
engine calls it under its lock.

Rules: at most ``max_running`` requests are in the runtime; the others wait in FIFO order, at
most ``max_queue`` of them (a request that finds the queue full gets :class:`QueueFull` at once,
with the caller's Retry-After hint). A queued request past its deadline leaves the queue through
:meth:`Admission.expire`; a cancelled one through :meth:`Admission.remove`. The runtime's own
scheduler batches what is admitted; this class never reorders or batches.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, TypeVar

from ...errors import QueueFull, RequestTooLarge

T = TypeVar("T")


def check_fits(prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    """Raise :class:`RequestTooLarge` with the reason when the request can never fit the context."""
    total = prompt_tokens + max_tokens
    if total > context_length:
        raise RequestTooLarge(
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} tokens exceeds the "
            f"context of {context_length} tokens by {total - context_length}"
        )


class _Entry(Generic[T]):
    __slots__ = ("deadline", "item", "live", "seq")

    def __init__(self, item: T, deadline: float | None, seq: int) -> None:
        self.item = item
        self.deadline = deadline
        self.seq = seq
        self.live = True


class Admission(Generic[T]):
    """The FIFO and the running count. See the module docstring."""

    def __init__(self, max_running: int, max_queue: int) -> None:
        if max_running < 1 or max_queue < 0:
            raise ValueError(f"max_running {max_running} must be >= 1 and max_queue {max_queue} >= 0")
        self.max_running = max_running
        self.max_queue = max_queue
        self.running = 0
        self._queue: deque[_Entry[T]] = deque()
        self._by_item: dict[int, _Entry[T]] = {}
        self._deadlines: list[tuple[float, int, _Entry[T]]] = []
        self._seq = 0

    def __len__(self) -> int:
        """Requests waiting in the queue."""
        return len(self._by_item)

    def offer(self, item: T, now: float, deadline: float | None = None, retry_after_s: float = 1.0) -> None:
        """Queue ``item`` (admitted by the next :meth:`admit` when a slot is free).

        Raises :class:`QueueFull` when ``max_queue`` requests already wait beyond the free slots.
        """
        free = self.max_running - self.running
        if len(self._by_item) >= self.max_queue + max(free, 0):
            raise QueueFull(
                f"{len(self._by_item)} requests wait for {self.max_running} sequences (max_queue {self.max_queue})",
                retry_after_s=retry_after_s,
            )
        entry = _Entry(item, deadline, self._seq)
        self._seq += 1
        self._queue.append(entry)
        self._by_item[id(item)] = entry
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, entry.seq, entry))

    def admit(self, now: float) -> list[T]:
        """Take queued requests, oldest first, into the free runtime slots (they count as running)."""
        admitted: list[T] = []
        queue = self._queue
        while queue and self.running < self.max_running:
            entry = queue.popleft()
            if not entry.live:
                continue
            entry.live = False
            del self._by_item[id(entry.item)]
            self.running += 1
            admitted.append(entry.item)
        return admitted

    def release(self) -> None:
        """One admitted request left the runtime (finished or cancelled)."""
        if self.running <= 0:
            raise ValueError("release() without an admitted request")
        self.running -= 1

    def remove(self, item: T) -> bool:
        """Take a still-queued ``item`` out (cancelled); False when it is not queued."""
        entry = self._by_item.pop(id(item), None)
        if entry is None:
            return False
        entry.live = False
        return True

    def expire(self, now: float) -> list[T]:
        """Remove and return the queued requests whose deadline is at or before ``now``."""
        expired: list[T] = []
        heap = self._deadlines
        while heap and (not heap[0][2].live or heap[0][0] <= now):
            _, _, entry = heapq.heappop(heap)
            if entry.live:
                entry.live = False
                del self._by_item[id(entry.item)]
                expired.append(entry.item)
        return expired

    def drain(self) -> list[T]:
        """Remove and return every queued request, oldest first (the engine is closing)."""
        drained = [entry.item for entry in self._queue if entry.live]
        for entry in self._queue:
            entry.live = False
        self._queue.clear()
        self._by_item.clear()
        self._deadlines.clear()
        return drained

    def ready(self) -> bool:
        """Whether :meth:`admit` would take something now."""
        return self.running < self.max_running and bool(self._by_item)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued request (when :meth:`expire` may next return one)."""
        heap = self._deadlines
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None
