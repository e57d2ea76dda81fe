"""Run a generic bundle once on an ``.npz`` of input tensors: file -> engine -> raw output tensors.

What ``edgeds run`` does for ``task: generic``, in-process: the ``.npz`` holds one array per
input name (:func:`~edgeds.runtime.npz_inputs.load_npz_inputs`: shapes checked, integer and float
kinds kept, cast to the model's dtypes), the engine (not warmed) runs it and every output comes
back as is. Nothing is preprocessed or decoded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RequestError
from .engine import Engine
from .npz_inputs import load_npz_inputs


@dataclass(frozen=True)
class TensorRun:
    """The result of :func:`run_tensors`: what ran, how long it took (wall clock: opening the engine,
    reading the file, inference) and every output by name (caller-owned arrays)."""

    model: str
    backend: str
    precision: str
    seconds: float
    outputs: dict[str, np.ndarray]


def run_tensors(
    bundle_path: Path, input_path: Path, *, key: Path | None = None, threads: int | None = None
) -> TensorRun:
    """Run the bundle at ``bundle_path`` once on the ``.npz`` at ``input_path``.

    The bundle is verified against the public ``key`` when one is given; the engine is opened
    without warm-up with ``threads`` CPU threads and closed before this returns. Raises
    :class:`RequestError` when the file does not fit the model's inputs or holds more samples
    than the bundle's ``max_batch_size``.
    """
    from ..bundle import load_bundle

    with load_bundle(bundle_path, key, verify=key is not None) as loaded:
        manifest = loaded.manifest
        started = time.perf_counter()
        with Engine.from_bundle(loaded, threads=threads, warmup=False) as engine:
            assert engine.io is not None and engine.selection is not None
            opened = engine.selection
            layout = manifest.layout_for(opened.index)
            feeds = load_npz_inputs(input_path, loaded.card, layout, engine.io.inputs)
            rows = len(next(iter(feeds.values())))
            limit = engine.batching.max_batch_size
            if rows > limit:
                raise RequestError(f"{input_path} holds {rows} samples; the bundle batches at most {limit}")
            outputs = {name: np.array(value, copy=True) for name, value in engine.infer(feeds).items()}
        seconds = time.perf_counter() - started
    return TensorRun(manifest.model.name, opened.runtime, opened.precision or manifest.precision, seconds, outputs)
