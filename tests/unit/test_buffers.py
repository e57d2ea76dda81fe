"""The buffer pool: buckets, staging arrays, output slots leased and reused."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from edgeds.backends.base import TensorSpec
from edgeds.errors import BackendError, RequestError
from edgeds.runtime.buffers import BufferPool

SPEC = (TensorSpec("input", "float32", (-1, 3, 4, 4)),)


def test_bucket_for_picks_smallest_fitting_bucket() -> None:
    pool = BufferPool(SPEC, (8, 1, 4, 2))
    assert pool.buckets == (1, 2, 4, 8)
    assert [pool.bucket_for(n) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 4, 4, 8, 8]
    with pytest.raises(RequestError):
        pool.bucket_for(9)
    with pytest.raises(RequestError):
        pool.bucket_for(0)
    assert pool.inputs(4)["input"].shape == (4, 3, 4, 4)
    assert pool.inputs(4)["input"] is pool.inputs(4)["input"]


class Staged:
    def __init__(self) -> None:
        self.arrays = {b: np.zeros((b, 3, 4, 4), np.float32) for b in (1, 2)}

    def staging_inputs(self, batch: int) -> Mapping[str, np.ndarray]:
        return {"input": self.arrays[batch]}


def test_pool_uses_backend_staging_arrays() -> None:
    staged = Staged()
    pool = BufferPool(SPEC, (1, 2), staging=staged)
    assert pool.inputs(2)["input"] is staged.arrays[2]


def test_output_slots_are_reused_after_all_leases_release() -> None:
    pool = BufferPool(SPEC, (1, 4))
    like = {"logits": np.zeros((4, 5), np.float32)}
    slot = pool.acquire(4, like)
    assert pool.slots_allocated == 1 and slot.outputs["logits"].shape == (4, 5)
    slot.lease(2)
    other = pool.acquire(4, like)  # the first is leased: the pool grows
    assert other is not slot and pool.slots_allocated == 2
    other.lease(1)
    other.release()
    slot.release()
    assert pool.acquire(4, like) is other  # free list, no new allocation
    slot.release()  # last lease of the first slot
    assert pool.acquire(4, like) is slot
    assert pool.slots_allocated == 2


def test_variable_sample_dims_rejected() -> None:
    with pytest.raises(BackendError, match="variable non-batch"):
        BufferPool((TensorSpec("input", "float32", (-1, 3, -1, -1)),), (1,))
