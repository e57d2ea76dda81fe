"""ONNX Runtime binds a caller's aligned input in place and copies anything else (never a stale binding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.backends.onnxruntime import OnnxRuntimeBackend
from edgeds.errors import BackendError
from edgeds.runtime.testing import tiny_classifier

ort = pytest.importorskip("onnxruntime")
SIZE = 32


def aligned(x: np.ndarray, offset: int = 0) -> np.ndarray:
    """A copy of ``x`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    raw = np.empty(x.nbytes + 128, dtype=np.uint8)
    start = -raw.ctypes.data % 64 + offset
    out = raw[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


@pytest.mark.parametrize("calls", ["direct", "wrappers"])
def test_aligned_inputs_are_bound_in_place_others_copied(tmp_path: Path, calls: str) -> None:
    """Both call paths: onnxruntime's C objects (what the CPU provider gets here) and its public Python
    wrappers (what another onnxruntime layout falls back to)."""
    model = tiny_classifier(tmp_path / "m.onnx", size=SIZE)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    xs = [rng.random((2, 3, SIZE, SIZE), dtype=np.float32) for _ in range(4)]
    want = [session.run(None, {"input": x})[0] for x in xs]
    backend = OnnxRuntimeBackend({"intra_op_num_threads": 1})
    backend.open(model, [1, 2])
    try:
        bound = backend._bound[2]  # white box: which memory the bucket's binding reads
        assert bound is not None and backend._direct is not None  # the C objects are called directly (CPU provider)
        if calls == "wrappers":
            backend._direct = None  # white box: the fallback an onnxruntime without those objects takes
        staged = backend.staging_inputs(2)["input"]

        def run(x: np.ndarray) -> np.ndarray:
            return np.array(backend.infer({"input": x})["logits"])

        a = aligned(xs[0])
        np.testing.assert_allclose(run(a), want[0], atol=1e-5)
        assert bound.addresses["input"] == a.ctypes.data  # in place, no copy

        unaligned = aligned(xs[1], offset=4)
        np.testing.assert_allclose(run(unaligned), want[1], atol=1e-5)
        assert bound.addresses["input"] == staged.ctypes.data  # copied into the staging input
        np.testing.assert_array_equal(staged, xs[1])

        strided = np.asfortranarray(xs[2])
        np.testing.assert_allclose(run(strided), want[2], atol=1e-5)
        assert bound.addresses["input"] == staged.ctypes.data

        a[...] = xs[3]  # the same memory with new contents, bound again in place
        np.testing.assert_allclose(run(a), want[3], atol=1e-5)
        assert bound.addresses["input"] == a.ctypes.data

        staged[...] = xs[0]  # the engine's pooled path: the staging array itself
        np.testing.assert_allclose(run(staged), want[0], atol=1e-5)
        assert bound.addresses["input"] == staged.ctypes.data

        with pytest.raises(BackendError, match="exactly the inputs"):  # nothing is left bound to stale memory
            backend.infer({"input": a, "extra": a})
    finally:
        backend.close()
