"""Buffer pool: preallocated inputs and outputs per batch bucket.

Ownership and lifetime:

* **Inputs.** One set of input arrays per bucket size, allocated once in the constructor. When the
  backend offers staging buffers (:class:`StagingBackend`: e.g. ONNX Runtime's IOBinding inputs
  bound once, OpenVINO's shared-memory tensors), the pool *uses those arrays* so that request
  rows are copied at most once, straight into memory the backend reads (a batch of one request
  that fills its bucket skips the pool: the engine hands the request's arrays to the backend). Only the engine's worker
  thread writes them, between two ``infer`` calls.
* **Outputs.** A backend's outputs alias its own buffers and are overwritten by its next
  ``infer``. The engine copies the used rows into an :class:`OutputSlot` of the bucket and hands
  each request a *view* of its rows. A slot is leased to every request of the batch and returns
  to the bucket's free list when the last one calls :meth:`OutputSlot.release`. A bucket grows a
  new slot only when all its slots are leased (counted in :attr:`BufferPool.slots_allocated`);
  in steady state, with results released after serialization, nothing is allocated.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..backends.base import TensorSpec
from ..errors import BackendError, RequestError


@runtime_checkable
class StagingBackend(Protocol):
    """A backend that owns per-bucket input arrays it reads without copying.

    ``staging_inputs(batch)`` returns writable C-contiguous arrays ``[batch, *sample]`` per input
    name, valid until ``close``; passing exactly those arrays to ``infer`` avoids any copy.
    """

    def staging_inputs(self, batch: int) -> Mapping[str, np.ndarray]: ...


class OutputSlot:
    """Pooled outputs of one bucket execution, leased to the requests of one batch."""

    __slots__ = ("_leases", "_pool", "bucket", "outputs")

    def __init__(self, pool: BufferPool, bucket: int, outputs: dict[str, np.ndarray]) -> None:
        self._pool = pool
        self.bucket = bucket
        self.outputs = outputs
        self._leases = 0

    def lease(self, count: int) -> None:
        """Hand the slot to ``count`` holders (called by the engine's worker before publishing)."""
        self._leases = count

    def release(self) -> None:
        """One holder is done with its views; the last one returns the slot to the pool."""
        self._pool._release(self)


class BufferPool:
    """Input arrays and output slots for each batch size in ``buckets``.

    ``inputs`` must have fixed non-batch dims (``shape[0]`` is the batch dim and may be -1).
    ``staging`` (optional) provides backend-owned input arrays per bucket.
    """

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        buckets: Sequence[int],
        staging: StagingBackend | None = None,
    ) -> None:
        if not buckets:
            raise BackendError("a buffer pool needs at least one bucket size")
        self.buckets: tuple[int, ...] = tuple(sorted(set(int(b) for b in buckets)))
        if self.buckets[0] < 1:
            raise BackendError(f"bucket sizes must be >= 1, got {self.buckets}")
        self.sample_shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype[np.generic]] = {}
        for spec in inputs:
            sample = tuple(spec.shape[1:])
            if any(d < 0 for d in sample):
                raise BackendError(
                    f"input {spec.name!r} has variable non-batch dims {spec.shape}: "
                    "the pool needs fixed sample shapes (compile with static shapes)"
                )
            self.sample_shapes[spec.name] = sample
            self.dtypes[spec.name] = np.dtype(spec.dtype)
        self._inputs: dict[int, dict[str, np.ndarray]] = {}
        for bucket in self.buckets:
            staged = dict(staging.staging_inputs(bucket)) if staging is not None else {}
            arrays: dict[str, np.ndarray] = {}
            for name, sample in self.sample_shapes.items():
                array = staged.get(name)
                shape = (bucket, *sample)
                if array is None or array.shape != shape or array.dtype != self.dtypes[name]:
                    array = np.zeros(shape, dtype=self.dtypes[name])
                arrays[name] = array
            self._inputs[bucket] = arrays
        self._free: dict[int, list[OutputSlot]] = {b: [] for b in self.buckets}
        self._lock = threading.Lock()
        self.slots_allocated = 0

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket that holds ``rows`` samples."""
        index = bisect.bisect_left(self.buckets, rows)
        if rows < 1 or index == len(self.buckets):
            raise RequestError(f"batch of {rows} does not fit any bucket {self.buckets}")
        return self.buckets[index]

    def inputs(self, bucket: int) -> dict[str, np.ndarray]:
        """The bucket's pooled input arrays (written by the engine's worker only)."""
        return self._inputs[bucket]

    def acquire(self, bucket: int, like: Mapping[str, np.ndarray]) -> OutputSlot:
        """A free output slot of ``bucket`` shaped like the backend's outputs ``like``."""
        with self._lock:
            free = self._free[bucket]
            while free:
                slot = free.pop()
                if all(
                    name in slot.outputs
                    and slot.outputs[name].shape[1:] == array.shape[1:]
                    and slot.outputs[name].dtype == array.dtype
                    for name, array in like.items()
                ):
                    return slot
            self.slots_allocated += 1
        outputs = {name: np.empty((bucket, *array.shape[1:]), dtype=array.dtype) for name, array in like.items()}
        return OutputSlot(self, bucket, outputs)

    def _release(self, slot: OutputSlot) -> None:
        with self._lock:
            slot._leases -= 1
            if slot._leases == 0:
                self._free[slot.bucket].append(slot)

    def nbytes(self) -> int:
        """Bytes held by pooled inputs and idle output slots."""
        with self._lock:
            total = sum(a.nbytes for arrays in self._inputs.values() for a in arrays.values())
            total += sum(a.nbytes for slots in self._free.values() for s in slots for a in s.outputs.values())
        return total


__all__ = ["BufferPool", "OutputSlot", "StagingBackend"]
