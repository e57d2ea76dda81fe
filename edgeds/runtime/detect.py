"""Detect objects in one input file with a detection bundle: file -> model input -> engine -> boxes.

What ``edgeds run`` does for an ``object-detection`` bundle, once, in-process: the input is read
and preprocessed as for a classifier (:func:`edgeds.runtime.classify.load_inputs`), the engine
(not warmed) runs it, and the head is decoded with the card's thresholds (:mod:`edgeds.boxes`),
boxes mapped back to each original image's pixels. The server itself serves the raw head tensor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..boxes import Geometry, decode, geometry
from ..errors import RequestError
from ..modelcard import DetectionCard
from .classify import IMAGE_SUFFIXES, load_inputs
from .engine import Engine


@dataclass(frozen=True)
class Box:
    """One detection: its label, class index, score and box (x1, y1, x2, y2 in image pixels)."""

    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectionRun:
    """The result of :func:`detect_file`: what ran, how long it took (``seconds``: opening the engine,
    reading the input and inference, wall clock) and one list of boxes per input sample, best first."""

    model: str
    backend: str
    precision: str
    seconds: float
    detections: list[list[Box]]


def bundle_task(bundle_path: Path) -> str:
    """The task of the bundle at ``bundle_path`` (its manifest, not verified)."""
    from ..bundle import load_bundle

    with load_bundle(bundle_path, None, verify=False) as loaded:
        return loaded.manifest.task


def image_sizes(path: Path, rows: int, card: DetectionCard) -> list[tuple[int, int]]:
    """Each sample's original ``(height, width)``: the image's, a uint8 ``.npy``'s, or the model
    input's for an already preprocessed ``.npy`` (its boxes are then in input pixels)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as img:
            return [(img.height, img.width)] * rows
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.dtype == np.uint8 and array.ndim in (3, 4) and array.shape[-1] == 3:
        return [(int(array.shape[-3]), int(array.shape[-2]))] * rows
    return [(card.input.height, card.input.width)] * rows


def fits(sizes: list[tuple[int, int]], card: DetectionCard) -> list[Geometry]:
    """How each image of ``sizes`` is fitted to ``card``'s input (to map boxes back)."""
    spec = card.input
    return [geometry(h, w, spec.height, spec.width, spec.resize == "letterbox") for h, w in sizes]


def detect_file(
    bundle_path: Path, input_path: Path, *, key: Path | None = None, threads: int | None = None
) -> DetectionRun:
    """Run the detection bundle at ``bundle_path`` once on the image or ``.npy`` at ``input_path``.

    The bundle is verified against the public ``key`` when one is given; the engine is opened
    without warm-up, with ``threads`` CPU threads, and closed before this returns. Raises
    :class:`~edgeds.errors.RequestError` for an unreadable input, more samples than the bundle
    batches, or a bundle that is not an object detector.
    """
    from ..bundle import load_bundle

    with load_bundle(bundle_path, key, verify=key is not None) as loaded:
        card, manifest = loaded.card, loaded.manifest
        if not isinstance(card, DetectionCard):
            raise RequestError(f"{bundle_path} is a {manifest.task} bundle, not an object detector")
        started = time.perf_counter()
        with Engine.from_bundle(loaded, threads=threads, warmup=False) as engine:
            assert engine.io is not None and engine.selection is not None
            opened = engine.selection  # the artifact this machine opened: its layout and runtime
            spec = engine.io.inputs[0]
            layout = manifest.layout_for(opened.index)
            batch = load_inputs(input_path, card, layout, tuple(spec.shape[1:]), spec.dtype)
            limit = engine.batching.max_batch_size
            if len(batch) > limit:
                raise RequestError(f"{input_path} holds {len(batch)} samples; the bundle batches at most {limit}")
            outputs = engine.infer({spec.name: batch})
        seconds = time.perf_counter() - started
        head = outputs[card.output.name] if card.output.name in outputs else next(iter(outputs.values()))
        out = card.output
        found = decode(
            np.asarray(head),
            fits(image_sizes(input_path, len(batch), card), card),
            out.score_threshold,
            out.iou_threshold,
            out.max_detections,
        )
        labels = list(manifest.labels or card.labels)
    detections = [
        [
            Box(labels[c] if c < len(labels) else str(c), int(c), float(s), (b[0], b[1], b[2], b[3]))
            for b, s, c in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist(), strict=True)
        ]
        for d in found
    ]
    return DetectionRun(
        manifest.model.name, opened.runtime, opened.precision or manifest.precision, seconds, detections
    )
