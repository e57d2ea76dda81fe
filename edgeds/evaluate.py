"""Classify images with an opened backend and score the predictions.

:func:`predict` runs whole batches of one fixed size (the last one padded), so it works with
backends that allocate per batch bucket. It returns a copy of the logits, owned by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .backends.base import Backend
from .modelcard import ModelCard
from .preprocess import Preprocessor


def predict(
    backend: Backend,
    card: ModelCard,
    images: np.ndarray,
    batch_size: int = 8,
    layout: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Logits ``[N, classes]`` of ``images`` (uint8 ``[N,H,W,3]`` RGB) through an opened ``backend``.

    ``on_batch(n)`` is called after each batch with the number of real (unpadded) images done.
    """
    pre = Preprocessor(card.input, layout)
    batch = pre.buffer(batch_size)
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        for index, image in enumerate(chunk):
            pre.into(image, batch[index])
        batch[len(chunk) :] = 0
        outputs = backend.infer({card.input.name: batch})
        out.append(np.array(outputs[card.output.name][: len(chunk)], copy=True))
        if on_batch is not None:
            on_batch(len(chunk))
    return np.concatenate(out) if out else np.empty((0, len(card.labels)), dtype=np.float32)


def softmax(logits: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis (one row ``[C]`` or rows ``[N, C]``), numerically stable: the
    maximum is subtracted before exponentiating.

    ``out``: a float array shaped like ``logits`` that receives the result (returned), so a caller
    deciding frame by frame allocates no new array; ``logits`` of any real dtype are cast into it.
    Without ``out`` the result is a new array (float64 for integer logits).
    """
    peak = logits.max(axis=-1, keepdims=True)
    if out is None:
        result: np.ndarray = np.exp(logits - peak)
    else:
        result = np.subtract(logits, peak, out=out, casting="unsafe")
        np.exp(result, out=result)
    result /= result.sum(axis=-1, keepdims=True)
    return result


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels) else 0.0


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def load_samples(card: ModelCard) -> list[tuple[Path, str, np.ndarray]]:
    """The card's sample images as ``(path, label, RGB uint8)``; the label is the file-name prefix."""
    from PIL import Image

    directory = card.samples_dir
    if directory is None or not directory.is_dir():
        return []
    samples = []
    for path in sorted(directory.glob("*.png")):
        label = path.stem.rsplit("_", 1)[0]
        with Image.open(path) as img:
            samples.append((path, label, np.asarray(img.convert("RGB"))))
    return samples
