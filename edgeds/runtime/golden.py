"""The golden check: a model's outputs on its golden inputs against the outputs recorded in its bundle.

Used where an artifact is checked on the device: by the deploy's health check, and by the engine
before it serves an artifact that could only be gated on the device (a TensorRT engine built
there, see :mod:`edgeds.runtime.selection`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..backends.base import Backend, IOSpec


def golden_mismatch(
    outputs: Mapping[str, Any], golden: Mapping[str, np.ndarray], atol: float, rtol: float, min_cosine: float
) -> str | None:
    """Why ``outputs`` do not match ``golden`` (every output within ``atol``/``rtol`` and its cosine
    at least ``min_cosine``), in one line; None when they do."""
    for name, ref in golden.items():
        got = outputs.get(name)
        if got is None:
            return f"output {name!r} missing"
        got64 = np.asarray(got, dtype=np.float64).reshape(ref.shape)
        ref64 = ref.astype(np.float64)
        if not np.allclose(got64, ref64, atol=atol, rtol=rtol):
            worst = float(np.max(np.abs(got64 - ref64)))
            return f"{name} differs by up to {worst:.4g} (atol {atol}, rtol {rtol})"
        denom = float(np.linalg.norm(got64) * np.linalg.norm(ref64)) or 1.0
        cosine = float(np.sum(got64 * ref64)) / denom
        if cosine < min_cosine:
            return f"{name} cosine {cosine:.5f} < {min_cosine}"
    return None


def run_golden(
    backend: Backend,
    io: IOSpec,
    buckets: Sequence[int],
    image: np.ndarray,
    extra: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Outputs of an opened ``backend`` on the golden rows (``image`` for the input ``extra`` does not
    name, plus ``extra``), run in chunks of an opened bucket, the last chunk padded with zeros."""
    image_input = next((s.name for s in io.inputs if s.name not in extra), None)  # None: a generic model
    rows = int(image.shape[0])
    fitting = [b for b in sorted(buckets) if b <= rows]
    size = fitting[-1] if fitting else min(buckets)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, rows, size):
        count = min(size, rows - start)
        feeds = {k: v[start : start + count] for k, v in extra.items()}
        if image_input is not None:
            feeds[image_input] = image[start : start + count]
        padded = {}
        for name, chunk in feeds.items():
            spec = next(s for s in io.inputs if s.name == name)
            full = np.zeros((size, *chunk.shape[1:]), dtype=np.dtype(spec.dtype))
            full[:count] = chunk
            padded[name] = full
        for name, value in backend.infer(padded).items():
            parts.setdefault(name, []).append(np.array(value[:count]))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
