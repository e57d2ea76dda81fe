"""Calibration and validation data for compiling, from the model card.

Images come from :func:`edgeds.datasets.load_split` (fingerprint-checked) and go through
:class:`edgeds.preprocess.Preprocessor` exactly as on the device. Batches returned here are
owned by the caller (copies, not the preprocessor's pooled buffers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..backends.base import TensorDict
from ..datasets import Split, load_split
from ..errors import DatasetError
from ..modelcard import ModelCard
from ..preprocess import Preprocessor


@dataclass(frozen=True)
class ImageSet:
    """Raw images (uint8 [N,H,W,3] RGB), labels and a fingerprint that keys caches."""

    images: np.ndarray
    labels: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images)


def images_fingerprint(images: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(repr(images.shape).encode())
    return "sha256:" + digest.hexdigest()


def load_images(card: ModelCard, split: Split, limit: int | None = None) -> ImageSet:
    """The card's ``split`` (first ``limit`` images). :class:`DatasetError` when the card has none."""
    if card.data is None:
        raise DatasetError(
            f"model card {card.name!r} has no data: section, so there is no {split} data "
            "(INT8 calibration and the accuracy gate need it)"
        )
    images, labels = load_split(card, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise DatasetError(f"the {split} split of {card.name!r} is empty")
    spec = getattr(card.data, split)
    fp = spec.fingerprint if limit is None or limit >= spec.count else images_fingerprint(images)
    return ImageSet(images, labels, fp)


def custom_images(images: np.ndarray, labels: np.ndarray | None = None) -> ImageSet:
    """An :class:`ImageSet` from arrays the caller supplies (e.g. a calibration override)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatasetError(f"calibration images must be uint8 [N,H,W,3], got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise DatasetError("calibration images are empty")
    lab = labels if labels is not None else np.zeros(len(images), dtype=np.int64)
    return ImageSet(images, lab, images_fingerprint(images))


def preprocess_all(card: ModelCard, images: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """Every image preprocessed, one new array ``[N, ...]`` in ``layout``."""
    pre = Preprocessor(card.input, layout)
    out = np.empty((len(images), *pre.sample_shape), dtype=np.dtype(card.input.dtype))
    for index, image in enumerate(images):
        pre.into(image, out[index])
    return out


def batches(
    card: ModelCard, images: np.ndarray, batch: int = 8, layout: str = "NCHW", *, exact: bool = False
) -> list[TensorDict]:
    """Preprocessed ``{input name: [b, ...]}`` batches, caller-owned.

    The last batch may be smaller, unless ``exact`` (a model with a fixed batch): then it is
    filled up with samples from the start of the set, repeated, so every batch has exactly
    ``batch`` real samples (calibration statistics see only real data, no zero rows).
    """
    data = preprocess_all(card, images, layout)
    if exact and len(data) and len(data) % batch:
        fill = np.resize(data, (batch - len(data) % batch, *data.shape[1:]))
        data = np.concatenate([data, fill])
    return [{card.input.name: data[i : i + batch]} for i in range(0, len(data), batch)]
